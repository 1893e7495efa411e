//! The typed client of chatd's public API (feature `client`): every route of
//! ARCHITECTURE.md §9 as an async method, and chat streams over WebSocket or SSE
//! (ARCHITECTURE.md §6). Used by tests and the load test.
//!
//! A [`Client`] talks to one replica, measures nothing and retries nothing:
//! when a request fails or a stream ends, the caller decides what to do. A
//! stream keeps its [`Cursor`](crate::stream::Cursor) so the caller can
//! resume from it.
//!
//! A [`FailoverClient`] talks to every replica of a deployment (ARCHITECTURE.md §18):
//! it retries what is safe to retry on the next replica, with backoff and
//! deadlines, and its [`FailoverStream`] reopens a chat's stream elsewhere
//! from its cursor. [`ChatView`] is what a client shows of a chat: the
//! status, and the draft of the step in progress, replaced by its message
//! and dropped when a newer generation starts.

mod admin;
mod chats;
mod error;
mod failover;
mod raw;
mod resume;
mod settings;
mod streams;
mod view;

use std::{fmt::Display, time::Duration};

use bytes::Bytes;
use reqwest::{
    Method, RequestBuilder, StatusCode,
    header::{AUTHORIZATION, HeaderMap, HeaderValue},
};
use serde::de::DeserializeOwned;
use url::Url;

pub use chats::{ChatsQuery, MessagesQuery};
pub use error::ClientError;
pub use failover::{
    FailoverClient, FailoverCounts, FailoverStats, Repeat, RetryPolicy, worth_retrying,
};
pub use raw::{RawBody, RawResponse};
pub use resume::{Break, Delivery, FailoverStream, Resumed};
pub use settings::UsageRange;
pub use streams::{ChatStream, Transport, WatchStream};
pub use view::{Applied, ChatView, Committed, Draft};

use error::decode_json;

/// How long opening a TCP connection may take (clients built by [`Client::new`]).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a plain request, or the start of a stream, may take by default.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one chatd deployment, acting as one user (or as nobody).
/// Clones are cheap and share the connection pool.
#[derive(Debug, Clone)]
pub struct Client {
    /// The pool every request and SSE stream goes through.
    http: reqwest::Client,
    /// `{base}/api/v1/`: route paths are joined onto it.
    api: Url,
    /// `Bearer chatd_…`, marked sensitive so `Debug` does not show it;
    /// `None` sends no `Authorization` header (to test 401s).
    auth: Option<HeaderValue>,
    /// Bounds plain requests and stream handshakes, never a stream's life.
    request_timeout: Duration,
}

/// An answer with its status, for routes whose success status says
/// something: 201 created or 200 replayed (same `Idempotency-Key`), 201 sent
/// or 202 queued.
#[derive(Debug, Clone, PartialEq)]
pub struct WithStatus<T> {
    /// The HTTP status (always a 2xx).
    pub status: StatusCode,
    /// The decoded body.
    pub body: T,
}

impl Client {
    /// A client of the deployment at `base_url` (`http://127.0.0.1:7080`)
    /// that authenticates with `token` (`chatd_…`), with a pool of its own.
    pub fn new(base_url: &str, token: &str) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("chatd-client/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Self::with_http_client(http, base_url, Some(token))
    }

    /// A client on an existing `reqwest::Client` (to share its pool; its
    /// timeouts apply), authenticating with `token`, or with `None` sending
    /// no `Authorization` header.
    pub fn with_http_client(
        http: reqwest::Client,
        base_url: &str,
        token: Option<&str>,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            http,
            api: api_root(base_url)?,
            auth: token.map(bearer).transpose()?,
            request_timeout: REQUEST_TIMEOUT,
        })
    }

    /// The same client acting as another user (`Some(token)`) or as nobody
    /// (`None`), on the same pool.
    pub fn with_token(&self, token: Option<&str>) -> Result<Self, ClientError> {
        Ok(Self {
            auth: token.map(bearer).transpose()?,
            ..self.clone()
        })
    }

    /// Bounds each plain request (sending it and reading the whole answer)
    /// and the handshake of each stream; 30 s by default. An open stream is
    /// never timed out.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The URL of `path`, relative to `/api/v1/` (`chats/{id}`, with or
    /// without a query).
    fn endpoint(&self, path: &str) -> Result<Url, ClientError> {
        // "./" keeps a first segment with a colon from reading as a scheme.
        let relative = format!("./{}", path.trim_start_matches('/'));
        self.api.join(&relative).map_err(|error| ClientError::Url {
            url: path.to_owned(),
            reason: error.to_string(),
        })
    }

    /// A request to `url` with the caller's credentials.
    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let request = self.http.request(method, url);
        match &self.auth {
            Some(auth) => request.header(AUTHORIZATION, auth.clone()),
            None => request,
        }
    }

    /// A request to the route at `path` (see [`Client::endpoint`]).
    fn route(&self, method: Method, path: &str) -> Result<RequestBuilder, ClientError> {
        Ok(self.request(method, self.endpoint(path)?))
    }

    /// Sends `request` and reads the whole answer, whatever its status,
    /// within the request timeout.
    async fn exchange(
        &self,
        request: RequestBuilder,
    ) -> Result<(StatusCode, HeaderMap, Bytes), ClientError> {
        let request = request.build()?;
        let exchange = async {
            let response = self.http.execute(request).await?;
            let status = response.status();
            let headers = response.headers().clone();
            Ok::<_, reqwest::Error>((status, headers, response.bytes().await?))
        };
        tokio::time::timeout(self.request_timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(self.request_timeout))?
            .map_err(ClientError::from)
    }

    /// Sends `request`; a non-2xx answer is an error.
    async fn succeed(&self, request: RequestBuilder) -> Result<(StatusCode, Bytes), ClientError> {
        let (status, _, body) = self.exchange(request).await?;
        if !status.is_success() {
            return Err(ClientError::from_refusal(status, &body));
        }
        Ok((status, body))
    }

    /// Sends `request` and decodes its JSON answer, keeping the status.
    async fn call<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
    ) -> Result<WithStatus<T>, ClientError> {
        let (status, body) = self.succeed(request).await?;
        Ok(WithStatus {
            status,
            body: decode_json(&body)?,
        })
    }

    /// Sends `request` and decodes its JSON answer.
    async fn fetch<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ClientError> {
        Ok(self.call(request).await?.body)
    }

    /// Sends `request`, expecting no body (204).
    async fn call_empty(&self, request: RequestBuilder) -> Result<(), ClientError> {
        self.succeed(request).await.map(drop)
    }
}

/// `{base_url}/api/v1/`, keeping any path prefix of `base_url`.
fn api_root(base_url: &str) -> Result<Url, ClientError> {
    let invalid = |reason: String| ClientError::Url {
        url: base_url.to_owned(),
        reason,
    };
    let mut url = Url::parse(base_url).map_err(|error| invalid(error.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("expected an http or https URL".to_owned()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a base URL has no query or fragment".to_owned()));
    }
    let path = format!("{}/api/v1/", url.path().trim_end_matches('/'));
    url.set_path(&path);
    Ok(url)
}

/// The `Authorization` value for `token`, hidden from `Debug`.
fn bearer(token: &str) -> Result<HeaderValue, ClientError> {
    let mut value = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
        ClientError::InvalidHeader {
            name: AUTHORIZATION.to_string(),
        }
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Appends `name=value` to `url`'s query when there is a value.
fn append_query(url: &mut Url, name: &str, value: Option<impl Display>) {
    if let Some(value) = value {
        url.query_pairs_mut().append_pair(name, &value.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_joined_under_api_v1_keeping_a_path_prefix() {
        let client = |base: &str| match Client::new(base, "chatd_x") {
            Ok(client) => client,
            Err(error) => panic!("{base}: {error}"),
        };
        let url = |client: &Client, path: &str| match client.endpoint(path) {
            Ok(url) => url.to_string(),
            Err(error) => panic!("{path}: {error}"),
        };
        let plain = client("http://127.0.0.1:7080");
        assert_eq!(url(&plain, "chats"), "http://127.0.0.1:7080/api/v1/chats");
        assert_eq!(
            url(&plain, "/chats/a:b?limit=2"),
            "http://127.0.0.1:7080/api/v1/chats/a:b?limit=2"
        );
        let prefixed = client("https://example.com/chatd/");
        assert_eq!(
            url(&prefixed, "models"),
            "https://example.com/chatd/api/v1/models"
        );
    }

    #[test]
    fn base_urls_must_be_http() {
        for base in ["ws://127.0.0.1:7080", "not a url", "http://h/?x=1"] {
            assert!(
                matches!(Client::new(base, "chatd_x"), Err(ClientError::Url { .. })),
                "{base}"
            );
        }
    }

    #[test]
    fn errors_and_streams_can_cross_tasks() {
        fn send<T: Send + 'static>() {}
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<ClientError>();
        send_sync::<Client>();
        send::<ChatStream>();
        send::<WatchStream>();
    }

    #[test]
    fn tokens_are_hidden_from_debug() {
        let client = match Client::new("http://127.0.0.1:7080", "chatd_secret") {
            Ok(client) => client,
            Err(error) => panic!("{error}"),
        };
        assert!(!format!("{client:?}").contains("chatd_secret"));
        assert!(matches!(
            client.with_token(Some("bad\ntoken")),
            Err(ClientError::InvalidHeader { .. })
        ));
    }
}
