//! The escape hatch for requests the typed routes cannot make: malformed or
//! oversized bodies, unknown fields, bad ids, odd headers.

use bytes::Bytes;
use reqwest::{
    Method, StatusCode,
    header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue},
};
use serde::de::DeserializeOwned;

use super::{Client, ClientError, error::decode_json};
use crate::api::{ApiErrorBody, ErrorResponse};

/// The body of a [`Client::raw`] request.
#[derive(Debug, Clone, PartialEq)]
pub enum RawBody {
    /// Serialised and sent as `application/json`.
    Json(serde_json::Value),
    /// Sent as is, as `application/json` unless the request's headers give
    /// another `Content-Type`.
    Bytes(Bytes),
}

/// The answer to a [`Client::raw`] request, whatever its status.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// The HTTP status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body (invalid UTF-8 replaced).
    pub body: String,
}

impl RawResponse {
    /// The body decoded as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        decode_json(self.body.as_bytes())
    }

    /// The error object, when the body is chatd's error body.
    pub fn error(&self) -> Option<ApiErrorBody> {
        serde_json::from_str::<ErrorResponse>(&self.body)
            .ok()
            .map(|response| response.error)
    }
}

impl Client {
    /// Sends any request to `path` (relative to `/api/v1`, with or without a
    /// query: `/chats/not-an-id?limit=0`) with the caller's credentials, and
    /// returns the answer whatever its status. `headers` are added last and
    /// replace any the client sets of the same name (`Authorization`,
    /// `Content-Type`); a name given twice is sent twice.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<RawBody>,
        headers: &[(&str, &str)],
    ) -> Result<RawResponse, ClientError> {
        let mut request = self.route(method, path)?;
        request = match body {
            Some(RawBody::Json(value)) => request.json(&value),
            Some(RawBody::Bytes(bytes)) => {
                request.header(CONTENT_TYPE, "application/json").body(bytes)
            }
            None => request,
        };
        let mut extra = HeaderMap::new();
        for &(name, value) in headers {
            let invalid = || ClientError::InvalidHeader {
                name: name.to_owned(),
            };
            extra.append(
                HeaderName::try_from(name).map_err(|_| invalid())?,
                HeaderValue::try_from(value).map_err(|_| invalid())?,
            );
        }
        let (status, headers, body) = self.exchange(request.headers(extra)).await?;
        Ok(RawResponse {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}
