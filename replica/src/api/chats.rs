//! `/chats`: create, list, read, change, delete, interrupt.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use chatd_shared::{
    api::{self, ChatList, CreateChat, UpdateChat, content::user_content},
    db::{
        chats::{self, Interrupted, NewChat},
        model_configs,
    },
    ids::{ChatId, ModelConfigId},
    pubsub::{ChatEvent, OwnerEventKind},
    status::ChatStatus,
};
use serde::Deserialize;
use serde_json::Value;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult},
    extract::{ApiJson, ApiPath, ApiQuery},
    messages::{content_error, idempotency_key, notify_messages},
};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_chat, list_chats))
        .routes(routes!(get_chat, update_chat, delete_chat))
        .routes(routes!(interrupt_chat))
}

/// Longest title.
const MAX_TITLE: usize = 200;
/// Longest system prompt (characters).
const MAX_SYSTEM_PROMPT: usize = 100_000;
/// Largest labels object (bytes of JSON).
const MAX_LABELS: usize = 16 * 1024;

/// The chat `id` if the caller may see it; 404 for missing and not-yours alike.
pub(super) async fn visible_chat(
    state: &AppState,
    caller: &Caller,
    id: ChatId,
) -> ApiResult<chats::ChatWithQueue> {
    let client = state.pool.get().await?;
    match chats::get_with_queue(&client, id).await? {
        Some((chat, queued)) if caller.may_see(&chat) => Ok((chat, queued)),
        _ => Err(ApiError::not_found("chat")),
    }
}

/// Checks a model the caller picked (or finds the default): 422 when unusable.
pub(super) async fn usable_model(
    state: &AppState,
    id: Option<ModelConfigId>,
) -> ApiResult<ModelConfigId> {
    let client = state.pool.get().await?;
    let model = match id {
        Some(id) => model_configs::get(&client, id).await?.ok_or_else(|| {
            ApiError::unprocessable("invalid_model", format!("model config {id} does not exist"))
        })?,
        None => model_configs::get_default(&client).await?.ok_or_else(|| {
            ApiError::unprocessable(
                "no_model",
                "no default model is configured; pass model_config_id or ask an admin",
            )
        })?,
    };
    if !model.enabled || model.deleted_at.is_some() {
        return Err(ApiError::unprocessable(
            "invalid_model",
            format!("model {} is not available", model.display_name),
        ));
    }
    Ok(model.id)
}

fn check_labels(labels: &Value) -> ApiResult<()> {
    if !labels.is_object() {
        return Err(ApiError::unprocessable(
            "invalid_labels",
            "labels must be a JSON object",
        ));
    }
    if labels.to_string().len() > MAX_LABELS {
        return Err(ApiError::unprocessable(
            "invalid_labels",
            format!("labels must stay under {MAX_LABELS} bytes"),
        ));
    }
    Ok(())
}

fn check_title(title: &str) -> ApiResult<()> {
    if title.chars().count() > MAX_TITLE {
        return Err(ApiError::unprocessable(
            "invalid_title",
            format!("a title has at most {MAX_TITLE} characters"),
        ));
    }
    Ok(())
}

/// Create a chat; with `content` or `text` it starts running at once.
#[utoipa::path(
    post, path = "/chats", tag = "chats",
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays return the original chat (200)")),
    request_body = CreateChat,
    responses(
        (status = 201, body = api::Chat, description = "Created"),
        (status = 200, body = api::Chat, description = "Replay of an idempotency key"),
        (status = 400, body = api::ErrorResponse), (status = 401, body = api::ErrorResponse),
        (status = 422, body = api::ErrorResponse),
    )
)]
async fn create_chat(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateChat>,
) -> ApiResult<(StatusCode, Json<api::Chat>)> {
    let key = idempotency_key(&headers)?;
    let first = match (&body.content, &body.text) {
        (None, None) => None,
        _ => Some(user_content(body.content, body.text).map_err(content_error)?),
    };
    let title = body.title.unwrap_or_default();
    check_title(&title)?;
    if body
        .system_prompt
        .as_ref()
        .is_some_and(|p| p.chars().count() > MAX_SYSTEM_PROMPT)
    {
        return Err(ApiError::unprocessable(
            "invalid_system_prompt",
            format!("a system prompt has at most {MAX_SYSTEM_PROMPT} characters"),
        ));
    }
    let labels = body
        .labels
        .unwrap_or_else(|| Value::Object(Default::default()));
    check_labels(&labels)?;
    let model = usable_model(&state, body.model_config_id).await?;
    let new = NewChat {
        id: ChatId::new_v7(),
        owner_id: caller.user_id,
        parent_chat_id: None,
        root_chat_id: None,
        title: &title,
        status: ChatStatus::Waiting,
        model_config_id: Some(model),
        system_prompt: body.system_prompt.as_deref(),
        labels: &labels,
    };
    let created = {
        let client = state.pool.get().await?;
        chats::create(&client, &new, first.as_deref(), key.as_deref()).await?
    };
    if created.replayed {
        return Ok((StatusCode::OK, Json(api::Chat::from_row(&created.chat, 0))));
    }
    let chat = &created.chat;
    let _ = state
        .pubsub
        .publish_owner(chat.owner_id, chat.id, OwnerEventKind::Created);
    if let Some(message) = &created.first_message {
        notify_messages(&state, chat.id, std::slice::from_ref(message));
        state.pubsub.announce_pending(&[chats::BecamePending {
            chat_id: chat.id,
            owner_id: chat.owner_id,
            generation: chat.generation,
        }]);
    }
    Ok((StatusCode::CREATED, Json(api::Chat::from_row(chat, 0))))
}

/// Query of `GET /chats`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Page size, 1–200 (default 50).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// List archived chats instead (default false).
    archived: Option<bool>,
}

/// Page size from a `limit` parameter (1–200, default 50).
pub(super) fn page_size(limit: Option<i64>) -> ApiResult<i64> {
    match limit.unwrap_or(50) {
        limit @ 1..=200 => Ok(limit),
        other => Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and 200, not {other}"),
        )),
    }
}

/// The caller's chats, newest first (admins: everyone's).
#[utoipa::path(
    get, path = "/chats", tag = "chats", params(ListQuery),
    responses((status = 200, body = ChatList), (status = 400, body = api::ErrorResponse), (status = 401, body = api::ErrorResponse))
)]
async fn list_chats(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<ChatList>> {
    let limit = page_size(query.limit)?;
    let before = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(cursor) => Some(cursor.parse::<ChatId>().map_err(|_| {
            ApiError::bad_request("invalid_query", "cursor is not a cursor this API gave out")
        })?),
    };
    let owner = (!caller.is_admin()).then_some(caller.user_id);
    let client = state.pool.get().await?;
    let rows = chats::list(
        &client,
        owner,
        query.archived.unwrap_or(false),
        before,
        limit + 1,
    )
    .await?;
    let has_more = rows.len() as i64 > limit;
    let chats: Vec<api::Chat> = rows
        .iter()
        .take(limit as usize)
        .map(|(chat, queued)| api::Chat::from_row(chat, *queued))
        .collect();
    let next_cursor = has_more
        .then(|| chats.last().map(|chat| chat.id.to_string()))
        .flatten();
    Ok(Json(ChatList { chats, next_cursor }))
}

/// One chat.
#[utoipa::path(
    get, path = "/chats/{id}", tag = "chats", params(("id" = ChatId, Path)),
    responses((status = 200, body = api::Chat), (status = 404, body = api::ErrorResponse))
)]
async fn get_chat(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ChatId>,
) -> ApiResult<Json<api::Chat>> {
    let (chat, queued) = visible_chat(&state, &caller, id).await?;
    Ok(Json(api::Chat::from_row(&chat, queued)))
}

/// Change the title, labels, or archive / restore.
#[utoipa::path(
    patch, path = "/chats/{id}", tag = "chats", params(("id" = ChatId, Path)), request_body = UpdateChat,
    responses((status = 200, body = api::Chat), (status = 404, body = api::ErrorResponse), (status = 422, body = api::ErrorResponse))
)]
async fn update_chat(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ChatId>,
    ApiJson(body): ApiJson<UpdateChat>,
) -> ApiResult<Json<api::Chat>> {
    if let Some(title) = &body.title {
        check_title(title)?;
    }
    if let Some(labels) = &body.labels {
        check_labels(labels)?;
    }
    let (before, queued) = visible_chat(&state, &caller, id).await?;
    let client = state.pool.get().await?;
    let chat = chats::update(
        &client,
        id,
        body.title.as_deref(),
        body.archived,
        body.labels.as_ref(),
    )
    .await?
    .ok_or_else(|| ApiError::not_found("chat"))?;
    if body
        .title
        .as_ref()
        .is_some_and(|title| *title != before.title)
    {
        let _ = state.pubsub.publish_chat(id, ChatEvent::Title);
        let _ = state
            .pubsub
            .publish_owner(chat.owner_id, id, OwnerEventKind::Title);
    }
    if body
        .archived
        .is_some_and(|archived| archived != before.archived)
    {
        let _ = state
            .pubsub
            .publish_owner(chat.owner_id, id, OwnerEventKind::Archived);
        if !chat.archived && chat.status == ChatStatus::Pending {
            // Archived pending chats are not acquired; restored, they wait no longer.
            state.pubsub.publish_wake();
        }
    }
    Ok(Json(api::Chat::from_row(&chat, queued)))
}

/// Delete a chat with its messages and queue. A turn in progress stops.
#[utoipa::path(
    delete, path = "/chats/{id}", tag = "chats", params(("id" = ChatId, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, body = api::ErrorResponse))
)]
async fn delete_chat(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ChatId>,
) -> ApiResult<StatusCode> {
    let (chat, _) = visible_chat(&state, &caller, id).await?;
    let client = state.pool.get().await?;
    if !chats::delete(&client, id).await? {
        return Err(ApiError::not_found("chat"));
    }
    let _ = state
        .pubsub
        .publish_owner(chat.owner_id, id, OwnerEventKind::Deleted);
    let _ = state.pubsub.publish_chat(id, ChatEvent::Refresh);
    Ok(StatusCode::NO_CONTENT)
}

/// Stop the turn in progress (its partial output is kept). On a pending
/// chat the turn never starts (the next queued message runs instead, if any).
#[utoipa::path(
    post, path = "/chats/{id}/interrupt", tag = "chats", params(("id" = ChatId, Path)),
    responses((status = 202, body = api::Chat), (status = 404, body = api::ErrorResponse))
)]
async fn interrupt_chat(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ChatId>,
) -> ApiResult<(StatusCode, Json<api::Chat>)> {
    let (_, queued) = visible_chat(&state, &caller, id).await?;
    let (outcome, chat) = interrupt(&state, id).await?;
    let queued = if matches!(outcome, Interrupted::PendingWithQueue(_)) {
        queued - 1
    } else {
        queued
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(api::Chat::from_row(&chat, queued.max(0))),
    ))
}

/// Requests an interrupt and announces what it did.
pub(super) async fn interrupt(
    state: &AppState,
    id: ChatId,
) -> ApiResult<(Interrupted, chats::Chat)> {
    let mut client = state.pool.get().await?;
    let (outcome, chat) = chats::request_interrupt(&mut client, id)
        .await?
        .ok_or_else(|| ApiError::not_found("chat"))?;
    drop(client);
    match &outcome {
        Interrupted::Running { generation } => {
            let _ = state.pubsub.publish_chat(
                id,
                ChatEvent::Interrupt {
                    generation: *generation,
                },
            );
        }
        Interrupted::WasPending => {
            let status = ChatEvent::Status {
                status: chat.status,
                generation: chat.generation,
                worker_id: None,
            };
            let _ = state.pubsub.publish_chat(id, status);
            let _ = state
                .pubsub
                .publish_owner(chat.owner_id, id, OwnerEventKind::Status);
        }
        Interrupted::PendingWithQueue(message) => {
            notify_messages(state, id, std::slice::from_ref(message));
            let _ = state.pubsub.publish_chat(id, ChatEvent::Queue);
        }
        Interrupted::Idle => {}
    }
    Ok((outcome, chat))
}
