//! New messages for the stream feeds, read for many chats in one statement.
//!
//! A feed reads a chat's new messages after each message notice
//! ([`super::feed`]). Notices arrive in bursts (one `NOTIFY` statement
//! carries the events of many chats), and a read per chat made the
//! catch-up reads the most frequent statement of a turn (two per turn in
//! the bench: the user message on the replica that took it, the reply on
//! the replicas that follow a run elsewhere). Here the feeds' reads queue
//! up and one reader serves every read queued so far with one statement
//! ([`messages::visible_after_each`]); reads that arrive while it runs make
//! the next batch. No read waits for a timer: a lone read is served at
//! once, as before, and a burst costs one round trip.
//!
//! The reader is a task that exists only while reads are queued, so there
//! is nothing to stop at shutdown.

use std::sync::{Arc, Mutex};

use chatd_shared::{
    db::{DbError, Pool, messages, messages::Message},
    ids::{ChatId, MessageId},
    sync::lock,
};
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Chats read per statement at most.
const MAX_BATCH: usize = 256;

/// What one read answers: a failed statement fails every read of its batch,
/// hence shared.
pub(super) type CatchUpResult = Result<Vec<Message>, Arc<DbError>>;

/// The queue of the feeds' reads, and its reader.
pub(super) struct CatchUp {
    pool: Pool,
    tracker: TaskTracker,
    /// The reader runs in this span (the replica's), not a feed's.
    span: tracing::Span,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    reads: Vec<Read>,
    /// A reader task is running (and will take `reads` before it exits).
    reading: bool,
}

struct Read {
    chat_id: ChatId,
    after: MessageId,
    reply: oneshot::Sender<CatchUpResult>,
}

impl CatchUp {
    /// Reads go to `pool`; the reader runs on `tracker` in the current span.
    pub(super) fn new(pool: Pool, tracker: TaskTracker) -> Arc<Self> {
        Arc::new(Self {
            pool,
            tracker,
            span: tracing::Span::current(),
            queue: Mutex::new(Queue::default()),
        })
    }

    /// What users see of `chat_id` after `after`, ascending, at most
    /// [`super::feed::READ_BATCH`] messages.
    pub(super) async fn read(self: &Arc<Self>, chat_id: ChatId, after: MessageId) -> CatchUpResult {
        let (reply, answer) = oneshot::channel();
        let start_reader = {
            let mut queue = lock(&self.queue);
            queue.reads.push(Read {
                chat_id,
                after,
                reply,
            });
            !std::mem::replace(&mut queue.reading, true)
        };
        if start_reader {
            let this = self.clone();
            self.tracker
                .spawn(this.serve_queue().instrument(self.span.clone()));
        }
        match answer.await {
            Ok(result) => result,
            // The reader only drops a reply by answering it; a task that
            // died answers nothing. Read alone rather than hang.
            Err(_) => self.read_alone(chat_id, after).await,
        }
    }

    async fn read_alone(&self, chat_id: ChatId, after: MessageId) -> CatchUpResult {
        let client = self.pool.get().await.map_err(DbError::from)?;
        Ok(messages::visible_after(&client, chat_id, after, super::feed::READ_BATCH).await?)
    }

    /// Serves batches until the queue is empty, then exits.
    async fn serve_queue(self: Arc<Self>) {
        let mut reader = Reader {
            catch_up: &self,
            running: true,
        };
        loop {
            let batch: Vec<Read> = {
                let mut queue = lock(&self.queue);
                if queue.reads.is_empty() {
                    queue.reading = false;
                    reader.running = false;
                    return;
                }
                let take = queue.reads.len().min(MAX_BATCH);
                queue.reads.drain(..take).collect()
            };
            self.serve(batch).await;
        }
    }

    async fn serve(&self, batch: Vec<Read>) {
        let wants: Vec<(ChatId, MessageId)> = batch
            .iter()
            .map(|read| (read.chat_id, read.after))
            .collect();
        let read = async {
            let client = self.pool.get().await?;
            messages::visible_after_each(&client, &wants, super::feed::READ_BATCH).await
        };
        match read.await {
            Ok(lists) => {
                for (read, list) in batch.into_iter().zip(lists) {
                    // A feed that stopped meanwhile no longer listens.
                    let _ = read.reply.send(Ok(list));
                }
            }
            Err(err) => {
                let err = Arc::new(err);
                for read in batch {
                    let _ = read.reply.send(Err(err.clone()));
                }
            }
        }
    }
}

/// The running reader. Should it end before the queue is empty (dropped
/// with the runtime), the next read starts a new one, and reads still
/// queued are let go: their feeds read alone.
struct Reader<'a> {
    catch_up: &'a CatchUp,
    running: bool,
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if self.running {
            let mut queue = lock(&self.catch_up.queue);
            queue.reading = false;
            queue.reads.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use chatd_shared::{
        db::{
            chats::NewChat,
            messages::{NewMessage, insert},
            transitions, users,
        },
        ids::UserId,
        parts::Part,
        status::{ChatStatus, MessageRole, MessageVisibility, UserRole},
        testing::TestDb,
    };

    use super::*;
    use crate::streams::feed::READ_BATCH;

    /// Many feeds reading at once, through one queue, each get exactly what
    /// a read of their own chat alone would have returned: their chat's
    /// messages after their watermark, model-only ones left out, at most a
    /// read batch.
    #[tokio::test]
    async fn concurrent_reads_of_many_chats_each_get_their_own_chats_messages() {
        let db = TestDb::new().await;
        let client = db.pool().get().await.unwrap();
        let owner = users::insert(&client, UserId::new_random(), "catch-up", UserRole::Member)
            .await
            .unwrap()
            .id;
        let labels = serde_json::json!({});
        let content = [Part::text("hello")];
        let mut wants = Vec::new();
        for index in 0..40_usize {
            let chat = transitions::insert(
                &client,
                &NewChat {
                    id: ChatId::new_v7(),
                    owner_id: owner,
                    parent_chat_id: None,
                    root_chat_id: None,
                    title: "",
                    status: ChatStatus::Waiting,
                    model_config_id: None,
                    system_prompt: None,
                    labels: &labels,
                    tools: Default::default(),
                    trace_parent: None,
                },
            )
            .await
            .unwrap()
            .id;
            // Chat 1 has more than a read batch; chat 0 a model-only message.
            let count = match index {
                0 => 4,
                1 => READ_BATCH as usize + 5,
                _ => index % 4 + 1,
            };
            let mut ids = Vec::new();
            for n in 0..count {
                let visibility = (index == 0 && n == 1).then_some(MessageVisibility::Model);
                let message = NewMessage {
                    visibility,
                    content: &content,
                    ..Default::default()
                };
                ids.push(
                    insert(&client, chat, MessageRole::User, &message)
                        .await
                        .unwrap()
                        .id,
                );
            }
            // Read from the first message on, or from the start.
            let after = if index % 2 == 0 { ids[0] } else { MessageId(0) };
            wants.push((chat, after));
        }

        let catch_up = CatchUp::new(db.pool().clone(), TaskTracker::new());
        let read = futures::future::join_all(
            wants
                .iter()
                .map(|(chat, after)| catch_up.read(*chat, *after)),
        )
        .await;

        let mut total = 0;
        for ((chat, after), got) in wants.iter().zip(read) {
            let got: Vec<MessageId> = got.unwrap().iter().map(|m| m.id).collect();
            total += got.len();
            let alone: Vec<MessageId> = messages::visible_after(&client, *chat, *after, READ_BATCH)
                .await
                .unwrap()
                .iter()
                .map(|m| m.id)
                .collect();
            assert_eq!(got, alone, "chat {chat} after {after:?}");
        }
        assert!(total > wants.len(), "{total} messages read");
        let lengths: Vec<usize> = futures::future::join_all(
            wants[..2]
                .iter()
                .map(|(chat, after)| catch_up.read(*chat, *after)),
        )
        .await
        .into_iter()
        .map(|got| got.unwrap().len())
        .collect();
        // Chat 0: three messages after its first, one of them model-only.
        // Chat 1: a full batch.
        assert_eq!(lengths, [2, READ_BATCH as usize]);
    }
}
