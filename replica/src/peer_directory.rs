//! Where peers' relay listeners are: the `relay_url` of their `replicas`
//! row, cached, and read again after a failed dial.

use std::{collections::HashMap, sync::Mutex};

use chatd_relay::PeerDirectory;
use chatd_shared::{
    db::{Pool, replicas},
    error_chain::Chain,
    ids::ReplicaId,
};

/// Relay addresses from the `replicas` table.
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
        if !refresh
            && let Some(url) = self
                .cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&replica)
        {
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
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match &url {
            Some(url) => cache.insert(replica, url.clone()),
            None => cache.remove(&replica),
        };
        url
    }
}
