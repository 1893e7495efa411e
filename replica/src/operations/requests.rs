//! The transitions a client asks for, and the reads the API serves. Each
//! checks visibility (a chat the caller may not see is `NotFound`), runs
//! its statement(s), and announces what changed.

use chatd_shared::{
    api::BusyBehavior,
    db::{
        DbError,
        batched::unshared,
        chats::{self, Chat, ChatTools, ChatWithQueue, NewChat},
        mcp_servers,
        messages::{self, Message},
        model_configs,
        queued_messages::{self, QueuedMessage},
        sends::SendCall,
        transitions::{self, EditRefused, FileRefused, Interrupted, Outgoing, SendRules, Sent},
    },
    ids::{ChatId, MessageId, ModelConfigId, QueuedMessageId, UserId},
    parts::Part,
    status::ChatStatus,
    tools::ClientTool,
};

use super::{Access, Change, ChatOps, SpendRefusal};

/// Why a model cannot be used for a chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRefused {
    /// No model config has this id.
    Missing(ModelConfigId),
    /// None was named and no default is configured.
    NoDefault,
    /// It is disabled or deleted (its display name).
    Unavailable(String),
}

/// A chat to create.
#[derive(Debug, Clone)]
pub struct NewChatRequest<'a> {
    /// Its title ("" for none).
    pub title: &'a str,
    /// Its system prompt.
    pub system_prompt: Option<&'a str>,
    /// Its labels (a JSON object).
    pub labels: &'a serde_json::Value,
    /// Its model (`None`: the default model).
    pub model: Option<ModelConfigId>,
    /// A first message: the chat starts running at once.
    pub first: Option<&'a [Part]>,
    /// The client's idempotency key.
    pub idempotency_key: Option<&'a str>,
    /// MCP servers it opts into and tools its client runs (checked by the
    /// caller: see [`ChatOps::unknown_mcp_servers`]).
    pub tools: ChatTools<'a>,
}

/// What [`ChatOps::create`] did.
#[derive(Debug, Clone)]
pub enum CreateOutcome {
    /// Created (pending when it had a first message).
    Created(Chat),
    /// The idempotency key was used before: the original chat.
    Replayed(Chat),
    /// The model cannot be used.
    Model(ModelRefused),
    /// The caller's spend reached their limit: nothing was written.
    SpendLimit(SpendRefusal),
    /// A `file` part names no file of the owner's.
    File(FileRefused),
}

/// A message to send.
#[derive(Debug, Clone)]
pub struct SendRequest<'a> {
    /// Its parts.
    pub content: &'a [Part],
    /// What to do when the chat is busy.
    pub behavior: BusyBehavior,
    /// Switch the chat to this model first.
    pub model: Option<ModelConfigId>,
    /// The client's idempotency key.
    pub idempotency_key: Option<&'a str>,
    /// Replace the tools the chat's client runs first.
    pub client_tools: Option<&'a [ClientTool]>,
}

/// What [`ChatOps::send`] did.
#[derive(Debug, Clone)]
pub enum SendOutcome {
    /// The chat was idle: the message is committed and a turn starts.
    Sent(Box<Message>),
    /// The chat was busy: the message is queued (and, with
    /// [`BusyBehavior::Interrupt`], the turn in progress interrupted).
    Queued(QueuedMessage),
    /// The idempotency key was used before for this message.
    ReplayedMessage(Box<Message>),
    /// The idempotency key was used before for this queued message.
    ReplayedQueued(QueuedMessage),
    /// Busy, and the behaviour is [`BusyBehavior::Reject`].
    Busy,
    /// The queue is full.
    QueueFull,
    /// The chat is archived.
    Archived,
    /// No such chat (or not the caller's).
    NotFound,
    /// The model asked for cannot be used.
    Model(ModelRefused),
    /// The caller's spend reached their limit: nothing was written.
    SpendLimit(SpendRefusal),
    /// A `file` part names no file of the chat owner's.
    File(FileRefused),
}

/// What [`ChatOps::interrupt`] did.
#[derive(Debug, Clone)]
pub enum InterruptOutcome {
    /// The request was taken; the chat and its queue length after it.
    Done(Interrupted, Box<ChatWithQueue>),
    /// No such chat (or not the caller's).
    NotFound,
}

/// What [`ChatOps::edit`] did.
#[derive(Debug, Clone)]
pub enum EditOutcome {
    /// The replacement message; the chat re-runs from it.
    Edited(Box<Message>),
    /// No such chat (or not the caller's).
    ChatNotFound,
    /// No such (live) message in the chat.
    MessageNotFound,
    /// Only user messages can be edited.
    NotUserMessage,
    /// The chat is archived.
    Archived,
    /// A `file` part names no file of the chat owner's.
    File(FileRefused),
}

/// What [`ChatOps::promote`] and [`ChatOps::delete_queued`] did.
#[derive(Debug, Clone)]
pub enum QueuedOutcome<T> {
    /// Done; the value the operation returns.
    Done(T),
    /// No such chat (or not the caller's).
    ChatNotFound,
    /// No such message in the chat's queue.
    QueuedNotFound,
}

/// The outcome of a promotion: the queue after it.
pub type PromoteOutcome = QueuedOutcome<Vec<QueuedMessage>>;

/// Changes to a chat's own fields (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct ChatChanges<'a> {
    /// A new title.
    pub title: Option<&'a str>,
    /// Archive (true) or restore (false).
    pub archived: Option<bool>,
    /// New labels (a JSON object).
    pub labels: Option<&'a serde_json::Value>,
    /// New MCP servers (checked by the caller).
    pub mcp_servers: Option<&'a [String]>,
    /// New client tools.
    pub client_tools: Option<&'a [ClientTool]>,
}

impl ChatOps {
    /// The names among `names` that no MCP server has (a chat may opt only
    /// into servers that exist).
    pub async fn unknown_mcp_servers(&self, names: &[String]) -> Result<Vec<String>, DbError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.pool.get().await?;
        mcp_servers::unknown_names(&client, names).await
    }

    /// The chat `id` with its queue length, if `access` may see it.
    pub async fn chat(&self, access: Access, id: ChatId) -> Result<Option<ChatWithQueue>, DbError> {
        let client = self.pool.get().await?;
        Ok(chats::get_with_queue(&client, id)
            .await?
            .filter(|(chat, _)| access.may_see(chat)))
    }

    /// A page of the chats `access` may see, newest first: at most `limit`
    /// of them before `before`, archived or not.
    pub async fn list(
        &self,
        access: Access,
        archived: bool,
        before: Option<ChatId>,
        limit: i64,
    ) -> Result<Vec<ChatWithQueue>, DbError> {
        let client = self.pool.get().await?;
        chats::list(&client, access.owner_filter(), archived, before, limit).await
    }

    /// A page of what users see of chat `id` (see [`messages::page`]);
    /// `None` when `access` may not see it.
    pub async fn messages(
        &self,
        access: Access,
        id: ChatId,
        before: Option<MessageId>,
        limit: i64,
    ) -> Result<Option<(Vec<Message>, bool)>, DbError> {
        if self.chat(access, id).await?.is_none() {
            return Ok(None);
        }
        let client = self.pool.get().await?;
        Ok(Some(messages::page(&client, id, before, limit).await?))
    }

    /// Chat `id`'s queue in the order it will run; `None` when `access` may
    /// not see it.
    pub async fn queue(
        &self,
        access: Access,
        id: ChatId,
    ) -> Result<Option<Vec<QueuedMessage>>, DbError> {
        if self.chat(access, id).await?.is_none() {
            return Ok(None);
        }
        let client = self.pool.get().await?;
        Ok(Some(queued_messages::list(&client, id).await?))
    }

    /// `content` with its `file` parts checked to name files of `owner`'s
    /// and completed from them (see [`transitions::own_files`]); no
    /// statement without `file` parts.
    async fn own_files(
        &self,
        owner: UserId,
        content: &[Part],
    ) -> Result<Result<Vec<Part>, FileRefused>, DbError> {
        if !content.iter().any(|part| matches!(part, Part::File { .. })) {
            return Ok(Ok(content.to_vec()));
        }
        let client = self.pool.get().await?;
        transitions::own_files(&client, owner, content).await
    }

    /// A message to send to chat `id` with its `file` parts checked: they
    /// must be the chat owner's (the caller's, or for an admin, whoever owns
    /// the chat). No statement without `file` parts.
    async fn sendable_files<'a>(
        &self,
        access: Access,
        id: ChatId,
        content: &'a [Part],
    ) -> Result<Result<std::borrow::Cow<'a, [Part]>, SendOutcome>, DbError> {
        if !content.iter().any(|part| matches!(part, Part::File { .. })) {
            return Ok(Ok(std::borrow::Cow::Borrowed(content)));
        }
        let owner = if access.admin {
            match self.chat(access, id).await? {
                Some((chat, _)) => chat.owner_id,
                None => return Ok(Err(SendOutcome::NotFound)),
            }
        } else {
            access.user_id
        };
        Ok(match self.own_files(owner, content).await? {
            Ok(checked) => Ok(std::borrow::Cow::Owned(checked)),
            Err(refused) => Err(SendOutcome::File(refused)),
        })
    }

    /// The model a chat would run with: `wanted`, or the default; refused
    /// when it does not exist or is not available.
    async fn usable_model(
        &self,
        wanted: Option<ModelConfigId>,
    ) -> Result<Result<ModelConfigId, ModelRefused>, DbError> {
        let client = self.pool.get().await?;
        let model = match wanted {
            Some(id) => model_configs::get(&client, id).await?,
            None => model_configs::get_default(&client).await?,
        };
        Ok(match (model, wanted) {
            (None, Some(id)) => Err(ModelRefused::Missing(id)),
            (None, None) => Err(ModelRefused::NoDefault),
            (Some(model), _) if !model.enabled || model.deleted_at.is_some() => {
                Err(ModelRefused::Unavailable(model.display_name))
            }
            (Some(model), _) => Ok(model.id),
        })
    }

    /// Creates a chat owned by `access`'s user; with a first message it is
    /// `pending` at once. Announces: created; with a first message, the
    /// message and `pending`.
    pub async fn create(
        &self,
        access: Access,
        request: &NewChatRequest<'_>,
    ) -> Result<CreateOutcome, DbError> {
        let model = match self.usable_model(request.model).await? {
            Ok(model) => model,
            Err(refused) => return Ok(CreateOutcome::Model(refused)),
        };
        let first = match request.first {
            Some(parts) => match self.own_files(access.user_id, parts).await? {
                Ok(parts) => Some(parts),
                Err(refused) => return Ok(CreateOutcome::File(refused)),
            },
            None => None,
        };
        if request.first.is_some()
            && let Some(refusal) = self.spend_refusal(access.user_id).await?
        {
            // A retry of a create that was taken gets the original.
            if let Some(key) = request.idempotency_key {
                let client = self.pool.get().await?;
                if let Some(chat) =
                    transitions::created_with_key(&client, access.user_id, key).await?
                {
                    return Ok(CreateOutcome::Replayed(chat));
                }
            }
            return Ok(CreateOutcome::SpendLimit(refusal));
        }
        // The run this makes pending links its span to this request.
        let trace_parent = crate::traces::current_traceparent();
        let new = NewChat {
            id: ChatId::new_v7(),
            owner_id: access.user_id,
            parent_chat_id: None,
            root_chat_id: None,
            title: request.title,
            status: ChatStatus::Waiting,
            model_config_id: Some(model),
            system_prompt: request.system_prompt,
            labels: request.labels,
            tools: request.tools,
            trace_parent: trace_parent.as_deref(),
        };
        let created = {
            let client = self.pool.get().await?;
            transitions::create(&client, &new, first.as_deref(), request.idempotency_key).await?
        };
        if created.replayed {
            return Ok(CreateOutcome::Replayed(created.chat));
        }
        let chat = &created.chat;
        let mut changes = vec![Change::Created {
            chat_id: chat.id,
            owner_id: chat.owner_id,
        }];
        if let Some(message) = &created.first_message {
            changes.extend(Change::messages(chat.id, [message]));
            changes.push(Change::Pending(chats::BecamePending {
                chat_id: chat.id,
                owner_id: chat.owner_id,
                generation: chat.generation,
            }));
        }
        self.announce(changes);
        Ok(CreateOutcome::Created(created.chat))
    }

    /// True when `key` was used before on chat `id` (for a message or a
    /// queued message): a send refused for spend still goes to its
    /// statement then, which answers the retry with the original (or 404
    /// when the chat is not the caller's).
    async fn replays_send(&self, id: ChatId, key: Option<&str>) -> Result<bool, DbError> {
        let Some(key) = key else {
            return Ok(false);
        };
        let client = self.pool.get().await?;
        Ok(messages::find_by_idempotency_key(&client, id, key)
            .await?
            .is_some()
            || queued_messages::find_by_idempotency_key(&client, id, key)
                .await?
                .is_some())
    }

    /// Sends a message (ARCHITECTURE.md §3), unless the caller's spend reached their
    /// limit (ARCHITECTURE.md §17; no statement while no limit applies to them). An
    /// idle chat gets it committed and
    /// becomes `pending`; a busy one queues it (`queue`), queues it and
    /// interrupts the turn (`interrupt`), or refuses it (`reject`). A
    /// replayed idempotency key returns the original result. Announces the
    /// message and `pending`, or the queue change (and the interrupt).
    pub async fn send(
        &self,
        access: Access,
        id: ChatId,
        request: &SendRequest<'_>,
    ) -> Result<SendOutcome, DbError> {
        if let Some(wanted) = request.model
            && let Err(refused) = self.usable_model(Some(wanted)).await?
        {
            return Ok(SendOutcome::Model(refused));
        }
        let content = match self.sendable_files(access, id, request.content).await? {
            Ok(content) => content,
            Err(refused) => return Ok(refused),
        };
        if let Some(refusal) = self.spend_refusal(access.user_id).await?
            && !self.replays_send(id, request.idempotency_key).await?
        {
            return Ok(SendOutcome::SpendLimit(refusal));
        }
        let trace_parent = crate::traces::current_traceparent();
        let message = Outgoing {
            content: &content,
            created_by: Some(access.user_id),
            idempotency_key: request.idempotency_key,
            trace_parent: trace_parent.as_deref(),
        };
        // The usual case, one statement: an idle chat and no model or tools
        // change; a key used before makes it fall through to the replay.
        if request.model.is_none() && request.client_tools.is_none() {
            let sent = match &self.queues {
                Some(queues) => {
                    let call = SendCall::new(id, &message, access.owner_filter())?;
                    queues.sends.run(call).await.map_err(unshared)?
                }
                None => {
                    let client = self.pool.get().await?;
                    transitions::send_to_idle(&client, id, &message, access.owner_filter()).await?
                }
            };
            if let Some((message, pending)) = sent {
                self.announce(
                    Change::messages(id, [&message])
                        .into_iter()
                        .chain([Change::Pending(pending)]),
                );
                return Ok(SendOutcome::Sent(Box::new(message)));
            }
        }
        let rules = SendRules {
            only_owner: access.owner_filter(),
            queue_if_busy: request.behavior != BusyBehavior::Reject,
            model: request.model,
            client_tools: request.client_tools,
        };
        let sent = {
            let mut client = self.pool.get().await?;
            transitions::send_locked(&mut client, id, &message, rules).await?
        };
        Ok(match sent {
            Sent::Committed(message, pending) => {
                self.announce(
                    Change::messages(id, [message.as_ref()])
                        .into_iter()
                        .chain([Change::Pending(pending)]),
                );
                SendOutcome::Sent(message)
            }
            Sent::Queued(queued) => {
                self.announce([Change::Queue(id)]);
                if request.behavior == BusyBehavior::Interrupt {
                    // Gone since it was queued: its queue went with it.
                    self.interrupt(access, id).await?;
                }
                SendOutcome::Queued(queued)
            }
            Sent::ReplayedMessage(message) => SendOutcome::ReplayedMessage(message),
            Sent::ReplayedQueued(queued) => SendOutcome::ReplayedQueued(queued),
            Sent::Busy => SendOutcome::Busy,
            Sent::QueueFull => SendOutcome::QueueFull,
            Sent::Archived => SendOutcome::Archived,
            Sent::Missing => SendOutcome::NotFound,
        })
    }

    /// Interrupts the turn in progress (ARCHITECTURE.md §3). A running chat's worker
    /// is asked to stop (announced as an interrupt); a pending chat stops
    /// before it starts (`waiting`, announced as a status), or runs its next
    /// queued message instead (announced as that message and a queue
    /// change). A chat waiting on something outside itself gets error
    /// results for the calls it waits for and goes `waiting` (or runs its
    /// next queued message). An idle chat is left alone. The chat's busy
    /// subagents are interrupted too.
    pub async fn interrupt(&self, access: Access, id: ChatId) -> Result<InterruptOutcome, DbError> {
        let outcome = self.interrupt_one(access, id).await?;
        if matches!(outcome, InterruptOutcome::Done(..)) {
            self.interrupt_children(access, id).await?;
        }
        Ok(outcome)
    }

    /// [`Self::interrupt`] of one chat, without its subagents.
    pub(crate) async fn interrupt_one(
        &self,
        access: Access,
        id: ChatId,
    ) -> Result<InterruptOutcome, DbError> {
        let Some((_, queued)) = self.chat(access, id).await? else {
            return Ok(InterruptOutcome::NotFound);
        };
        let interrupted = {
            let mut client = self.pool.get().await?;
            transitions::request_interrupt(&mut client, id).await?
        };
        let Some((outcome, chat)) = interrupted else {
            return Ok(InterruptOutcome::NotFound);
        };
        let mut queued = queued;
        match &outcome {
            Interrupted::Running { generation } => self.announce([Change::Interrupt {
                chat_id: id,
                generation: *generation,
            }]),
            Interrupted::WasPending { webhooks_queued } => {
                if *webhooks_queued > 0 {
                    self.webhooks.wake();
                }
                self.announce([Change::Status {
                    chat_id: id,
                    owner_id: chat.owner_id,
                    status: chat.status,
                    generation: chat.generation,
                    worker_id: None,
                }]);
                if let Some(parent) = chat.parent_chat_id {
                    self.child_idle(parent, id).await;
                }
            }
            Interrupted::WasWaiting { closed, next } => {
                let written = closed.iter().chain(next.as_deref());
                let mut changes: Vec<Change> = Change::messages(id, written).into_iter().collect();
                if next.is_some() {
                    queued = (queued - 1).max(0);
                    changes.push(Change::Queue(id));
                    changes.push(Change::Pending(chats::BecamePending {
                        chat_id: id,
                        owner_id: chat.owner_id,
                        generation: chat.generation,
                    }));
                } else {
                    changes.push(Change::Status {
                        chat_id: id,
                        owner_id: chat.owner_id,
                        status: chat.status,
                        generation: chat.generation,
                        worker_id: None,
                    });
                }
                self.announce(changes);
                if let (None, Some(parent)) = (next, chat.parent_chat_id) {
                    self.child_idle(parent, id).await;
                }
            }
            Interrupted::PendingWithQueue(message) => {
                queued = (queued - 1).max(0);
                self.announce(
                    Change::messages(id, [message.as_ref()])
                        .into_iter()
                        .chain([Change::Queue(id)]),
                );
            }
            Interrupted::Idle => {}
        }
        Ok(InterruptOutcome::Done(outcome, Box::new((chat, queued))))
    }

    /// Replaces user message `message_id` and re-runs the chat from it
    /// (ARCHITECTURE.md §3): later messages are hidden, the queue cleared, a turn in
    /// progress fenced out by a new generation. Announces a refresh, the
    /// queue change and `pending`.
    pub async fn edit(
        &self,
        access: Access,
        id: ChatId,
        message_id: MessageId,
        content: &[Part],
    ) -> Result<EditOutcome, DbError> {
        let Some((chat, _)) = self.chat(access, id).await? else {
            return Ok(EditOutcome::ChatNotFound);
        };
        if chat.archived {
            return Ok(EditOutcome::Archived);
        }
        let content = match self.own_files(chat.owner_id, content).await? {
            Ok(content) => content,
            Err(refused) => return Ok(EditOutcome::File(refused)),
        };
        let content = content.as_slice();
        let edited = {
            let mut client = self.pool.get().await?;
            let trace_parent = crate::traces::current_traceparent();
            transitions::edit_and_rerun(
                &mut client,
                id,
                message_id,
                content,
                access.user_id,
                trace_parent.as_deref(),
            )
            .await?
        };
        Ok(match edited {
            Ok(edited) => {
                self.announce([
                    Change::Refresh(id),
                    Change::Queue(id),
                    Change::Pending(edited.pending),
                ]);
                EditOutcome::Edited(Box::new(edited.message))
            }
            Err(EditRefused::NotFound) => EditOutcome::MessageNotFound,
            Err(EditRefused::NotUserMessage) => EditOutcome::NotUserMessage,
        })
    }

    /// Moves queued message `queued_id` to the front of the queue and
    /// interrupts the turn in progress, so it runs next. Announces the queue
    /// change and the interrupt.
    pub async fn promote(
        &self,
        access: Access,
        id: ChatId,
        queued_id: QueuedMessageId,
    ) -> Result<PromoteOutcome, DbError> {
        if self.chat(access, id).await?.is_none() {
            return Ok(QueuedOutcome::ChatNotFound);
        }
        let promoted = {
            let client = self.pool.get().await?;
            queued_messages::promote(&client, id, queued_id).await?
        };
        if !promoted {
            return Ok(QueuedOutcome::QueuedNotFound);
        }
        self.announce([Change::Queue(id)]);
        // The queue as promoted, read before the interrupt: the worker may
        // pop the promoted message as soon as it hears the interrupt.
        let queue = {
            let client = self.pool.get().await?;
            queued_messages::list(&client, id).await?
        };
        self.interrupt(access, id).await?;
        Ok(QueuedOutcome::Done(queue))
    }

    /// Removes queued message `queued_id`. Announces the queue change.
    pub async fn delete_queued(
        &self,
        access: Access,
        id: ChatId,
        queued_id: QueuedMessageId,
    ) -> Result<QueuedOutcome<()>, DbError> {
        if self.chat(access, id).await?.is_none() {
            return Ok(QueuedOutcome::ChatNotFound);
        }
        let deleted = {
            let client = self.pool.get().await?;
            queued_messages::delete(&client, id, queued_id).await?
        };
        if !deleted {
            return Ok(QueuedOutcome::QueuedNotFound);
        }
        self.announce([Change::Queue(id)]);
        Ok(QueuedOutcome::Done(()))
    }

    /// Changes a chat's title, labels or archived flag; `None` when
    /// `access` may not see it. Announces a new title and an archive or
    /// restore (a chat restored while pending wakes the acquirers).
    pub async fn update(
        &self,
        access: Access,
        id: ChatId,
        changes: &ChatChanges<'_>,
    ) -> Result<Option<ChatWithQueue>, DbError> {
        let Some((before, queued)) = self.chat(access, id).await? else {
            return Ok(None);
        };
        let updated = {
            let client = self.pool.get().await?;
            let update = chats::ChatUpdate {
                title: changes.title,
                archived: changes.archived,
                labels: changes.labels,
                mcp_servers: changes.mcp_servers,
                client_tools: changes.client_tools,
            };
            chats::update(&client, id, &update).await?
        };
        let Some(chat) = updated else {
            return Ok(None);
        };
        let mut announced = Vec::new();
        if changes.title.is_some_and(|title| title != before.title) {
            announced.push(Change::Title {
                chat_id: id,
                owner_id: chat.owner_id,
            });
        }
        if changes
            .archived
            .is_some_and(|archived| archived != before.archived)
        {
            announced.push(Change::Archived {
                chat_id: id,
                owner_id: chat.owner_id,
                pending: !chat.archived && chat.status == ChatStatus::Pending,
            });
        }
        self.announce(announced);
        Ok(Some((chat, queued)))
    }

    /// Deletes a chat with its messages and queue; a worker running it
    /// finds its fence gone and stops. Its busy subagents are interrupted
    /// first. `false` when `access` may not see it. Announces the deletion.
    pub async fn delete(&self, access: Access, id: ChatId) -> Result<bool, DbError> {
        let Some((chat, _)) = self.chat(access, id).await? else {
            return Ok(false);
        };
        // Its subagents outlive it (as chats of their own): stop them first.
        self.interrupt_children(access, id).await?;
        let deleted = {
            let client = self.pool.get().await?;
            chats::delete(&client, id).await?
        };
        if deleted {
            self.announce([Change::Deleted {
                chat_id: id,
                owner_id: chat.owner_id,
            }]);
            if let Some(parent) = chat.parent_chat_id {
                self.child_idle(parent, id).await;
            }
        }
        Ok(deleted)
    }
}
