//! The daemon's HTTP surface: the control API the CLI and scripts use, the
//! Prometheus endpoint and the webhook receiver. Webhooks never write a job's
//! state: a verified one makes the job due for a poll, an unsigned one is a
//! hint rate-limited by the poll schedule.

use crate::batch::{self, Problem, Validator};
use crate::runtime::{ApiError, Runtime};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use switchyard_core::{Filter, JobSpec, JobState, Store};
use switchyard_provider::WebhookCheck;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (status, Json(body)).into_response()
    }
}

pub fn router(rt: Arc<Runtime>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/jobs", get(list_jobs).post(post_jobs))
        .route("/v1/jobs/{key}", get(get_job).delete(cancel_job))
        .route("/v1/jobs/{key}/retry", post(retry_job))
        .route("/v1/providers", get(providers))
        .route("/webhooks/{provider}", post(webhook))
        .layer(DefaultBodyLimit::max(32 * 1024 * 1024))
        .with_state(rt)
}

async fn healthz() -> &'static str {
    "ok\n"
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    provider: Option<String>,
}

async fn list_jobs(State(rt): State<Arc<Runtime>>, Query(q): Query<ListQuery>) -> Result<Response, ApiError> {
    let state = match q.state.as_deref() {
        Some(s) => Some(s.parse::<JobState>().map_err(|m| ApiError { status: 400, code: "bad_request", message: m })?),
        None => None,
    };
    let mut jobs = rt.store.list(&Filter { state, provider: q.provider })?;
    for j in &mut jobs {
        show_hold(&rt, j);
    }
    Ok(Json(jobs).into_response())
}

async fn get_job(State(rt): State<Arc<Runtime>>, Path(key): Path<String>) -> Result<Response, ApiError> {
    let mut job = rt.store.get(&key)?.ok_or_else(|| ApiError::not_found(&key))?;
    show_hold(&rt, &mut job);
    let history = rt.store.history(&key)?;
    let mut v = serde_json::to_value(job).map_err(|e| ApiError { status: 500, code: "internal", message: e.to_string() })?;
    v["history"] = serde_json::to_value(history).unwrap_or_default();
    Ok(Json(v).into_response())
}

/// `held_by` is derived: a queued job waits for what its provider's queue
/// head waits for.
fn show_hold(rt: &Runtime, job: &mut switchyard_core::Job) {
    job.held_by = match job.state {
        JobState::Queued => rt.providers.get(&job.provider).and_then(|p| p.hold()),
        _ => None,
    };
}

async fn cancel_job(State(rt): State<Arc<Runtime>>, Path(key): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(rt.cancel_job(&key).await?).into_response())
}

async fn retry_job(State(rt): State<Arc<Runtime>>, Path(key): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(rt.retry_job(&key).await?).into_response())
}

/// A batch as sent over HTTP: the jobs of one file.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchBody {
    pub jobs: Vec<JobSpec>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BatchAnswer {
    pub accepted: usize,
    pub already_known: usize,
    pub accepted_keys: Vec<String>,
    pub known_keys: Vec<String>,
}

/// Checks jobs against the running daemon's providers.
pub struct RuntimeValidator<'a>(pub &'a Runtime);

impl Validator for RuntimeValidator<'_> {
    fn validate(&self, provider: &str, params: &serde_json::Value) -> Option<Vec<String>> {
        let p = self.0.providers.get(provider)?;
        Some(match p.adapter.validate(params) {
            Ok(()) => vec![],
            Err(list) => list.into_iter().map(|p| p.to_string()).collect(),
        })
    }
    fn provider_names(&self) -> Vec<String> {
        self.0.providers.keys().cloned().collect()
    }
}

/// Intake shared by `POST /v1/jobs` and the demo: all valid or nothing.
pub async fn intake(rt: &Runtime, jobs: Vec<JobSpec>) -> Result<BatchAnswer, Vec<Problem>> {
    let problems = batch::check(&jobs, &RuntimeValidator(rt));
    if !problems.is_empty() {
        return Err(problems);
    }
    let store_err = |e: switchyard_core::StoreError| {
        vec![Problem { index: None, key: None, line: None, message: format!("storage: {e}") }]
    };
    let report = rt.store.intake(jobs).map_err(store_err)?;
    rt.store.sync().await.map_err(store_err)?;
    rt.wake_all();
    Ok(BatchAnswer {
        accepted: report.accepted.len(),
        already_known: report.already_known.len(),
        accepted_keys: report.accepted,
        known_keys: report.already_known,
    })
}

async fn post_jobs(State(rt): State<Arc<Runtime>>, body: Bytes) -> Response {
    let parsed: BatchBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return ApiError { status: 400, code: "bad_request", message: format!("body is not a batch ({{\"jobs\": [...]}}): {e}") }
                .into_response()
        }
    };
    if rt.cancel.is_cancelled() {
        return ApiError::unavailable("the daemon is shutting down").into_response();
    }
    match intake(&rt, parsed.jobs).await {
        Ok(answer) => (StatusCode::OK, Json(answer)).into_response(),
        Err(problems) => {
            let n = problems.len();
            let body = serde_json::json!({"error": {
                "code": "invalid_batch",
                "message": format!("the batch was rejected whole: {n} problem(s)"),
                "problems": problems,
            }});
            (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
        }
    }
}

/// Per-provider view for `switchyard providers`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProviderView {
    pub name: String,
    pub kind: String,
    pub rate_limit: crate::config::RateLimit,
    pub max_in_flight: u32,
    pub in_flight: usize,
    pub budget_credits: Option<u64>,
    pub budget_period: Option<String>,
    pub budget_used: u64,
    pub budget_reserved: u64,
    pub budget_left: Option<u64>,
    pub paused: bool,
    pub cooldown_ms: Option<u64>,
    pub health: String,
    pub queued: u64,
    pub requests: u64,
    pub rate_limited: u64,
}

pub fn provider_views(rt: &Runtime) -> Vec<ProviderView> {
    let mut out = Vec::new();
    for (name, p) in &rt.providers {
        let l = p.limits.read().unwrap_or_else(|e| e.into_inner());
        let period_id = l.budget.map(|b| b.period).unwrap_or_default().current_id();
        let entry = rt.store.ledger(name, &period_id).unwrap_or_default();
        let cooldown = p.cooldown_remaining();
        let paused = p.paused.load(Ordering::Relaxed);
        let queued = rt
            .store
            .count_by_state(Some(name))
            .ok()
            .and_then(|v| v.into_iter().find(|(s, _)| *s == JobState::Queued).map(|(_, n)| n))
            .unwrap_or(0);
        out.push(ProviderView {
            name: name.clone(),
            kind: p.adapter.kind().to_string(),
            rate_limit: l.rate_limit,
            max_in_flight: l.max_in_flight,
            in_flight: p.in_flight.load(Ordering::Relaxed),
            budget_credits: l.budget.map(|b| b.credits),
            budget_period: l.budget.map(|_| period_id.clone()),
            budget_used: entry.charged,
            budget_reserved: entry.reserved,
            budget_left: l.budget.map(|b| entry.headroom(b.credits)),
            paused,
            cooldown_ms: cooldown.map(|d| d.as_millis() as u64),
            health: if paused { "paused (402)".into() } else if cooldown.is_some() { "cooling down (429)".into() } else { "ok".into() },
            queued,
            requests: p.counters.requests.load(Ordering::Relaxed),
            rate_limited: p.counters.rate_limited.load(Ordering::Relaxed),
        });
    }
    out
}

async fn providers(State(rt): State<Arc<Runtime>>) -> Json<Vec<ProviderView>> {
    Json(provider_views(&rt))
}

async fn metrics(State(rt): State<Arc<Runtime>>) -> Result<Response, ApiError> {
    let mut out = String::new();
    out.push_str("# HELP switchyard_jobs Jobs by provider and state.\n# TYPE switchyard_jobs gauge\n");
    for name in rt.providers.keys() {
        for (state, n) in rt.store.count_by_state(Some(name))? {
            let _ = writeln!(out, "switchyard_jobs{{provider=\"{name}\",state=\"{state}\"}} {n}");
        }
    }
    type Read = fn(&crate::runtime::Counters) -> u64;
    let counters: [(&str, &str, Read); 7] = [
        ("switchyard_requests_total", "Requests sent to the provider.", |c| c.requests.load(Ordering::Relaxed)),
        ("switchyard_creates_total", "Create calls sent.", |c| c.creates.load(Ordering::Relaxed)),
        ("switchyard_polls_total", "Status polls sent.", |c| c.polls.load(Ordering::Relaxed)),
        ("switchyard_rate_limited_total", "429 answers received.", |c| c.rate_limited.load(Ordering::Relaxed)),
        ("switchyard_retries_total", "Create retries after transient errors.", |c| c.retries.load(Ordering::Relaxed)),
        ("switchyard_errors_total", "Error answers received.", |c| c.errors.load(Ordering::Relaxed)),
        ("switchyard_webhooks_total", "Webhooks accepted.", |c| c.webhooks.load(Ordering::Relaxed)),
    ];
    for (metric, help, get) in counters {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
        for (name, p) in &rt.providers {
            let _ = writeln!(out, "{metric}{{provider=\"{name}\"}} {}", get(&p.counters));
        }
    }
    let _ = writeln!(out, "# HELP switchyard_credits Credits in the current budget period.\n# TYPE switchyard_credits gauge");
    for v in provider_views(&rt) {
        let _ = writeln!(out, "switchyard_credits{{provider=\"{}\",kind=\"charged\"}} {}", v.name, v.budget_used);
        let _ = writeln!(out, "switchyard_credits{{provider=\"{}\",kind=\"reserved\"}} {}", v.name, v.budget_reserved);
    }
    Ok(([("content-type", "text/plain; version=0.0.4")], out).into_response())
}

async fn webhook(State(rt): State<Arc<Runtime>>, Path(provider): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(p) = rt.providers.get(&provider) else {
        // Same answer as an ignored unknown job: nothing leaks.
        return StatusCode::NOT_FOUND.into_response();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    match p.adapter.verify_webhook(&headers, &body, now) {
        WebhookCheck::Rejected(why) => {
            tracing::warn!(%provider, "webhook rejected: {why}");
            ApiError { status: 401, code: "unauthorized", message: "invalid webhook signature".into() }.into_response()
        }
        WebhookCheck::Hint { provider_job_id, verified } => {
            p.counters.webhooks.fetch_add(1, Ordering::Relaxed);
            if let Some(id) = provider_job_id {
                rt.due(&provider, &id, verified);
            }
            StatusCode::ACCEPTED.into_response()
        }
    }
}
