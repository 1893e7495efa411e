//! The hub as the relay crate sees it (ARCHITECTURE.md §7). The relay cannot depend
//! on the replica (dependencies point `replica → relay`), so it names what
//! it needs as traits and this module implements them: [`HubSource`] serves
//! this replica's runs to peers, [`HubSink`] takes parts of peers' runs in,
//! and [`ReplicaDirectory`] finds a peer's relay address in `replicas`.

use std::{collections::HashMap, sync::Arc, sync::Mutex};

use chatd_relay::{
    PartSink, PartSource, PeerDirectory, SourceItem, Watch, WatchItems, protocol::RelayPart,
};
use chatd_shared::{
    db::{Pool, replicas},
    error_chain::Chain,
    ids::{ChatId, Generation, MessageId, ReplicaId},
    stream::StreamEvent,
    sync::lock,
};

use super::{
    hub::{HubReceiver, RunSnapshot, StreamHub},
    queue::{HubItem, Overflowed},
};

fn relay_part(event: &StreamEvent) -> Option<RelayPart> {
    match event {
        StreamEvent::Part {
            step, seq, part, ..
        } => Some(RelayPart {
            seq: *seq,
            step: *step,
            part: part.clone(),
        }),
        _ => None,
    }
}

/// What the relay server needs of one hub item.
fn source_item(item: Result<HubItem, Overflowed>) -> SourceItem {
    match item {
        Ok(HubItem::Event(event)) => match (event.as_ref(), relay_part(&event)) {
            (StreamEvent::Part { generation, .. }, Some(part)) => SourceItem::Part {
                generation: *generation,
                part,
            },
            (StreamEvent::Message { message, .. }, _) => match message.generation {
                Some(generation) => SourceItem::Committed {
                    generation,
                    through: message.id,
                },
                None => SourceItem::Other,
            },
            _ => SourceItem::Other,
        },
        Ok(HubItem::RunStarted(generation)) => SourceItem::RunStarted(generation),
        Ok(HubItem::RunEnded(generation)) => SourceItem::RunEnded(generation),
        Ok(HubItem::Resync) => SourceItem::Other,
        Err(Overflowed) => SourceItem::Overflowed,
    }
}

/// A hub subscription, as the relay server reads it.
struct Items(HubReceiver);

#[async_trait::async_trait]
impl WatchItems for Items {
    async fn next(&mut self) -> SourceItem {
        source_item(self.0.recv().await)
    }

    fn try_next(&mut self) -> Option<SourceItem> {
        match self.0.try_recv() {
            Ok(Some(item)) => Some(source_item(Ok(item))),
            Ok(None) => None,
            Err(Overflowed) => Some(SourceItem::Overflowed),
        }
    }
}

/// The hub as the relay server's source of this replica's runs.
pub struct HubSource(pub Arc<StreamHub>);

impl PartSource for HubSource {
    fn watch(&self, chat_id: ChatId, generation: Generation) -> Watch {
        let subscribed = self.0.subscribe(chat_id);
        // Only runs of this replica are served; relayed ones are someone else's.
        let run = match subscribed.run {
            Some(RunSnapshot::Local { generation, parts }) => Some((
                generation,
                parts
                    .iter()
                    .filter_map(|part| relay_part(&part.event))
                    .collect(),
            )),
            _ => None,
        };
        let ended = run.is_none() && self.0.ended_here(chat_id, generation);
        Watch {
            run,
            committed: subscribed.watermark,
            ended,
            items: Box::new(Items(subscribed.receiver)),
        }
    }
}

/// The hub as the relay client's sink for parts of peers' runs.
pub struct HubSink(pub Arc<StreamHub>);

impl PartSink for HubSink {
    fn parts(&self, chat_id: ChatId, generation: Generation, parts: &[RelayPart]) {
        self.0.remote_parts(chat_id, generation, parts);
    }

    fn committed(&self, chat_id: ChatId, generation: Generation, through: MessageId) {
        self.0.remote_committed(chat_id, generation, through);
    }

    fn ended(&self, chat_id: ChatId, generation: Generation) {
        self.0.remote_ended(chat_id, generation);
    }
}

/// Where peers' relay listeners are: the `relay_url` of their `replicas`
/// row, cached, and read again after a failed dial.
pub struct ReplicaDirectory {
    pool: Pool,
    cache: Mutex<HashMap<ReplicaId, String>>,
}

impl ReplicaDirectory {
    /// An empty cache over `pool`.
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait::async_trait]
impl PeerDirectory for ReplicaDirectory {
    async fn relay_url(&self, replica: ReplicaId, refresh: bool) -> Option<String> {
        if !refresh && let Some(url) = lock(&self.cache).get(&replica) {
            return Some(url.clone());
        }
        let looked_up = async {
            let client = self.pool.get().await?;
            replicas::get(&client, replica).await
        };
        let url = match looked_up.await {
            Ok(row) => row.and_then(|row| row.relay_url),
            Err(err) => {
                tracing::warn!(%replica, error = %Chain(&err), "looking up a peer's relay address failed");
                return None;
            }
        };
        let mut cache = lock(&self.cache);
        match &url {
            Some(url) => cache.insert(replica, url.clone()),
            None => cache.remove(&replica),
        };
        url
    }
}
