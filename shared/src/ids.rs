//! Typed identifiers. A `ChatId` cannot be passed where a `UserId` is
//! expected, and each maps to its column type through `postgres-types`.

use std::{fmt, str::FromStr};

use postgres_types::{FromSql, ToSql};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSql, FromSql,
            utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[postgres(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new random (v4) id.
            pub fn new_random() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

macro_rules! serial_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSql, FromSql,
            utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[postgres(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map(Self)
            }
        }
    };
}

uuid_id!(
    /// A chat. Chats get UUIDv7 ids, so ids sort by creation time.
    ChatId
);
uuid_id!(
    /// A user.
    UserId
);
uuid_id!(
    /// A replica process; the `worker_id` of the chats it runs.
    ReplicaId
);
uuid_id!(
    /// An API token (not the secret: the row).
    TokenId
);
uuid_id!(
    /// An LLM provider.
    ProviderId
);
uuid_id!(
    /// A model configuration (a model of a provider, with its limits and prices).
    ModelConfigId
);
uuid_id!(
    /// An uploaded file (an attachment).
    FileId
);
uuid_id!(
    /// A user's webhook subscription.
    WebhookId
);
uuid_id!(
    /// One webhook delivery (an outbox row): the id receivers de-duplicate by.
    DeliveryId
);
uuid_id!(
    /// An MCP server an admin registered.
    McpServerId
);

impl ReplicaId {
    /// The key of the session-level advisory lock this replica holds on its
    /// listener session for its whole life: the id's first 8 bytes. A peer
    /// that can take the lock knows the session is gone (ARCHITECTURE.md §4).
    pub fn lock_key(self) -> i64 {
        let bytes = self.0.as_bytes();
        i64::from_be_bytes([
            bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
        ])
    }
}

impl ChatId {
    /// A new time-ordered (v7) chat id.
    pub fn new_v7() -> Self {
        Self(Uuid::now_v7())
    }
}

serial_id!(
    /// A committed chat message. Message order is id order, always.
    MessageId
);
serial_id!(
    /// A message waiting in a chat's queue; FIFO by id.
    QueuedMessageId
);

/// The fencing token of a chat: +1 on every change of ownership. A worker's
/// writes are conditional on the generation it acquired.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    ToSql,
    FromSql,
    utoipa::ToSchema,
)]
#[serde(transparent)]
#[postgres(transparent)]
pub struct Generation(pub i64);

impl Generation {
    /// The generation after this one.
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
