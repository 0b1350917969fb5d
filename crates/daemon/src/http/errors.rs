//! Every error answer is `{"error": {"code", "message"}}`: the engine's
//! errors are given their HTTP status here, and the router's own answers
//! (unknown route, wrong method, body too large, bad query) are rewritten to
//! the same body.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use switchyard_engine::EngineError;
use switchyard_store::StoreError;

/// Errors of the control API, rendered as `{"error": {"code", "message"}}`.
/// Statuses are chosen here, at the edge, and nowhere else.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub(super) fn not_found(key: &str) -> Self {
        ApiError {
            status: 404,
            code: "not_found",
            message: format!("no job with key {key:?}"),
        }
    }

    pub(super) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(k) => ApiError::not_found(&k),
            StoreError::Refused(_) => ApiError::new(409, "conflict", e.to_string()),
            other => ApiError::new(500, "storage", other.to_string()),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound(k) => ApiError::not_found(&k),
            e @ EngineError::UnknownProvider { .. } => {
                ApiError::new(404, "not_found", e.to_string())
            }
            EngineError::BadRequest(m) => ApiError::new(400, "bad_request", m),
            EngineError::Conflict(m) => ApiError::new(409, "conflict", m),
            EngineError::Unavailable(m) => ApiError::new(503, "unavailable", m),
            EngineError::Provider(m) => ApiError::new(502, "provider_error", m),
            e @ EngineError::CountChanged { .. } => {
                ApiError::new(409, "count_changed", e.to_string())
            }
            EngineError::Store(e) => e.into(),
            // Answered with its problems by the batch handler.
            e @ EngineError::Invalid(_) => ApiError::new(422, "invalid_batch", e.to_string()),
        }
    }
}

/// A batch rejected whole (`POST /v1/jobs`, `POST /v1/plan`): 422 with
/// every problem.
pub(super) fn invalid_batch(problems: Vec<switchyard_api::Problem>) -> Response {
    let n = problems.len();
    let body = switchyard_api::ErrorBody {
        error: switchyard_api::ErrorDetail {
            code: "invalid_batch".into(),
            message: format!("the batch was rejected whole: {n} problem(s)"),
            problems: Some(problems),
        },
    };
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}

/// A batch's answer when intake failed: 422 `invalid_batch` with every
/// problem when it was invalid, else the error's own status.
pub(super) fn batch_error(e: EngineError) -> Response {
    match e {
        EngineError::Invalid(problems) => invalid_batch(problems),
        e => ApiError::from(e).into_response(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (status, Json(body)).into_response()
    }
}

/// Gives the router's own error answers (404, 405, 413, rejected query or
/// path) the contract's JSON error body.
pub(super) async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let code = match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        404 => "not_found",
        405 => "method_not_allowed",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "unprocessable",
        s if s >= 500 => "internal",
        _ => "error",
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    let body = Json(serde_json::json!({"error": {"code": code, "message": message}}));
    (parts, body).into_response()
}
