//! The run interface: what the turn loop implements ([`ChatRunner`]) and the
//! fenced writes every run makes through its [`RunContext`].

use std::{sync::Arc, time::Duration};

use chatd_shared::{
    db::{
        DbError, Pool,
        chats::{self, Chat, Fence, Released, TurnEnd},
        messages::{self, Message, StepMessage},
    },
    ids::MessageId,
    pubsub::{ChatEvent, OwnerEventKind, PubSub},
    status::ChatStatus,
};

use super::registry::{RunControl, StopReason};
use crate::hub::RunStream;

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
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Runs one acquired chat. Implemented by the turn loop; tests use scripted
/// runners. A run must return soon after [`RunContext::cancelled`] fires, and
/// end its work with [`RunContext::release`] (unless it was stopped).
#[async_trait::async_trait]
pub trait ChatRunner: Send + Sync + 'static {
    /// Runs turns of `run.chat()` until the chat is released or the run stopped.
    async fn run(&self, run: RunContext);
}

/// Everything a run needs: the chat as acquired, its fence, the database and
/// the pubsub, and its stop/interrupt switches.
pub struct RunContext {
    chat: Chat,
    fence: Fence,
    queue_wait: Duration,
    db: Pool,
    pubsub: PubSub,
    control: Arc<RunControl>,
    stream: RunStream,
}

impl RunContext {
    pub(crate) fn new(
        chat: Chat,
        fence: Fence,
        queue_wait: Duration,
        db: Pool,
        pubsub: PubSub,
        control: Arc<RunControl>,
        stream: RunStream,
    ) -> Self {
        Self {
            chat,
            fence,
            queue_wait,
            db,
            pubsub,
            control,
            stream,
        }
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

    /// The replica's pool (take a connection, run statements, give it back).
    pub fn db(&self) -> &Pool {
        &self.db
    }

    /// The replica's pubsub.
    pub fn pubsub(&self) -> &PubSub {
        &self.pubsub
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

    /// Persists a step's messages in one fenced statement, then announces them.
    pub async fn persist_step(&self, step: &[StepMessage]) -> Result<Vec<Message>, RunError> {
        self.check_running()?;
        let written = {
            let client = self.db.get().await.map_err(DbError::from)?;
            messages::insert_step(&client, &self.fence, step).await?
        };
        let Some(written) = written else {
            return Err(self.lost());
        };
        announce_messages(&self.pubsub, self.fence.chat_id, written.iter());
        Ok(written)
    }

    /// Ends the turn in one fenced statement (DESIGN §3) and announces the
    /// outcome. When `Released::next` is set the chat stays `running` under
    /// this run, which goes on with that message.
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
        match finish(&self.db, &self.pubsub, &self.fence, step, &end).await? {
            Some(done) => {
                self.control.released();
                Ok(done)
            }
            None => Err(self.lost()),
        }
    }

    /// Announces that this run started (status `running`).
    pub(crate) fn announce_running(&self) {
        let status = ChatEvent::Status {
            status: ChatStatus::Running,
            generation: self.fence.generation,
            worker_id: Some(self.fence.worker_id),
        };
        let _ = self.pubsub.publish_chat(self.fence.chat_id, status);
        let _ = self.pubsub.publish_owner(
            self.chat.owner_id,
            self.fence.chat_id,
            OwnerEventKind::Status,
        );
    }
}

/// Finishes `fence`'s turn (persisting `step` if any) and announces the
/// outcome; `None` when the fence no longer matches. Runs use
/// [`RunContext::finish`]; the runtime calls this directly after a run crashed.
pub(crate) async fn finish(
    db: &Pool,
    pubsub: &PubSub,
    fence: &Fence,
    step: &[StepMessage],
    end: &TurnEnd,
) -> Result<Option<(Vec<Message>, Released)>, DbError> {
    let finished = {
        let client = db.get().await?;
        chats::finish_turn(&client, fence, step, end).await?
    };
    let Some((committed, released)) = finished else {
        return Ok(None);
    };
    let chat_id = fence.chat_id;
    announce_messages(
        pubsub,
        chat_id,
        committed.iter().chain(released.next.as_ref()),
    );
    if released.next.is_some() {
        let _ = pubsub.publish_chat(chat_id, ChatEvent::Queue);
    } else {
        let status = ChatEvent::Status {
            status: released.status,
            generation: fence.generation,
            worker_id: None,
        };
        let _ = pubsub.publish_chat(chat_id, status);
        let _ = pubsub.publish_owner(released.owner_id, chat_id, OwnerEventKind::Status);
    }
    Ok(Some((committed, released)))
}

/// Publishes one notice for messages just committed (ids ascending).
fn announce_messages<'a>(
    pubsub: &PubSub,
    chat_id: chatd_shared::ids::ChatId,
    mut messages: impl Iterator<Item = &'a Message>,
) {
    let Some(first) = messages.next() else {
        return;
    };
    let last = messages.last().unwrap_or(first);
    let notice = ChatEvent::Message {
        after_id: MessageId(first.id.0 - 1),
        last_id: last.id,
    };
    let _ = pubsub.publish_chat(chat_id, notice);
}
