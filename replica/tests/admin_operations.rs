//! The catalog and account operations: what another replica hears of each
//! change an admin makes (ARCHITECTURE.md §3, "Where transitions live").

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
    pubsub::{ControlNotice, Delivery, PubSub, Subscription},
    status::{ProviderKind, UserRole},
    testing::{TestDb, TestPubSub, wait_for},
};

/// What `control` hears of the step just taken: the configuration notices
/// before `marker`, which the acting replica publishes right after it
/// (probes skipped). One step at a time: PostgreSQL delivers identical
/// notices of one transaction once, and the publisher batches.
async fn heard(
    acting: &PubSub,
    control: &mut Subscription<ControlNotice>,
    marker: ControlNotice,
) -> Vec<ControlNotice> {
    acting.publish_control(&marker).expect("published");
    let mut received = Vec::new();
    wait_for("the marker notice", Duration::from_secs(10), async {
        loop {
            match control.recv().await.expect("pubsub running") {
                Delivery::Notice(ControlNotice::Probe { .. }) => {}
                Delivery::Notice(notice) if notice == marker => return,
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
async fn every_catalog_change_is_announced_and_a_refused_one_is_not() {
    let db = TestDb::new().await;
    let (acting, listening) = two_replicas(&db).await;
    let mut control = listening.pubsub.subscribe_control();
    let catalog = catalog(&db, &acting.pubsub);
    let mut step = async |changed: bool| {
        let expected = if changed {
            vec![ControlNotice::ModelsChanged]
        } else {
            vec![]
        };
        let heard = heard(&acting.pubsub, &mut control, ControlNotice::TokensChanged).await;
        assert_eq!(heard, expected);
    };

    let ProviderOutcome::Done(created) = catalog.create_provider(&provider("m")).await.unwrap()
    else {
        panic!("the provider is created");
    };
    step(true).await;
    let taken = catalog.create_provider(&provider("m")).await.unwrap();
    assert!(matches!(taken, ProviderOutcome::NameTaken(name) if name == "m"));
    step(false).await;
    let bad_url = NewProvider {
        base_url: "http://x",
        ..provider("n")
    };
    let refused = catalog.create_provider(&bad_url).await.unwrap();
    assert!(
        matches!(refused, ProviderOutcome::Refused(_)),
        "{refused:?}"
    );
    step(false).await;
    let disabled = ProviderChanges {
        enabled: Some(false),
        ..Default::default()
    };
    let updated = catalog.update_provider(created.id, &disabled).await;
    assert!(matches!(updated.unwrap(), ProviderOutcome::Done(_)));
    step(true).await;
    let ModelConfigOutcome::Done(model) = catalog
        .create_model_config(&model_config(created.id, true), false)
        .await
        .unwrap()
    else {
        panic!("the model config is created");
    };
    assert!(model.is_default);
    step(true).await;
    let unknown = ProviderId::new_random();
    let missing = catalog
        .create_model_config(&model_config(unknown, false), false)
        .await;
    assert!(matches!(missing.unwrap(), ModelConfigOutcome::ProviderMissing(id) if id == unknown));
    step(false).await;
    let in_use = catalog.delete_provider(created.id).await.unwrap();
    assert_eq!(in_use, DeleteProviderOutcome::InUse);
    step(false).await;
    let renamed = ModelConfigChanges {
        display_name: Some("Renamed"),
        ..Default::default()
    };
    let updated = catalog
        .update_model_config(model.id, &renamed, false, None)
        .await;
    assert!(matches!(updated.unwrap(), ModelConfigOutcome::Done(_)));
    step(true).await;
    assert!(catalog.delete_model_config(model.id).await.unwrap());
    step(true).await;
    assert!(!catalog.delete_model_config(model.id).await.unwrap());
    step(false).await;
    let deleted = catalog.delete_provider(created.id).await.unwrap();
    assert_eq!(deleted, DeleteProviderOutcome::Deleted);
    step(true).await;
    acting.stop().await;
    listening.stop().await;
}

#[tokio::test]
async fn a_revoked_token_is_announced_and_nothing_else_of_accounts() {
    let db = TestDb::new().await;
    let (acting, listening) = two_replicas(&db).await;
    let mut control = listening.pubsub.subscribe_control();
    let accounts = Accounts::new(db.pool().clone(), acting.pubsub.clone());
    let mut step = async |revoked: bool| {
        let expected = if revoked {
            vec![ControlNotice::TokensChanged]
        } else {
            vec![]
        };
        let heard = heard(&acting.pubsub, &mut control, ControlNotice::ModelsChanged).await;
        assert_eq!(heard, expected);
    };

    let CreateUserOutcome::Created(user) = accounts
        .create_user("rita", UserRole::Member)
        .await
        .unwrap()
    else {
        panic!("the user is created");
    };
    let taken = accounts.create_user("rita", UserRole::Admin).await.unwrap();
    assert!(matches!(taken, CreateUserOutcome::UsernameTaken));
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
    step(false).await;
    let unknown = TokenId::new_random();
    assert!(!accounts.revoke_token(user.id, unknown).await.unwrap());
    step(false).await;
    assert!(accounts.revoke_token(user.id, token.id).await.unwrap());
    step(true).await;
    assert!(!accounts.revoke_token(user.id, token.id).await.unwrap());
    step(false).await;
    acting.stop().await;
    listening.stop().await;
}
