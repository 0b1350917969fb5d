//! A user's actions on one job at its provider: retry (queued again here,
//! or with `from_stage` re-run at the provider), pause and resume, and the
//! job's detail as the provider shows it. Which provider offers what is the
//! engine's to say (409 naming the provider where it does not).

use super::errors::ApiError;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use switchyard_api::RetryBody;
use switchyard_engine::Engine;

/// `POST /v1/jobs/{key}/retry`: `{}` (or no body) queues a failed or
/// uncertain job again; `{"from_stage": "..."}` re-runs it at the provider.
pub(super) async fn retry(
    State(rt): State<Engine>,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: RetryBody = if body.iter().all(u8::is_ascii_whitespace) {
        RetryBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                400,
                "bad_request",
                format!("body is not a retry ({{}} or {{\"from_stage\": \"...\"}}): {e}"),
            )
        })?
    };
    let job = match body.from_stage {
        Some(stage) => rt.retry_from_stage(&key, &stage).await?,
        None => rt.retry(&key).await?,
    };
    Ok(Json(job).into_response())
}

/// `POST /v1/jobs/{key}/pause`.
pub(super) async fn pause(
    State(rt): State<Engine>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(rt.job_pause(&key).await?).into_response())
}

/// `POST /v1/jobs/{key}/resume`.
pub(super) async fn resume(
    State(rt): State<Engine>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(rt.job_resume(&key).await?).into_response())
}

/// `GET /v1/jobs/{key}/detail`: the job, its history and `detail`.
pub(super) async fn detail(
    State(rt): State<Engine>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(rt.job_detail(&key).await?).into_response())
}
