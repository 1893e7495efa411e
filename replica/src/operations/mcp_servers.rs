//! The MCP servers admins register (ARCHITECTURE.md §17). Every change is announced
//! as [`Change::McpServersChanged`], so each replica drops its sessions and
//! cached tool lists and the next run sees the change.

use chatd_shared::{
    db::{
        DbError, Pool,
        mcp_servers::{self, McpServer, McpServerChanges, NewMcpServer},
    },
    ids::McpServerId,
    pubsub::PubSub,
};

use super::{Change, announce};

/// What a create or update did.
#[derive(Debug, Clone)]
pub enum McpServerOutcome {
    /// Done: the row as it is now.
    Done(Box<McpServer>),
    /// No such server.
    NotFound,
    /// Another server has this name.
    NameTaken(String),
}

/// The transitions of MCP servers, each announced. Cheap to clone.
#[derive(Clone)]
pub struct McpServers {
    pool: Pool,
    pubsub: PubSub,
}

impl McpServers {
    /// Operations on `pool`'s database, announced through `pubsub`.
    pub fn new(pool: Pool, pubsub: PubSub) -> Self {
        Self { pool, pubsub }
    }

    fn changed(&self) {
        announce::announce(&self.pubsub, [Change::McpServersChanged]);
    }

    /// Every server, by name.
    pub async fn list(&self) -> Result<Vec<McpServer>, DbError> {
        let client = self.pool.get().await?;
        mcp_servers::list(&client).await
    }

    /// One server.
    pub async fn get(&self, id: McpServerId) -> Result<Option<McpServer>, DbError> {
        let client = self.pool.get().await?;
        mcp_servers::get(&client, id).await
    }

    /// Registers a server. Announces the change.
    pub async fn create(&self, new: &NewMcpServer<'_>) -> Result<McpServerOutcome, DbError> {
        let inserted = {
            let client = self.pool.get().await?;
            mcp_servers::insert(&client, new).await
        };
        match inserted {
            Ok(row) => {
                self.changed();
                Ok(McpServerOutcome::Done(Box::new(row)))
            }
            Err(err) if err.is_unique_violation() => {
                Ok(McpServerOutcome::NameTaken(new.name.to_owned()))
            }
            Err(err) => Err(err),
        }
    }

    /// Changes a server. Announces the change.
    pub async fn update(
        &self,
        id: McpServerId,
        changes: &McpServerChanges<'_>,
    ) -> Result<McpServerOutcome, DbError> {
        let updated = {
            let client = self.pool.get().await?;
            mcp_servers::update(&client, id, changes).await?
        };
        Ok(match updated {
            Some(row) => {
                self.changed();
                McpServerOutcome::Done(Box::new(row))
            }
            None => McpServerOutcome::NotFound,
        })
    }

    /// Removes a server; chats that named it lose its tools. `false` when it
    /// did not exist. Announces the change.
    pub async fn delete(&self, id: McpServerId) -> Result<bool, DbError> {
        let deleted = {
            let client = self.pool.get().await?;
            mcp_servers::delete(&client, id).await?
        };
        if deleted {
            self.changed();
        }
        Ok(deleted)
    }
}
