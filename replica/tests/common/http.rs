//! A bare HTTP client of one replica's API, for routes the typed client
//! does not cover (uploads, raw bodies, webhooks): each call answers the
//! status and the JSON body (`Null` when there is none).

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

use super::app::TestApp;

/// Calls `/api/v1` of one replica with one token.
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Api {
    /// Replica `index` of `app`, as `token`.
    pub fn new(app: &TestApp, index: usize, token: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: format!("{}/api/v1", app.url(index)),
            token: token.to_owned(),
        }
    }

    /// A request to `path` (under `/api/v1`), authenticated.
    pub fn at(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends `request`: its status and JSON body.
    pub async fn answer(request: RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.expect("the replica answers");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `method path` with an optional JSON body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.at(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        Self::answer(request).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, Some(body)).await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::PATCH, path, Some(body)).await
    }
}
