//! `Chat` and the requests that create, list and change chats.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::Object;

use super::{
    content,
    schema::{self, or_null},
};
use crate::{
    db,
    ids::{ChatId, Generation, ModelConfigId, UserId},
    parts::Part,
    status::ChatStatus,
    tools::ClientTool,
};

/// Longest title (characters).
pub const MAX_TITLE: usize = 200;
/// Longest system prompt (characters).
pub const MAX_SYSTEM_PROMPT: usize = 100_000;
/// Largest labels object (bytes of JSON).
pub const MAX_LABELS: usize = 16 * 1024;

/// A chat as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Chat {
    /// UUIDv7 id (sorts by creation time).
    pub id: ChatId,
    /// Its owner.
    pub owner_id: UserId,
    /// Its title ("" until set).
    pub title: String,
    /// Where it is in its lifecycle.
    pub status: ChatStatus,
    /// The current run's generation (changes on every change of ownership).
    pub generation: Generation,
    /// Its model.
    pub model_config_id: Option<ModelConfigId>,
    /// Archived chats are hidden from listings and never run.
    pub archived: bool,
    /// Free-form labels (a JSON object).
    #[schema(value_type = Object)]
    pub labels: Value,
    /// Why the last turn failed.
    pub last_error: Option<String>,
    /// The chat that spawned this one.
    pub parent_chat_id: Option<ChatId>,
    /// Messages waiting in its queue.
    pub queued_count: i64,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// The top of its spawn tree (for a subagent: its parent).
    #[serde(default)]
    pub root_chat_id: Option<ChatId>,
    /// The MCP servers it opted into, by name: their tools reach the model
    /// as `server__tool`.
    #[serde(default)]
    pub mcp_servers: Vec<String>,
    /// The tools its client runs.
    #[serde(default)]
    pub client_tools: Vec<ClientTool>,
}

impl Chat {
    /// The view of a row with its queue length.
    pub fn from_row(row: &db::chats::Chat, queued_count: i64) -> Self {
        Self {
            id: row.id,
            owner_id: row.owner_id,
            title: row.title.clone(),
            status: row.status,
            generation: row.generation,
            model_config_id: row.model_config_id,
            archived: row.archived,
            labels: row.labels.clone(),
            last_error: row.last_error.clone(),
            parent_chat_id: row.parent_chat_id,
            queued_count,
            created_at: row.created_at,
            updated_at: row.updated_at,
            root_chat_id: row.root_chat_id,
            mcp_servers: row.mcp_servers.clone(),
            client_tools: row.client_tools.clone(),
        }
    }
}

/// `POST /chats`. With `content` or `text` the chat starts with that message
/// and runs at once; without, it is created idle.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateChat {
    /// The first message's parts (not with `text`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = content::content_field_schema)]
    pub content: Option<Vec<Part>>,
    /// The first message as plain text (not with `content`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = content::text_field_schema)]
    pub text: Option<String>,
    /// The model (default: the default model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_config_id: Option<ModelConfigId>,
    /// A title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = title_schema)]
    pub title: Option<String>,
    /// A system prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = system_prompt_schema)]
    pub system_prompt: Option<String>,
    /// Labels (a JSON object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = labels_schema)]
    pub labels: Option<Value>,
    /// MCP servers to opt into, by name (their tools reach the model as
    /// `server__tool`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::tools::mcp_servers_schema)]
    pub mcp_servers: Option<Vec<String>>,
    /// Tools the client runs: a call makes the chat `requires_action`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 32)]
    pub client_tools: Option<Vec<ClientTool>>,
}

fn title_schema() -> Object {
    or_null(
        schema::text(Some(MAX_TITLE))
            .description(Some(format!("A title, at most {MAX_TITLE} characters."))),
    )
}

fn system_prompt_schema() -> Object {
    or_null(
        schema::text(Some(MAX_SYSTEM_PROMPT)).description(Some(format!(
            "A system prompt, at most {MAX_SYSTEM_PROMPT} characters."
        ))),
    )
}

fn labels_schema() -> Object {
    or_null(schema::json_object().description(Some(format!(
        "Labels: a JSON object of at most {MAX_LABELS} bytes (replaces the old ones)."
    ))))
}

/// `PATCH /chats/{id}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateChat {
    /// New title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = title_schema)]
    pub title: Option<String>,
    /// Archive (true) or restore (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived: Option<bool>,
    /// New labels (a JSON object; replaces the old ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = labels_schema)]
    pub labels: Option<Value>,
    /// MCP servers to opt into (replaces the old list), by name (their tools reach the model as
    /// `server__tool`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::tools::mcp_servers_schema)]
    pub mcp_servers: Option<Vec<String>>,
    /// Tools the client runs (replaces the old ones): a call makes the chat `requires_action`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 32)]
    pub client_tools: Option<Vec<ClientTool>>,
}

/// `GET /chats`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChatList {
    /// This page.
    pub chats: Vec<Chat>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}
