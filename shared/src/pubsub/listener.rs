//! The dedicated LISTEN connection: connect, LISTEN on every channel, route
//! what arrives, probe the connection, and on any failure reconnect with
//! backoff and tell every subscriber to resync.

use crate::error_chain::Chain;
use std::{future::Future, sync::atomic::Ordering, time::Duration};

use futures::FutureExt;
use tokio::time::Instant;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use super::{Shared, notice::Channel};
use crate::backoff::Backoff;

/// How the listener keeps itself honest.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// A trivial query this often proves the connection is alive.
    pub keepalive_interval: Duration,
    /// A keep-alive that takes longer than this counts as a dead connection.
    pub keepalive_timeout: Duration,
    /// How often a latency probe is published.
    pub probe_interval: Duration,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
            probe_interval: Duration::from_secs(10),
        }
    }
}

/// Why a listener connection ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// The URL does not parse (the message never repeats it).
    #[error(transparent)]
    Url(crate::db::DbError),
    /// The connection could not be opened.
    #[error("connecting")]
    Connect(#[source] tokio_postgres::Error),
    /// Taking the replica's advisory lock failed.
    #[error("taking the replica's lock")]
    Lock(#[source] tokio_postgres::Error),
    /// Another session holds the replica's lock: a previous session of
    /// this replica the server has not noticed is gone yet, or another
    /// process with the same replica id.
    #[error("another session holds this replica's lock (key {0}); is CHATD_REPLICA_ID shared?")]
    LockHeld(i64),
    /// LISTEN failed: the connection is not known good.
    #[error("LISTEN")]
    Listen(#[source] tokio_postgres::Error),
    /// The connection failed while reading.
    #[error("connection")]
    Connection(#[source] tokio_postgres::Error),
    /// The server closed the connection.
    #[error("connection closed")]
    Closed,
    /// The keep-alive query failed or took too long.
    #[error(transparent)]
    KeepAlive(#[from] KeepAliveFailure),
}

/// Why a keep-alive check says the connection is dead.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeepAliveFailure {
    /// The query failed.
    #[error("keep-alive")]
    Failed(#[source] tokio_postgres::Error),
    /// No answer within the timeout.
    #[error("keep-alive took longer than {0:?}")]
    TimedOut(Duration),
}

/// How often a peer's death watch tries this replica's life lock
/// (`replica/src/runtime/deaths.rs`): the bound on how long a freed lock
/// goes unseen.
pub const LOCK_POLL: Duration = Duration::from_millis(50);

/// The least time a replica leaves its life lock free after losing the
/// session that held it. A lost session counts as a death
/// (ARCHITECTURE.md §4): retaken sooner than the watcher's next try, the
/// loss would go unseen, and whether a cut replica's chats move would
/// depend on a race. Ten polls leave room for a busy server.
pub const LOCK_RELEASE_FLOOR: Duration = Duration::from_millis(10 * LOCK_POLL.as_millis() as u64);

/// The reconnect rule: jittered backoff between attempts, reset only once
/// LISTEN succeeded (a connection that opens but cannot LISTEN is as bad
/// as none, and must not make the next attempt come sooner); after a
/// session that held the life lock, never sooner than
/// [`LOCK_RELEASE_FLOOR`].
pub(crate) struct Reconnects {
    backoff: Backoff,
    /// LISTEN has succeeded before: the next success is a reconnect.
    listened: bool,
    /// The session now ending took the life lock.
    locked: bool,
}

impl Reconnects {
    pub(crate) fn new(backoff: Backoff) -> Self {
        Self {
            backoff,
            listened: false,
            locked: false,
        }
    }

    /// This session took the life lock.
    pub(crate) fn locked(&mut self) {
        self.locked = true;
    }

    /// LISTEN succeeded. Returns true when this is a reconnect (not the
    /// first connection).
    pub(crate) fn listening(&mut self) -> bool {
        self.backoff.reset();
        std::mem::replace(&mut self.listened, true)
    }

    /// The connection failed or ended: how long to wait before the next.
    pub(crate) fn lost(&mut self) -> Duration {
        let delay = self.backoff.next_delay();
        if std::mem::take(&mut self.locked) {
            delay.max(LOCK_RELEASE_FLOOR)
        } else {
            delay
        }
    }
}

/// The keep-alive rule: a trivial query every `interval`, answered within
/// `timeout`, or the connection counts as dead (a silent TCP connection
/// can take minutes to be noticed otherwise, with every notice lost).
pub(crate) struct KeepAlive {
    interval: Duration,
    timeout: Duration,
    next: Instant,
}

impl KeepAlive {
    /// The first check is due one interval from now.
    pub(crate) fn new(interval: Duration, timeout: Duration) -> Self {
        Self {
            interval,
            timeout,
            next: Instant::now() + interval,
        }
    }

    /// When the next check is due.
    pub(crate) fn due(&self) -> Instant {
        self.next
    }

    /// Runs `query` as the check due now, within the timeout; the next is
    /// due one interval after this one started (a late check, on a busy
    /// runtime, does not make the next one early).
    pub(crate) async fn check<T>(
        &mut self,
        query: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<(), KeepAliveFailure> {
        self.next = Instant::now() + self.interval;
        match tokio::time::timeout(self.timeout, query).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(KeepAliveFailure::Failed(err)),
            Err(_) => Err(KeepAliveFailure::TimedOut(self.timeout)),
        }
    }
}

/// Reconnects forever (with backoff) until `cancel` fires.
pub(crate) async fn run(
    shared: std::sync::Arc<Shared>,
    url: String,
    config: ListenerConfig,
    cancel: CancellationToken,
) {
    let mut reconnects = Reconnects::new(Backoff::for_reconnect());
    loop {
        let outcome = session(&shared, &url, &config, &cancel, &mut reconnects).await;
        shared.connected.store(false, Ordering::Release);
        shared.session.send_replace(None);
        if cancel.is_cancelled() {
            return;
        }
        if let Err(err) = outcome {
            tracing::warn!(error = %Chain(&err), "pubsub listener connection lost; reconnecting");
        }
        tokio::select! {
            _ = tokio::time::sleep(reconnects.lost()) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// One connection's life. Returns when it breaks (or on cancel).
async fn session(
    shared: &Shared,
    url: &str,
    config: &ListenerConfig,
    cancel: &CancellationToken,
    reconnects: &mut Reconnects,
) -> Result<(), SessionError> {
    let pg = crate::db::pool::parse_url(url).map_err(SessionError::Url)?;
    let connect = pg.connect(NoTls);
    let (client, mut connection) = tokio::select! {
        result = connect => result.map_err(SessionError::Connect)?,
        _ = cancel.cancelled() => return Ok(()),
    };
    // The connection is driven here, not in a task of its own, and routes
    // notifications as it reads them: nothing queues between socket and subscriber.
    let driver = async {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(note))) => {
                    shared.on_notification(note.channel(), note.payload())
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => return SessionError::Connection(err),
                None => return SessionError::Closed,
            }
        }
    }
    .fuse();
    tokio::pin!(driver);

    // The replica's life lock first: it is held for as long as this session
    // lasts, and released by PostgreSQL the moment the session ends.
    let key = shared.replica_id.lock_key();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&key];
    let lock = client.query_one("SELECT pg_try_advisory_lock($1)", &params);
    let locked: bool = tokio::select! {
        row = lock => row.and_then(|row| row.try_get(0)).map_err(SessionError::Lock)?,
        err = &mut driver => return Err(err),
        _ = cancel.cancelled() => return Ok(()),
    };
    if !locked {
        return Err(SessionError::LockHeld(key));
    }
    reconnects.locked();
    let listen: String = Channel::ALL
        .iter()
        .map(|c| format!("LISTEN {};", c.name()))
        .collect();
    tokio::select! {
        result = client.batch_execute(&listen) => result.map_err(SessionError::Listen)?,
        err = &mut driver => return Err(err),
        _ = cancel.cancelled() => return Ok(()),
    }
    // Only now is the connection known good.
    if reconnects.listening() {
        shared.metrics.reconnects.add(1, &[]);
        tracing::info!("pubsub listener reconnected");
    }
    shared.connected.store(true, Ordering::Release);
    shared.session_started();
    // Anything published while we were not listening is lost: everyone re-reads.
    shared.resync_all();

    let mut keepalive = KeepAlive::new(config.keepalive_interval, config.keepalive_timeout);
    let mut probe = tokio::time::interval(config.probe_interval);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            err = &mut driver => return Err(err),
            _ = tokio::time::sleep_until(keepalive.due()) => {
                tokio::select! {
                    result = keepalive.check(client.simple_query("SELECT 1")) => result?,
                    err = &mut driver => return Err(err),
                }
            }
            _ = probe.tick() => shared.send_probe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    /// A keep-alive query that answers after `delay`.
    async fn answer_after(delay: Duration) -> Result<(), tokio_postgres::Error> {
        tokio::time::sleep(delay).await;
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn failed_attempts_back_off_until_listen_succeeds_then_start_over() {
        let start = Instant::now();
        let mut reconnects = Reconnects::new(Backoff::for_reconnect().with_jitter(0.0));
        // Three sessions fail (connect refused, or connected but LISTEN
        // failed: neither proves the connection good).
        for expected in [100, 200, 400] {
            let before = Instant::now();
            tokio::time::sleep(reconnects.lost()).await;
            assert_eq!(before.elapsed(), ms(expected));
        }
        assert!(!reconnects.listening(), "the first LISTEN is no reconnect");
        // The good connection dies later: the next attempt comes soon again.
        tokio::time::advance(Duration::from_secs(60)).await;
        let before = Instant::now();
        tokio::time::sleep(reconnects.lost()).await;
        assert_eq!(before.elapsed(), ms(100), "reset after LISTEN succeeded");
        assert!(reconnects.listening(), "a later LISTEN is a reconnect");
        assert_eq!(start.elapsed(), ms(60_800));
    }

    #[test]
    fn a_session_that_held_the_lock_leaves_it_free_for_the_watchers_to_see() {
        let mut reconnects = Reconnects::new(Backoff::for_reconnect().with_jitter(0.0));
        reconnects.locked();
        assert!(!reconnects.listening());
        assert_eq!(
            reconnects.lost(),
            LOCK_RELEASE_FLOOR,
            "lock held: the floor"
        );
        assert!(LOCK_RELEASE_FLOOR >= 2 * LOCK_POLL);
        // The next attempt failed before it took the lock: the schedule's
        // delay (200 ms, the second retry) with no floor.
        assert_eq!(reconnects.lost(), ms(200));
    }

    #[tokio::test(start_paused = true)]
    async fn reconnect_delays_are_jittered_within_the_schedule() {
        let mut reconnects = Reconnects::new(Backoff::for_reconnect());
        let mut delays = Vec::new();
        for ceiling in [100, 200, 400, 800, 1600, 3200, 5000, 5000] {
            let delay = reconnects.lost();
            assert!(delay <= ms(ceiling), "{delay:?} over {ceiling} ms");
            delays.push(delay);
        }
        delays.dedup();
        assert!(
            delays.len() > 1,
            "listeners that failed together spread out"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_keepalive_goes_every_interval_and_must_answer_in_time() {
        let start = Instant::now();
        let mut keepalive = KeepAlive::new(Duration::from_secs(10), Duration::from_secs(5));
        assert_eq!(keepalive.due(), start + Duration::from_secs(10));

        tokio::time::sleep_until(keepalive.due()).await;
        let answered = keepalive.check(answer_after(Duration::from_secs(1))).await;
        assert!(answered.is_ok(), "an answer within the timeout");
        assert_eq!(
            keepalive.due(),
            start + Duration::from_secs(20),
            "the next check counts from when this one was due"
        );

        tokio::time::sleep_until(keepalive.due()).await;
        let slow = keepalive.check(answer_after(Duration::from_secs(6))).await;
        assert!(
            matches!(slow, Err(KeepAliveFailure::TimedOut(limit)) if limit == Duration::from_secs(5)),
            "{slow:?}"
        );
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(25),
            "given up on at the timeout, not when it answered"
        );
    }
}
