//! Extractors that turn every malformed request into an [`ApiError`] with
//! the JSON error body: bad JSON, unknown fields, wrong types, text that
//! cannot be stored, oversize bodies, malformed ids and query strings.

use axum::{
    body::{Body, Bytes},
    extract::{FromRequest, FromRequestParts, Request, rejection::JsonRejection},
    http::{StatusCode, request::Parts},
};
use std::{fmt, marker::PhantomData};

use serde::{
    Deserialize, Deserializer,
    de::{DeserializeOwned, MapAccess, Visitor, value::MapAccessDeserializer},
};

use super::error::ApiError;

/// A JSON body (request types reject unknown fields). No string in it may
/// hold NUL, which PostgreSQL cannot store in `text` or `jsonb`: refused
/// here, whatever field it is in, rather than by the database as a 500.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|rejection| json_error(rejection.into()))?;
        // axum's own checks (content type, syntax, fields) on the bytes read.
        let request = Request::from_parts(parts, Body::from(bytes.clone()));
        let value = match axum::Json::<JsonObject<T>>::from_request(request, state).await {
            Ok(axum::Json(JsonObject(value))) => value,
            Err(rejection) => return Err(json_error(rejection)),
        };
        if has_nul(&bytes) {
            return Err(ApiError::bad_request(
                "invalid_body",
                "a string holds the NUL character (\\u0000), which cannot be stored",
            ));
        }
        Ok(Self(value))
    }
}

/// `T` read from a JSON object only. serde's derived structs also read a
/// JSON array as their fields in order (`[null, null]`), which no body of
/// this API is.
struct JsonObject<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for JsonObject<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for Fields<T> {
            type Value = T;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(Fields(PhantomData))
            .map(JsonObject)
    }
}

/// True when a JSON text has a string with NUL in it. JSON strings cannot
/// hold a raw control character, so NUL can only be the escape `\u0000`;
/// a backslash outside a string is a syntax error, so every backslash
/// starts an escape, and the one after an escaping backslash is skipped.
fn has_nul(json: &[u8]) -> bool {
    let mut rest = json;
    while let Some(at) = rest.iter().position(|&byte| byte == b'\\') {
        let escape = &rest[at + 1..];
        if escape.starts_with(b"u0000") {
            return true;
        }
        rest = escape.get(1..).unwrap_or_default();
    }
    false
}

fn json_error(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(error) => {
            // serde's sentence names the field and what was wrong.
            ApiError::bad_request("invalid_body", body_error_text(&error.body_text()))
        }
        JsonRejection::JsonSyntaxError(error) => {
            ApiError::bad_request("malformed_json", body_error_text(&error.body_text()))
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ),
        JsonRejection::BytesRejection(error) if error.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than the limit",
            )
        }
        other => ApiError::bad_request("invalid_body", other.body_text()),
    }
}

/// axum's texts start with a generic sentence; keep the specific part.
fn body_error_text(text: &str) -> String {
    text.split_once(": ")
        .map_or(text, |(_, rest)| rest)
        .to_owned()
}

/// Path parameters (ids that do not parse are a 400, not a 404).
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::bad_request(
                "invalid_path",
                body_error_text(&rejection.body_text()),
            )),
        }
    }
}

/// Query parameters (unknown or malformed ones are a 400).
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::bad_request(
                "invalid_query",
                body_error_text(&rejection.body_text()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::has_nul;

    #[test]
    fn finds_nul_escapes_and_only_them() {
        assert!(has_nul(br#"{"text": "a\u0000b"}"#));
        assert!(has_nul(br#"{"a\u0000": 1}"#));
        assert!(has_nul(br#"["\\", "\u0000"]"#));
        assert!(
            !has_nul(br#"{"text": "a\\u0000b"}"#),
            "an escaped backslash"
        );
        assert!(!has_nul(br#"{"text": "\u0001 \n \\"}"#));
        assert!(!has_nul(b"\\"));
    }
}
