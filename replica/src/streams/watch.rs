//! The chat-list stream (`GET /chats/watch`): one owner's notices, each
//! turned into the chat as it is now.

use chatd_shared::{
    api::{self, WatchEvent, WatchKind},
    db::{DbError, Pool, chats},
    pubsub::{Delivery, OwnerEventKind, OwnerNotice, Subscription},
};

use super::Next;

/// One watcher of one owner's chat list.
pub struct ChatListWatcher {
    pool: Pool,
    notices: Subscription<OwnerNotice>,
}

impl ChatListWatcher {
    pub(super) fn new(pool: Pool, notices: Subscription<OwnerNotice>) -> Self {
        Self { pool, notices }
    }

    async fn event(&self, notice: OwnerNotice) -> Result<Option<WatchEvent>, DbError> {
        let kind = match notice.kind {
            OwnerEventKind::Deleted => {
                return Ok(Some(WatchEvent::Deleted {
                    chat_id: notice.chat_id,
                }));
            }
            OwnerEventKind::Created => WatchKind::Created,
            OwnerEventKind::Status => WatchKind::Status,
            OwnerEventKind::Title => WatchKind::Title,
            OwnerEventKind::Archived => WatchKind::Archived,
        };
        let client = self.pool.get().await?;
        // Gone since the notice: its deletion notice follows.
        Ok(chats::get_with_queue(&client, notice.chat_id)
            .await?
            .map(|(chat, queued)| WatchEvent::Chat {
                kind,
                chat: api::Chat::from_row(&chat, queued),
            }))
    }

    /// The next thing to put on the wire.
    pub async fn next_event(&mut self) -> Next<WatchEvent> {
        loop {
            match self.notices.recv().await {
                Some(Delivery::Notice(notice)) => match self.event(notice).await {
                    Ok(Some(event)) => return Next::Event(Box::new(event), None),
                    Ok(None) => {}
                    Err(_) => return Next::Event(Box::new(WatchEvent::Refresh), None),
                },
                // Lost notices (reconnect, or this watcher fell behind):
                // the client re-reads the list.
                Some(Delivery::Resync) => return Next::Event(Box::new(WatchEvent::Refresh), None),
                None => return Next::Reconnect("replica_shutting_down"),
            }
        }
    }
}
