//! The public API's JSON shapes (ARCHITECTURE.md §9), shared by the server, the typed
//! client and the load test.

mod admin;
mod chat;
pub mod content;
mod diagnosis;
mod error;
mod files;
mod message;
mod prompts;
pub mod schema;
mod spend;
mod tools;
mod usage;
mod watch;
mod webhooks;

pub(crate) use self::admin::optional_whole;

pub use admin::{
    CreateModelConfig, CreateProvider, CreateToken, CreateUser, MAX_MODEL_NAME, MAX_PROVIDER_NAME,
    MAX_TOKEN_NAME, MAX_USERNAME, Model, ModelConfig, ModelList, Provider, Token, TokenCreated,
    UpdateModelConfig, UpdateProvider, User,
};
pub use chat::{Chat, ChatList, CreateChat, MAX_LABELS, MAX_SYSTEM_PROMPT, MAX_TITLE, UpdateChat};
pub use diagnosis::{ChatDiagnosis, QueuePosition, ReplicaList, ReplicaStatus, WorkerLease};
pub use error::{ApiErrorBody, ErrorResponse};
pub use files::File;
pub use message::{
    BusyBehavior, EditMessage, MAX_IDEMPOTENCY_KEY, Message, MessageList, QueueList, QueuedMessage,
    SendMessage, SendResult,
};
pub use prompts::{CustomPrompt, MAX_CUSTOM_PROMPT, MAX_DEPLOYMENT_PROMPT, SystemPrompt};
pub use spend::{Spend, SpendLimitExceeded, SpendLimits, UserSpendLimit, UserSpendLimitSet};
pub use tools::{
    CreateMcpServer, McpServer, McpServerList, McpServerTool, McpServerTools, ToolResultInput,
    ToolResults, ToolResultsStored, UpdateMcpServer,
};
pub use usage::{UsageReport, UsageRow};
pub use watch::{WatchEvent, WatchKind};
pub use webhooks::{
    CreateWebhook, Delivery, DeliveryList, Webhook, WebhookCreated, WebhookEvent, WebhookList,
};

/// Rules of request bodies that involve several fields at once, by the
/// name of the body's schema: the OpenAPI document states each beside the
/// body's own schema (an `allOf`), since a field's schema cannot.
pub fn body_rules() -> Vec<(String, utoipa::openapi::Schema)> {
    use utoipa::ToSchema;
    vec![
        (
            CreateChat::name().into(),
            content::content_or_text_schema(true),
        ),
        (
            SendMessage::name().into(),
            content::content_or_text_schema(false),
        ),
        (
            EditMessage::name().into(),
            content::content_or_text_schema(false),
        ),
        (CreateProvider::name().into(), admin::one_key_schema()),
        (UpdateProvider::name().into(), admin::one_key_schema()),
    ]
}
