//! A virtual user: one chat, created on one target and streamed from
//! another, taking its turns one after the other (DESIGN §13).
//!
//! 1. Create the chat on target `i % n` (idle), open its stream on target
//!    `(i + 1) % n` and wait for the snapshot's status. A sampled chat is
//!    also streamed from every other target (see [`crate::staleness`]).
//! 2. Wait for the start of the turn phase (with the barrier).
//! 3. Per turn: send the message on the chat's target and read the stream
//!    until `waiting` of a newer generation; a stream that ends or says
//!    `reconnect` is resumed from its cursor.
//!
//! The first failure ends the user's run: its remaining turns are not run.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use chatd_shared::{
    api::{CreateChat, SendMessage},
    client::{ChatStream, Client, ClientError, Transport},
    error_chain::Chain,
    ids::{ChatId, Generation},
    stream::{Cursor, PartCursor, StreamEvent},
};
use futures::StreamExt;
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

/// Tries at resuming a stream, the first one at once, then after 100 ms,
/// 200 ms, … (within the turn's deadline).
const RESUME_ATTEMPTS: u32 = 6;
/// The delay before the second try at resuming a stream.
const RESUME_BACKOFF: Duration = Duration::from_millis(100);

/// How streams are opened.
#[derive(Debug, Clone, Copy)]
pub struct Streaming {
    /// WebSocket or SSE.
    pub transport: Transport,
    /// How long opening a stream and reading its snapshot may take.
    pub timeout: Duration,
}

/// What every user of a run shares.
pub struct Crowd {
    /// One client per target, all on one connection pool.
    pub clients: Vec<Client>,
    /// The targets' URLs, for messages.
    pub targets: Vec<String>,
    /// How streams are opened.
    pub streaming: Streaming,
    /// Turns per chat.
    pub turns: u32,
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
}

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
                chat.close().await;
                return;
            };
            permit
        }
    };
    for _ in 0..crowd.turns {
        if let Err(failure) = chat.take_turn(&crowd).await {
            crowd.recorder.failed(failure.stage, true, failure.message);
            break;
        }
    }
    chat.close().await;
}

/// A user's chat and its streams.
struct UserChat {
    id: ChatId,
    /// The target the chat was created on, and where messages are sent.
    api: usize,
    /// The target of the chat's own stream.
    stream_target: usize,
    stream: ChatStream,
    /// The newest generation the chat is known to be idle at.
    generation: Generation,
    /// Sampled chats only: arrivals of parts on the other targets.
    arrivals: Option<SharedArrivals>,
    /// Sampled chats only: the streams on the other targets.
    observers: JoinSet<()>,
}

impl UserChat {
    async fn set_up(crowd: &Crowd, index: usize, sampled: bool) -> Result<Self, Failure> {
        let targets = crowd.clients.len();
        let api = index % targets;
        let stream_target = (index + 1) % targets;
        let started = Instant::now();
        let created = crowd.clients[api]
            .create_chat(&crowd.create, None)
            .await
            .map_err(|error| {
                Failure::new(
                    Stage::Create,
                    format!("chat #{index} on {}: {}", crowd.targets[api], Chain(&error)),
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
        let (stream, generation) = open_stream(&crowd.clients[stream_target], id, crowd.streaming)
            .await
            .map_err(|error| stream_failure(stream_target, error))?;
        let mut chat = Self {
            id,
            api,
            stream_target,
            stream,
            generation,
            arrivals: None,
            observers: JoinSet::new(),
        };
        if sampled {
            let arrivals: SharedArrivals = Arc::new(Mutex::new(PartArrivals::default()));
            for target in (0..targets).filter(|&target| target != stream_target) {
                let client = &crowd.clients[target];
                let (stream, _) = match open_stream(client, id, crowd.streaming).await {
                    Ok(opened) => opened,
                    Err(error) => {
                        chat.close().await;
                        return Err(stream_failure(target, error));
                    }
                };
                chat.observers.spawn(staleness::observe(
                    stream,
                    client.clone(),
                    crowd.streaming,
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
        let send = crowd.clients[self.api].send_message(self.id, &crowd.message, None);
        tokio::pin!(send);
        let mut sent = false;
        let mut watch = TurnWatch::new(self.generation, sent_at);
        // Set when `waiting` arrived; the turn ends once the send answered too.
        let mut finished: Option<(Generation, Duration, Instant)> = None;
        loop {
            if sent && let Some((generation, latency, at)) = finished {
                recorder.turn_completed(at, latency);
                self.generation = generation;
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
                    Ok(_) => sent = true,
                    Err(error) => return Err(self.failure(Stage::Send, format!(
                        "sending on {}: {}", crowd.targets[self.api], Chain(&error)
                    ))),
                },
                event = self.stream.next(), if finished.is_none() => {
                    let at = Instant::now();
                    let seen = match event {
                        Some(Ok(event)) => {
                            self.note_part(&event, recorder, at);
                            watch.observe(&event, at)
                        }
                        Some(Err(error @ ClientError::Decode { .. })) => {
                            return Err(self.stream_failure(crowd, &error));
                        }
                        // The stream ended (after an error, or cleanly).
                        Some(Err(_)) | None => Seen::Reconnect,
                    };
                    match seen {
                        Seen::Nothing => {}
                        Seen::Running(latency) => recorder.record(Metric::TimeToRunning, latency),
                        Seen::FirstPart(latency) => recorder.record(Metric::TimeToFirstPart, latency),
                        Seen::Reconnect => self.resume(crowd, deadline).await?,
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

    /// Resumes the chat's stream from its cursor.
    async fn resume(&mut self, crowd: &Crowd, deadline: Instant) -> Result<(), Failure> {
        let client = &crowd.clients[self.stream_target];
        match reopen(
            client,
            self.id,
            self.stream.cursor(),
            crowd.streaming,
            deadline,
        )
        .await
        {
            Ok(stream) => {
                self.stream = stream;
                crowd.recorder.reconnected();
                Ok(())
            }
            Err(error) => Err(self.stream_failure(crowd, &error)),
        }
    }

    fn stream_failure(&self, crowd: &Crowd, error: &ClientError) -> Failure {
        self.failure(
            Stage::Stream,
            format!(
                "its stream on {}: {}",
                crowd.targets[self.stream_target],
                Chain(error)
            ),
        )
    }

    fn failure(&self, stage: Stage, what: String) -> Failure {
        Failure::new(stage, format!("chat {}: {what}", self.id))
    }

    /// Stops the observers; the streams close as they are dropped.
    async fn close(mut self) {
        self.observers.shutdown().await;
    }
}

/// Opens a chat's stream from the start and waits for its snapshot's
/// status: from then on the stream misses nothing. Returns the stream and
/// the chat's generation.
pub async fn open_stream(
    client: &Client,
    chat_id: ChatId,
    streaming: Streaming,
) -> Result<(ChatStream, Generation), ClientError> {
    let open = async {
        let mut stream = client
            .stream_chat(chat_id, Cursor::default(), streaming.transport)
            .await?;
        while let Some(event) = stream.next().await {
            if let StreamEvent::Status { generation, .. } = event? {
                return Ok((stream, generation));
            }
        }
        Err(ClientError::Closed {
            code: 1000,
            reason: "the stream ended before its snapshot".to_owned(),
        })
    };
    tokio::time::timeout(streaming.timeout, open)
        .await
        .map_err(|_| ClientError::Timeout(streaming.timeout))?
}

/// Opens a chat's stream again from `cursor`, trying a few times with a
/// growing pause until `deadline`. A refusal other than 429 or 503 is final.
pub async fn reopen(
    client: &Client,
    chat_id: ChatId,
    cursor: Cursor,
    streaming: Streaming,
    deadline: Instant,
) -> Result<ChatStream, ClientError> {
    let mut pause = RESUME_BACKOFF;
    let mut attempt = 1;
    loop {
        let opened = tokio::time::timeout_at(
            deadline,
            client.stream_chat(chat_id, cursor, streaming.transport),
        )
        .await
        .map_err(|_| ClientError::Timeout(streaming.timeout))?;
        let error = match opened {
            Ok(stream) => return Ok(stream),
            Err(error) => error,
        };
        let retryable = error
            .status()
            .is_none_or(|status| status.as_u16() == 429 || status.is_server_error());
        if !retryable || attempt == RESUME_ATTEMPTS || Instant::now() + pause >= deadline {
            return Err(error);
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
        attempt += 1;
    }
}
