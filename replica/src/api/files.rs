//! `/files`: upload an attachment (multipart or a raw body), download it.
//! The type is sniffed from the bytes ([`crate::files::sniff`]); files are
//! the uploader's alone (404 for anyone else).

use axum::{
    Json,
    body::Body,
    extract::{FromRequest, Multipart, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::BytesMut;
use chatd_shared::{
    api::{self, ErrorResponse},
    db::files::FileRow,
    ids::FileId,
};
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult},
    extract::{ApiPath, ApiQuery},
};
use crate::files::{Upload, UploadOutcome, sniff::ALLOWED};

/// Uploads: no body limit but the file limit, which the handler enforces
/// while it reads (the API's 1 MiB default would refuse every real file).
pub(super) fn upload_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload_file))
        .layer(axum::extract::DefaultBodyLimit::disable())
}

/// Downloads.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_file))
}

/// Query of a raw upload.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    /// The file's name (raw uploads; a multipart part carries its own).
    #[schema(nullable = false, max_length = 255, pattern = r"^[^\u0000]*$")]
    name: Option<String>,
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("a file has at most {limit} bytes"),
    )
}

/// Appends `chunk` to `buffer`, refusing to go past `limit`.
fn take(buffer: &mut BytesMut, chunk: &[u8], limit: usize) -> ApiResult<()> {
    if buffer.len() + chunk.len() > limit {
        return Err(too_large(limit));
    }
    buffer.extend_from_slice(chunk);
    Ok(())
}

/// A buffer for a body of `length` (when announced) up to `limit`: one
/// allocation for the whole file when the client says its size.
fn buffer_for(headers: &HeaderMap, limit: usize) -> ApiResult<BytesMut> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    // Multipart framing adds a little; anything far past the limit is
    // refused before a byte is read.
    if announced.is_some_and(|length| length > limit + 64 * 1024) {
        return Err(too_large(limit));
    }
    Ok(BytesMut::with_capacity(announced.unwrap_or(0).min(limit)))
}

/// Upload a file: `multipart/form-data` (the first part with a file name,
/// or the part named `file`) or the raw bytes as the body (`?name=`). The
/// type is decided by the content, never by `Content-Type` or the name:
/// PNG, JPEG, GIF, WebP, PDF, plain text, Markdown (text named `.md` or
/// sent as `text/markdown`) and JSON; anything else is 415.
#[utoipa::path(
    post, path = "/files", tag = "files",
    params(("query" = inline(Option<UploadQuery>), Query, style = Form, explode)),
    request_body(
        description = "The file: a multipart part (with a filename, or named `file`), or the raw body",
        content(("multipart/form-data"), ("application/octet-stream"))
    ),
    responses(
        (status = 201, body = api::File, description = "Stored"),
        (status = 400, body = ErrorResponse, description = "A malformed multipart body, or none with a file"),
        (status = 413, body = ErrorResponse, description = "Larger than the file limit (25 MiB by default); nothing is stored"),
        (status = 415, body = ErrorResponse, description = "Not an allowed kind of file"),
        (status = 422, body = ErrorResponse, description = "An empty file"),
    )
)]
async fn upload_file(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<UploadQuery>,
    request: Request,
) -> ApiResult<(StatusCode, Json<api::File>)> {
    let limit = state.files.max_size();
    let declared = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let mut buffer = buffer_for(request.headers(), limit)?;
    let (name, declared) = if declared
        .as_deref()
        .is_some_and(|t| t.starts_with("multipart/form-data"))
    {
        let mut multipart = Multipart::from_request(request, &state)
            .await
            .map_err(|rejection| ApiError::bad_request("invalid_body", rejection.body_text()))?;
        read_multipart(&mut multipart, &mut buffer, limit).await?
    } else {
        let mut body = request.into_body().into_data_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|err| {
                ApiError::bad_request("invalid_body", format!("reading the body failed: {err}"))
            })?;
            take(&mut buffer, &chunk, limit)?;
        }
        (query.name, declared)
    };
    let upload = Upload {
        name: name.as_deref(),
        declared_type: declared.as_deref(),
        content: buffer.freeze(),
    };
    match state.files.upload(caller.access(), upload).await? {
        UploadOutcome::Stored(file) => Ok((StatusCode::CREATED, Json(api::File::from(&file)))),
        UploadOutcome::Empty => Err(ApiError::unprocessable("empty_file", "the file is empty")),
        UploadOutcome::Unsupported => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_file_type",
            format!(
                "this kind of file is not accepted (allowed: {ALLOWED}); the type is read from the content"
            ),
        )),
    }
}

/// Reads the file part of a multipart body into `buffer`: its name and
/// declared type.
async fn read_multipart(
    multipart: &mut Multipart,
    buffer: &mut BytesMut,
    limit: usize,
) -> ApiResult<(Option<String>, Option<String>)> {
    let malformed = |err: axum::extract::multipart::MultipartError| {
        ApiError::bad_request("invalid_body", err.body_text())
    };
    while let Some(mut field) = multipart.next_field().await.map_err(malformed)? {
        if field.file_name().is_none() && field.name() != Some("file") {
            continue;
        }
        let name = field.file_name().map(str::to_owned);
        let declared = field.content_type().map(str::to_owned);
        while let Some(chunk) = field.chunk().await.map_err(malformed)? {
            take(buffer, &chunk, limit)?;
        }
        return Ok((name, declared));
    }
    Err(ApiError::bad_request(
        "invalid_body",
        "the multipart body has no file part (a part with a filename, or named `file`)",
    ))
}

/// Download a file: its bytes with their type, an `ETag` (the SHA-256), an
/// immutable `Cache-Control` (a file never changes) and a
/// `Content-Disposition` with its name. `If-None-Match` with the ETag is a
/// 304.
#[utoipa::path(
    get, path = "/files/{id}", tag = "files", params(("id" = FileId, Path)),
    responses(
        (status = 200, description = "The file's bytes, with the type found at upload", content(
            ("image/png"), ("image/jpeg"), ("image/gif"), ("image/webp"), ("application/pdf"),
            ("text/plain"), ("text/markdown"), ("application/json"),
        )),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 404, body = ErrorResponse, description = "No such file of yours"),
    )
)]
async fn get_file(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<FileId>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let Some(file) = state.files.get(caller.access(), id).await? else {
        return Err(ApiError::not_found("file"));
    };
    let etag = format!("\"{}\"", file.sha256_hex());
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        });
    let mut response = if cached {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let chunks = state
            .files
            .read(&file)
            .map_err(|err| std::io::Error::other(err.to_string()));
        let mut response = Body::from_stream(chunks).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, content_type(&file));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(file.size));
        headers.insert(header::CONTENT_DISPOSITION, disposition(&file));
        response
    };
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Served from the API's origin: a file must never run as a page.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    Ok(response)
}

fn content_type(file: &FileRow) -> HeaderValue {
    let value = if file.media_type.starts_with("text/") {
        format!("{}; charset=utf-8", file.media_type)
    } else {
        file.media_type.clone()
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

/// `inline` for images (a browser may show them), `attachment` otherwise;
/// the name as an ASCII fallback and in RFC 5987 form.
fn disposition(file: &FileRow) -> HeaderValue {
    let kind = if file.media_type.starts_with("image/") {
        "inline"
    } else {
        "attachment"
    };
    let fallback: String = file
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = file
        .name
        .bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect();
    HeaderValue::from_str(&format!(
        "{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or(HeaderValue::from_static("attachment"))
}

impl From<crate::files::StoreError> for ApiError {
    fn from(error: crate::files::StoreError) -> Self {
        match error {
            crate::files::StoreError::Db(db) => Self::from(db),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disposition_carries_the_name_safely() {
        let file = FileRow {
            id: FileId::new_random(),
            owner_id: chatd_shared::ids::UserId::new_random(),
            name: "rapport \"final\" é.pdf".into(),
            media_type: "application/pdf".into(),
            size: 1,
            sha256: vec![0; 32],
            created_at: chrono::Utc::now(),
        };
        assert_eq!(
            disposition(&file),
            "attachment; filename=\"rapport _final_ _.pdf\"; filename*=UTF-8''rapport%20%22final%22%20%C3%A9.pdf"
        );
    }
}
