//! Context compaction's write as a chat operation (ARCHITECTURE.md §17): the summary
//! stored and the messages it replaces marked, fenced like every write of a
//! run, then a `compaction` event for clients.

use chatd_shared::db::{
    DbError,
    compaction::{self, Compacted, Summary},
    lifecycle::Fence,
};

use super::{Change, ChatOps};

impl ChatOps {
    /// Stores `summary` of `fence`'s chat and marks what it replaces (see
    /// [`compaction::compact`]). Announces the compaction when it stored
    /// one (the summary itself is hidden from clients: no message event).
    pub async fn compact(
        &self,
        fence: &Fence,
        summary: &Summary<'_>,
    ) -> Result<Compacted, DbError> {
        let compacted = {
            let client = self.pool.get().await?;
            compaction::compact(&client, fence, summary).await?
        };
        if let Compacted::Stored { through, .. } = &compacted {
            self.announce([Change::Compaction {
                chat_id: fence.chat_id,
                through: *through,
            }]);
        }
        Ok(compacted)
    }
}
