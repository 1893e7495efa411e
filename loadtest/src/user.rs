//! A virtual user: one chat, created through one target and streamed from
//! another, taking its turns one after the other (ARCHITECTURE.md §13).
//!
//! 1. Create the chat (preferring target `i % n`, idle), open its stream
//!    (preferring target `(i + 1) % n`) and wait for the snapshot's status.
//!    A sampled chat is also streamed from every other target (see
//!    [`crate::staleness`]).
//! 2. Wait for the start of the turn phase (with the barrier).
//! 3. Per turn: send the message and read the stream until `waiting` of a
//!    newer generation.
//!
//! Requests and streams go through a [`FailoverClient`] (ARCHITECTURE.md §18): a
//! target that fails is left for the next one, a create or send is repeated
//! only with its `Idempotency-Key`, and a stream that breaks is reopened
//! elsewhere from its cursor. The first failure that survives all that
//! ends the user's run: its remaining turns are not run.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use chatd_shared::{
    api::{CreateChat, SendMessage},
    client::{ClientError, Delivery, FailoverClient, FailoverStream, Transport},
    error_chain::Chain,
    ids::{ChatId, Generation},
    stream::{Cursor, PartCursor, StreamEvent},
};
use reqwest::StatusCode;
use tokio::{
    sync::{Semaphore, watch},
    task::JoinSet,
    time::Instant,
};

use crate::{
    staleness::{self, PartArrivals, SharedArrivals},
    stats::{Metric, Recorder, Stage},
    turn::{Seen, TurnWatch},
};

/// What every user of a run shares.
pub struct Crowd {
    /// Every target, on one connection pool; each user prefers its own.
    pub client: FailoverClient,
    /// The targets' URLs, for messages.
    pub targets: Vec<String>,
    /// How streams are carried.
    pub transport: Transport,
    /// How long opening a stream and reading its snapshot may take.
    pub open_timeout: Duration,
    /// Reopen a running chat's stream elsewhere after this long without an
    /// event (see [`FailoverStream::with_stall_timeout`]).
    pub stall_timeout: Option<Duration>,
    /// Turns per chat at most.
    pub turns: u32,
    /// Turns true when no new turn may start (chaos: the end of the load).
    pub stop: Option<watch::Receiver<bool>>,
    /// How long one turn may take.
    pub turn_timeout: Duration,
    /// The body of every `POST /chats`.
    pub create: CreateChat,
    /// The body of every `POST /chats/{id}/messages`.
    pub message: SendMessage,
    /// Where everything is recorded.
    pub recorder: Arc<Recorder>,
    /// Chats in flight at most.
    pub in_flight: Semaphore,
    /// Gets one permit per user once its setup is over, succeeded or not.
    pub set_up: Semaphore,
    /// With the barrier: turns true when the turn phase starts.
    pub start: Option<watch::Receiver<bool>>,
    /// Follows every chat beyond the recorder (chaos), when set.
    pub watch: Option<Arc<dyn Watch>>,
}

/// Follows each chat of a run beyond what the [`Recorder`] measures: the
/// chaos command checks invariants and failover times through it.
pub trait Watch: Send + Sync + 'static {
    /// A watcher of the chat of user `index`, just created as `chat_id`.
    fn chat(&self, index: usize, chat_id: ChatId) -> Box<dyn ChatWatch>;
}

/// Follows one chat: called by its user as things happen.
pub trait ChatWatch: Send {
    /// A send was answered with `status` at `at`; `moved` when it had to
    /// move to another target on the way.
    fn sent(&mut self, status: StatusCode, moved: bool, at: Instant);
    /// The chat's own stream, served by target `replica`, delivered this.
    fn delivered(&mut self, delivery: &Delivery, replica: usize, at: Instant);
    /// A turn reached `waiting` at `generation`.
    fn turn_finished(&mut self, generation: Generation, at: Instant);
    /// True while the watcher expects more of the last turn (its final
    /// message may follow `waiting`): the user reads on a little.
    fn wants_more(&self) -> bool;
    /// The user is done with the chat; `failed` when a failure ended it.
    /// `repeats_dropped`: parts and messages the chat's stream got again
    /// at or below its cursor (a correct server sends none).
    fn done(&mut self, failed: bool, repeats_dropped: u64);
}

/// How long a user reads on after its last turn while its watcher wants more.
const READ_ON: Duration = Duration::from_secs(2);

/// Why a user stopped.
struct Failure {
    stage: Stage,
    message: String,
}

impl Failure {
    fn new(stage: Stage, message: String) -> Self {
        Self { stage, message }
    }
}

/// Runs user `index`: waits until `start_at`, sets up its chat, takes its
/// turns. Everything it observes goes to the crowd's recorder.
pub async fn run_user(crowd: Arc<Crowd>, index: usize, start_at: Instant, sampled: bool) {
    tokio::time::sleep_until(start_at).await;
    let Ok(permit) = crowd.in_flight.acquire().await else {
        crowd.set_up.add_permits(1);
        return;
    };
    let chat = UserChat::set_up(&crowd, index, sampled).await;
    crowd.set_up.add_permits(1);
    let mut chat = match chat {
        Ok(chat) => chat,
        Err(failure) => {
            crowd.recorder.failed(failure.stage, false, failure.message);
            return;
        }
    };
    crowd.recorder.chat_ready();
    let _permit = match crowd.start.clone() {
        None => permit,
        Some(mut start) => {
            drop(permit);
            // An error means the run was abandoned before the turn phase.
            let permit = if start.wait_for(|started| *started).await.is_ok() {
                crowd.in_flight.acquire().await.ok()
            } else {
                None
            };
            let Some(permit) = permit else {
                chat.close(false).await;
                return;
            };
            permit
        }
    };
    let mut failed = false;
    for _ in 0..crowd.turns {
        if crowd.stop.as_ref().is_some_and(|stop| *stop.borrow()) {
            break;
        }
        if let Err(failure) = chat.take_turn(&crowd).await {
            crowd.recorder.failed(failure.stage, true, failure.message);
            failed = true;
            break;
        }
    }
    chat.close(failed).await;
}

/// A user's chat and its streams.
struct UserChat {
    id: ChatId,
    /// Sends go here first: the target the chat was created on.
    api: FailoverClient,
    stream: FailoverStream,
    /// The newest generation the chat is known to be idle at.
    generation: Generation,
    /// Turns taken so far; names each send's idempotency key.
    turns_taken: u32,
    /// Sampled chats only: arrivals of parts on the other targets.
    arrivals: Option<SharedArrivals>,
    /// Sampled chats only: the streams on the other targets.
    observers: JoinSet<()>,
    watch: Option<Box<dyn ChatWatch>>,
}

impl UserChat {
    async fn set_up(crowd: &Crowd, index: usize, sampled: bool) -> Result<Self, Failure> {
        let targets = crowd.targets.len();
        let api = crowd.client.preferring(index);
        let stream_client = crowd.client.preferring(index + 1);
        let started = Instant::now();
        let key = uuid::Uuid::new_v4().to_string();
        let created = api
            .create_chat(&crowd.create, &key)
            .await
            .map_err(|error| {
                let target = &crowd.targets[api.current()];
                Failure::new(
                    Stage::Create,
                    format!("chat #{index} on {target}: {}", Chain(&error)),
                )
            })?;
        crowd.recorder.record(Metric::Create, started.elapsed());
        let id = created.body.id;
        let stream_failure = |target: usize, error: ClientError| {
            Failure::new(
                Stage::Stream,
                format!(
                    "chat {id}: opening its stream on {}: {}",
                    crowd.targets[target],
                    Chain(&error)
                ),
            )
        };
        let (stream, generation) = open_stream(&stream_client, id, crowd)
            .await
            .map_err(|error| stream_failure(stream_client.current(), error))?;
        let stream = match crowd.stall_timeout {
            Some(timeout) => stream.with_stall_timeout(timeout),
            None => stream,
        };
        let mut chat = Self {
            id,
            api,
            stream,
            generation,
            turns_taken: 0,
            arrivals: None,
            observers: JoinSet::new(),
            watch: crowd.watch.as_ref().map(|watch| watch.chat(index, id)),
        };
        if sampled {
            let arrivals: SharedArrivals = Arc::new(Mutex::new(PartArrivals::default()));
            let own = chat.stream.replica();
            for target in (0..targets).filter(|&target| target != own) {
                let client = crowd.client.preferring(target);
                let (stream, _) = match open_stream(&client, id, crowd).await {
                    Ok(opened) => opened,
                    Err(error) => {
                        chat.close(false).await;
                        return Err(stream_failure(target, error));
                    }
                };
                chat.observers.spawn(staleness::observe(
                    stream,
                    arrivals.clone(),
                    crowd.recorder.clone(),
                ));
            }
            chat.arrivals = Some(arrivals);
        }
        Ok(chat)
    }

    /// Sends the message and follows the turn to its end on the stream.
    async fn take_turn(&mut self, crowd: &Crowd) -> Result<(), Failure> {
        let recorder = &crowd.recorder;
        let sent_at = Instant::now();
        recorder.turn_sent(sent_at);
        let deadline = sent_at + crowd.turn_timeout;
        let timeout = tokio::time::sleep_until(deadline);
        tokio::pin!(timeout);
        let key = format!("{}-turn-{}", self.id, self.turns_taken);
        self.turns_taken += 1;
        let target = self.api.current();
        let api = self.api.clone();
        let send = api.send_message(self.id, &crowd.message, &key);
        tokio::pin!(send);
        let mut sent = false;
        let mut watch = TurnWatch::new(self.generation, sent_at);
        // Set when `waiting` arrived; the turn ends once the send answered too.
        let mut finished: Option<(Generation, Duration, Instant)> = None;
        loop {
            if sent && let Some((generation, latency, at)) = finished {
                recorder.turn_completed(at, latency);
                self.generation = generation;
                if let Some(chat_watch) = &mut self.watch {
                    chat_watch.turn_finished(generation, at);
                }
                if let Some(arrivals) = &self.arrivals {
                    let missed = arrivals
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .turn_finished(generation);
                    recorder.parts_not_delivered(missed);
                }
                return Ok(());
            }
            tokio::select! {
                answer = &mut send, if !sent => match answer {
                    Ok(answer) => {
                        sent = true;
                        self.stream.expect_activity();
                        let moved = self.api.current() != target;
                        if let Some(chat_watch) = &mut self.watch {
                            chat_watch.sent(answer.status, moved, Instant::now());
                        }
                    }
                    Err(error) => return Err(self.failure(Stage::Send, format!(
                        "sending through {}: {}", crowd.targets[self.api.current()], Chain(&error)
                    ))),
                },
                delivery = self.stream.next(), if finished.is_none() => {
                    let at = Instant::now();
                    let delivery = delivery.map_err(|error| self.stream_failure(crowd, &error))?;
                    if let Some(chat_watch) = &mut self.watch {
                        chat_watch.delivered(&delivery, self.stream.replica(), at);
                    }
                    let event = match delivery {
                        Delivery::Event(event) => event,
                        Delivery::Resumed(_) => {
                            recorder.reconnected();
                            continue;
                        }
                    };
                    self.note_part(&event, recorder, at);
                    match watch.observe(&event, at) {
                        Seen::Nothing => {}
                        Seen::Running(latency) => recorder.record(Metric::TimeToRunning, latency),
                        Seen::FirstPart(latency) => recorder.record(Metric::TimeToFirstPart, latency),
                        Seen::Finished { generation, latency } => {
                            finished = Some((generation, latency, at));
                        }
                        Seen::Failed(message) => {
                            return Err(self.failure(Stage::Turn, message));
                        }
                    }
                }
                () = &mut timeout => {
                    return Err(self.failure(Stage::Timeout, format!(
                        "no `waiting` within {:?} of the send ({}{})",
                        crowd.turn_timeout,
                        watch.progress(),
                        if sent { "" } else { "; the send had no answer either" },
                    )));
                }
            }
        }
    }

    /// Relay staleness of a part on the chat's own stream (sampled chats).
    fn note_part(&self, event: &StreamEvent, recorder: &Recorder, at: Instant) {
        if let (
            Some(arrivals),
            StreamEvent::Part {
                generation, seq, ..
            },
        ) = (&self.arrivals, event)
        {
            let part = PartCursor {
                generation: *generation,
                seq: *seq,
            };
            staleness::record_delivery(arrivals, recorder, part, at);
        }
    }

    fn stream_failure(&self, crowd: &Crowd, error: &ClientError) -> Failure {
        self.failure(
            Stage::Stream,
            format!(
                "its stream on {}: {}",
                crowd.targets[self.stream.replica()],
                Chain(error)
            ),
        )
    }

    fn failure(&self, stage: Stage, what: String) -> Failure {
        Failure::new(stage, format!("chat {}: {what}", self.id))
    }

    /// Stops the observers; the streams close as they are dropped.
    async fn close(mut self, failed: bool) {
        if let Some(mut chat_watch) = self.watch.take() {
            if !failed {
                let deadline = Instant::now() + READ_ON;
                while chat_watch.wants_more() {
                    let Ok(Ok(delivery)) =
                        tokio::time::timeout_at(deadline, self.stream.next()).await
                    else {
                        break;
                    };
                    chat_watch.delivered(&delivery, self.stream.replica(), Instant::now());
                }
            }
            chat_watch.done(failed, self.stream.repeats_dropped());
        }
        self.observers.shutdown().await;
    }
}

/// Opens a chat's stream from the start and waits for its snapshot's
/// status: from then on the stream misses nothing. Returns the stream and
/// the chat's generation.
async fn open_stream(
    client: &FailoverClient,
    chat_id: ChatId,
    crowd: &Crowd,
) -> Result<(FailoverStream, Generation), ClientError> {
    let open = async {
        let mut stream = client
            .stream_chat(chat_id, Cursor::default(), crowd.transport)
            .await?;
        loop {
            if let Delivery::Event(StreamEvent::Status { generation, .. }) = stream.next().await? {
                return Ok((stream, generation));
            }
        }
    };
    tokio::time::timeout(crowd.open_timeout, open)
        .await
        .map_err(|_| ClientError::Timeout(crowd.open_timeout))?
}
