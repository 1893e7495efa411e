//! `/admin/mcp-servers`: the MCP servers chats may opt into (ARCHITECTURE.md §17).
//! A bearer secret is never shown, only whether there is one. The changes
//! are [`McpServers`](crate::operations::McpServers) operations.

use axum::{Json, extract::State, http::StatusCode};
use chatd_shared::{
    api::{
        CreateMcpServer, ErrorResponse, McpServer, McpServerList, McpServerTool, McpServerTools,
        UpdateMcpServer,
    },
    db::mcp_servers::{McpServerChanges, NewMcpServer},
    ids::McpServerId,
    tools::is_tool_name,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::Admin;
use crate::{
    api::{
        AppState,
        error::{ApiError, ApiResult},
        extract::{ApiJson, ApiPath},
    },
    operations::McpServerOutcome,
};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_mcp_servers, create_mcp_server))
        .routes(routes!(
            get_mcp_server,
            update_mcp_server,
            delete_mcp_server
        ))
        .routes(routes!(list_mcp_server_tools))
}

/// The path of an MCP server.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct McpServerPath {
    /// The server.
    id: McpServerId,
}

const NO_SERVER: &str = "No such MCP server (`not_found`)";
const INVALID: &str = "A field breaks its rule: the name (`invalid_name`), the URL \
    (`invalid_url`), the secret (`invalid_bearer_token`) or a tool name (`invalid_tools`)";

fn check_name(name: &str) -> ApiResult<()> {
    let valid = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && !name.contains("__");
    if !valid {
        return Err(ApiError::unprocessable(
            "invalid_name",
            "an MCP server's name has 1-32 lowercase letters, digits, - and _, starts with a \
             letter or digit, and has no __",
        ));
    }
    Ok(())
}

fn check_url(url: &str) -> ApiResult<()> {
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => Ok(()),
        _ => Err(ApiError::unprocessable(
            "invalid_url",
            "url must be an http:// or https:// URL of the server's streamable HTTP endpoint",
        )),
    }
}

fn check_secret(secret: Option<&str>) -> ApiResult<()> {
    if secret.is_some_and(|s| s.is_empty() || s.chars().any(char::is_control)) {
        return Err(ApiError::unprocessable(
            "invalid_bearer_token",
            "bearer_token must be non-empty text without control characters (null removes it)",
        ));
    }
    Ok(())
}

fn check_tools(tools: Option<&[String]>) -> ApiResult<()> {
    if let Some(bad) = tools.into_iter().flatten().find(|name| !is_tool_name(name)) {
        return Err(ApiError::unprocessable(
            "invalid_tools",
            format!("{bad:?} is not a tool name (1-64 letters, digits, _ or -)"),
        ));
    }
    Ok(())
}

fn outcome(outcome: McpServerOutcome) -> ApiResult<Json<McpServer>> {
    match outcome {
        McpServerOutcome::Done(row) => Ok(Json(McpServer::from(row.as_ref()))),
        McpServerOutcome::NotFound => Err(ApiError::not_found("MCP server")),
        McpServerOutcome::NameTaken(name) => Err(ApiError::conflict(
            "name_taken",
            format!("an MCP server named {name:?} exists"),
        )),
    }
}

/// Every MCP server, by name.
#[utoipa::path(
    get, path = "/admin/mcp-servers", tag = "admin",
    responses((status = 200, body = McpServerList, description = "The servers"))
)]
async fn list_mcp_servers(
    State(state): State<AppState>,
    _: Admin,
) -> ApiResult<Json<McpServerList>> {
    let rows = state.mcp_servers.list().await?;
    Ok(Json(McpServerList {
        mcp_servers: rows.iter().map(McpServer::from).collect(),
    }))
}

/// Register an MCP server (streamable HTTP). Chats opt into it by name;
/// its tools reach their models as `name__tool`.
#[utoipa::path(
    post, path = "/admin/mcp-servers", tag = "admin", request_body = CreateMcpServer,
    responses(
        (status = 201, body = McpServer, description = "Created"),
        (status = 409, body = ErrorResponse, description = "Another server has this name (`name_taken`)"),
        (status = 422, body = ErrorResponse, description = INVALID),
    )
)]
async fn create_mcp_server(
    State(state): State<AppState>,
    _: Admin,
    ApiJson(body): ApiJson<CreateMcpServer>,
) -> ApiResult<(StatusCode, Json<McpServer>)> {
    check_name(&body.name)?;
    check_url(body.url.trim())?;
    check_secret(body.bearer_token.as_deref())?;
    check_tools(body.allowed_tools.as_deref())?;
    check_tools(body.idempotent_tools.as_deref())?;
    let new = NewMcpServer {
        name: &body.name,
        url: body.url.trim(),
        bearer_token: body.bearer_token.as_deref(),
        allowed_tools: body.allowed_tools.as_deref(),
        idempotent_tools: body.idempotent_tools.as_deref().unwrap_or(&[]),
        enabled: body.enabled.unwrap_or(true),
    };
    let created = outcome(state.mcp_servers.create(&new).await?)?;
    Ok((StatusCode::CREATED, created))
}

/// One MCP server.
#[utoipa::path(
    get, path = "/admin/mcp-servers/{id}", tag = "admin", params(McpServerPath),
    responses(
        (status = 200, body = McpServer, description = "The server"),
        (status = 404, body = ErrorResponse, description = NO_SERVER),
    )
)]
async fn get_mcp_server(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<McpServerId>,
) -> ApiResult<Json<McpServer>> {
    match state.mcp_servers.get(id).await? {
        Some(row) => Ok(Json(McpServer::from(&row))),
        None => Err(ApiError::not_found("MCP server")),
    }
}

/// Change an MCP server: fields left out stay; `null` removes the secret,
/// or offers every tool (`allowed_tools`). The name never changes.
#[utoipa::path(
    patch, path = "/admin/mcp-servers/{id}", tag = "admin", params(McpServerPath),
    request_body = UpdateMcpServer,
    responses(
        (status = 200, body = McpServer, description = "The server as changed"),
        (status = 404, body = ErrorResponse, description = NO_SERVER),
        (status = 422, body = ErrorResponse, description = INVALID),
    )
)]
async fn update_mcp_server(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<McpServerId>,
    ApiJson(body): ApiJson<UpdateMcpServer>,
) -> ApiResult<Json<McpServer>> {
    if let Some(url) = &body.url {
        check_url(url.trim())?;
    }
    check_secret(body.bearer_token.as_ref().and_then(|s| s.as_deref()))?;
    check_tools(body.allowed_tools.as_ref().and_then(|t| t.as_deref()))?;
    check_tools(body.idempotent_tools.as_deref())?;
    let changes = McpServerChanges {
        url: body.url.as_deref().map(str::trim),
        bearer_token: body.bearer_token.as_ref().map(|s| s.as_deref()),
        allowed_tools: body.allowed_tools.as_ref().map(|t| t.as_deref()),
        idempotent_tools: body.idempotent_tools.as_deref(),
        enabled: body.enabled,
    };
    outcome(state.mcp_servers.update(id, &changes).await?)
}

/// Remove an MCP server; chats that opted into it lose its tools.
#[utoipa::path(
    delete, path = "/admin/mcp-servers/{id}", tag = "admin", params(McpServerPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorResponse, description = NO_SERVER),
    )
)]
async fn delete_mcp_server(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<McpServerId>,
) -> ApiResult<StatusCode> {
    if state.mcp_servers.delete(id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("MCP server"))
    }
}

/// The tools the server offers now (`allowed_tools` applied), asked afresh:
/// this replica drops its cached session and list of the server first. A
/// server that cannot be asked is no failure of this request: `error` says
/// why.
#[utoipa::path(
    get, path = "/admin/mcp-servers/{id}/tools", tag = "admin", params(McpServerPath),
    responses(
        (status = 200, body = McpServerTools, description = "The server and its tools, or why it could not be asked"),
        (status = 404, body = ErrorResponse, description = NO_SERVER),
    )
)]
async fn list_mcp_server_tools(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<McpServerId>,
) -> ApiResult<Json<McpServerTools>> {
    let Some((server, tools)) = state.mcp.tools_of(id).await? else {
        return Err(ApiError::not_found("MCP server"));
    };
    let (tools, error) = match tools {
        Ok(tools) => (tools, None),
        Err(err) => (Vec::new(), Some(err.to_string())),
    };
    Ok(Json(McpServerTools {
        server: McpServer::from(&server),
        error,
        tools: tools
            .into_iter()
            .map(|tool| McpServerTool {
                name: tool.spec.name,
                tool: tool.tool,
                description: tool.spec.description,
                parameters: tool.spec.parameters,
                idempotent: tool.idempotent,
            })
            .collect(),
    }))
}
