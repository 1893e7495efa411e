//! The small closed vocabularies of the data model: chat status, message
//! role and visibility, user role, provider kind.

use std::{fmt, str::FromStr};

use postgres_types::{FromSql, ToSql};
use serde::{Deserialize, Serialize};

/// Where a chat is in its lifecycle (ARCHITECTURE.md §3).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    ToSql,
    FromSql,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[postgres(name = "chat_status", rename_all = "snake_case")]
pub enum ChatStatus {
    /// Waiting for a replica to claim it.
    Pending,
    /// A replica (`worker_id`) runs it under `generation`.
    Running,
    /// Idle: the last turn finished; the next message starts a turn.
    Waiting,
    /// The last turn failed (`last_error` says why); a new message retries.
    Error,
    /// The model called tools the client runs: the turn goes on once
    /// `POST /chats/{id}/tool-results` answers every pending call (or their
    /// deadline passes). No replica holds it.
    RequiresAction,
    /// A parent blocked in `wait_agent`: the turn goes on once its
    /// subagents finish (or the wait's deadline passes). No replica holds it.
    WaitingOnAgents,
}

impl ChatStatus {
    /// Every value, for exhaustive tests.
    pub const ALL: [ChatStatus; 6] = [
        Self::Pending,
        Self::Running,
        Self::Waiting,
        Self::Error,
        Self::RequiresAction,
        Self::WaitingOnAgents,
    ];

    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Error => "error",
            Self::RequiresAction => "requires_action",
            Self::WaitingOnAgents => "waiting_on_agents",
        }
    }

    /// True while a turn is queued, in progress, or waiting on something
    /// outside the chat (a new message is "busy").
    pub fn is_busy(self) -> bool {
        !self.is_idle()
    }

    /// True when no turn is in progress (`waiting` or `error`): a subagent
    /// in this state has finished.
    pub fn is_idle(self) -> bool {
        matches!(self, Self::Waiting | Self::Error)
    }
}

impl fmt::Display for ChatStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a message is from.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    ToSql,
    FromSql,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[postgres(name = "message_role", rename_all = "snake_case")]
pub enum MessageRole {
    /// Instructions (compaction summaries and the like).
    System,
    /// The human (or the application acting for them).
    User,
    /// The model.
    Assistant,
    /// Results of tool calls.
    Tool,
}

impl MessageRole {
    /// Every value, for exhaustive tests.
    pub const ALL: [MessageRole; 4] = [Self::System, Self::User, Self::Assistant, Self::Tool];
}

/// Who sees a message: the user interface, the model, or both.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    ToSql,
    FromSql,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[postgres(name = "message_visibility", rename_all = "snake_case")]
pub enum MessageVisibility {
    /// Shown to users, never sent to the model.
    User,
    /// Sent to the model, hidden from users (e.g. compaction summaries).
    Model,
    /// The normal case.
    Both,
}

impl MessageVisibility {
    /// Every value, for exhaustive tests.
    pub const ALL: [MessageVisibility; 3] = [Self::User, Self::Model, Self::Both];
}

/// Error for a text column holding a value outside its vocabulary.
#[derive(Debug, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct UnknownValue {
    kind: &'static str,
    value: String,
}

/// Enums stored in `text` columns with a CHECK constraint (not Postgres enum
/// types): they convert through their spelling.
macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident, $kind:literal, { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, for exhaustive tests.
            pub const ALL: &'static [$name] = &[$(Self::$variant),+];

            /// The wire and database spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(UnknownValue { kind: $kind, value: s.to_owned() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ToSql for $name {
            fn to_sql(
                &self,
                ty: &postgres_types::Type,
                out: &mut bytes::BytesMut,
            ) -> Result<postgres_types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
                self.as_str().to_sql(ty, out)
            }
            postgres_types::accepts!(TEXT, VARCHAR);
            postgres_types::to_sql_checked!();
        }

        impl<'a> FromSql<'a> for $name {
            fn from_sql(
                ty: &postgres_types::Type,
                raw: &'a [u8],
            ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
                Ok(<&str as FromSql>::from_sql(ty, raw)?.parse()?)
            }
            postgres_types::accepts!(TEXT, VARCHAR);
        }
    };
}

text_enum!(
    /// What a user may do.
    UserRole, "user role", {
        /// Sees and manages their own chats.
        Member => "member",
        /// Sees everything and manages providers, models, users and tokens.
        Admin => "admin",
    }
);

text_enum!(
    /// Which wire format a provider speaks.
    ProviderKind, "provider kind", {
        /// OpenAI Chat Completions, and every compatible server.
        Openai => "openai",
        /// Anthropic Messages.
        Anthropic => "anthropic",
        /// chatd's in-process deterministic model.
        Mock => "mock",
    }
);

text_enum!(
    /// The period a spend limit counts over (ARCHITECTURE.md §17). Periods start at
    /// midnight UTC: each day, each Monday, the first of each month.
    SpendPeriod, "spend period", {
        /// A calendar day.
        Day => "day",
        /// A week from Monday.
        Week => "week",
        /// A calendar month.
        Month => "month",
    }
);
