//! The run interface: what the turn loop implements ([`ChatRunner`]) and the
//! fenced writes every run makes through its [`RunContext`].

use std::{sync::Arc, time::Duration};

use chatd_shared::db::{
    DbError, Pool,
    chats::Chat,
    compaction::{Compacted, Summary},
    lifecycle::{Fence, OwnerWebhooks, Released, StepMessage, TurnEnd},
    messages::Message,
    tool_calls::{NewCall, Suspended, WaitDeadline},
};

use super::registry::{RunControl, StopReason};
use crate::{
    operations::{ChatOps, Reserved},
    streams::RunStream,
};

/// Why a run's write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The fence no longer matches: another generation owns the chat (or it
    /// left `running`). The run has been stopped and must write nothing more.
    #[error("ownership of the chat was lost")]
    OwnershipLost,
    /// The run was told to stop before the write.
    #[error("the run was stopped ({0:?})")]
    Stopped(StopReason),
    /// The database failed (shared: one failed statement of a batched read
    /// fails every run that waited on it).
    #[error(transparent)]
    Db(Arc<DbError>),
}

impl From<DbError> for RunError {
    fn from(err: DbError) -> Self {
        Self::Db(Arc::new(err))
    }
}

impl From<Arc<DbError>> for RunError {
    fn from(err: Arc<DbError>) -> Self {
        Self::Db(err)
    }
}

/// Runs one acquired chat. Implemented by the turn loop; tests use scripted
/// runners. A run must return soon after [`RunContext::cancelled`] fires, and
/// end its work with [`RunContext::release`] (unless it was stopped).
#[async_trait::async_trait]
pub trait ChatRunner: Send + Sync + 'static {
    /// Runs turns of `run.chat()` until the chat is released or the run stopped.
    async fn run(&self, run: RunContext);
}

/// Everything a run needs: the chat as acquired, its fence, the chat
/// operations its writes go through, and its stop/interrupt switches.
pub struct RunContext {
    chat: Chat,
    fence: Fence,
    queue_wait: Duration,
    ops: ChatOps,
    control: Arc<RunControl>,
    stream: RunStream,
    /// What the turn's prompt read said of the owner's webhooks (chooses
    /// the turn end's statement; `Unknown` until read).
    owner_webhooks: OwnerWebhooks,
}

impl RunContext {
    pub(crate) fn new(
        chat: Chat,
        fence: Fence,
        queue_wait: Duration,
        ops: ChatOps,
        control: Arc<RunControl>,
        stream: RunStream,
    ) -> Self {
        Self {
            chat,
            fence,
            queue_wait,
            ops,
            control,
            stream,
            owner_webhooks: OwnerWebhooks::Unknown,
        }
    }

    /// The turn's prompt read found whether the owner has webhooks.
    pub fn set_owner_webhooks(&mut self, any: bool) {
        self.owner_webhooks = if any {
            OwnerWebhooks::Unknown
        } else {
            OwnerWebhooks::NoneSeen
        };
    }

    /// The run's stream in the local hub: parts, committed messages, retries.
    pub fn stream(&mut self) -> &mut RunStream {
        &mut self.stream
    }

    /// The chat row as acquired.
    pub fn chat(&self) -> &Chat {
        &self.chat
    }

    /// `(chat, worker, generation)` every write is conditional on.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// How long the chat waited in `pending`.
    pub fn queue_wait(&self) -> Duration {
        self.queue_wait
    }

    /// The replica's pool, for reads (take a connection, run statements,
    /// give it back); writes go through [`Self::persist_step`] and
    /// [`Self::finish`].
    pub fn db(&self) -> &Pool {
        self.ops.pool()
    }

    /// The chat operations (for announcements the run makes, like retries).
    pub fn ops(&self) -> &ChatOps {
        &self.ops
    }

    /// The run's stop and interrupt switches, to watch while the stream is
    /// borrowed.
    pub fn control(&self) -> Arc<RunControl> {
        self.control.clone()
    }

    /// Resolves when the run must stop at once and write nothing more.
    pub async fn cancelled(&self) {
        self.control.cancelled().await
    }

    /// Why the run was stopped, if it was.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.control.stop_reason()
    }

    /// Resolves when an interrupt is requested: cancel the model call, save
    /// the partial step, release.
    pub async fn interrupted(&self) {
        self.control.interrupted().await
    }

    /// True while an interrupt is pending.
    pub fn is_interrupted(&self) -> bool {
        self.control.is_interrupted()
    }

    fn check_running(&self) -> Result<(), RunError> {
        match self.control.stop_reason() {
            Some(reason) => Err(RunError::Stopped(reason)),
            None => Ok(()),
        }
    }

    fn lost(&self) -> RunError {
        self.control.stop(StopReason::OwnershipLost);
        RunError::OwnershipLost
    }

    /// Persists a step's messages in one fenced statement (and announces them).
    pub async fn persist_step(&self, step: &[StepMessage]) -> Result<Vec<Message>, RunError> {
        self.check_running()?;
        match self.ops.persist_step(&self.fence, step).await? {
            Some(written) => Ok(written),
            None => Err(self.lost()),
        }
    }

    /// Reserves `estimate_micros` of the owner's spend for the run's next
    /// model call (ARCHITECTURE.md §17, invariant 15); `override_micros` is the
    /// owner's limit override as the run read it.
    pub async fn reserve_spend(
        &self,
        override_micros: Option<i64>,
        estimate_micros: i64,
    ) -> Result<Reserved, RunError> {
        self.check_running()?;
        let owner = self.chat.owner_id;
        match self
            .ops
            .reserve_spend(&self.fence, owner, override_micros, estimate_micros)
            .await?
        {
            Reserved::OwnershipLost => Err(self.lost()),
            reserved => Ok(reserved),
        }
    }

    /// Stores a compaction summary and marks what it replaces, in one
    /// fenced statement (and announces the compaction).
    pub async fn compact(&self, summary: &Summary<'_>) -> Result<Compacted, RunError> {
        self.check_running()?;
        match self.ops.compact(&self.fence, summary).await? {
            Compacted::OwnershipLost => Err(self.lost()),
            compacted => Ok(compacted),
        }
    }

    /// Stores a step's assistant message with its tool calls recorded in
    /// the ledger, in one fenced statement, before any of them runs.
    pub async fn record_calls(
        &self,
        assistant: &StepMessage,
        calls: &[NewCall],
    ) -> Result<Message, RunError> {
        self.check_running()?;
        match self.ops.record_calls(&self.fence, assistant, calls).await? {
            Some(message) => Ok(message),
            None => Err(self.lost()),
        }
    }

    /// Ends the run by waiting on something outside the chat (client
    /// results, subagents), in one fenced statement: the chat leaves
    /// `running` and the run holds no slot (invariant 16). On
    /// [`Suspended::Interrupted`] nothing changed and the run must handle
    /// the interrupt.
    pub async fn suspend(&self, waits: &[WaitDeadline]) -> Result<Suspended, RunError> {
        self.check_running()?;
        match self.ops.suspend(&self.fence, waits).await? {
            Some(Suspended::Interrupted) => Ok(Suspended::Interrupted),
            Some(suspended) => {
                self.control.released();
                Ok(suspended)
            }
            None => Err(self.lost()),
        }
    }

    /// Ends the turn in one fenced statement (ARCHITECTURE.md §3), announced. When
    /// `Released::next` is set the chat stays `running` under this run,
    /// which goes on with that message.
    pub async fn release(&self, end: TurnEnd) -> Result<Released, RunError> {
        self.finish(&[], end).await.map(|(_, released)| released)
    }

    /// Persists the turn's last step and ends the turn, in one fenced
    /// statement; returns the committed step messages and the release.
    pub async fn finish(
        &self,
        step: &[StepMessage],
        end: TurnEnd,
    ) -> Result<(Vec<Message>, Released), RunError> {
        self.check_running()?;
        match self
            .ops
            .finish(&self.fence, step, &end, self.owner_webhooks)
            .await?
        {
            Some(done) => {
                self.control.released();
                Ok(done)
            }
            None => Err(self.lost()),
        }
    }
}
