//! Reads that many tasks of a replica make at the same moment, served by
//! one statement.
//!
//! Some reads come in bursts: a replica's stream feeds read new messages
//! after each notice, and one `NOTIFY` statement carries many chats'
//! notices; a claim hands a replica several chats at once, and each run
//! starts by reading its prompt. A statement per read made those reads the
//! most frequent statements of a turn, and a statement's fixed cost (its
//! round trip, its executor start, its transaction) dwarfs what such a read
//! does. Here reads queue up and one reader serves every read queued so far
//! with one statement ([`BatchRead::read_each`]); reads that arrive while
//! it runs make the next batch. No read waits for a timer: a lone read is
//! served at once, and a burst costs one round trip.
//!
//! The reader is a task that exists only while reads are queued, so there
//! is nothing to stop at shutdown.

use std::{
    future::Future,
    sync::{Arc, Mutex},
};

use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::{DbError, DbResult, Pool};
use crate::sync::lock;

/// Reads per statement at most.
const MAX_BATCH: usize = 256;

/// A kind of read that one statement can make for many callers.
pub trait BatchRead: Send + Sync + 'static {
    /// What one caller asks for.
    type Want: Clone + Send + Sync + 'static;
    /// What it gets.
    type Got: Send + 'static;

    /// Answers every want in one statement: one answer per want, in the
    /// order of `wants`.
    fn read_each(
        client: &deadpool_postgres::Client,
        wants: &[Self::Want],
    ) -> impl Future<Output = DbResult<Vec<Self::Got>>> + Send;
}

/// The answer that one row of a batched statement belongs to: the
/// statement numbers its wants with `unnest(…) WITH ORDINALITY AS
/// w(…, want)` and returns `w.want` on every row (1-based).
pub fn answer_of<'a, T>(
    answers: &'a mut [T],
    row: &tokio_postgres::Row,
) -> DbResult<Option<&'a mut T>> {
    let want: i64 = row.try_get("want")?;
    Ok(usize::try_from(want - 1)
        .ok()
        .and_then(|index| answers.get_mut(index)))
}

/// What one read gets: a failed statement fails every read of its batch,
/// hence shared.
pub type BatchedResult<T> = Result<T, Arc<DbError>>;

/// The queue of reads of one kind, and its reader.
pub struct Batched<B: BatchRead> {
    pool: Pool,
    tracker: TaskTracker,
    /// The reader runs in this span (the one current at creation, the
    /// replica's), not in whichever caller happened to start it.
    span: tracing::Span,
    queue: Mutex<Queue<B>>,
}

struct Queue<B: BatchRead> {
    reads: Vec<Read<B>>,
    /// A reader task is running (and will take `reads` before it exits).
    reading: bool,
}

struct Read<B: BatchRead> {
    want: B::Want,
    reply: oneshot::Sender<BatchedResult<B::Got>>,
}

impl<B: BatchRead> Batched<B> {
    /// Reads go to `pool`; the reader runs on `tracker`, in the current span.
    pub fn new(pool: Pool, tracker: TaskTracker) -> Arc<Self> {
        Arc::new(Self {
            pool,
            tracker,
            span: tracing::Span::current(),
            queue: Mutex::new(Queue {
                reads: Vec::new(),
                reading: false,
            }),
        })
    }

    /// Reads `want`, in one statement with whatever other reads are queued.
    pub async fn read(self: &Arc<Self>, want: B::Want) -> BatchedResult<B::Got> {
        let (reply, answer) = oneshot::channel();
        let start_reader = {
            let mut queue = lock(&self.queue);
            queue.reads.push(Read {
                want: want.clone(),
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
            // The reader drops a reply unanswered only when it is dropped
            // itself (with the runtime): read alone rather than hang.
            Err(_) => {
                let client = self.pool.get().await.map_err(DbError::from)?;
                let mut got = B::read_each(&client, std::slice::from_ref(&want)).await?;
                got.pop().ok_or_else(|| {
                    Arc::new(DbError::Unexpected("a batched read without its answer"))
                })
            }
        }
    }

    /// Serves batches until the queue is empty, then exits.
    async fn serve_queue(self: Arc<Self>) {
        let mut reader = Reader {
            batched: &self,
            running: true,
        };
        loop {
            let batch: Vec<Read<B>> = {
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

    async fn serve(&self, batch: Vec<Read<B>>) {
        let wants: Vec<B::Want> = batch.iter().map(|read| read.want.clone()).collect();
        let read = async {
            let client = self.pool.get().await?;
            B::read_each(&client, &wants).await
        };
        let answers = match read.await {
            Ok(answers) if answers.len() == batch.len() => Ok(answers),
            Ok(_) => Err(Arc::new(DbError::Unexpected(
                "a batched read without its answer",
            ))),
            Err(err) => Err(Arc::new(err)),
        };
        // A caller that left no longer listens.
        match answers {
            Ok(answers) => {
                for (read, got) in batch.into_iter().zip(answers) {
                    let _ = read.reply.send(Ok(got));
                }
            }
            Err(err) => {
                for read in batch {
                    let _ = read.reply.send(Err(err.clone()));
                }
            }
        }
    }
}

/// The running reader. Should it end before the queue is empty (dropped
/// with the runtime), the next read starts a new one, and reads still
/// queued are let go: their callers read alone.
struct Reader<'a, B: BatchRead> {
    batched: &'a Batched<B>,
    running: bool,
}

impl<B: BatchRead> Drop for Reader<'_, B> {
    fn drop(&mut self) {
        if self.running {
            let mut queue = lock(&self.batched.queue);
            queue.reading = false;
            queue.reads.clear();
        }
    }
}
