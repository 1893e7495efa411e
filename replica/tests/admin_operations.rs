//! The catalog and account operations: what another replica hears of each
//! change an admin makes (DESIGN §3, "Where transitions live").

use std::time::Duration;

use chatd_replica::operations::{
    Accounts, Catalog, CreateTokenOutcome, CreateUserOutcome, DeleteProviderOutcome,
    ModelConfigOutcome, ProviderOutcome,
};
use chatd_shared::{
    db::{
        model_configs::{ModelConfigChanges, NewModelConfig},
        providers::{NewProvider, ProviderChanges},
    },
    ids::{ProviderId, TokenId},
    pubsub::{ControlNotice, Delivery, PubSub},
    status::{ProviderKind, UserRole},
    testing::{TestDb, TestPubSub, wait_for},
};

/// The next `count` configuration notices `control` receives (probes skipped).
async fn notices(
    control: &mut chatd_shared::pubsub::Subscription<ControlNotice>,
    count: usize,
) -> Vec<ControlNotice> {
    let mut received = Vec::new();
    wait_for("control notices", Duration::from_secs(10), async {
        while received.len() < count {
            match control.recv().await.expect("pubsub running") {
                Delivery::Notice(ControlNotice::Probe { .. }) => {}
                Delivery::Notice(notice) => received.push(notice),
                Delivery::Resync => panic!("notices were lost"),
            }
        }
    })
    .await;
    received
}

fn provider(name: &str) -> NewProvider<'_> {
    NewProvider {
        name,
        kind: ProviderKind::Mock,
        base_url: "mock://",
        api_key: None,
        api_key_env: None,
        enabled: true,
    }
}

fn model_config(provider_id: ProviderId, is_default: bool) -> NewModelConfig<'static> {
    NewModelConfig {
        provider_id,
        model: "mock",
        display_name: "Mock",
        enabled: true,
        is_default,
        context_limit: 1000,
        compaction_threshold_pct: 70,
        max_output_tokens: 100,
        prices: [None; 4],
        options: serde_json::json!({}),
    }
}

/// Two replicas' pubsubs on one database: the first acts, the second listens.
async fn two_replicas(db: &TestDb) -> (TestPubSub, TestPubSub) {
    (TestPubSub::start(db).await, TestPubSub::start(db).await)
}

fn catalog(db: &TestDb, pubsub: &PubSub) -> Catalog {
    Catalog::new(db.pool().clone(), pubsub.clone())
}

#[tokio::test]
async fn every_catalog_change_is_announced_once_and_a_refused_one_not_at_all() {
    let db = TestDb::new().await;
    let (acting, listening) = two_replicas(&db).await;
    let mut control = listening.pubsub.subscribe_control();
    let catalog = catalog(&db, &acting.pubsub);

    let ProviderOutcome::Done(created) = catalog.create_provider(&provider("m")).await.unwrap()
    else {
        panic!("the provider is created");
    };
    let taken = catalog.create_provider(&provider("m")).await.unwrap();
    assert!(matches!(taken, ProviderOutcome::NameTaken(name) if name == "m"));
    let bad_url = NewProvider {
        base_url: "http://x",
        ..provider("n")
    };
    let refused = catalog.create_provider(&bad_url).await.unwrap();
    assert!(
        matches!(refused, ProviderOutcome::Refused(_)),
        "{refused:?}"
    );
    let disabled = ProviderChanges {
        enabled: Some(false),
        ..Default::default()
    };
    assert!(matches!(
        catalog
            .update_provider(created.id, &disabled)
            .await
            .unwrap(),
        ProviderOutcome::Done(_)
    ));
    let ModelConfigOutcome::Done(model) = catalog
        .create_model_config(&model_config(created.id, true))
        .await
        .unwrap()
    else {
        panic!("the model config is created");
    };
    assert!(model.is_default);
    let unknown = ProviderId::new_random();
    assert!(matches!(
        catalog
            .create_model_config(&model_config(unknown, false))
            .await
            .unwrap(),
        ModelConfigOutcome::ProviderMissing(id) if id == unknown
    ));
    assert_eq!(
        catalog.delete_provider(created.id).await.unwrap(),
        DeleteProviderOutcome::InUse
    );
    let renamed = ModelConfigChanges {
        display_name: Some("Renamed"),
        ..Default::default()
    };
    assert!(matches!(
        catalog
            .update_model_config(model.id, &renamed, false)
            .await
            .unwrap(),
        ModelConfigOutcome::Done(_)
    ));
    assert!(catalog.delete_model_config(model.id).await.unwrap());
    assert!(!catalog.delete_model_config(model.id).await.unwrap());
    assert_eq!(
        catalog.delete_provider(created.id).await.unwrap(),
        DeleteProviderOutcome::Deleted
    );

    // A marker after the last change: anything more would come before it.
    acting
        .pubsub
        .publish_control(&ControlNotice::TokensChanged)
        .unwrap();

    // Six changes went through; the refusals and the no-op said nothing.
    let mut expected = vec![ControlNotice::ModelsChanged; 6];
    expected.push(ControlNotice::TokensChanged);
    assert_eq!(notices(&mut control, 7).await, expected);
    acting.stop().await;
    listening.stop().await;
}

#[tokio::test]
async fn a_revoked_token_is_announced_once_to_every_replica() {
    let db = TestDb::new().await;
    let (acting, listening) = two_replicas(&db).await;
    let mut control = listening.pubsub.subscribe_control();
    let accounts = Accounts::new(db.pool().clone(), acting.pubsub.clone());

    let CreateUserOutcome::Created(user) = accounts
        .create_user("rita", UserRole::Member)
        .await
        .unwrap()
    else {
        panic!("the user is created");
    };
    assert!(matches!(
        accounts.create_user("rita", UserRole::Admin).await.unwrap(),
        CreateUserOutcome::UsernameTaken
    ));
    let CreateTokenOutcome::Created { secret, token } = accounts
        .create_token(user.id, "laptop", None)
        .await
        .unwrap()
    else {
        panic!("the token is created");
    };
    let (found, owner) = accounts
        .login(&chatd_shared::auth_token::hash(&secret))
        .await
        .unwrap()
        .expect("the new token logs in");
    assert_eq!((found.id, owner.id), (token.id, user.id));
    assert!(
        !accounts
            .revoke_token(user.id, TokenId::new_random())
            .await
            .unwrap()
    );
    assert!(accounts.revoke_token(user.id, token.id).await.unwrap());
    assert!(!accounts.revoke_token(user.id, token.id).await.unwrap());
    // A marker after the last refusal: anything they announced would come first.
    acting
        .pubsub
        .publish_control(&ControlNotice::ModelsChanged)
        .unwrap();

    assert_eq!(
        notices(&mut control, 2).await,
        [ControlNotice::TokensChanged, ControlNotice::ModelsChanged]
    );
    acting.stop().await;
    listening.stop().await;
}
