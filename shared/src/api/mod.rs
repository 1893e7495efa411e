//! The public API's JSON shapes (DESIGN §9), shared by the server, the typed
//! client and the load test.

mod admin;
mod chat;
pub mod content;
mod error;
mod files;
mod message;
mod watch;
mod webhooks;

pub use admin::{
    CreateModelConfig, CreateProvider, CreateToken, CreateUser, Model, ModelConfig, ModelList,
    Provider, Token, TokenCreated, UpdateModelConfig, UpdateProvider, User,
};
pub use chat::{Chat, ChatList, CreateChat, UpdateChat};
pub use error::{ApiErrorBody, ErrorResponse};
pub use files::File;
pub use message::{
    BusyBehavior, EditMessage, Message, MessageList, QueueList, QueuedMessage, SendMessage,
    SendResult,
};
pub use watch::{WatchEvent, WatchKind};
pub use webhooks::{
    CreateWebhook, Delivery, DeliveryList, WEBHOOK_EVENTS, Webhook, WebhookCreated, WebhookList,
};
