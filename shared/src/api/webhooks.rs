//! Webhooks and their deliveries as clients see them (ARCHITECTURE.md §17).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    db,
    ids::{ChatId, DeliveryId, WebhookId},
};

/// What a webhook can hear of: a turn's end, by how the chat was left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum WebhookEvent {
    /// The turn finished (or was interrupted): the chat is `waiting`.
    #[serde(rename = "turn.completed")]
    TurnCompleted,
    /// The turn failed: the chat is `error`.
    #[serde(rename = "turn.failed")]
    TurnFailed,
    /// The turn waits for the client's tool results: `requires_action`.
    #[serde(rename = "turn.requires_action")]
    TurnRequiresAction,
}

impl WebhookEvent {
    /// The event's name, as stored, sent and documented.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TurnCompleted => "turn.completed",
            Self::TurnFailed => "turn.failed",
            Self::TurnRequiresAction => "turn.requires_action",
        }
    }
}

/// `POST /webhooks`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where to POST deliveries: an `http` or `https` URL whose host
    /// resolves, and not to a private, loopback or link-local address
    /// (unless the deployment allows them).
    #[schema(max_length = 2048, pattern = r"^[hH][tT][tT][pP][sS]?://[^\u0000]*$")]
    pub url: String,
    /// Events to deliver (at least one).
    #[schema(min_items = 1)]
    pub events: Vec<WebhookEvent>,
    /// Only this chat's turns (one of the caller's chats); every chat of the
    /// caller's when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<ChatId>,
}

/// A webhook (its secret is shown only once, in [`WebhookCreated`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Webhook {
    /// Its id.
    pub id: WebhookId,
    /// Where deliveries go.
    pub url: String,
    /// The events it gets.
    pub events: Vec<String>,
    /// The one chat it is about, if any.
    pub chat_id: Option<ChatId>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

impl From<&db::webhooks::Webhook> for Webhook {
    fn from(row: &db::webhooks::Webhook) -> Self {
        Self {
            id: row.id,
            url: row.url.clone(),
            events: row.events.clone(),
            chat_id: row.chat_id,
            created_at: row.created_at,
        }
    }
}

/// A webhook just made, with the secret that signs its deliveries: shown
/// this once, never again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookCreated {
    /// The webhook.
    #[serde(flatten)]
    pub webhook: Webhook,
    /// The signing secret (`whsec_…`).
    pub secret: String,
}

/// `GET /webhooks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookList {
    /// The caller's webhooks, oldest first.
    pub webhooks: Vec<Webhook>,
}

/// One delivery of an event to a webhook, and how its attempts went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Delivery {
    /// The delivery id (the `Chatd-Delivery` header and the body's `id`).
    pub id: DeliveryId,
    /// The event.
    pub event: String,
    /// The body POSTed on every attempt.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// `pending` (being tried), `delivered` or `failed` (gave up).
    pub status: String,
    /// Attempts so far.
    pub attempts: i32,
    /// When the turn ended.
    pub created_at: DateTime<Utc>,
    /// When the last attempt began.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The receiver's HTTP status at the last attempt, if it answered.
    pub last_status: Option<i32>,
    /// What went wrong at the last attempt.
    pub last_error: Option<String>,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the receiver took it (2xx).
    pub delivered_at: Option<DateTime<Utc>>,
}

impl From<&db::webhook_deliveries::Delivery> for Delivery {
    fn from(row: &db::webhook_deliveries::Delivery) -> Self {
        Self {
            id: row.id,
            event: row.event.clone(),
            payload: row.payload.clone(),
            status: row.status.clone(),
            attempts: row.attempts,
            created_at: row.created_at,
            last_attempt_at: row.last_attempt_at,
            last_status: row.last_status,
            last_error: row.last_error.clone(),
            next_attempt_at: row.next_attempt_at,
            delivered_at: row.delivered_at,
        }
    }
}

/// `GET /webhooks/{id}/deliveries`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryList {
    /// The most recent deliveries, newest first.
    pub deliveries: Vec<Delivery>,
}
