//! What the chat routes share: the chat path, the `Idempotency-Key` header,
//! page sizes, and how a request's content, model and file problems
//! become errors.

use axum::http::HeaderMap;
use chatd_shared::{
    api::{MAX_IDEMPOTENCY_KEY, content::ContentError},
    db::transitions::FileRefused,
    ids::ChatId,
};

use super::error::{ApiError, ApiResult};
use crate::operations::ModelRefused;

/// The 404 of every chat route.
pub(super) const NO_CHAT: &str =
    "No such chat, or not the caller's (the two look the same) (`not_found`)";

/// The path of a chat.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct ChatPath {
    /// The chat.
    #[allow(dead_code)]
    id: ChatId,
}

/// The `Idempotency-Key` header of the routes that create.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub(super) struct IdempotencyKey {
    /// A key of the client's choosing: a request repeated with it answers
    /// 200 with the original result instead of doing it again.
    #[param(rename = "Idempotency-Key", schema_with = idempotency_key_schema)]
    #[allow(dead_code)]
    key: Option<String>,
}

/// 1 to [`MAX_IDEMPOTENCY_KEY`] visible ASCII characters (spaces and tabs
/// inside, and around it where they are trimmed).
fn idempotency_key_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .pattern(Some(format!(
            r"^[\t ]*[!-~](?:[\t -~]{{0,{}}}[!-~])?[\t ]*$",
            MAX_IDEMPOTENCY_KEY - 2
        )))
        .build()
}

/// The `Idempotency-Key` header, if sent (400 when unusable).
pub(super) fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be printable ASCII",
            )
        })?
        .trim();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            format!("Idempotency-Key must have 1 to {MAX_IDEMPOTENCY_KEY} characters"),
        ));
    }
    Ok(Some(key.to_owned()))
}

/// Content problems: shape errors are 400, the rest 422.
pub(super) fn content_error(error: ContentError) -> ApiError {
    match error {
        ContentError::Shape => ApiError::bad_request("invalid_body", error.to_string()),
        ContentError::Empty => ApiError::unprocessable("empty_message", error.to_string()),
        _ => ApiError::unprocessable("invalid_content", error.to_string()),
    }
}

/// A model that cannot be used: 422.
pub(super) fn model_error(refused: ModelRefused) -> ApiError {
    match refused {
        ModelRefused::Missing(id) => {
            ApiError::unprocessable("invalid_model", format!("model config {id} does not exist"))
        }
        ModelRefused::NoDefault => ApiError::unprocessable(
            "no_model",
            "no default model is configured; pass model_config_id or ask an admin",
        ),
        ModelRefused::Unavailable(name) => {
            ApiError::unprocessable("invalid_model", format!("model {name} is not available"))
        }
    }
}

/// A `file` part that names no file of the chat owner's: 422.
pub(super) fn file_error(refused: FileRefused) -> ApiError {
    ApiError::unprocessable(
        "invalid_file",
        format!(
            "part {} names file {:?}, which is not one of your files",
            refused.index, refused.file_id
        ),
    )
    .with_details(serde_json::json!({"index": refused.index, "file_id": refused.file_id}))
}

/// Page size from a `limit` parameter (1–200, default 50).
pub(super) fn page_size(limit: Option<i64>) -> ApiResult<i64> {
    match limit.unwrap_or(50) {
        limit @ 1..=200 => Ok(limit),
        other => Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and 200, not {other}"),
        )),
    }
}
