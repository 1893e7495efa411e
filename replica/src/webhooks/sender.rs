//! The sender (ARCHITECTURE.md §17, invariant 17): on every replica, claims due
//! outbox rows with `SKIP LOCKED`, POSTs each signed body, and settles it:
//! 2xx is delivered; anything else (an error status, a timeout, a refused
//! connection, a redirect, which is never followed) is tried again after an
//! exponential backoff with full jitter, until the delivery is a day old;
//! then it failed for good.
//!
//! At least once: a claim only pushes the row's due time out by a lease,
//! so when a sender dies mid-attempt (or its result cannot be recorded) the
//! row comes due again and any replica sends it again, with the same
//! delivery id. A sender that stops hands its attempts in flight back.
//!
//! The fast path costs no notification: the replica that ended the turn
//! knows it queued deliveries (the finishing statement says so) and hints
//! its own sender. Other replicas find work on their poll tick.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use chatd_shared::{
    backoff::Backoff,
    db::{
        DbError, Pool,
        webhook_deliveries::{self, Attempt, DueDelivery, Settled},
    },
    error_chain::Chain,
    ids::DeliveryId,
};
use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram, Meter},
};
use reqwest::{Url, header::CONTENT_TYPE, redirect};
use tokio::{sync::Notify, task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{
    WebhookConfig,
    clock::SendClock,
    signature::{self, DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER},
    target::{GuardedResolver, TargetPolicy, check_literal},
};

/// Longest `last_error` kept.
const MAX_ERROR: usize = 500;
/// Settled deliveries deleted per pruning statement at most.
const PRUNE_BATCH: i64 = 10_000;

/// Wakes a replica's sender: the turn end that queued deliveries happened
/// here. Cheap to clone; waking an idle sender costs no statement until it
/// claims.
#[derive(Clone, Default)]
pub struct SenderHint(Arc<Notify>);

impl SenderHint {
    /// Deliveries were queued: look now.
    pub fn wake(&self) {
        // `notify_one` keeps a permit when the sender is busy, so a hint
        // that arrives mid-claim is not lost.
        self.0.notify_one();
    }
}

/// The sender's instruments.
#[derive(Clone)]
struct SenderMetrics {
    attempts: Counter<u64>,
    latency: Histogram<f64>,
}

impl SenderMetrics {
    fn new(meter: &Meter) -> Self {
        Self {
            attempts: meter
                .u64_counter("chatd_webhook_attempts")
                .with_description(
                    "Webhook delivery attempts by outcome (delivered, retrying, failed, stale)",
                )
                .build(),
            latency: meter
                .f64_histogram("chatd_webhook_delivery_seconds")
                .with_description(
                    "From a turn's end to its webhook delivery's 2xx (database clock)",
                )
                .with_unit("s")
                .with_boundaries(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0, 3600.0,
                ])
                .build(),
        }
    }
}

/// One replica's sender.
pub struct Sender {
    pool: Pool,
    config: WebhookConfig,
    hint: SenderHint,
    http: reqwest::Client,
    backoff: Backoff,
    metrics: SenderMetrics,
}

/// How one attempt ended, for the loop.
struct Done {
    id: DeliveryId,
    /// When to try again, if this replica should wake for it.
    retry_at: Option<Instant>,
}

impl Sender {
    /// A sender on `pool`'s outbox, woken by `hint`.
    pub fn new(
        pool: Pool,
        config: WebhookConfig,
        hint: SenderHint,
        meter: &Meter,
    ) -> Result<Self, reqwest::Error> {
        let policy = TargetPolicy {
            allow_private: config.allow_private,
        };
        let http = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            // A proxy would connect on our behalf, past the address check.
            .no_proxy()
            .dns_resolver(GuardedResolver::shared(policy))
            .connect_timeout(config.timeout)
            .timeout(config.timeout)
            .user_agent(concat!("chatd-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let backoff = Backoff::new(config.retry_min, config.retry_max);
        Ok(Self {
            pool,
            config,
            hint,
            http,
            backoff,
            metrics: SenderMetrics::new(meter),
        })
    }

    /// Sends until `stop` fires, then hands back what is in flight.
    ///
    /// Each attempt is a task of its own (in a `JoinSet` this loop owns and
    /// aborts when it ends): attempts must make progress while the loop
    /// waits for a connection to claim with, or a paused attempt holding a
    /// pooled connection could starve the claim, and the API with it.
    pub async fn run(self, stop: CancellationToken) {
        let this = Arc::new(self);
        let mut clock = SendClock::new(this.config.poll_interval, this.config.max_in_flight);
        let mut in_flight: JoinSet<Done> = JoinSet::new();
        let mut claimed: HashSet<DeliveryId> = HashSet::new();
        let mut prune_at = Instant::now() + this.config.prune_interval;
        loop {
            if let Some(limit) = clock.look(in_flight.len()) {
                match this.claim(limit).await {
                    Ok(due) => {
                        clock.claimed(limit, due.len());
                        for delivery in due {
                            claimed.insert(delivery.id);
                            let sender = this.clone();
                            in_flight.spawn(async move { sender.attempt(delivery).await });
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %Chain(&err), "claiming webhook deliveries failed")
                    }
                }
            }
            if Instant::now() >= prune_at {
                prune_at = Instant::now() + this.config.prune_interval;
                this.prune().await;
            }
            let wake = clock.next_look().min(prune_at);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = this.hint.0.notified() => clock.hint(),
                _ = tokio::time::sleep_until(wake) => {}
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    match done {
                        Ok(done) => {
                            claimed.remove(&done.id);
                            if let Some(at) = done.retry_at {
                                clock.retry_at(at);
                            }
                        }
                        // A panicked attempt: its claim lapses and the
                        // delivery is tried again (the id stays in
                        // `claimed`, to be handed back at a stop).
                        Err(err) => tracing::error!(error = %err, "a webhook attempt panicked"),
                    }
                }
            }
        }
        in_flight.shutdown().await;
        this.hand_back(claimed).await;
    }

    async fn claim(&self, limit: usize) -> Result<Vec<DueDelivery>, DbError> {
        let lease = self.config.claim_lease.max(self.config.timeout);
        let client = self.pool.get().await?;
        webhook_deliveries::claim_due(&client, limit as i64, lease).await
    }

    /// One attempt: POST, then settle the row.
    async fn attempt(&self, delivery: DueDelivery) -> Done {
        let attempt = match self.post(&delivery).await {
            Ok(status) if (200..300).contains(&status) => Attempt::Delivered {
                status: i32::from(status),
            },
            Ok(status) => self.failed(&delivery, Some(i32::from(status)), format!("HTTP {status}")),
            Err(error) => self.failed(&delivery, None, error),
        };
        let retry_in = match &attempt {
            Attempt::Failed { retry_in, .. } => Some(*retry_in),
            Attempt::Delivered { .. } => None,
        };
        let settled = async {
            let client = self.pool.get().await?;
            webhook_deliveries::record(&client, delivery.id, delivery.attempts, &attempt).await
        }
        .await;
        let outcome = match settled {
            Ok(Settled::Delivered(latency)) => {
                self.metrics.latency.record(latency.max(0.0), &[]);
                "delivered"
            }
            Ok(Settled::Retrying) => "retrying",
            Ok(Settled::Failed) => {
                tracing::warn!(delivery_id = %delivery.id, webhook_id = %delivery.webhook_id, attempts = delivery.attempts, "webhook delivery failed for good");
                "failed"
            }
            Ok(Settled::Stale) => "stale",
            Err(err) => {
                // The claim's lease runs out and the delivery is tried again.
                tracing::warn!(delivery_id = %delivery.id, error = %Chain(&err), "recording a webhook attempt failed");
                "unrecorded"
            }
        };
        self.metrics
            .attempts
            .add(1, &[KeyValue::new("outcome", outcome)]);
        Done {
            id: delivery.id,
            retry_at: (outcome == "retrying")
                .then(|| retry_in.map(|delay| Instant::now() + delay))
                .flatten(),
        }
    }

    fn failed(&self, delivery: &DueDelivery, status: Option<i32>, error: String) -> Attempt {
        let retry = u32::try_from(delivery.attempts.saturating_sub(1)).unwrap_or(0);
        Attempt::Failed {
            status,
            error: error.chars().take(MAX_ERROR).collect(),
            retry_in: self.backoff.delay(retry),
            give_up_after: self.config.give_up_after,
        }
    }

    /// POSTs the delivery, signed now; the receiver's status, or why there
    /// was none.
    async fn post(&self, delivery: &DueDelivery) -> Result<u16, String> {
        let url = Url::parse(&delivery.url).map_err(|err| format!("invalid URL: {err}"))?;
        let policy = TargetPolicy {
            allow_private: self.config.allow_private,
        };
        check_literal(policy, &url).map_err(|refused| refused.to_string())?;
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs() as i64);
        let body = delivery.payload.clone().into_bytes();
        let signed = signature::sign(&delivery.secret, timestamp, &body);
        let response = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(DELIVERY_HEADER, delivery.id.to_string())
            .header(EVENT_HEADER, &delivery.event)
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signed)
            .body(body)
            .send()
            .await
            .map_err(|err| Chain(&err).to_string())?;
        Ok(response.status().as_u16())
    }

    /// Makes the attempts in flight due again at once, for another sender.
    async fn hand_back(&self, claimed: HashSet<DeliveryId>) {
        if claimed.is_empty() {
            return;
        }
        let ids: Vec<DeliveryId> = claimed.into_iter().collect();
        let released = async {
            let client = self.pool.get().await?;
            webhook_deliveries::release(&client, &ids).await
        }
        .await;
        if let Err(err) = released {
            tracing::warn!(error = %Chain(&err), count = ids.len(), "could not hand back webhook deliveries; they come due when their claim lapses");
        }
    }

    /// Deletes settled deliveries past their retention.
    async fn prune(&self) {
        let pruned = async {
            let client = self.pool.get().await?;
            webhook_deliveries::prune(&client, self.config.retention, PRUNE_BATCH).await
        }
        .await;
        match pruned {
            Ok(0) => {}
            Ok(count) => tracing::debug!(count, "pruned settled webhook deliveries"),
            Err(err) => tracing::debug!(error = %Chain(&err), "pruning webhook deliveries failed"),
        }
    }
}
