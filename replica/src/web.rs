//! The web page every replica serves at `/` (ARCHITECTURE.md §9): one HTML file and
//! its JavaScript modules, stylesheet and icon from `replica/web/`, embedded
//! in the binary so a replica needs nothing beside itself to serve it.
//!
//! Every answer carries an `ETag` (a hash of the file) with `Cache-Control:
//! no-cache`: a browser keeps its copy and revalidates it, so a new build is
//! picked up on the next load and an unchanged file costs a 304. The
//! `Content-Security-Policy` allows scripts and styles from this origin only
//! (no inline script, no `eval`), so text that slips into the page as markup
//! still cannot run.
//!
//! [`cors`] lets a page served by one replica fail over to another replica's
//! URL, which is another origin (see its documentation).

use std::sync::LazyLock;

use axum::{
    Router,
    extract::Path,
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use sha2::{Digest, Sha256};
use tower_http::cors::{Any, CorsLayer};

use crate::api::ApiError;

/// One embedded file.
struct Asset {
    /// Its name under `/assets/` (the page itself is `/`).
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// An asset of `replica/web/` by file name, with its media type.
macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../web/", $name)),
        }
    };
}

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// The page's files. Adding one: put it in `replica/web/` and list it here.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("app.js", JAVASCRIPT),
    asset!("api.js", JAVASCRIPT),
    asset!("stream.js", JAVASCRIPT),
    asset!("conversation.js", JAVASCRIPT),
    asset!("render.js", JAVASCRIPT),
    asset!("markdown.js", JAVASCRIPT),
    asset!("icon.svg", "image/svg+xml"),
];

/// What the page may load and connect to. `connect-src` names every
/// http(s)/ws(s) URL because the user may configure other replicas to fail
/// over to; nothing else may come from elsewhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self' http: https: ws: wss:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Headers of every answer besides the content's own.
const SECURITY_HEADERS: [(HeaderName, &str); 6] = [
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
    (
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    ),
    (
        HeaderName::from_static("permissions-policy"),
        "camera=(), microphone=(), geolocation=()",
    ),
];

/// Each asset's `ETag`, by position in [`ASSETS`]: computed once.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let digest = Sha256::digest(asset.body);
            let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"\""))
        })
        .collect()
});

/// `/` and `/assets/{name}`. Unknown names fall through to the API's JSON 404.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|headers: HeaderMap| async move { serve("index.html", &headers) }))
        .route(
            "/assets/{name}",
            get(|Path(name): Path<String>, headers: HeaderMap| async move {
                serve(&name, &headers)
            }),
        )
}

/// Lets pages of other origins call the API with a bearer token: the page
/// served by one replica fails over to the URLs of the others, which are
/// other origins. Any origin may, because the API trusts only the
/// `Authorization` header, never cookies: a foreign page without the token
/// can read nothing it could not read with curl.
pub fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("last-event-id"),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

/// The asset `name`, or a 304 when the browser's copy is current.
fn serve(name: &str, request: &HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|asset| asset.name == name) else {
        return ApiError::not_found("page").into_response();
    };
    let asset = &ASSETS[index];
    let etag = &ETAGS[index];
    let mut response = if matches_etag(request, etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// True when `If-None-Match` names `etag` (or is `*`).
fn matches_etag(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(etag) = etag.to_str() else {
        return false;
    };
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_links_only_assets_that_are_embedded() {
        let page = std::str::from_utf8(ASSETS[0].body).expect("utf-8");
        for reference in page.split("/assets/").skip(1) {
            let name: String = reference
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                .collect();
            assert!(
                ASSETS.iter().any(|asset| asset.name == name),
                "index.html refers to /assets/{name}, which is not embedded"
            );
        }
    }

    #[test]
    fn modules_import_only_embedded_modules() {
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(asset.body).expect("utf-8");
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let name = line
                    .rsplit_once("from './")
                    .map(|(_, rest)| rest.trim_end_matches(['\'', ';']))
                    .unwrap_or_else(|| panic!("{}: import without ./: {line}", asset.name));
                assert!(
                    ASSETS.iter().any(|a| a.name == name),
                    "{} imports {name}, which is not embedded",
                    asset.name
                );
            }
        }
    }

    #[test]
    fn if_none_match_is_compared_by_tag() {
        let etag = HeaderValue::from_static("\"abc\"");
        let mut request = HeaderMap::new();
        assert!(!matches_etag(&request, &etag));
        request.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"x\", W/\"abc\""),
        );
        assert!(matches_etag(&request, &etag));
        request.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"abcd\""));
        assert!(!matches_etag(&request, &etag));
    }
}
