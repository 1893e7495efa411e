//! Tool results a client posts, and MCP servers as admins manage them
//! (ARCHITECTURE.md §17).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::Message;
use crate::{db, ids::McpServerId};

/// `POST /chats/{id}/tool-results`: one result for every pending call of a
/// `requires_action` chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolResults {
    /// The results, one per pending call.
    pub results: Vec<ToolResultInput>,
}

/// The result of one client tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolResultInput {
    /// The call it answers (the `id` of the `requires_action` event's call).
    pub tool_call_id: String,
    /// The result (any JSON), as the model will see it.
    #[schema(value_type = Object)]
    pub result: Value,
    /// True when the tool failed.
    #[serde(default)]
    pub is_error: bool,
}

/// The answer to posted tool results: the tool messages stored (the chat is
/// `pending` again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolResultsStored {
    /// One tool message per result, in call order.
    pub messages: Vec<Message>,
}

/// An MCP server, as admins see it (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct McpServer {
    /// Its id.
    pub id: McpServerId,
    /// Unique name; its tools reach models as `name__tool`.
    pub name: String,
    /// The streamable HTTP endpoint.
    pub url: String,
    /// Whether a bearer secret is set (it is never shown).
    pub has_bearer_token: bool,
    /// Tools offered to models (`null`: every tool the server lists).
    pub allowed_tools: Option<Vec<String>>,
    /// Tools safe to run again after a crash; the others get an error result
    /// instead ("may have run; not repeated").
    pub idempotent_tools: Vec<String>,
    /// Disabled servers are offered to no chat.
    pub enabled: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<&db::mcp_servers::McpServer> for McpServer {
    fn from(row: &db::mcp_servers::McpServer) -> Self {
        Self {
            id: row.id,
            name: row.name.clone(),
            url: row.url.clone(),
            has_bearer_token: row.bearer_token.is_some(),
            allowed_tools: row.allowed_tools.clone(),
            idempotent_tools: row.idempotent_tools.clone(),
            enabled: row.enabled,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// `GET /admin/mcp-servers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct McpServerList {
    /// Every server, by name.
    pub mcp_servers: Vec<McpServer>,
}

/// One tool of an MCP server, as chats that opt into the server offer it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct McpServerTool {
    /// The name models see: `server__tool`.
    pub name: String,
    /// The tool's name on the server.
    pub tool: String,
    /// What it does, as the server says.
    pub description: String,
    /// JSON Schema of its arguments, as the server says.
    #[schema(value_type = Object)]
    pub parameters: serde_json::Value,
    /// Whether it runs again after a crash (listed in `idempotent_tools`).
    pub idempotent: bool,
}

/// `GET /admin/mcp-servers/{id}/tools`: what the server offers now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct McpServerTools {
    /// The server.
    pub server: McpServer,
    /// Its tools that chats are offered (`allowed_tools` applied), in the
    /// server's order; empty when it could not be asked.
    pub tools: Vec<McpServerTool>,
    /// Why the server could not be asked (unreachable, no answer to the
    /// handshake or the listing in time); `null` when it answered.
    pub error: Option<String>,
}

/// `POST /admin/mcp-servers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMcpServer {
    /// Unique name: lowercase letters, digits, `-` and `_` (no `__`), at most 32.
    #[schema(schema_with = crate::tools::mcp_server_name_schema)]
    pub name: String,
    /// The streamable HTTP endpoint (`http://` or `https://`).
    pub url: String,
    /// Sent as `Authorization: Bearer …` (never shown back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = secret_schema)]
    pub bearer_token: Option<String>,
    /// Tools offered to models (default: every tool the server lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = tool_names_schema)]
    pub allowed_tools: Option<Vec<String>>,
    /// Tools safe to run again after a crash (default: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = tool_names_schema)]
    pub idempotent_tools: Option<Vec<String>>,
    /// Enabled? (default true)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// `PATCH /admin/mcp-servers/{id}`: fields left out stay; `null` clears
/// `bearer_token`, and makes `allowed_tools` every tool. The name never
/// changes (chats refer to it).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMcpServer {
    /// New endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// New secret, or `null` to remove it.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = secret_schema)]
    pub bearer_token: Option<Option<String>>,
    /// New allowed tools, or `null` for every tool.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = tool_names_schema)]
    pub allowed_tools: Option<Option<Vec<String>>>,
    /// New idempotent tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = tool_names_schema)]
    pub idempotent_tools: Option<Vec<String>>,
    /// Enabled?
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// A bearer secret, or `null`.
fn secret_schema() -> utoipa::openapi::Object {
    super::schema::or_null(super::schema::secret())
}

/// Names of a server's tools, or `null`.
fn tool_names_schema() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            utoipa::openapi::Type::Array,
            utoipa::openapi::Type::Null,
        ]))
        .items(super::schema::tool_name())
        .build()
}

/// For PATCH bodies: a field left out (`None`) or set to `null` (`Some(None)`).
fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}
