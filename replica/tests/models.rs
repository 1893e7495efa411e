//! Provider bootstrap and the model catalog's cache invalidation.

mod common;

use std::{sync::Arc, time::Duration};

use chatd_replica::{
    bootstrap::{self, ProviderBootstrap},
    llm,
    models::{ModelCatalog, ModelError, ProviderFactory},
};
use chatd_shared::{
    db::{model_configs, providers},
    pubsub::ControlNotice,
    status::ProviderKind,
    testing::{TestDb, TestPubSub, eventually},
};
use tokio_util::sync::CancellationToken;

fn wanted(model: &str) -> ProviderBootstrap {
    ProviderBootstrap {
        name: "env-openai".into(),
        kind: ProviderKind::Openai,
        base_url: "http://127.0.0.1:9/v1".into(),
        api_key_env: Some("CHATD_PROVIDER_API_KEY".into()),
        model: model.into(),
        context_limit: 64_000,
        make_default: false,
    }
}

#[tokio::test]
async fn bootstrap_creates_once_and_replicas_starting_together_agree() {
    let db = TestDb::new().await;
    let node = TestPubSub::start(&db).await;
    let mut runs = Vec::new();
    for _ in 0..4 {
        let (pool, pubsub) = (db.pool().clone(), node.pubsub.clone());
        runs.push(tokio::spawn(async move {
            bootstrap::ensure(&pool, &pubsub, &wanted("gpt-x"))
                .await
                .unwrap()
        }));
    }
    let mut ids = Vec::new();
    for run in runs {
        ids.push(run.await.unwrap());
    }
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "every replica got the same model: {ids:?}"
    );
    let client = db.pool().get().await.unwrap();
    let all = providers::list(&client).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].api_key, None, "the key itself is never stored");
    assert_eq!(
        all[0].api_key_env.as_deref(),
        Some("CHATD_PROVIDER_API_KEY")
    );
    let default = model_configs::get_default(&client).await.unwrap().unwrap();
    assert_eq!(
        (default.id, default.model.as_str(), default.context_limit),
        (ids[0], "gpt-x", 64_000)
    );

    // A second model from a later deployment is added, but the default stays.
    let second = bootstrap::ensure(db.pool(), &node.pubsub, &wanted("gpt-y"))
        .await
        .unwrap();
    assert_ne!(second, ids[0]);
    assert_eq!(
        model_configs::get_default(&client)
            .await
            .unwrap()
            .unwrap()
            .id,
        ids[0]
    );
    node.stop().await;
}

#[tokio::test]
async fn the_catalog_forgets_models_when_told_they_changed() {
    let db = TestDb::new().await;
    let node = TestPubSub::start(&db).await;
    let mock = chatd_mockllm::MockLlm::start(Default::default())
        .await
        .unwrap();
    let model = common::mock_model(&db, &mock, common::Wire::OpenAi, "k").await;
    let http = llm::http_client().unwrap();
    let factory: ProviderFactory = Arc::new(move |row| llm::build(row, &http));
    let catalog = ModelCatalog::new(db.pool().clone(), factory);
    let stop = CancellationToken::new();
    let watcher = tokio::spawn(catalog.clone().watch(node.pubsub.clone(), stop.clone()));

    assert_eq!(
        catalog.resolve(None).await.unwrap().config.id,
        model,
        "the default model"
    );
    db.pool()
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE model_configs SET enabled = false WHERE id = $1",
            &[&model],
        )
        .await
        .unwrap();
    // Cached: the change is not seen until someone says so.
    assert!(catalog.resolve(Some(model)).await.is_ok());
    node.pubsub
        .publish_control(&ControlNotice::ModelsChanged)
        .unwrap();
    eventually(
        "the catalog to see the disabled model",
        Duration::from_secs(10),
        || async {
            matches!(
                catalog.resolve(Some(model)).await,
                Err(ModelError::Disabled(_))
            )
            .then_some(())
        },
    )
    .await;
    stop.cancel();
    watcher.await.unwrap();
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_that_miss_the_cold_catalog_together_load_the_model_once() {
    let db = TestDb::new().await;
    let mock = chatd_mockllm::MockLlm::start(Default::default())
        .await
        .unwrap();
    let model = common::mock_model(&db, &mock, common::Wire::OpenAi, "k").await;
    let http = llm::http_client().unwrap();
    let built = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let factory: ProviderFactory = {
        let built = built.clone();
        Arc::new(move |row| {
            built.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            llm::build(row, &http)
        })
    };
    let catalog = ModelCatalog::new(db.pool().clone(), factory);
    // Every run right after a start (or an invalidation) misses at once.
    let lookups = (0..50).map(|_| {
        let catalog = catalog.clone();
        tokio::spawn(async move { catalog.resolve(None).await.unwrap().config.id })
    });
    for found in futures::future::join_all(lookups).await {
        assert_eq!(found.unwrap(), model);
    }
    assert_eq!(
        built.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one load served every run"
    );
}
