//! The operators' reads (ARCHITECTURE.md §11): why a chat is not running and how
//! loaded each replica is. Reads only, one indexed statement each
//! (`db::diagnosis`); nothing is announced.

use chatd_shared::{
    db::{DbError, Pool, diagnosis},
    ids::ChatId,
};

/// The diagnosis reads, for admin handlers.
#[derive(Clone)]
pub struct Diagnosis {
    pool: Pool,
}

impl Diagnosis {
    /// Reads through `pool`.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Status, queue position, worker lease, retries of chat `id`; `None`
    /// when there is no such chat.
    pub async fn chat(&self, id: ChatId) -> Result<Option<diagnosis::ChatDiagnosis>, DbError> {
        let client = self.pool.get().await?;
        diagnosis::chat(&client, id).await
    }

    /// Every registered replica with its lease and running chats.
    pub async fn replicas(&self) -> Result<Vec<diagnosis::ReplicaLoad>, DbError> {
        let client = self.pool.get().await?;
        diagnosis::replicas(&client).await
    }
}
