//! What every feature test starts from: replicas with their API, a mock
//! model server speaking one wire format, and a default model on it.

use chatd_mockllm::{Behaviour, MockLlm};
use chatd_replica::server::ReplicaConfig;
use chatd_shared::{
    api::{CreateChat, SendMessage},
    client::Client,
    db::model_configs,
    ids::{ChatId, ModelConfigId},
    pubsub::ControlNotice,
    status::ChatStatus,
    testing::eventually,
};

use super::common::{WAIT, Wire, app::TestApp, mock_provider};

/// Replicas, a mock model server, and the default model on it.
pub struct Setup {
    pub app: TestApp,
    pub mock: MockLlm,
    pub wire: Wire,
}

/// A model's numbers, for [`Setup::start`].
#[derive(Debug, Clone, Copy)]
pub struct ModelSpec {
    pub context_limit: i32,
    pub max_output_tokens: i32,
    /// Input, output, cache read, cache write, per million tokens.
    pub prices: [Option<i64>; 4],
}

impl Default for ModelSpec {
    fn default() -> Self {
        Self {
            context_limit: 100_000,
            max_output_tokens: 1024,
            prices: [Some(1_000_000), Some(2_000_000), None, None],
        }
    }
}

impl Setup {
    /// `replicas` replicas (`tweak` adjusts replica `index`'s settings), a
    /// mock server answering `mock://?tokens=8`-like replies of 8 words,
    /// and a default model `spec` on it speaking `wire`.
    pub async fn start(
        replicas: usize,
        wire: Wire,
        spec: ModelSpec,
        tweak: impl Fn(usize, &mut ReplicaConfig),
    ) -> Self {
        let mock = MockLlm::start(Behaviour {
            tokens: 8,
            ..Behaviour::default()
        })
        .await
        .expect("mock server");
        let app = TestApp::start_each(replicas, tweak).await;
        let model = add_model(&app, &mock, wire, "mock-model", spec).await;
        make_default(&app, model).await;
        Self { app, mock, wire }
    }

    /// Ends every replica gracefully.
    pub async fn shutdown(self) {
        self.app.shutdown().await;
    }
}

/// A model config named `name` on a new provider of `wire` pointing at `mock`.
pub async fn add_model(
    app: &TestApp,
    mock: &MockLlm,
    wire: Wire,
    name: &str,
    spec: ModelSpec,
) -> ModelConfigId {
    let provider = mock_provider(&app.db, mock, wire, "key", name).await;
    let client = app.db.pool().get().await.unwrap();
    model_configs::insert(
        &client,
        &model_configs::NewModelConfig {
            provider_id: provider,
            model: name,
            display_name: name,
            enabled: true,
            is_default: false,
            context_limit: spec.context_limit,
            compaction_threshold_pct: 70,
            max_output_tokens: spec.max_output_tokens,
            prices: spec.prices,
            options: serde_json::json!({}),
        },
    )
    .await
    .unwrap()
    .id
}

/// Makes `model` the default, and tells every replica's catalog.
pub async fn make_default(app: &TestApp, model: ModelConfigId) {
    let client = app.db.pool().get().await.unwrap();
    model_configs::set_default(&client, model).await.unwrap();
    models_changed(app);
}

/// Tells every replica that models changed (as the admin API does).
pub fn models_changed(app: &TestApp) {
    app.replicas[0]
        .pubsub()
        .publish_control(&ControlNotice::ModelsChanged)
        .unwrap();
}

/// Creates a chat saying `text` (with `system_prompt` if given); its id.
pub async fn create(client: &Client, text: &str, system_prompt: Option<&str>) -> ChatId {
    let created = client
        .create_chat(
            &CreateChat {
                text: Some(text.to_owned()),
                system_prompt: system_prompt.map(str::to_owned),
                ..Default::default()
            },
            None,
        )
        .await
        .expect("create chat");
    created.body.id
}

/// Sends `text` to chat `id`.
pub async fn send(client: &Client, id: ChatId, text: &str) {
    client
        .send_message(
            id,
            &SendMessage {
                text: Some(text.to_owned()),
                ..Default::default()
            },
            None,
        )
        .await
        .expect("send");
}

/// Waits until chat `id` is idle (`waiting` or `error`) with at least
/// `messages` messages; its status.
pub async fn wait_idle(client: &Client, id: ChatId, messages: usize) -> ChatStatus {
    eventually(&format!("chat {id} idle"), WAIT, || async move {
        let chat = client.get_chat(id).await.ok()?;
        if !matches!(chat.status, ChatStatus::Waiting | ChatStatus::Error) {
            return None;
        }
        let page = client.list_messages(id, &Default::default()).await.ok()?;
        (page.messages.len() >= messages).then_some(chat.status)
    })
    .await
}

/// The text of the last assistant message of chat `id`.
pub async fn last_reply(client: &Client, id: ChatId) -> String {
    let page = client.list_messages(id, &Default::default()).await.unwrap();
    let reply = page
        .messages
        .iter()
        .rev()
        .find(|m| m.role == chatd_shared::status::MessageRole::Assistant)
        .expect("a reply");
    reply
        .content
        .iter()
        .filter_map(|part| match part {
            chatd_shared::parts::Part::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// What the mock model said it received (a reply to `describe`).
pub async fn described(client: &Client, id: ChatId) -> serde_json::Value {
    let text = last_reply(client, id).await;
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not a description: {text}"))
}

/// Waits for the sum of metric `name` on replica `index` to reach `at_least`.
pub async fn wait_metric(app: &TestApp, index: usize, name: &str, at_least: f64) -> f64 {
    eventually(&format!("{name} ≥ {at_least}"), WAIT, || async move {
        let text = app.metrics(index).await;
        let value = chatd_shared::testing::metric_sum(&text, name);
        (value >= at_least).then_some(value)
    })
    .await
}
