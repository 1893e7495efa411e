//! Transitions of chats that wait on something outside themselves (ARCHITECTURE.md
//! §17, invariant 16): a run records its tool calls before they run, and
//! ends by waiting (`requires_action`, `waiting_on_agents`) without holding
//! a slot; client results, a subagent's end, a deadline (the heartbeat) or
//! an interrupt make the chat `pending` again, and whoever claims it writes
//! what the wait produced. Every wait is a row of the tool-call ledger.

use chatd_shared::{
    db::{
        DbError,
        lifecycle::{Fence, StepMessage},
        messages::Message,
        tool_calls::{self, ClientResult, NewCall, Submitted, Suspended, WaitDeadline},
    },
    ids::ChatId,
};

use super::{Access, Change, ChatOps};

impl ChatOps {
    /// Stores a step's assistant message and records its calls in the
    /// ledger, in one statement fenced on `fence`: the calls are on record
    /// before any runs. `None` when ownership was lost. Announces the message.
    pub async fn record_calls(
        &self,
        fence: &Fence,
        assistant: &StepMessage,
        calls: &[NewCall],
    ) -> Result<Option<Message>, DbError> {
        let recorded = {
            let client = self.pool.get().await?;
            tool_calls::record(&client, fence, assistant, calls).await?
        };
        if let Some(message) = &recorded {
            self.announce(Change::messages(fence.chat_id, [message]));
        }
        Ok(recorded)
    }

    /// Ends `fence`'s run by waiting (see [`tool_calls::suspend`]): the
    /// open calls named in `waits` get their deadlines and the chat leaves
    /// `running` without a worker. `None` when ownership was lost.
    /// Announces the new status (`requires_action` or `waiting_on_agents`),
    /// or `pending` when the subagents had finished already.
    pub async fn suspend(
        &self,
        fence: &Fence,
        waits: &[WaitDeadline],
    ) -> Result<Option<Suspended>, DbError> {
        let suspended = {
            let client = self.pool.get().await?;
            tool_calls::suspend(&client, fence, waits).await?
        };
        match &suspended {
            Some(Suspended::Waiting {
                status,
                owner_id,
                webhooks_queued,
            }) => {
                if *webhooks_queued > 0 {
                    self.webhooks.wake();
                }
                self.announce([Change::Status {
                    chat_id: fence.chat_id,
                    owner_id: *owner_id,
                    status: *status,
                    generation: fence.generation,
                    worker_id: None,
                }])
            }
            Some(Suspended::Pending(pending)) => self.announce([Change::Pending(*pending)]),
            Some(Suspended::Interrupted) | None => {}
        }
        Ok(suspended)
    }

    /// A client's results for the calls a `requires_action` chat waits for
    /// (see [`tool_calls::submit_client_results`]). Announces the tool
    /// messages and `pending`.
    pub async fn submit_tool_results(
        &self,
        access: Access,
        id: ChatId,
        results: &[ClientResult],
    ) -> Result<Submitted, DbError> {
        let submitted = {
            let mut client = self.pool.get().await?;
            tool_calls::submit_client_results(&mut client, id, access.owner_filter(), results)
                .await?
        };
        if let Submitted::Accepted { messages, pending } = &submitted {
            self.announce(
                Change::messages(id, messages)
                    .into_iter()
                    .chain([Change::Pending(*pending)]),
            );
        }
        Ok(submitted)
    }

    /// A subagent became idle (its turn ended, it was interrupted or
    /// deleted): its parent goes on if it waits for it and for no other
    /// child still busy. Best effort: a failure is logged, and the
    /// heartbeat's sweep wakes the parent instead. Announces `pending`.
    pub(crate) async fn child_idle(&self, parent: ChatId, child: ChatId) {
        let woken = async {
            let client = self.pool.get().await?;
            tool_calls::wake_parent(&client, parent, child).await
        }
        .await;
        match woken {
            Ok(Some(pending)) => self.announce([Change::Pending(pending)]),
            Ok(None) => {}
            Err(err) => tracing::warn!(
                chat_id = %parent,
                child = %child,
                error = %chatd_shared::error_chain::Chain(&err),
                "could not wake the parent of a finished subagent; the heartbeat will"
            ),
        }
    }
}
