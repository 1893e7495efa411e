//! `/webhooks`: a user's turn-end webhooks and their deliveries (ARCHITECTURE.md
//! §17). How deliveries are signed is in [`crate::webhooks::signature`].

use axum::{Json, extract::State, http::StatusCode};
use chatd_shared::{
    api::{self, CreateWebhook, DeliveryList, ErrorResponse, WebhookCreated, WebhookList},
    ids::WebhookId,
};
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult},
    extract::{ApiJson, ApiPath, ApiQuery},
};
use crate::webhooks::{CreateWebhookOutcome, NewWebhookRequest};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(get_webhook, delete_webhook))
        .routes(routes!(list_deliveries))
}

/// Longest webhook URL.
const MAX_URL: usize = 2048;

/// Make a webhook. Each turn end of the caller's chats (or of `chat_id`)
/// whose event it wants is POSTed to `url` at least once, signed with the
/// secret in the answer, which is shown this once: `Chatd-Signature: v1=`
/// HMAC-SHA256(secret, `{Chatd-Timestamp}.{body}`) in hex; refuse
/// timestamps more than 5 minutes off, drop repeated `Chatd-Delivery` ids.
#[utoipa::path(
    post, path = "/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses(
        (status = 201, body = WebhookCreated, description = "Made; the secret is shown only here"),
        (status = 422, body = ErrorResponse, description = "No event, a chat that is not yours, or a URL that may not be a target: not http(s), unresolvable, or a private, loopback or link-local address (`invalid_events`, `invalid_chat`, `invalid_url`)"),
    )
)]
async fn create_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<WebhookCreated>)> {
    if body.url.chars().count() > MAX_URL {
        return Err(ApiError::unprocessable(
            "invalid_url",
            format!("a webhook URL has at most {MAX_URL} characters"),
        ));
    }
    let request = NewWebhookRequest {
        url: &body.url,
        events: &body.events,
        chat_id: body.chat_id,
    };
    match state.webhooks.create(caller.access(), &request).await? {
        CreateWebhookOutcome::Created(webhook, secret) => Ok((
            StatusCode::CREATED,
            Json(WebhookCreated {
                webhook: api::Webhook::from(webhook.as_ref()),
                secret,
            }),
        )),
        CreateWebhookOutcome::Target(refused) => {
            Err(ApiError::unprocessable("invalid_url", refused.to_string()))
        }
        CreateWebhookOutcome::NoEvents => Err(ApiError::unprocessable(
            "invalid_events",
            "name at least one event",
        )),
        CreateWebhookOutcome::ChatNotFound => Err(ApiError::unprocessable(
            "invalid_chat",
            "chat_id names no chat of yours",
        )),
    }
}

/// The caller's webhooks, oldest first (without their secrets).
#[utoipa::path(
    get, path = "/webhooks", tag = "webhooks",
    responses((status = 200, body = WebhookList, description = "The caller's webhooks"))
)]
async fn list_webhooks(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<WebhookList>> {
    let webhooks = state.webhooks.list(caller.access()).await?;
    Ok(Json(WebhookList {
        webhooks: webhooks.iter().map(api::Webhook::from).collect(),
    }))
}

/// One of the caller's webhooks.
#[utoipa::path(
    get, path = "/webhooks/{id}", tag = "webhooks", params(("id" = WebhookId, Path)),
    responses(
        (status = 200, body = api::Webhook, description = "The webhook"),
        (status = 404, body = ErrorResponse, description = "No such webhook of yours"),
    )
)]
async fn get_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<WebhookId>,
) -> ApiResult<Json<api::Webhook>> {
    match state.webhooks.get(caller.access(), id).await? {
        Some(webhook) => Ok(Json(api::Webhook::from(&webhook))),
        None => Err(ApiError::not_found("webhook")),
    }
}

/// Delete a webhook; its deliveries not yet made are dropped.
#[utoipa::path(
    delete, path = "/webhooks/{id}", tag = "webhooks", params(("id" = WebhookId, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorResponse, description = "No such webhook of yours"),
    )
)]
async fn delete_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<WebhookId>,
) -> ApiResult<StatusCode> {
    if state.webhooks.delete(caller.access(), id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("webhook"))
    }
}

/// Query of `GET /webhooks/{id}/deliveries`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DeliveriesQuery {
    /// How many, 1–200 (default 50).
    #[schema(nullable = false, minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

/// A webhook's most recent deliveries, newest first, with how their
/// attempts went (count, last status and error, next attempt).
#[utoipa::path(
    get, path = "/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = WebhookId, Path), ("query" = inline(Option<DeliveriesQuery>), Query, style = Form, explode)),
    responses(
        (status = 200, body = DeliveryList, description = "The most recent deliveries"),
        (status = 404, body = ErrorResponse, description = "No such webhook of yours"),
    )
)]
async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<WebhookId>,
    ApiQuery(query): ApiQuery<DeliveriesQuery>,
) -> ApiResult<Json<DeliveryList>> {
    let limit = super::request::page_size(query.limit)?;
    match state
        .webhooks
        .deliveries(caller.access(), id, limit)
        .await?
    {
        Some(deliveries) => Ok(Json(DeliveryList {
            deliveries: deliveries.iter().map(api::Delivery::from).collect(),
        })),
        None => Err(ApiError::not_found("webhook")),
    }
}
