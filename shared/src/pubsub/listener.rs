//! The dedicated LISTEN connection: connect, LISTEN on every channel, route
//! what arrives, probe the connection, and on any failure reconnect with
//! backoff and tell every subscriber to resync.

use crate::error_chain::Chain;
use std::{sync::atomic::Ordering, time::Duration};

use futures::FutureExt;
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

/// Reconnects forever (with backoff) until `cancel` fires.
pub(crate) async fn run(
    shared: std::sync::Arc<Shared>,
    url: String,
    config: ListenerConfig,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::for_reconnect();
    let mut first = true;
    loop {
        let outcome = session(&shared, &url, &config, &cancel, &mut backoff, first).await;
        let was_connected = shared.connected.swap(false, Ordering::AcqRel);
        if cancel.is_cancelled() {
            return;
        }
        if let Err(err) = outcome {
            tracing::warn!(error = %err, "pubsub listener connection lost; reconnecting");
        }
        if was_connected {
            first = false;
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
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
    backoff: &mut Backoff,
    first: bool,
) -> Result<(), String> {
    let pg = crate::db::pool::parse_url(url).map_err(|err| err.to_string())?;
    let connect = pg.connect(NoTls);
    let (client, mut connection) = tokio::select! {
        result = connect => result.map_err(|err| format!("connect: {}", Chain(&err)))?,
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
                Some(Err(err)) => return format!("connection: {}", Chain(&err)),
                None => return "connection closed".to_owned(),
            }
        }
    }
    .fuse();
    tokio::pin!(driver);

    let listen: String = Channel::ALL
        .iter()
        .map(|c| format!("LISTEN {};", c.name()))
        .collect();
    tokio::select! {
        result = client.batch_execute(&listen) => result.map_err(|err| format!("LISTEN: {}", Chain(&err)))?,
        reason = &mut driver => return Err(reason),
        _ = cancel.cancelled() => return Ok(()),
    }
    // Only now is the connection known good.
    backoff.reset();
    shared.connected.store(true, Ordering::Release);
    if !first {
        shared.metrics.reconnects.add(1, &[]);
        tracing::info!("pubsub listener reconnected");
    }
    // Anything published while we were not listening is lost: everyone re-reads.
    shared.resync_all();

    let mut keepalive = tokio::time::interval(config.keepalive_interval);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keepalive.reset();
    let mut probe = tokio::time::interval(config.probe_interval);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            reason = &mut driver => return Err(reason),
            _ = keepalive.tick() => {
                let check = tokio::time::timeout(config.keepalive_timeout, client.simple_query("SELECT 1"));
                tokio::select! {
                    result = check => match result {
                        Ok(Ok(_)) => {}
                        Ok(Err(err)) => return Err(format!("keep-alive: {}", Chain(&err))),
                        Err(_) => return Err(format!("keep-alive took longer than {:?}", config.keepalive_timeout)),
                    },
                    reason = &mut driver => return Err(reason),
                }
            }
            _ = probe.tick() => shared.send_probe(),
        }
    }
}
