//! Statements that many tasks of a replica make at the same moment, served
//! by one statement.
//!
//! Some statements come in bursts: a replica's stream feeds read new
//! messages after each notice, and one `NOTIFY` statement carries many
//! chats' notices; a claim hands a replica several chats at once, and each
//! run starts by reading its prompt and, with a fast model, ends its turn
//! at the same moment as the others. A statement per call made those the
//! most frequent statements of a turn, and a statement's fixed cost (its
//! round trip, its executor start, its transaction) dwarfs what one call
//! does. Here calls queue up and one runner serves every call queued so
//! far with one statement ([`BatchStatement::run_each`]); calls that arrive
//! while it runs make the next batch. No call waits for a timer: a lone
//! call is served at once, and a burst costs one round trip.
//!
//! A statement that writes ([`BatchStatement::WRITES`]) is all or nothing
//! for its batch, so one call's failure must not become every call's: when
//! the server refuses a batch (nothing of it was written) each call runs
//! again alone, and gets its own answer or error. A batch whose outcome is
//! unknown (its runner dropped mid-statement) is never run again.
//!
//! The runner is a task that exists only while calls are queued, so there
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

/// Calls per statement at most.
const MAX_BATCH: usize = 256;

/// A kind of statement that can serve many callers at once.
pub trait BatchStatement: Send + Sync + 'static {
    /// What one caller asks for.
    type Want: Clone + Send + Sync + 'static;
    /// What it gets.
    type Got: Send + 'static;
    /// The statement writes: see the module docs for what changes.
    const WRITES: bool;

    /// Answers every want in one statement: one answer per want, in the
    /// order of `wants`.
    fn run_each(
        client: &deadpool_postgres::Client,
        wants: &[Self::Want],
    ) -> impl Future<Output = DbResult<Vec<Self::Got>>> + Send;

    /// Answers one want alone: a batch of one, a read made again, a write
    /// split off its refused batch. By default [`Self::run_each`] of one; a
    /// kind with a cheaper one-call statement runs that instead.
    fn run_one(
        client: &deadpool_postgres::Client,
        want: &Self::Want,
    ) -> impl Future<Output = DbResult<Self::Got>> + Send {
        async move {
            let mut got = Self::run_each(client, std::slice::from_ref(want)).await?;
            got.pop().ok_or(DbError::Unexpected(MISSING))
        }
    }
}

/// The `FROM` item that numbers a batched statement's wants: `unnest` of
/// its array parameters (`"$1::uuid[]"`, …) `WITH ORDINALITY`, to be named
/// `AS w(…, want)`. Each array sits behind a scalar subquery because
/// PostgreSQL keeps planning a prepared statement for its parameters' values
/// while that plan is estimated cheaper than one for any values, and only
/// the former sees an array's length: with `unnest($1)` every batched
/// statement was planned again on every call (planning was 28 % of
/// PostgreSQL's statement time at 10 chats on 3 replicas). Behind
/// `(SELECT $1)` neither sees it, so from the sixth call the cached plan
/// serves: the same nested loops over the wants either way.
pub fn numbered_wants(arrays: &[&str]) -> String {
    let arrays: Vec<String> = arrays
        .iter()
        .map(|array| format!("(SELECT {array})"))
        .collect();
    format!("unnest({}) WITH ORDINALITY", arrays.join(", "))
}

/// The answer that one row of a batched statement belongs to: the
/// statement numbers its wants with [`numbered_wants`] `AS w(…, want)` and
/// returns `w.want` on every row (1-based).
pub fn answer_of<'a, T>(
    answers: &'a mut [T],
    row: &tokio_postgres::Row,
) -> DbResult<Option<&'a mut T>> {
    let want: i64 = row.try_get("want")?;
    Ok(usize::try_from(want - 1)
        .ok()
        .and_then(|index| answers.get_mut(index)))
}

/// What one call gets: a failed read fails every read of its batch, hence
/// shared.
pub type BatchedResult<T> = Result<T, Arc<DbError>>;

/// A batched call's error as the caller's own: the error itself when no
/// other call holds it, else [`DbError::Shared`].
pub fn unshared(err: Arc<DbError>) -> DbError {
    Arc::try_unwrap(err).unwrap_or_else(DbError::Shared)
}

/// The queue of calls of one kind, and its runner.
pub struct Batched<B: BatchStatement> {
    pool: Pool,
    tracker: TaskTracker,
    /// The runner runs in this span (the one current at creation, the
    /// replica's), not in whichever caller happened to start it.
    span: tracing::Span,
    queue: Mutex<Queue<B>>,
}

struct Queue<B: BatchStatement> {
    calls: Vec<Call<B>>,
    /// A runner task is running (and will take `calls` before it exits).
    running: bool,
}

struct Call<B: BatchStatement> {
    want: B::Want,
    reply: oneshot::Sender<BatchedResult<B::Got>>,
}

impl<B: BatchStatement> Batched<B> {
    /// Statements go to `pool`; the runner runs on `tracker`, in the
    /// current span.
    pub fn new(pool: Pool, tracker: TaskTracker) -> Arc<Self> {
        Arc::new(Self {
            pool,
            tracker,
            span: tracing::Span::current(),
            queue: Mutex::new(Queue {
                calls: Vec::new(),
                running: false,
            }),
        })
    }

    /// Runs `want`, in one statement with whatever other calls are queued.
    pub async fn run(self: &Arc<Self>, want: B::Want) -> BatchedResult<B::Got> {
        let (reply, answer) = oneshot::channel();
        // A read dropped unanswered is made again alone; a write is not.
        let again = (!B::WRITES).then(|| want.clone());
        let start_runner = {
            let mut queue = lock(&self.queue);
            queue.calls.push(Call { want, reply });
            !std::mem::replace(&mut queue.running, true)
        };
        if start_runner {
            let this = self.clone();
            self.tracker
                .spawn(this.serve_queue().instrument(self.span.clone()));
        }
        match answer.await {
            Ok(result) => result,
            // The runner drops a reply unanswered only when it is dropped
            // itself (with the runtime).
            Err(_) => match again {
                Some(want) => {
                    let client = self.pool.get().await.map_err(DbError::from)?;
                    let mut got = B::run_each(&client, std::slice::from_ref(&want)).await?;
                    got.pop()
                        .ok_or_else(|| Arc::new(DbError::Unexpected(MISSING)))
                }
                None => Err(Arc::new(DbError::Unexpected(
                    "a batched write was dropped with its outcome unknown",
                ))),
            },
        }
    }

    /// Serves batches until the queue is empty, then exits.
    async fn serve_queue(self: Arc<Self>) {
        let mut runner = Runner {
            batched: &self,
            running: true,
        };
        loop {
            let batch: Vec<Call<B>> = {
                let mut queue = lock(&self.queue);
                if queue.calls.is_empty() {
                    queue.running = false;
                    runner.running = false;
                    return;
                }
                let take = queue.calls.len().min(MAX_BATCH);
                queue.calls.drain(..take).collect()
            };
            self.serve(batch).await;
        }
    }

    async fn serve(&self, batch: Vec<Call<B>>) {
        let (wants, replies): (Vec<B::Want>, Vec<_>) = batch
            .into_iter()
            .map(|call| (call.want, call.reply))
            .unzip();
        let client = match self.pool.get().await {
            Ok(client) => client,
            Err(err) => {
                let err = Arc::new(DbError::from(err));
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
                return;
            }
        };
        let answers = match &wants[..] {
            [one] => B::run_one(&client, one).await.map(|got| vec![got]),
            _ => B::run_each(&client, &wants).await,
        };
        let answers = match answers {
            Ok(answers) if answers.len() == wants.len() => Ok(answers),
            Ok(_) => Err(DbError::Unexpected(MISSING)),
            Err(err) => Err(err),
        };
        // A caller that left no longer listens.
        match answers {
            Ok(answers) => {
                for (reply, got) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(got));
                }
            }
            // The server refused the batch, so nothing of it was written:
            // each call alone, to its own answer.
            Err(err) if B::WRITES && wants.len() > 1 && err.sql_state().is_some() => {
                tracing::debug!(error = %err, calls = wants.len(), "a batched write failed; each call again alone");
                for (reply, want) in replies.into_iter().zip(&wants) {
                    let got = B::run_one(&client, want).await;
                    let _ = reply.send(got.map_err(Arc::new));
                }
            }
            Err(err) => {
                let err = Arc::new(err);
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}

/// A statement that gave fewer answers than it had calls (a bug).
const MISSING: &str = "a batched statement without an answer for each call";

/// The running runner. Should it end before the queue is empty (dropped
/// with the runtime), the next call starts a new one, and calls still
/// queued are let go (see [`Batched::run`]).
struct Runner<'a, B: BatchStatement> {
    batched: &'a Batched<B>,
    running: bool,
}

impl<B: BatchStatement> Drop for Runner<'_, B> {
    fn drop(&mut self) {
        if self.running {
            let mut queue = lock(&self.batched.queue);
            queue.running = false;
            queue.calls.clear();
        }
    }
}
