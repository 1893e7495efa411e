//! Several replicas of one deployment as one client (ARCHITECTURE.md §18): a request
//! goes to the replica that answered last, and moves to the next one when
//! the transport fails, the replica times out or says it cannot serve
//! (5xx, 429). A request that may have reached a server is repeated only
//! when repeating it is harmless: a GET, a stream, or a POST carrying its
//! `Idempotency-Key` (the server answers the repeat with the original).
//!
//! Every attempt has its own deadline ([`RetryPolicy::attempt_timeout`])
//! and the whole call one more ([`RetryPolicy::deadline`]); between
//! attempts the shared [`Backoff`] waits with jitter, so clients that lost
//! the same replica do not all arrive at the next one together.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use reqwest::StatusCode;
use tokio::time::Instant;

use super::{Client, ClientError, WithStatus};
use crate::{
    api::{Chat, CreateChat, MessageList, SendMessage, SendResult},
    backoff::Backoff,
    ids::ChatId,
};

use super::MessagesQuery;

/// How hard a [`FailoverClient`] tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// How long one attempt (a request and its whole answer, or a stream's
    /// handshake and snapshot status) may take.
    pub attempt_timeout: Duration,
    /// How long a call may take over all its attempts; a stream gets this
    /// long to reopen after each break.
    pub deadline: Duration,
    /// The first pause between attempts (jittered, doubling).
    pub backoff_min: Duration,
    /// The longest pause between attempts.
    pub backoff_max: Duration,
    /// How long a replica that failed an attempt is passed over by every
    /// clone of the client (unless all are): the first client to find a
    /// dead or cut-off replica spares the others the wait.
    pub quarantine: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(10),
            deadline: Duration::from_secs(60),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            quarantine: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    pub(super) fn backoff(&self) -> Backoff {
        Backoff::new(self.backoff_min, self.backoff_max)
    }
}

/// Whether a request may be sent again after it may have reached a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// Reads, streams, and writes carrying an `Idempotency-Key`.
    Safe,
    /// A write without a key: repeated only when it surely never left
    /// (the connection could not be made).
    Unsafe,
}

/// What a [`FailoverClient`] and its streams did, shared by its clones.
#[derive(Debug, Default)]
pub struct FailoverStats {
    retries: AtomicU64,
    resumes: AtomicU64,
    duplicates_dropped: AtomicU64,
}

/// A copy of [`FailoverStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailoverCounts {
    /// Requests sent again (to the next replica) after a retryable failure.
    pub retries: u64,
    /// Streams reopened from their cursor after a break.
    pub resumes: u64,
    /// Parts and messages a server sent at or below the stream's cursor,
    /// which the client dropped (a correct server sends none).
    pub duplicates_dropped: u64,
}

impl FailoverStats {
    /// The counts now.
    pub fn counts(&self) -> FailoverCounts {
        FailoverCounts {
            retries: self.retries.load(Ordering::Relaxed),
            resumes: self.resumes.load(Ordering::Relaxed),
            duplicates_dropped: self.duplicates_dropped.load(Ordering::Relaxed),
        }
    }

    pub(super) fn resumed(&self) {
        self.resumes.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn dropped_duplicate(&self) {
        self.duplicates_dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// A client of every replica of one deployment, acting as one user.
/// Clones share the replica they prefer; [`FailoverClient::preferring`]
/// makes one that starts elsewhere.
#[derive(Debug, Clone)]
pub struct FailoverClient {
    replicas: Arc<[Client]>,
    /// The replica the next request goes to: the one that answered last.
    current: Arc<AtomicUsize>,
    /// Replicas passed over for a while, shared by every clone.
    quarantine: Arc<Quarantine>,
    policy: RetryPolicy,
    stats: Arc<FailoverStats>,
}

/// Until when each replica is passed over after a failed attempt.
#[derive(Debug)]
struct Quarantine {
    /// When the clients started: deadlines are kept as milliseconds since.
    epoch: Instant,
    /// Per replica, milliseconds since `epoch` until which it is passed over.
    until_ms: Box<[AtomicU64]>,
}

impl Quarantine {
    fn new(replicas: usize) -> Self {
        Self {
            epoch: Instant::now(),
            until_ms: (0..replicas).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn is_held(&self, replica: usize) -> bool {
        self.until_ms[replica].load(Ordering::Relaxed) > self.now_ms()
    }

    fn hold(&self, replica: usize, duration: Duration) {
        let until = self.now_ms() + u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        self.until_ms[replica].fetch_max(until, Ordering::Relaxed);
    }

    fn clear(&self, replica: usize) {
        self.until_ms[replica].store(0, Ordering::Relaxed);
    }

    /// The first replica from `start` (itself included) not held, or
    /// `start` when all are.
    fn first_free(&self, start: usize) -> usize {
        let count = self.until_ms.len();
        (0..count)
            .map(|offset| (start + offset) % count)
            .find(|&replica| !self.is_held(replica))
            .unwrap_or(start)
    }
}

impl FailoverClient {
    /// A client of the replicas at `base_urls`, all on one connection pool
    /// of `http` (its timeouts apply too), authenticating with `token`.
    pub fn new(
        http: reqwest::Client,
        base_urls: &[impl AsRef<str>],
        token: &str,
        policy: RetryPolicy,
    ) -> Result<Self, ClientError> {
        if base_urls.is_empty() {
            return Err(ClientError::Url {
                url: String::new(),
                reason: "a failover client needs at least one base URL".to_owned(),
            });
        }
        let replicas = base_urls
            .iter()
            .map(|url| {
                Client::with_http_client(http.clone(), url.as_ref(), Some(token))
                    .map(|client| client.with_request_timeout(policy.attempt_timeout))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            quarantine: Arc::new(Quarantine::new(replicas.len())),
            replicas: replicas.into(),
            current: Arc::new(AtomicUsize::new(0)),
            policy,
            stats: Arc::new(FailoverStats::default()),
        })
    }

    /// The same replicas, starting with replica `index` (modulo their
    /// number) and moving on from there independently of `self`.
    pub fn preferring(&self, index: usize) -> Self {
        Self {
            current: Arc::new(AtomicUsize::new(index % self.replicas.len())),
            ..self.clone()
        }
    }

    /// The replicas, in the order given.
    pub fn replicas(&self) -> &[Client] {
        &self.replicas
    }

    /// The replica the next request goes to.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// The policy.
    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    /// What this client and every clone of it did so far.
    pub fn stats(&self) -> &Arc<FailoverStats> {
        &self.stats
    }

    /// Moves on from replica `from` to the next one not in quarantine,
    /// unless another caller already did.
    fn next_replica(&self, from: usize) -> usize {
        let next = self.next_after(from);
        let _ = self
            .current
            .compare_exchange(from, next, Ordering::Relaxed, Ordering::Relaxed);
        next
    }

    /// The replica after `from` (cyclically) that is not in quarantine.
    pub(super) fn next_after(&self, from: usize) -> usize {
        self.quarantine.first_free((from + 1) % self.replicas.len())
    }

    /// `replica` failed an attempt: every clone passes it over for a while.
    pub(super) fn attempt_failed(&self, replica: usize) {
        self.quarantine.hold(replica, self.policy.quarantine);
    }

    /// `replica` answered: it is in service again.
    pub(super) fn attempt_succeeded(&self, replica: usize) {
        self.quarantine.clear(replica);
    }

    /// Runs `attempt` against the current replica, and again against the
    /// next ones while it fails in a way worth retrying under `repeat`,
    /// until the policy's deadline. Returns the first success or the last
    /// error.
    pub async fn retrying<T, F, Fut>(&self, repeat: Repeat, attempt: F) -> Result<T, ClientError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        self.retrying_on(repeat, attempt)
            .await
            .map(|(_, value)| value)
    }

    /// [`FailoverClient::retrying`], also saying which replica answered.
    pub(super) async fn retrying_on<T, F, Fut>(
        &self,
        repeat: Repeat,
        mut attempt: F,
    ) -> Result<(usize, T), ClientError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let deadline = Instant::now() + self.policy.deadline;
        let mut backoff = self.policy.backoff();
        let mut replica = self.quarantine.first_free(self.current());
        loop {
            let client = self.replicas[replica].clone();
            let error = match tokio::time::timeout_at(deadline, attempt(client)).await {
                Ok(Ok(value)) => {
                    self.attempt_succeeded(replica);
                    self.current.store(replica, Ordering::Relaxed);
                    return Ok((replica, value));
                }
                Ok(Err(error)) => error,
                Err(_) => return Err(ClientError::Timeout(self.policy.deadline)),
            };
            if !worth_retrying(&error, repeat) {
                return Err(error);
            }
            self.attempt_failed(replica);
            let pause = backoff.next_delay();
            if Instant::now() + pause >= deadline {
                return Err(error);
            }
            tokio::time::sleep(pause).await;
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            replica = self.next_replica(replica);
        }
    }

    /// `POST /chats` with `idempotency_key`, on whichever replica answers.
    /// A repeat the server recognised answers 200 with the original chat.
    pub async fn create_chat(
        &self,
        chat: &CreateChat,
        idempotency_key: &str,
    ) -> Result<WithStatus<Chat>, ClientError> {
        self.retrying(Repeat::Safe, |client| async move {
            client.create_chat(chat, Some(idempotency_key)).await
        })
        .await
    }

    /// `POST /chats/{id}/messages` with `idempotency_key`, on whichever
    /// replica answers.
    pub async fn send_message(
        &self,
        chat_id: ChatId,
        message: &SendMessage,
        idempotency_key: &str,
    ) -> Result<WithStatus<SendResult>, ClientError> {
        self.retrying(Repeat::Safe, |client| async move {
            client
                .send_message(chat_id, message, Some(idempotency_key))
                .await
        })
        .await
    }

    /// `GET /chats/{id}`.
    pub async fn get_chat(&self, chat_id: ChatId) -> Result<Chat, ClientError> {
        self.retrying(Repeat::Safe, |client| async move {
            client.get_chat(chat_id).await
        })
        .await
    }

    /// `GET /chats/{id}/messages`.
    pub async fn list_messages(
        &self,
        chat_id: ChatId,
        query: &MessagesQuery,
    ) -> Result<MessageList, ClientError> {
        self.retrying(Repeat::Safe, |client| async move {
            client.list_messages(chat_id, query).await
        })
        .await
    }
}

/// True when `error` may go away on another replica or a bit later, and
/// sending the request again is allowed under `repeat`.
pub fn worth_retrying(error: &ClientError, repeat: Repeat) -> bool {
    let safe = repeat == Repeat::Safe;
    match error {
        ClientError::Api { status, .. } | ClientError::Status { status, .. } => {
            safe && (*status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error())
        }
        // A connection that could not be made carried nothing.
        ClientError::Http(error) => safe || error.is_connect(),
        ClientError::Timeout(_) | ClientError::WebSocket(_) | ClientError::Closed { .. } => safe,
        ClientError::Decode { .. }
        | ClientError::Url { .. }
        | ClientError::InvalidHeader { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16) -> ClientError {
        ClientError::Api {
            status: StatusCode::from_u16(status).expect("a status"),
            code: "x".into(),
            message: "x".into(),
            details: None,
        }
    }

    #[test]
    fn only_failures_another_replica_may_not_have_are_retried() {
        for status in [429, 500, 502, 503, 504] {
            assert!(worth_retrying(&refused(status), Repeat::Safe), "{status}");
            assert!(
                !worth_retrying(&refused(status), Repeat::Unsafe),
                "{status}"
            );
        }
        for status in [400, 401, 403, 404, 409, 413, 422] {
            assert!(!worth_retrying(&refused(status), Repeat::Safe), "{status}");
        }
        let timeout = ClientError::Timeout(Duration::from_secs(1));
        assert!(worth_retrying(&timeout, Repeat::Safe));
        assert!(!worth_retrying(&timeout, Repeat::Unsafe));
        let decode = ClientError::decode("bad", b"{");
        assert!(!worth_retrying(&decode, Repeat::Safe));
    }
}
