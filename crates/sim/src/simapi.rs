//! `/_sim/*`: the simulator's own side door, for tests and the demo to see
//! what the providers saw (stats, scripted jobs) and to download outputs
//! without a network. Never rate-limited, never faulted.

use crate::common::json_response;
use crate::state::SimState;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use switchyard_core::ProviderKind;

pub fn router() -> Router<Arc<SimState>> {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/stats", get(stats))
        .route("/jobs", get(jobs))
        .route("/reset", post(reset))
        .route("/media/{provider}/{file}", get(media))
}

async fn stats(State(sim): State<Arc<SimState>>) -> Response {
    match serde_json::to_value(sim.stats()) {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": e.to_string()}),
        ),
    }
}

async fn jobs(
    State(sim): State<Arc<SimState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let only = match q.get("provider").map(|p| p.parse::<ProviderKind>()) {
        None => None,
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => return json_response(StatusCode::BAD_REQUEST, &json!({"error": e})),
    };
    let mut list = sim.jobs(only);
    if let Some(key) = q.get("key") {
        list.retain(|j| j.client_key.as_deref() == Some(key.as_str()));
    }
    match serde_json::to_value(list) {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": e.to_string()}),
        ),
    }
}

async fn reset(State(sim): State<Arc<SimState>>) -> Response {
    sim.reset_stats();
    json_response(StatusCode::OK, &json!({"reset": true}))
}

/// A few deterministic bytes standing in for the video (or keyframe image).
async fn media(Path((provider, file)): Path<(String, String)>) -> Response {
    if provider.parse::<ProviderKind>().is_err() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let content_type = if file.ends_with(".jpg") {
        "image/jpeg"
    } else {
        "video/mp4"
    };
    let mut body = Vec::with_capacity(64 + file.len());
    // An ISO-BMFF `ftyp` box, so a sniffing client sees an MP4 header.
    body.extend_from_slice(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom");
    body.extend_from_slice(format!("switchyard-sim {provider}/{file}\n").as_bytes());
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}
