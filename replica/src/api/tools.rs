//! `POST /chats/{id}/tool-results` (a client's results for the calls a
//! `requires_action` chat waits for), and the checks of the tools a chat
//! declares (MCP servers it opts into, tools its client runs).

use axum::{Json, extract::State, http::StatusCode};
use chatd_shared::{
    api::{self, ToolResults, ToolResultsStored},
    db::tool_calls::{ClientResult, Submitted},
    ids::ChatId,
    tools::{ClientTool, check_client_tools},
};
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult},
    extract::{ApiJson, ApiPath},
};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(post_tool_results))
}

/// Checks the tools a chat declares: client tools well formed and not
/// named like a built-in tool, MCP servers that exist (422 otherwise).
pub(super) async fn check_chat_tools(
    state: &AppState,
    mcp_servers: Option<&[String]>,
    client_tools: Option<&[ClientTool]>,
) -> ApiResult<()> {
    if let Some(tools) = client_tools {
        check_client_tools(tools)
            .map_err(|message| ApiError::unprocessable("invalid_client_tools", message))?;
        if let Some(tool) = tools
            .iter()
            .find(|tool| crate::tools::is_reserved(&tool.name))
        {
            return Err(ApiError::unprocessable(
                "invalid_client_tools",
                format!("{:?} is the name of a built-in tool", tool.name),
            ));
        }
    }
    if let Some(names) = mcp_servers {
        let unknown = state.ops.unknown_mcp_servers(names).await?;
        if !unknown.is_empty() {
            return Err(ApiError::unprocessable(
                "unknown_mcp_server",
                format!("no MCP server is named {}", unknown.join(", ")),
            )
            .with_details(json!({ "unknown": unknown })));
        }
    }
    Ok(())
}

/// Answer the calls a `requires_action` chat waits for: one result per
/// pending call, each exactly once, before the deadline. The chat then
/// goes `pending` and its next step sees the results.
#[utoipa::path(
    post, path = "/chats/{id}/tool-results", tag = "chats", params(("id" = ChatId, Path)),
    request_body = ToolResults,
    responses(
        (status = 202, body = ToolResultsStored, description = "Stored; the turn goes on"),
        (status = 404, body = api::ErrorResponse, description = "No such chat (`not_found`)"),
        (status = 409, body = api::ErrorResponse, description = "Not every pending call answered exactly once \
            (`missing_tool_results`, `duplicate_tool_results`), a call answered already or past its deadline \
            (`tool_call_answered`, `deadline_passed`), or the chat waits for no result (`not_requires_action`)"),
        (status = 422, body = api::ErrorResponse, description = "An id names no client call of the chat (`unknown_tool_call`)"),
    )
)]
async fn post_tool_results(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ChatId>,
    ApiJson(body): ApiJson<ToolResults>,
) -> ApiResult<(StatusCode, Json<ToolResultsStored>)> {
    let results: Vec<ClientResult> = body
        .results
        .into_iter()
        .map(|result| ClientResult {
            tool_call_id: result.tool_call_id,
            result: result.result,
            is_error: result.is_error,
        })
        .collect();
    let ids = |ids: Vec<String>| json!({ "tool_call_ids": ids });
    match state
        .ops
        .submit_tool_results(caller.access(), id, &results)
        .await?
    {
        Submitted::Accepted { messages, .. } => Ok((
            StatusCode::ACCEPTED,
            Json(ToolResultsStored {
                messages: messages.iter().map(api::Message::from).collect(),
            }),
        )),
        Submitted::NotFound => Err(ApiError::not_found("chat")),
        Submitted::Unknown(unknown) => Err(ApiError::unprocessable(
            "unknown_tool_call",
            format!(
                "no client tool call of this chat has the id {}",
                unknown.join(", ")
            ),
        )
        .with_details(ids(unknown))),
        Submitted::Duplicate(twice) => Err(ApiError::conflict(
            "duplicate_tool_results",
            format!("more than one result for {}", twice.join(", ")),
        )
        .with_details(ids(twice))),
        Submitted::AlreadyAnswered(answered) => Err(ApiError::conflict(
            "tool_call_answered",
            format!(
                "{} already has a result (posted before, or an error result after its deadline or an interrupt)",
                answered.join(", ")
            ),
        )
        .with_details(ids(answered))),
        Submitted::NotWaiting(status) => Err(ApiError::conflict(
            "not_requires_action",
            format!("the chat waits for no tool result (it is {status})"),
        )),
        Submitted::DeadlinePassed(deadline) => Err(ApiError::conflict(
            "deadline_passed",
            format!("the deadline for these results passed at {deadline}; the calls get error results"),
        )),
        Submitted::Missing(missing) => Err(ApiError::conflict(
            "missing_tool_results",
            format!(
                "every pending call needs a result; missing: {}",
                missing.join(", ")
            ),
        )
        .with_details(ids(missing))),
    }
}
