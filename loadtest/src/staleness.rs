//! Relay staleness: for a sample of chats, the same chat is also streamed
//! from every other target, and each part's arrival on the chat's own
//! stream is compared with its earliest arrival anywhere. A part that
//! reaches the chat's stream last by 3 ms cost the cross-replica path 3 ms.
//!
//! Once the chat's stream has a part, a later arrival elsewhere cannot be
//! the earliest, so only parts the chat's stream has not had yet are kept.
//! A part that arrived elsewhere and never on the chat's stream is counted
//! as not delivered: expected when no relay carries parts between replicas,
//! otherwise only a part whose committed message overtook it.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chatd_shared::{
    client::{ClientError, Delivery, FailoverStream},
    error_chain::Chain,
    ids::Generation,
    stream::{PartCursor, StreamEvent},
};
use tokio::time::Instant;

use crate::stats::{Metric, Recorder, Stage};

/// Arrivals of one chat's parts on streams other than the chat's own.
#[derive(Debug, Default)]
pub struct PartArrivals {
    /// The newest part the chat's own stream delivered.
    delivered: Option<PartCursor>,
    /// Parts seen elsewhere and not yet on the chat's stream, with their
    /// earliest arrival.
    elsewhere: BTreeMap<PartCursor, Instant>,
}

impl PartArrivals {
    /// A part arrived on another target's stream at `at`.
    pub fn seen_elsewhere(&mut self, part: PartCursor, at: Instant) {
        if self.delivered.is_some_and(|delivered| part <= delivered) {
            return;
        }
        self.elsewhere.entry(part).or_insert(at);
    }

    /// A part arrived on the chat's own stream at `at`: how much later than
    /// the earliest arrival elsewhere (zero when it was first), and how many
    /// older parts seen elsewhere it skipped.
    pub fn delivered(&mut self, part: PartCursor, at: Instant) -> (Duration, u64) {
        let earliest = self.elsewhere.remove(&part);
        let newer = self.elsewhere.split_off(&part);
        let skipped = std::mem::replace(&mut self.elsewhere, newer).len() as u64;
        self.delivered = self.delivered.max(Some(part));
        let staleness =
            earliest.map_or(Duration::ZERO, |first| at.saturating_duration_since(first));
        (staleness, skipped)
    }

    /// The turn of `generation` ended on the chat's stream: parts of it (or
    /// older) seen elsewhere and not delivered never will be. Returns how
    /// many.
    pub fn turn_finished(&mut self, generation: Generation) -> u64 {
        let next = PartCursor {
            generation: Generation(generation.0 + 1),
            seq: 0,
        };
        let newer = self.elsewhere.split_off(&next);
        let missed = std::mem::replace(&mut self.elsewhere, newer).len() as u64;
        let end_of_turn = PartCursor {
            generation,
            seq: u64::MAX,
        };
        self.delivered = self.delivered.max(Some(end_of_turn));
        missed
    }
}

/// A sampled chat's arrivals, shared by its own stream and its observers.
pub type SharedArrivals = Arc<Mutex<PartArrivals>>;

/// Records a part delivered on the chat's own stream.
pub fn record_delivery(
    arrivals: &SharedArrivals,
    recorder: &Recorder,
    part: PartCursor,
    at: Instant,
) {
    let (staleness, skipped) = arrivals
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .delivered(part, at);
    recorder.record(Metric::RelayStaleness, staleness);
    recorder.parts_not_delivered(skipped);
}

/// Reads a sampled chat's stream on another target until the chat's run
/// ends (the caller aborts it), noting when each part arrives. The stream
/// reopens itself elsewhere when its target fails.
pub async fn observe(
    mut stream: FailoverStream,
    arrivals: SharedArrivals,
    recorder: Arc<Recorder>,
) {
    loop {
        match stream.next().await {
            Ok(Delivery::Event(StreamEvent::Part {
                generation, seq, ..
            })) => arrivals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .seen_elsewhere(PartCursor { generation, seq }, Instant::now()),
            Ok(Delivery::Resumed(_)) => recorder.reconnected(),
            Ok(Delivery::Event(_)) | Err(ClientError::Decode { .. }) => {}
            Err(error) => {
                let message = format!(
                    "chat {}: resuming the staleness stream on another target: {}",
                    stream.chat_id(),
                    Chain(&error)
                );
                recorder.failed(Stage::Stream, false, message);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(generation: i64, seq: u64) -> PartCursor {
        PartCursor {
            generation: Generation(generation),
            seq,
        }
    }

    #[test]
    fn a_part_first_seen_elsewhere_is_stale_by_the_difference() {
        let start = Instant::now();
        let ms = |n| start + Duration::from_millis(n);
        let mut arrivals = PartArrivals::default();
        arrivals.seen_elsewhere(part(1, 1), ms(10));
        arrivals.seen_elsewhere(part(1, 1), ms(11)); // a third target, later
        assert_eq!(
            arrivals.delivered(part(1, 1), ms(13)),
            (Duration::from_millis(3), 0)
        );
        // Delivered here first: arrivals elsewhere afterwards do not count.
        assert_eq!(arrivals.delivered(part(1, 2), ms(20)), (Duration::ZERO, 0));
        arrivals.seen_elsewhere(part(1, 2), ms(21));
        assert!(arrivals.elsewhere.is_empty());
    }

    #[test]
    fn parts_never_delivered_are_counted_once() {
        let start = Instant::now();
        let mut arrivals = PartArrivals::default();
        for seq in 1..=3 {
            arrivals.seen_elsewhere(part(1, seq), start);
        }
        // The chat's stream skips 1 and 2.
        assert_eq!(arrivals.delivered(part(1, 3), start).1, 2);
        // A whole turn seen only elsewhere (no relay).
        for seq in 1..=4 {
            arrivals.seen_elsewhere(part(2, seq), start);
        }
        arrivals.seen_elsewhere(part(3, 1), start);
        assert_eq!(arrivals.turn_finished(Generation(2)), 4);
        assert_eq!(arrivals.turn_finished(Generation(2)), 0);
        // Late arrivals of a finished turn are not kept.
        arrivals.seen_elsewhere(part(2, 5), start);
        assert_eq!(arrivals.elsewhere.len(), 1);
    }
}
