//! The operator commands on the HTTP surface: pause and resume a provider,
//! plan a batch, adopt an uncertain job. Statuses come from `errors.rs`.

use super::errors::{invalid_batch, ApiError};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use switchyard_api::{AdoptBody, ProviderView};
use switchyard_engine::{Engine, EngineError};

pub(super) async fn pause(
    State(rt): State<Engine>,
    Path(name): Path<String>,
) -> Result<Json<ProviderView>, ApiError> {
    Ok(Json(rt.pause(&name).await?))
}

pub(super) async fn resume(
    State(rt): State<Engine>,
    Path(name): Path<String>,
) -> Result<Json<ProviderView>, ApiError> {
    Ok(Json(rt.resume(&name).await?))
}

/// `POST /v1/plan`: a body like `POST /v1/jobs`; nothing is queued.
pub(super) async fn plan(State(rt): State<Engine>, body: Bytes) -> Response {
    let jobs = match super::batch_jobs(&body) {
        Ok(jobs) => jobs,
        Err(refused) => return refused.into_response(),
    };
    match rt.plan(jobs).await {
        Ok(plan) => Json(plan).into_response(),
        Err(EngineError::Invalid(problems)) => invalid_batch(problems),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `POST /v1/jobs/{key}/adopt` with `{"provider_job_id": "..."}`.
pub(super) async fn adopt(
    State(rt): State<Engine>,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: AdoptBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            400,
            "bad_request",
            format!("the body must be {{\"provider_job_id\": \"...\"}}: {e}"),
        )
    })?;
    Ok(Json(rt.adopt(&key, &body.provider_job_id).await?).into_response())
}
