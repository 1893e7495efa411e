//! Subagents as tools (ARCHITECTURE.md §17): `spawn_agent`, `wait_agent`,
//! `message_agent` and `close_agent`, offered to top-level chats. A child is
//! an ordinary chat (any replica runs it); `wait_agent` never holds a slot:
//! the turn loop ends the parent's run in `waiting_on_agents` with the wait
//! as a row, and the run that resumes it reads the children's replies here.

use std::{sync::Arc, time::Duration};

use chatd_shared::{
    api::BusyBehavior,
    db::{
        DbError,
        agents::{AgentLimits, Child, Spawn},
        chats::Chat,
        lifecycle::Fence,
    },
    error_chain::Chain,
    ids::ChatId,
    parts::Part,
};
use serde_json::{Value, json};

use crate::{
    llm::ToolSpec,
    operations::{Access, ChatChanges, ChatOps, SendOutcome, SendRequest, SpawnRequest},
    tools::Outcome,
};

/// `spawn_agent`: starts a subagent.
pub const SPAWN: &str = "spawn_agent";
/// `wait_agent`: waits for subagents to finish.
pub const WAIT: &str = "wait_agent";
/// `message_agent`: sends a subagent a message.
pub const MESSAGE: &str = "message_agent";
/// `close_agent`: stops a subagent for good.
pub const CLOSE: &str = "close_agent";

/// The agent tools' names.
pub const NAMES: [&str; 4] = [SPAWN, WAIT, MESSAGE, CLOSE];

/// How long `wait_agent` waits when the model does not say.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(600);
/// The longest `wait_agent` may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// What the model is offered (top-level chats only).
pub fn specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: SPAWN.into(),
            description: "Start a subagent: a new chat that works on `prompt` on its own, in \
                          parallel with you. Returns its agent_id. Subagents cannot start \
                          subagents."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "prompt": {"type": "string", "description": "The subagent's task, as its first message."},
                    "title": {"type": "string", "description": "A short title for it."}
                },
                "required": ["prompt"]
            }),
        },
        ToolSpec {
            name: WAIT.into(),
            description: "Wait until subagents finish (all of `ids`, or all open ones when \
                          `ids` is left out) or `timeout_s` passes, then get each one's \
                          status and final reply."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "ids": {"type": "array", "items": {"type": "string"}, "description": "agent_ids to wait for."},
                    "timeout_s": {"type": "number", "description": "Seconds to wait at most (default 600, at most 3600)."}
                }
            }),
        },
        ToolSpec {
            name: MESSAGE.into(),
            description: "Send a subagent a message. When it is busy the message waits in its \
                          queue (busy_behavior \"queue\", the default) or interrupts it \
                          (\"interrupt\")."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "id": {"type": "string", "description": "The agent_id."},
                    "text": {"type": "string"},
                    "busy_behavior": {"type": "string", "enum": ["queue", "interrupt", "reject"]}
                },
                "required": ["id", "text"]
            }),
        },
        ToolSpec {
            name: CLOSE.into(),
            description: "Stop a subagent for good: its turn is interrupted and it takes no \
                          more messages."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {"id": {"type": "string", "description": "The agent_id."}},
                "required": ["id"]
            }),
        },
    ]
}

/// What the agent tools of one run act with: the parent's chat and fence,
/// the operations, the limits. Cheap to clone.
#[derive(Clone)]
pub struct AgentContext {
    ops: ChatOps,
    fence: Fence,
    chat: Arc<Chat>,
    limits: AgentLimits,
}

/// What `wait_agent` asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum WaitPlan {
    /// Answer now (every child finished, or the call was wrong).
    Ready(Outcome),
    /// Wait for these children, at most this long.
    Wait {
        /// The children.
        ids: Vec<ChatId>,
        /// At most this long.
        timeout: Duration,
    },
}

impl AgentContext {
    /// The agent tools of the run `fence` of `chat`.
    pub fn new(ops: ChatOps, fence: Fence, chat: Arc<Chat>, limits: AgentLimits) -> Self {
        Self {
            ops,
            fence,
            chat,
            limits,
        }
    }

    /// True when the chat may use agent tools (it is no subagent itself).
    pub fn offered(&self) -> bool {
        self.chat.parent_chat_id.is_none()
    }

    fn access(&self) -> Access {
        Access {
            user_id: self.chat.owner_id,
            admin: false,
        }
    }

    /// Runs `spawn_agent`, `message_agent` or `close_agent`.
    pub async fn run(&self, name: &str, args: &Value) -> Outcome {
        if !self.offered() {
            return Outcome::error(format!(
                "{name} is not available to a subagent: subagents are one level deep"
            ));
        }
        let outcome = match name {
            SPAWN => self.spawn(args).await,
            MESSAGE => self.message(args).await,
            CLOSE => self.close(args).await,
            _ => Ok(Outcome::error(format!("unknown tool {name:?}"))),
        };
        outcome.unwrap_or_else(|err| {
            tracing::warn!(chat_id = %self.fence.chat_id, tool = name, error = %Chain(&err), "agent tool failed on the database");
            Outcome::error(format!("{name} failed: the database is unavailable"))
        })
    }

    async fn spawn(&self, args: &Value) -> Result<Outcome, DbError> {
        let Some(prompt) = args["prompt"].as_str().filter(|p| !p.trim().is_empty()) else {
            return Ok(Outcome::error("spawn_agent needs a non-empty `prompt`"));
        };
        let title: String = args["title"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        let request = SpawnRequest {
            prompt,
            title: &title,
            parent: &self.chat,
            limits: self.limits,
        };
        Ok(match self.ops.spawn_agent(&self.fence, &request).await? {
            Spawn::Created { chat, .. } => Outcome::ok(json!({
                "agent_id": chat.id,
                "title": chat.title,
                "status": chat.status,
            })),
            Spawn::Nested => Outcome::error("subagents cannot spawn subagents (one level deep)"),
            Spawn::TooManyChildren { limit } => Outcome::error(format!(
                "this chat has spawned {limit} subagents, the most it may"
            )),
            Spawn::TooManyBusy { limit } => Outcome::error(format!(
                "{limit} of this user's subagents are busy, the most at once: wait for some \
                 (wait_agent) or close them (close_agent)"
            )),
            Spawn::OwnershipLost => Outcome::error("the run lost its chat; nothing was spawned"),
        })
    }

    /// The child `args[key]` names, if it is one of this chat's.
    async fn child(&self, args: &Value, key: &str) -> Result<Result<Child, Outcome>, DbError> {
        let Some(id) = args[key].as_str().and_then(|id| id.parse::<ChatId>().ok()) else {
            return Ok(Err(Outcome::error(format!("`{key}` must be an agent_id"))));
        };
        let children = self.ops.children(self.fence.chat_id).await?;
        Ok(children
            .into_iter()
            .find(|child| child.id == id)
            .ok_or_else(|| Outcome::error(format!("{id} is not a subagent of this chat"))))
    }

    async fn message(&self, args: &Value) -> Result<Outcome, DbError> {
        let child = match self.child(args, "id").await? {
            Ok(child) => child,
            Err(refused) => return Ok(refused),
        };
        let Some(text) = args["text"].as_str().filter(|t| !t.trim().is_empty()) else {
            return Ok(Outcome::error("message_agent needs a non-empty `text`"));
        };
        if child.archived {
            return Ok(Outcome::error(format!("{} was closed", child.id)));
        }
        let behavior = match args["busy_behavior"].as_str() {
            None | Some("queue") => BusyBehavior::Queue,
            Some("interrupt") => BusyBehavior::Interrupt,
            Some("reject") => BusyBehavior::Reject,
            Some(other) => {
                return Ok(Outcome::error(format!(
                    "busy_behavior {other:?} is none of queue, interrupt, reject"
                )));
            }
        };
        let request = SendRequest {
            content: &[Part::text(text)],
            behavior,
            model: None,
            idempotency_key: None,
            client_tools: None,
        };
        Ok(
            match self.ops.send(self.access(), child.id, &request).await? {
                SendOutcome::Sent(_) | SendOutcome::ReplayedMessage(_) => {
                    Outcome::ok(json!({"agent_id": child.id, "delivered": "now"}))
                }
                SendOutcome::Queued(_) | SendOutcome::ReplayedQueued(_) => {
                    Outcome::ok(json!({"agent_id": child.id, "delivered": "queued"}))
                }
                SendOutcome::Busy => {
                    Outcome::error(format!("{} is busy (busy_behavior reject)", child.id))
                }
                SendOutcome::QueueFull => Outcome::error(format!("{}'s queue is full", child.id)),
                SendOutcome::Archived => Outcome::error(format!("{} was closed", child.id)),
                // The message is text only: no file to refuse.
                SendOutcome::NotFound | SendOutcome::Model(_) | SendOutcome::File(_) => {
                    Outcome::error(format!("{} cannot take messages", child.id))
                }
                SendOutcome::SpendLimit(refusal) => Outcome::error(format!(
                    "{} was not sent the message: the spend limit is reached ({} of {} micro-dollars spent)",
                    child.id, refusal.spent_micros, refusal.limit_micros
                )),
            },
        )
    }

    async fn close(&self, args: &Value) -> Result<Outcome, DbError> {
        let child = match self.child(args, "id").await? {
            Ok(child) => child,
            Err(refused) => return Ok(refused),
        };
        self.ops.interrupt(self.access(), child.id).await?;
        let archive = ChatChanges {
            archived: Some(true),
            ..Default::default()
        };
        self.ops.update(self.access(), child.id, &archive).await?;
        Ok(Outcome::ok(json!({"agent_id": child.id, "closed": true})))
    }

    /// What `wait_agent` with `args` asks for: an answer now (every child
    /// named has finished, or the call is wrong), or a wait.
    pub async fn plan_wait(&self, args: &Value) -> WaitPlan {
        if !self.offered() {
            return WaitPlan::Ready(Outcome::error(
                "wait_agent is not available to a subagent: subagents are one level deep",
            ));
        }
        let children = match self.ops.children(self.fence.chat_id).await {
            Ok(children) => children,
            Err(err) => {
                tracing::warn!(chat_id = %self.fence.chat_id, error = %Chain(&err), "wait_agent could not read the subagents");
                return WaitPlan::Ready(Outcome::error(
                    "wait_agent failed: the database is unavailable",
                ));
            }
        };
        let ids = match wanted(args, &children) {
            Ok(ids) => ids,
            Err(refused) => return WaitPlan::Ready(refused),
        };
        let timeout = match args.get("timeout_s") {
            None | Some(Value::Null) => DEFAULT_WAIT,
            Some(value) => match value.as_f64().filter(|s| *s >= 0.0 && s.is_finite()) {
                Some(secs) => Duration::from_secs_f64(secs).min(MAX_WAIT),
                None => {
                    return WaitPlan::Ready(Outcome::error(
                        "`timeout_s` must be a number of seconds",
                    ));
                }
            },
        };
        let busy = children
            .iter()
            .any(|child| ids.contains(&child.id) && !child.status.is_idle());
        if !busy || timeout.is_zero() {
            return WaitPlan::Ready(wait_result(&children, &ids, busy));
        }
        WaitPlan::Wait { ids, timeout }
    }

    /// What a wait for `ids` recorded by an earlier run comes to now: the
    /// answer, when every child finished or the deadline passed (`expired`),
    /// else another wait (its deadline stays).
    pub async fn resume_wait(&self, ids: &[ChatId], expired: bool) -> WaitPlan {
        let children = match self.ops.children(self.fence.chat_id).await {
            Ok(children) => children,
            Err(err) => {
                tracing::warn!(chat_id = %self.fence.chat_id, error = %Chain(&err), "could not read the subagents of a wait");
                return WaitPlan::Ready(Outcome::error(
                    "wait_agent failed: the database is unavailable",
                ));
            }
        };
        let busy = children
            .iter()
            .any(|child| ids.contains(&child.id) && !child.status.is_idle());
        if !busy || expired {
            return WaitPlan::Ready(wait_result(&children, ids, busy));
        }
        WaitPlan::Wait {
            ids: ids.to_vec(),
            timeout: DEFAULT_WAIT,
        }
    }
}

/// The children `args` names (`ids`, or every open child when absent).
fn wanted(args: &Value, children: &[Child]) -> Result<Vec<ChatId>, Outcome> {
    let ids: Vec<ChatId> = match args.get("ids") {
        None | Some(Value::Null) => children
            .iter()
            .filter(|child| !child.archived)
            .map(|child| child.id)
            .collect(),
        Some(Value::Array(items)) => {
            let mut ids = Vec::with_capacity(items.len());
            for item in items {
                let id = item
                    .as_str()
                    .and_then(|id| id.parse::<ChatId>().ok())
                    .ok_or_else(|| Outcome::error(format!("{item} is not an agent_id")))?;
                if !children.iter().any(|child| child.id == id) {
                    return Err(Outcome::error(format!(
                        "{id} is not a subagent of this chat"
                    )));
                }
                ids.push(id);
            }
            ids
        }
        Some(other) => {
            return Err(Outcome::error(format!(
                "`ids` must be an array of agent_ids, not {other}"
            )));
        }
    };
    if ids.is_empty() {
        return Err(Outcome::error("there is no subagent to wait for"));
    }
    Ok(ids)
}

/// Each waited-for child's status and final reply.
fn wait_result(children: &[Child], ids: &[ChatId], timed_out: bool) -> Outcome {
    let agents: Vec<Value> = ids
        .iter()
        .filter_map(|id| children.iter().find(|child| child.id == *id))
        .map(|child| {
            json!({
                "agent_id": child.id,
                "title": child.title,
                "status": child.status,
                "finished": child.status.is_idle(),
                "reply": child.reply,
                "error": child.last_error,
            })
        })
        .collect();
    Outcome::ok(json!({"agents": agents, "timed_out": timed_out}))
}
