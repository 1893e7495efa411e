//! The routes of chats, their messages and their queues.

use reqwest::{Method, RequestBuilder};

use super::{Client, ClientError, WithStatus, append_query};
use crate::{
    api::{
        Chat, ChatList, CreateChat, EditMessage, Message, MessageList, QueueList, SendMessage,
        SendResult, UpdateChat,
    },
    ids::{ChatId, MessageId, QueuedMessageId},
};

/// The header that makes a create or a send safe to repeat.
const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// The query of `GET /chats`; fields left `None` are not sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatsQuery {
    /// Page size.
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// List archived chats (true) or the others (false).
    pub archived: Option<bool>,
}

/// The query of `GET /chats/{id}/messages`; fields left `None` are not sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessagesQuery {
    /// Only messages older than this one.
    pub before_id: Option<MessageId>,
    /// Page size (1–200, default 50).
    pub limit: Option<u32>,
}

impl Client {
    /// `POST /chats`. A repeated `idempotency_key` answers 200 with the
    /// chat the first request created (201).
    pub async fn create_chat(
        &self,
        chat: &CreateChat,
        idempotency_key: Option<&str>,
    ) -> Result<WithStatus<Chat>, ClientError> {
        let request = self.route(Method::POST, "chats")?.json(chat);
        self.call(with_idempotency_key(request, idempotency_key))
            .await
    }

    /// `GET /chats`: the caller's chats, newest first.
    pub async fn list_chats(&self, query: &ChatsQuery) -> Result<ChatList, ClientError> {
        let mut url = self.endpoint("chats")?;
        append_query(&mut url, "limit", query.limit);
        append_query(&mut url, "cursor", query.cursor.as_deref());
        append_query(&mut url, "archived", query.archived);
        self.fetch(self.request(Method::GET, url)).await
    }

    /// `GET /chats/{id}`.
    pub async fn get_chat(&self, chat_id: ChatId) -> Result<Chat, ClientError> {
        self.fetch(self.route(Method::GET, &format!("chats/{chat_id}"))?)
            .await
    }

    /// `PATCH /chats/{id}`: title, archived, labels.
    pub async fn update_chat(
        &self,
        chat_id: ChatId,
        update: &UpdateChat,
    ) -> Result<Chat, ClientError> {
        let request = self.route(Method::PATCH, &format!("chats/{chat_id}"))?;
        self.fetch(request.json(update)).await
    }

    /// `DELETE /chats/{id}`.
    pub async fn delete_chat(&self, chat_id: ChatId) -> Result<(), ClientError> {
        self.call_empty(self.route(Method::DELETE, &format!("chats/{chat_id}"))?)
            .await
    }

    /// `GET /chats/{id}/messages`: a page of messages in ascending id order.
    pub async fn list_messages(
        &self,
        chat_id: ChatId,
        query: &MessagesQuery,
    ) -> Result<MessageList, ClientError> {
        let mut url = self.endpoint(&format!("chats/{chat_id}/messages"))?;
        append_query(&mut url, "before_id", query.before_id);
        append_query(&mut url, "limit", query.limit);
        self.fetch(self.request(Method::GET, url)).await
    }

    /// `POST /chats/{id}/messages`: 201 with the message when the chat was
    /// idle, 202 with the queued message when it was busy, 200 with the
    /// original answer for a repeated `idempotency_key`.
    pub async fn send_message(
        &self,
        chat_id: ChatId,
        message: &SendMessage,
        idempotency_key: Option<&str>,
    ) -> Result<WithStatus<SendResult>, ClientError> {
        let request = self
            .route(Method::POST, &format!("chats/{chat_id}/messages"))?
            .json(message);
        self.call(with_idempotency_key(request, idempotency_key))
            .await
    }

    /// `PATCH /chats/{id}/messages/{message_id}`: replaces a user message
    /// and re-runs the chat from it.
    pub async fn edit_message(
        &self,
        chat_id: ChatId,
        message_id: MessageId,
        edit: &EditMessage,
    ) -> Result<Message, ClientError> {
        let path = format!("chats/{chat_id}/messages/{message_id}");
        self.fetch(self.route(Method::PATCH, &path)?.json(edit))
            .await
    }

    /// `POST /chats/{id}/interrupt` (202): stops the running turn.
    pub async fn interrupt_chat(&self, chat_id: ChatId) -> Result<Chat, ClientError> {
        self.fetch(self.route(Method::POST, &format!("chats/{chat_id}/interrupt"))?)
            .await
    }

    /// `POST /chats/{id}/tool-results` (202): the results of the calls a
    /// `requires_action` chat waits for.
    pub async fn post_tool_results(
        &self,
        chat_id: ChatId,
        results: &crate::api::ToolResults,
    ) -> Result<crate::api::ToolResultsStored, ClientError> {
        let path = format!("chats/{chat_id}/tool-results");
        self.fetch(self.route(Method::POST, &path)?.json(results))
            .await
    }

    /// `GET /chats/{id}/queue`: queued messages in the order they will run.
    pub async fn list_queue(&self, chat_id: ChatId) -> Result<QueueList, ClientError> {
        self.fetch(self.route(Method::GET, &format!("chats/{chat_id}/queue"))?)
            .await
    }

    /// `DELETE /chats/{id}/queue/{queued_id}`.
    pub async fn delete_queued(
        &self,
        chat_id: ChatId,
        queued_id: QueuedMessageId,
    ) -> Result<(), ClientError> {
        let path = format!("chats/{chat_id}/queue/{queued_id}");
        self.call_empty(self.route(Method::DELETE, &path)?).await
    }

    /// `POST /chats/{id}/queue/{queued_id}/promote` (202): interrupts the
    /// running turn and runs this message next.
    pub async fn promote_queued(
        &self,
        chat_id: ChatId,
        queued_id: QueuedMessageId,
    ) -> Result<WithStatus<QueueList>, ClientError> {
        let path = format!("chats/{chat_id}/queue/{queued_id}/promote");
        self.call(self.route(Method::POST, &path)?).await
    }
}

/// Adds the `Idempotency-Key` header when there is a key.
fn with_idempotency_key(request: RequestBuilder, key: Option<&str>) -> RequestBuilder {
    match key {
        Some(key) => request.header(IDEMPOTENCY_KEY, key),
        None => request,
    }
}
