//! What can go wrong talking to chatd, from a refused request to a broken
//! connection.

use std::{error::Error, time::Duration};

use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_tungstenite::tungstenite;

use crate::api::ErrorResponse;

/// How much of an unexpected body an error keeps, in characters.
const EXCERPT_CHARS: usize = 200;

/// An error of the typed client. Print it with
/// [`Chain`](crate::error_chain::Chain) to see its causes.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused the request with chatd's error body (ARCHITECTURE.md §9).
    #[error("{status}: {code}: {message}")]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The stable snake_case code (`not_found`, `queue_full`, …).
        code: String,
        /// The human sentence.
        message: String,
        /// Anything more specific the server said.
        details: Option<Value>,
    },
    /// A non-2xx answer without chatd's error body (a proxy's error page, …).
    #[error("unexpected status {status}, body {excerpt:?}")]
    Status {
        /// The HTTP status.
        status: StatusCode,
        /// The start of the body.
        excerpt: String,
    },
    /// The request could not be sent, or its answer not read.
    #[error("HTTP transport")]
    Http(#[from] reqwest::Error),
    /// The answer (or a stream event) is not what the route returns.
    #[error("cannot decode {excerpt:?}")]
    Decode {
        /// Why it does not decode.
        source: Box<dyn Error + Send + Sync>,
        /// The start of the body or event.
        excerpt: String,
    },
    /// The base URL, or a path given to [`Client::raw`](super::Client::raw),
    /// does not make a usable URL.
    #[error("invalid URL {url:?}: {reason}")]
    Url {
        /// What was given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A header value HTTP does not allow (the token, or one given to
    /// [`Client::raw`](super::Client::raw)).
    #[error("invalid value for header {name}")]
    InvalidHeader {
        /// The header.
        name: String,
    },
    /// The WebSocket handshake or connection failed.
    #[error("WebSocket")]
    WebSocket(#[from] tungstenite::Error),
    /// The server closed the WebSocket with a code other than normal (1000)
    /// or going away (1001).
    #[error("WebSocket closed by the server with code {code} ({reason:?})")]
    Closed {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// The server did not answer in time (a plain request, or the start of
    /// a stream).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl ClientError {
    /// The HTTP status of a refused request.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api { status, .. } | Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The error code of a refused request (`not_found`, …).
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The error of a non-2xx answer: [`ClientError::Api`] when the body is
    /// chatd's error body, [`ClientError::Status`] otherwise.
    pub(crate) fn from_refusal(status: StatusCode, body: &[u8]) -> Self {
        match serde_json::from_slice::<ErrorResponse>(body) {
            Ok(ErrorResponse { error }) => Self::Api {
                status,
                code: error.code,
                message: error.message,
                details: error.details,
            },
            Err(_) => Self::Status {
                status,
                excerpt: excerpt(body),
            },
        }
    }

    /// A body or event that does not decode, with the start of it.
    pub(crate) fn decode(source: impl Into<Box<dyn Error + Send + Sync>>, body: &[u8]) -> Self {
        Self::Decode {
            source: source.into(),
            excerpt: excerpt(body),
        }
    }
}

/// Decodes a JSON body or event.
pub(crate) fn decode_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|error| ClientError::decode(error, body))
}

/// The start of `body`, as text, cut at a character boundary.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut chars = text.chars();
    let mut excerpt: String = chars.by_ref().take(EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        excerpt.push('…');
    }
    excerpt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_cut_at_a_character_boundary() {
        let long = "é".repeat(EXCERPT_CHARS + 1);
        let cut = excerpt(long.as_bytes());
        assert_eq!(cut.chars().count(), EXCERPT_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(excerpt(b"short"), "short");
    }

    #[test]
    fn refusals_without_the_error_body_keep_their_status() {
        let error = ClientError::from_refusal(StatusCode::BAD_GATEWAY, b"<html>bad gateway");
        assert!(matches!(
            error,
            ClientError::Status { status: StatusCode::BAD_GATEWAY, ref excerpt } if excerpt == "<html>bad gateway"
        ));
        assert_eq!(error.code(), None);
    }
}
