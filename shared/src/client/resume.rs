//! A chat's stream that outlives the replica serving it (ARCHITECTURE.md §18,
//! invariant 14): when the connection breaks, the server says `reconnect`,
//! or (optionally) a running chat goes silent for too long, the stream is
//! reopened on the next replica with the cursor of the last event it
//! delivered, so nothing is missed and nothing repeats.
//!
//! The server resumes exactly after the cursor; the stream still checks
//! every part and message against it and drops (and counts) anything at or
//! below it, so a server that repeats itself cannot make a client show a
//! part twice.

use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use super::{
    ClientError, FailoverClient, Transport,
    failover::{Repeat, worth_retrying},
    streams::ChatStream,
};
use crate::{
    error_chain::Chain,
    ids::ChatId,
    status::ChatStatus,
    stream::{Cursor, PartCursor, StreamEvent},
};

/// What [`FailoverStream::next`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The next event of the chat (never `reconnect`: the stream acts on it).
    Event(StreamEvent),
    /// The stream broke and was reopened; events follow from the cursor.
    Resumed(Resumed),
}

/// How a stream was reopened.
#[derive(Debug, Clone, PartialEq)]
pub struct Resumed {
    /// Why the previous connection ended.
    pub cause: Break,
    /// The replica (index into the client's base URLs) serving it now.
    pub replica: usize,
    /// Connections tried, the successful one included.
    pub attempts: u32,
    /// From noticing the break to the new connection.
    pub took: Duration,
}

/// Why a stream's connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// The server sent `reconnect` with this reason.
    Reconnect(String),
    /// The server closed the stream without a word.
    Ended,
    /// The connection failed (the error chain).
    Failed(String),
    /// The chat was running and nothing arrived for this long.
    Stalled(Duration),
}

/// One chat's events, from whichever replica can serve them. Built by
/// [`FailoverClient::stream_chat`].
#[derive(Debug)]
pub struct FailoverStream {
    client: FailoverClient,
    chat_id: ChatId,
    transport: Transport,
    /// The replica of the current connection.
    replica: usize,
    /// `None` between a break and the reopening.
    stream: Option<ChatStream>,
    /// Why the connection ended, until it is reopened.
    broken: Option<Break>,
    /// Past every part and message delivered.
    cursor: Cursor,
    stall_timeout: Option<Duration>,
    /// The newest status said `running` (a silence may be a stall).
    running: bool,
    /// Parts and messages dropped as repeats on this stream.
    repeats_dropped: u64,
}

impl FailoverClient {
    /// Opens `chat_id`'s stream after `cursor` on the current replica (or
    /// the next ones, within the policy's deadline).
    pub async fn stream_chat(
        &self,
        chat_id: ChatId,
        cursor: Cursor,
        transport: Transport,
    ) -> Result<FailoverStream, ClientError> {
        let (replica, stream) = self
            .retrying_on(Repeat::Safe, |client| async move {
                client.stream_chat(chat_id, cursor, transport).await
            })
            .await?;
        Ok(FailoverStream {
            client: self.clone(),
            chat_id,
            transport,
            replica,
            stream: Some(stream),
            broken: None,
            cursor,
            stall_timeout: None,
            running: false,
            repeats_dropped: 0,
        })
    }
}

impl FailoverStream {
    /// Also reopens the stream when the chat is running and nothing arrives
    /// for `timeout` (a replica cut from the database may keep a connection
    /// open and silent). Off by default: a model may think quietly for long.
    pub fn with_stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = Some(timeout);
        self
    }

    /// Tells the stream the chat should get busy now (the caller just sent
    /// it a message): until a status says otherwise, a silence longer than
    /// the stall timeout reopens the stream elsewhere. A replica cut from
    /// the database would otherwise keep a stream whose last word was
    /// `waiting` silent while the new turn runs on another replica.
    pub fn expect_activity(&mut self) {
        self.running = true;
    }

    /// The chat.
    pub fn chat_id(&self) -> ChatId {
        self.chat_id
    }

    /// The replica serving the stream now (index into the base URLs).
    pub fn replica(&self) -> usize {
        self.replica
    }

    /// Past every part and message delivered.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// Parts and messages this stream received at or below its cursor and
    /// dropped (a correct server sends none).
    pub fn repeats_dropped(&self) -> u64 {
        self.repeats_dropped
    }

    /// The next event, or the news that the stream was reopened. An error
    /// is final for this stream (no replica could reopen it within the
    /// policy's deadline, or one refused it for good, e.g. 404), except a
    /// [`ClientError::Decode`]: that event is skipped and the stream goes on.
    pub async fn next(&mut self) -> Result<Delivery, ClientError> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                // Kept until the stream is open again: a caller may drop
                // this future (select!) and call again.
                let cause = self.broken.clone().unwrap_or(Break::Ended);
                let resumed = self.reopen(cause).await?;
                self.broken = None;
                return Ok(Delivery::Resumed(resumed));
            };
            let received = match self.stall_timeout.filter(|_| self.running) {
                Some(timeout) => match tokio::time::timeout(timeout, stream.next()).await {
                    Ok(received) => received,
                    Err(_) => {
                        self.break_off(Break::Stalled(timeout));
                        continue;
                    }
                },
                None => stream.next().await,
            };
            let event = match received {
                Some(Ok(event)) => event,
                Some(Err(error @ ClientError::Decode { .. })) => return Err(error),
                Some(Err(error)) => {
                    self.break_off(Break::Failed(Chain(&error).to_string()));
                    continue;
                }
                None => {
                    self.break_off(Break::Ended);
                    continue;
                }
            };
            if let Some(event) = self.admit(event) {
                return Ok(Delivery::Event(event));
            }
        }
    }

    /// Decides whether `event` is delivered: `reconnect` ends the
    /// connection, repeats are dropped; the cursor moves past the rest.
    fn admit(&mut self, event: StreamEvent) -> Option<StreamEvent> {
        let repeated = match &event {
            StreamEvent::Reconnect { reason, .. } => {
                self.break_off(Break::Reconnect(reason.clone()));
                return None;
            }
            StreamEvent::Status { status, .. } => {
                self.running = *status == ChatStatus::Running;
                false
            }
            StreamEvent::Part {
                generation, seq, ..
            } => {
                self.running = true;
                let position = PartCursor {
                    generation: *generation,
                    seq: *seq,
                };
                self.cursor.after_part.is_some_and(|last| position <= last)
            }
            StreamEvent::Message { message, .. } => self
                .cursor
                .after_message_id
                .is_some_and(|last| message.id <= last),
            _ => false,
        };
        if repeated {
            self.repeats_dropped += 1;
            self.client.stats().dropped_duplicate();
            return None;
        }
        self.cursor.observe(&event);
        Some(event)
    }

    fn break_off(&mut self, cause: Break) {
        self.stream = None;
        self.broken = Some(cause);
    }

    /// Opens the stream again after the cursor, on the next replica and
    /// then the ones after it, pausing between tries.
    async fn reopen(&mut self, cause: Break) -> Result<Resumed, ClientError> {
        let started = Instant::now();
        let policy = self.client.policy();
        let deadline = started + policy.deadline;
        let mut backoff = policy.backoff();
        let mut attempts = 0;
        loop {
            self.replica = self.client.next_after(self.replica);
            attempts += 1;
            let client = &self.client.replicas()[self.replica];
            let opened = tokio::time::timeout_at(
                deadline,
                client.stream_chat(self.chat_id, self.cursor, self.transport),
            )
            .await
            .unwrap_or(Err(ClientError::Timeout(policy.deadline)));
            let error = match opened {
                Ok(stream) => {
                    self.client.attempt_succeeded(self.replica);
                    self.stream = Some(stream);
                    self.client.stats().resumed();
                    return Ok(Resumed {
                        cause,
                        replica: self.replica,
                        attempts,
                        took: started.elapsed(),
                    });
                }
                Err(error) => error,
            };
            if !worth_retrying(&error, Repeat::Safe) {
                return Err(error);
            }
            self.client.attempt_failed(self.replica);
            let pause = backoff.next_delay();
            if Instant::now() + pause >= deadline {
                return Err(error);
            }
            tokio::time::sleep(pause).await;
        }
    }
}
