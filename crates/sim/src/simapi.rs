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

/// One second of a 160x90 test pattern, H.264 in MP4 (5 KB; made with
/// `ffmpeg -f lavfi -i testsrc=size=160x90:rate=10:duration=1 -c:v libx264
/// -pix_fmt yuv420p -profile:v baseline -movflags +faststart`). Its first
/// box is `ftyp`, as a sniffing client expects.
const SAMPLE_MP4: &[u8] = include_bytes!("media/sample.mp4");

/// The video every job produces (or a few bytes standing in for a
/// keyframe image).
async fn media(Path((provider, file)): Path<(String, String)>) -> Response {
    if provider.parse::<ProviderKind>().is_err() {
        return StatusCode::NOT_FOUND.into_response();
    }
    if !file.ends_with(".jpg") {
        // A real (tiny) video, so a page showing the result can play it.
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"))],
            SAMPLE_MP4,
        )
            .into_response();
    }
    let content_type = "image/jpeg";
    let mut body = Vec::with_capacity(64 + file.len());
    body.extend_from_slice(format!("switchyard-sim {provider}/{file}\n").as_bytes());
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}
