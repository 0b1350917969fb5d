//! The daemon's HTTP surface: the control API the CLI and scripts use, the
//! Prometheus endpoint and the webhook receiver. Webhooks never write a job's
//! state: a verified one makes the job due for a poll, an unsigned one is a
//! hint rate-limited by the poll schedule.
//!
//! Every error answer, including the router's own (unknown route, wrong
//! method, body too large, bad query), is `{"error": {"code", "message"}}`.
//! With `daemon.auth_token_file` set, every route but `/healthz` and
//! `/webhooks/*` needs `Authorization: Bearer <token>`. The guards against
//! other sites' pages (foreign `Host`, cross-site changes) are in
//! `guard.rs`.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;
use switchyard_api::batch;
use switchyard_api::ProviderView;
use switchyard_engine::{Engine, EngineError, Health, WebhookOutcome};

mod actions;
mod auth;
mod dashboard;
mod errors;
mod guard;
mod metrics;
mod operator;

pub use auth::Auth;
use errors::{json_errors, ApiError};
pub use guard::{AllowedHost, Guard};

/// Largest request body accepted (a batch of many thousand jobs fits).
pub const BODY_LIMIT: usize = 32 * 1024 * 1024;

pub fn router(rt: Engine, auth: Arc<Auth>, guard: Arc<Guard>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/jobs", get(dashboard::list_jobs).post(post_jobs))
        .route("/v1/jobs/{key}", get(get_job).delete(cancel_job))
        .route("/v1/jobs/{key}/retry", post(actions::retry))
        .route("/v1/jobs/{key}/pause", post(actions::pause))
        .route("/v1/jobs/{key}/resume", post(actions::resume))
        .route("/v1/jobs/{key}/detail", get(actions::detail))
        .route("/v1/providers", get(providers))
        .route("/v1/providers/{name}/pause", post(operator::pause))
        .route("/v1/providers/{name}/resume", post(operator::resume))
        .route("/v1/plan", post(operator::plan))
        .route("/v1/jobs/{key}/adopt", post(operator::adopt))
        .route("/v1/daemons", get(daemons))
        .route("/webhooks/{provider}", post(webhook))
        .merge(dashboard::routes(auth.clone()))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::map_response(json_errors))
        // Outermost first: a foreign Host, then the token, then cross-site.
        .layer(middleware::from_fn_with_state(
            guard.clone(),
            guard::same_site,
        ))
        .layer(middleware::from_fn_with_state(auth, auth::require_token))
        .layer(middleware::from_fn_with_state(guard, guard::known_host))
        .with_state(rt)
}

/// 200 while the store answers and its last durable write succeeded;
/// 503 with the reason otherwise (a supervisor can restart on it).
async fn healthz(State(rt): State<Engine>) -> Response {
    match rt.health().await {
        Health::Ok => "ok\n".into_response(),
        Health::StoreFailing(why) => {
            ApiError::new(503, "unavailable", format!("the store is failing: {why}"))
                .into_response()
        }
    }
}

async fn get_job(State(rt): State<Engine>, Path(key): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(rt.job(&key).await?).into_response())
}

async fn cancel_job(
    State(rt): State<Engine>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(rt.cancel(&key).await?).into_response())
}

/// The body as received: `jobs` only (an unknown top-level field is a 400);
/// each job is read with the files' rule by [`batch::from_json`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StrictBody {
    jobs: Vec<serde_json::Value>,
}

/// Why a batch body was refused before any job was checked.
pub(super) enum NotABatch {
    Body(ApiError),
    Jobs(Vec<batch::Problem>),
}

impl IntoResponse for NotABatch {
    fn into_response(self) -> Response {
        match self {
            NotABatch::Body(e) => e.into_response(),
            NotABatch::Jobs(problems) => errors::invalid_batch(problems),
        }
    }
}

/// A batch body's jobs, read as files are ([`batch::from_json`]).
pub(super) fn batch_jobs(body: &[u8]) -> Result<Vec<switchyard_core::JobSpec>, NotABatch> {
    let parsed: StrictBody = serde_json::from_slice(body).map_err(|e| {
        NotABatch::Body(ApiError::new(
            400,
            "bad_request",
            format!("body is not a batch ({{\"jobs\": [...]}}): {e}"),
        ))
    })?;
    batch::from_json(parsed.jobs).map_err(NotABatch::Jobs)
}

async fn post_jobs(State(rt): State<Engine>, body: Bytes) -> Response {
    let jobs = match batch_jobs(&body) {
        Ok(jobs) => jobs,
        Err(refused) => return refused.into_response(),
    };
    match rt.intake(jobs).await {
        Ok(answer) => (StatusCode::OK, Json(answer)).into_response(),
        Err(EngineError::Invalid(problems)) => errors::invalid_batch(problems),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn providers(State(rt): State<Engine>) -> Result<Json<Vec<ProviderView>>, ApiError> {
    Ok(Json(rt.providers().await?))
}

/// The daemons whose lease is live on the store (the fleet's; on sled,
/// this one).
async fn daemons(
    State(rt): State<Engine>,
) -> Result<Json<Vec<switchyard_api::DaemonView>>, ApiError> {
    Ok(Json(rt.daemons().await?))
}

async fn metrics(State(rt): State<Engine>) -> Result<Response, ApiError> {
    let snap = rt.metrics().await?;
    let text = metrics::render(snap, &rt.provider_names())
        .map_err(|e| ApiError::new(500, "internal", format!("encoding metrics: {e}")))?;
    Ok((
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn webhook(
    State(rt): State<Engine>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    match rt.webhook(&provider, &headers, &body, now) {
        // Same answer as an ignored unknown job: nothing leaks.
        WebhookOutcome::UnknownProvider => StatusCode::NOT_FOUND.into_response(),
        WebhookOutcome::Rejected(why) => {
            tracing::warn!(%provider, "webhook rejected: {why}");
            ApiError::new(401, "unauthorized", "invalid webhook signature").into_response()
        }
        WebhookOutcome::Accepted => StatusCode::ACCEPTED.into_response(),
    }
}
