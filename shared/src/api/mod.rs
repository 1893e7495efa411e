//! The public API's JSON shapes (DESIGN §9), shared by the server, the typed
//! client and the load test.

mod admin;
mod chat;
pub mod content;
mod error;
mod message;
mod prompts;
mod spend;
mod usage;
mod watch;

pub use admin::{
    CreateModelConfig, CreateProvider, CreateToken, CreateUser, Model, ModelConfig, ModelList,
    Provider, Token, TokenCreated, UpdateModelConfig, UpdateProvider, User,
};
pub use chat::{Chat, ChatList, CreateChat, UpdateChat};
pub use error::{ApiErrorBody, ErrorResponse};
pub use message::{
    BusyBehavior, EditMessage, Message, MessageList, QueueList, QueuedMessage, SendMessage,
    SendResult,
};
pub use prompts::{CustomPrompt, MAX_CUSTOM_PROMPT, MAX_DEPLOYMENT_PROMPT, SystemPrompt};
pub use spend::{Spend, SpendLimitExceeded, SpendLimits, UserSpendLimit, UserSpendLimitSet};
pub use usage::{UsageReport, UsageRow};
pub use watch::{WatchEvent, WatchKind};
