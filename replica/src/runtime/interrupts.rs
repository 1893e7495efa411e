//! Delivers interrupt notices to the runs they are for. A notice that is
//! lost (or a resync) is covered by the lease's reconciliation, which reads
//! `interrupt_requested` from the database every beat.

use std::sync::Arc;

use chatd_shared::pubsub::{ChatEvent, Delivery};
use tokio_util::sync::CancellationToken;

use super::Shared;

/// Runs until `stop` fires or the pubsub closes.
pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut notices = shared.pubsub.subscribe_all_chats();
    loop {
        let delivery = tokio::select! {
            _ = stop.cancelled() => return,
            delivery = notices.recv() => delivery,
        };
        match delivery {
            Some(Delivery::Notice(notice)) => {
                if let ChatEvent::Interrupt { generation } = notice.event
                    && let Some(control) = shared.registry.control(notice.chat_id, generation)
                {
                    control.interrupt();
                }
            }
            Some(Delivery::Resync) => {}
            None => return,
        }
    }
}
