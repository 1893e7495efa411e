//! Subagents (ARCHITECTURE.md §17): a parent's run spawns children (ordinary chats,
//! one level deep), and an interrupt or a deletion of the parent reaches
//! its children. The waits for children are in [`super::waits`].

use chatd_shared::{
    db::{
        DbError,
        agents::{self, AgentLimits, Child, Spawn},
        chats::{BecamePending, ChatTools, NewChat},
        lifecycle::Fence,
    },
    ids::ChatId,
    parts::Part,
    status::ChatStatus,
};

use super::{Access, Change, ChatOps};

/// A subagent to spawn.
#[derive(Debug, Clone, Copy)]
pub struct SpawnRequest<'a> {
    /// Its first message.
    pub prompt: &'a str,
    /// Its title ("" for none).
    pub title: &'a str,
    /// The parent's model and system prompt, which the child inherits.
    pub parent: &'a chatd_shared::db::chats::Chat,
    /// The limits to hold.
    pub limits: AgentLimits,
}

impl ChatOps {
    /// Spawns a subagent of the chat `fence` runs: a `pending` chat of the
    /// same owner with the prompt as its first message, fenced on the
    /// parent's run (see [`agents::spawn`]). Announces it like a created
    /// chat with a first message.
    pub async fn spawn_agent(
        &self,
        fence: &Fence,
        request: &SpawnRequest<'_>,
    ) -> Result<Spawn, DbError> {
        // The child's run links to the parent's tool call that spawned it.
        let trace_parent = crate::traces::current_traceparent();
        let child = NewChat {
            id: ChatId::new_v7(),
            owner_id: request.parent.owner_id,
            parent_chat_id: Some(fence.chat_id),
            root_chat_id: Some(fence.chat_id),
            title: request.title,
            status: ChatStatus::Waiting,
            model_config_id: request.parent.model_config_id,
            system_prompt: request.parent.system_prompt.as_deref(),
            labels: &serde_json::Value::Object(Default::default()),
            tools: ChatTools {
                mcp_servers: &request.parent.mcp_servers,
                client_tools: &[],
            },
            trace_parent: trace_parent.as_deref(),
        };
        let spawned = {
            let mut client = self.pool.get().await?;
            agents::spawn(
                &mut client,
                fence,
                child,
                &[Part::text(request.prompt)],
                request.limits,
            )
            .await?
        };
        if let Spawn::Created { chat, first } = &spawned {
            let mut changes = vec![Change::Created {
                chat_id: chat.id,
                owner_id: chat.owner_id,
            }];
            changes.extend(Change::messages(chat.id, [first.as_ref()]));
            changes.push(Change::Pending(BecamePending {
                chat_id: chat.id,
                owner_id: chat.owner_id,
                generation: chat.generation,
            }));
            self.announce(changes);
        }
        Ok(spawned)
    }

    /// The subagents of `parent`, oldest first, with their last replies.
    pub async fn children(&self, parent: ChatId) -> Result<Vec<Child>, DbError> {
        let client = self.pool.get().await?;
        agents::children(&client, parent).await
    }

    /// Interrupts every busy subagent of `parent` (an interrupt or a
    /// deletion of the parent reaches its children). Children have no
    /// children of their own, so this goes one level down.
    pub(crate) async fn interrupt_children(
        &self,
        access: Access,
        parent: ChatId,
    ) -> Result<(), DbError> {
        let busy = {
            let client = self.pool.get().await?;
            agents::busy_children(&client, parent).await?
        };
        for child in busy {
            Box::pin(self.interrupt_one(access, child)).await?;
        }
        Ok(())
    }
}
