//! `mcp_servers`: the MCP servers an admin registered (ARCHITECTURE.md §17). Chats
//! opt into them by name; every replica caches their tool lists.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{DbResult, GenericClient};
use crate::ids::McpServerId;

/// A row of `mcp_servers`.
#[derive(Clone, PartialEq)]
pub struct McpServer {
    /// Its id.
    pub id: McpServerId,
    /// Unique name; its tools reach the model as `name__tool`.
    pub name: String,
    /// The streamable HTTP endpoint.
    pub url: String,
    /// Sent as `Authorization: Bearer …`; never shown back.
    pub bearer_token: Option<String>,
    /// The tools offered to models (`None`: every tool the server lists).
    pub allowed_tools: Option<Vec<String>>,
    /// Tools safe to run twice after a crash (the others are not).
    pub idempotent_tools: Vec<String>,
    /// Disabled servers are offered to no chat.
    pub enabled: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of logs.
        f.debug_struct("McpServer")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("url", &self.url)
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "…"))
            .field("allowed_tools", &self.allowed_tools)
            .field("idempotent_tools", &self.idempotent_tools)
            .field("enabled", &self.enabled)
            .finish()
    }
}

impl McpServer {
    fn from_row(row: &Row) -> DbResult<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            url: row.try_get("url")?,
            bearer_token: row.try_get("bearer_token")?,
            allowed_tools: row.try_get("allowed_tools")?,
            idempotent_tools: row.try_get("idempotent_tools")?,
            enabled: row.try_get("enabled")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

const COLUMNS: &str = "id, name, url, bearer_token, allowed_tools, idempotent_tools, enabled,
    created_at, updated_at";

/// What [`insert`] stores.
#[derive(Debug, Clone)]
pub struct NewMcpServer<'a> {
    /// Unique name.
    pub name: &'a str,
    /// Endpoint.
    pub url: &'a str,
    /// Bearer secret.
    pub bearer_token: Option<&'a str>,
    /// Allowed tools (`None`: all).
    pub allowed_tools: Option<&'a [String]>,
    /// Tools safe to run twice.
    pub idempotent_tools: &'a [String],
    /// Enabled?
    pub enabled: bool,
}

/// Stores a server; a taken name is a unique violation.
pub async fn insert(db: &impl GenericClient, server: &NewMcpServer<'_>) -> DbResult<McpServer> {
    let sql = format!(
        "INSERT INTO mcp_servers (id, name, url, bearer_token, allowed_tools, idempotent_tools, enabled)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    );
    let stmt = db.prepare_cached(&sql).await?;
    let row = db
        .query_one(
            &stmt,
            &[
                &McpServerId::new_random(),
                &server.name,
                &server.url,
                &server.bearer_token,
                &server.allowed_tools,
                &server.idempotent_tools,
                &server.enabled,
            ],
        )
        .await?;
    McpServer::from_row(&row)
}

/// One server.
pub async fn get(db: &impl GenericClient, id: McpServerId) -> DbResult<Option<McpServer>> {
    let sql = format!("SELECT {COLUMNS} FROM mcp_servers WHERE id = $1");
    let stmt = db.prepare_cached(&sql).await?;
    db.query_opt(&stmt, &[&id])
        .await?
        .as_ref()
        .map(McpServer::from_row)
        .transpose()
}

/// Every server, by name.
pub async fn list(db: &impl GenericClient) -> DbResult<Vec<McpServer>> {
    let sql = format!("SELECT {COLUMNS} FROM mcp_servers ORDER BY name");
    let stmt = db.prepare_cached(&sql).await?;
    db.query(&stmt, &[])
        .await?
        .iter()
        .map(McpServer::from_row)
        .collect()
}

/// The names among `names` that no server has.
pub async fn unknown_names(db: &impl GenericClient, names: &[String]) -> DbResult<Vec<String>> {
    let stmt = db
        .prepare_cached(
            "SELECT n FROM unnest($1::text[]) AS n
             WHERE NOT EXISTS (SELECT 1 FROM mcp_servers s WHERE s.name = n)",
        )
        .await?;
    db.query(&stmt, &[&names])
        .await?
        .iter()
        .map(|row| Ok(row.try_get(0)?))
        .collect()
}

/// Changes to a server; `None` leaves a field as it is (for the nullable
/// fields, `Some(None)` clears them). The name never changes: chats refer
/// to servers by it.
#[derive(Debug, Clone, Default)]
pub struct McpServerChanges<'a> {
    /// New endpoint.
    pub url: Option<&'a str>,
    /// New secret (or none).
    pub bearer_token: Option<Option<&'a str>>,
    /// New allowed tools (or all).
    pub allowed_tools: Option<Option<&'a [String]>>,
    /// New idempotent tools.
    pub idempotent_tools: Option<&'a [String]>,
    /// Enabled?
    pub enabled: Option<bool>,
}

/// Applies `changes`; `None` when the server does not exist.
pub async fn update(
    db: &impl GenericClient,
    id: McpServerId,
    changes: &McpServerChanges<'_>,
) -> DbResult<Option<McpServer>> {
    let sql = format!(
        "UPDATE mcp_servers SET
             url = COALESCE($2, url),
             bearer_token = CASE WHEN $3 THEN $4 ELSE bearer_token END,
             allowed_tools = CASE WHEN $5 THEN $6 ELSE allowed_tools END,
             idempotent_tools = COALESCE($7, idempotent_tools),
             enabled = COALESCE($8, enabled),
             updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    );
    let stmt = db.prepare_cached(&sql).await?;
    let row = db
        .query_opt(
            &stmt,
            &[
                &id,
                &changes.url,
                &changes.bearer_token.is_some(),
                &changes.bearer_token.flatten(),
                &changes.allowed_tools.is_some(),
                &changes.allowed_tools.flatten(),
                &changes.idempotent_tools,
                &changes.enabled,
            ],
        )
        .await?;
    row.as_ref().map(McpServer::from_row).transpose()
}

/// Deletes a server (chats that named it lose its tools); false when it
/// did not exist.
pub async fn delete(db: &impl GenericClient, id: McpServerId) -> DbResult<bool> {
    let stmt = db
        .prepare_cached("DELETE FROM mcp_servers WHERE id = $1")
        .await?;
    Ok(db.execute(&stmt, &[&id]).await? == 1)
}
