//! Operations endpoints outside `/api/v1`: liveness, readiness, metrics.

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use serde_json::json;

use super::AppState;

pub(super) fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// The process is alive.
async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// The replica should get traffic: database and listener connected, not draining.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let readiness = (state.readiness)();
    let ready = readiness.database && readiness.listener && !readiness.draining;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "database": readiness.database,
        "listener": readiness.listener,
        "draining": readiness.draining,
    });
    (status, Json(body))
}

/// Prometheus text.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    match state.telemetry.render() {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            text,
        )
            .into_response(),
        Err(err) => {
            let text = chatd_shared::error_chain::Chain(&err).to_string();
            tracing::error!(error = %text, "rendering metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, text).into_response()
        }
    }
}
