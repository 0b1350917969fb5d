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

use crate::batch::{self, Problem, Validator};
use crate::runtime::{ApiError, Runtime};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use switchyard_core::{Filter, JobSpec, JobState, Secret, Store};
use switchyard_provider::WebhookCheck;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (status, Json(body)).into_response()
    }
}

/// Largest request body accepted (a batch of many thousand jobs fits).
pub const BODY_LIMIT: usize = 32 * 1024 * 1024;

/// The control API's bearer token; replaced on SIGHUP.
#[derive(Default)]
pub struct Auth {
    /// SHA-256 of the token: compared in constant time, never logged.
    digest: RwLock<Option<[u8; 32]>>,
}

impl Auth {
    pub fn new(token: Option<&Secret>) -> Auth {
        let auth = Auth::default();
        auth.set(token);
        auth
    }

    pub fn set(&self, token: Option<&Secret>) {
        let d = token.map(|t| digest(t.expose().as_bytes()));
        *self.digest.write().unwrap_or_else(|e| e.into_inner()) = d;
    }

    pub fn enabled(&self) -> bool {
        self.digest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// True when a token is configured and `header` carries it.
    pub fn accepts(&self, header: Option<&HeaderValue>) -> bool {
        self.enabled() && self.allows(header)
    }

    /// True when no token is configured or `header` carries the right one.
    fn allows(&self, header: Option<&HeaderValue>) -> bool {
        let Some(want) = *self.digest.read().unwrap_or_else(|e| e.into_inner()) else {
            return true;
        };
        let given = header
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        match given {
            Some(t) => bool::from(subtle::ConstantTimeEq::ct_eq(
                &digest(t.as_bytes())[..],
                &want[..],
            )),
            None => false,
        }
    }
}

fn digest(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

async fn require_token(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let open = path == "/healthz" || path.starts_with("/webhooks/");
    if open || auth.allows(req.headers().get(header::AUTHORIZATION)) {
        return next.run(req).await;
    }
    let mut resp = ApiError {
        status: 401,
        code: "unauthorized",
        message: "missing or wrong bearer token".into(),
    }
    .into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// Gives the router's own error answers (404, 405, 413, rejected query or
/// path) the contract's JSON error body.
async fn json_errors(resp: Response) -> Response {
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

pub fn router(rt: Arc<Runtime>, auth: Arc<Auth>, guard: Arc<crate::guard::Guard>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/jobs", get(list_jobs).post(post_jobs))
        .route("/v1/jobs/{key}", get(get_job).delete(cancel_job))
        .route("/v1/jobs/{key}/retry", post(retry_job))
        .route("/v1/providers", get(providers))
        .route("/webhooks/{provider}", post(webhook))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::map_response(json_errors))
        // Outermost first: a foreign Host, then the token, then cross-site.
        .layer(middleware::from_fn_with_state(
            guard.clone(),
            crate::guard::same_site,
        ))
        .layer(middleware::from_fn_with_state(auth, require_token))
        .layer(middleware::from_fn_with_state(
            guard,
            crate::guard::known_host,
        ))
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

async fn list_jobs(
    State(rt): State<Arc<Runtime>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let state = match q.state.as_deref() {
        Some(s) => Some(s.parse::<JobState>().map_err(|m| ApiError {
            status: 400,
            code: "bad_request",
            message: m,
        })?),
        None => None,
    };
    let mut jobs = rt.store.list(&Filter {
        state,
        provider: q.provider,
    })?;
    rt.show_live(&mut jobs).await;
    for j in &mut jobs {
        show_hold(&rt, j);
    }
    Ok(Json(jobs).into_response())
}

async fn get_job(
    State(rt): State<Arc<Runtime>>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let mut job = rt
        .store
        .get(&key)?
        .ok_or_else(|| ApiError::not_found(&key))?;
    show_hold(&rt, &mut job);
    rt.show_live(std::slice::from_mut(&mut job)).await;
    let history = rt.store.history(&key)?;
    let mut v = serde_json::to_value(job).map_err(|e| ApiError {
        status: 500,
        code: "internal",
        message: e.to_string(),
    })?;
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

async fn cancel_job(
    State(rt): State<Arc<Runtime>>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(rt.cancel_job(&key).await?).into_response())
}

async fn retry_job(
    State(rt): State<Arc<Runtime>>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
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
    let store_err = |e: switchyard_core::StoreError| vec![Problem::batch(format!("storage: {e}"))];
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

/// The body as received: `jobs` only (an unknown top-level field is a 400);
/// each job is read with the files' rule by [`batch::from_json`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StrictBody {
    jobs: Vec<serde_json::Value>,
}

async fn post_jobs(State(rt): State<Arc<Runtime>>, body: Bytes) -> Response {
    let parsed: StrictBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return ApiError {
                status: 400,
                code: "bad_request",
                message: format!("body is not a batch ({{\"jobs\": [...]}}): {e}"),
            }
            .into_response()
        }
    };
    if rt.cancel.is_cancelled() {
        return ApiError::unavailable("the daemon is shutting down").into_response();
    }
    let outcome = match batch::from_json(parsed.jobs) {
        Ok(jobs) => intake(&rt, jobs).await,
        Err(problems) => Err(problems),
    };
    match outcome {
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
        let period_id = l
            .budget
            .as_ref()
            .map(|b| b.current_period())
            .unwrap_or_else(|| "total".into());
        let entry = rt.store.ledger(name, &period_id).unwrap_or_default();
        let cooldown = p.cooldown_remaining();
        let paused = p.paused.load(Ordering::Relaxed);
        let queued = rt
            .store
            .count_by_state(Some(name))
            .ok()
            .and_then(|v| {
                v.into_iter()
                    .find(|(s, _)| *s == JobState::Queued)
                    .map(|(_, n)| n)
            })
            .unwrap_or(0);
        out.push(ProviderView {
            name: name.clone(),
            kind: p.adapter.kind().to_string(),
            rate_limit: l.rate_limit,
            max_in_flight: l.max_in_flight,
            in_flight: p.in_flight.load(Ordering::Relaxed),
            budget_credits: l.budget.as_ref().map(|b| b.credits),
            budget_period: l.budget.as_ref().map(|_| period_id.clone()),
            budget_used: entry.charged,
            budget_reserved: entry.reserved,
            budget_left: l.budget.as_ref().map(|b| entry.headroom(b.credits)),
            paused,
            cooldown_ms: cooldown.map(|d| d.as_millis() as u64),
            health: if paused {
                "paused (402)".into()
            } else if let Some(cd) = cooldown {
                format!("cooling down (429), {:.1}s left", cd.as_secs_f64())
            } else {
                "ok".into()
            },
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
    out.push_str(
        "# HELP switchyard_jobs Jobs by provider and state.\n# TYPE switchyard_jobs gauge\n",
    );
    for name in rt.providers.keys() {
        // Every state, zeros included: a series must not vanish when it empties.
        let counts = rt.store.count_by_state(Some(name))?;
        for state in JobState::ALL {
            let n = counts
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            let _ = writeln!(
                out,
                "switchyard_jobs{{provider=\"{name}\",state=\"{state}\"}} {n}"
            );
        }
    }
    type Read = fn(&crate::runtime::Counters) -> u64;
    let counters: [(&str, &str, Read); 7] = [
        (
            "switchyard_requests_total",
            "Requests sent to the provider.",
            |c| c.requests.load(Ordering::Relaxed),
        ),
        ("switchyard_creates_total", "Create calls sent.", |c| {
            c.creates.load(Ordering::Relaxed)
        }),
        ("switchyard_polls_total", "Status polls sent.", |c| {
            c.polls.load(Ordering::Relaxed)
        }),
        (
            "switchyard_rate_limited_total",
            "429 answers received.",
            |c| c.rate_limited.load(Ordering::Relaxed),
        ),
        (
            "switchyard_retries_total",
            "Create retries after transient errors.",
            |c| c.retries.load(Ordering::Relaxed),
        ),
        ("switchyard_errors_total", "Error answers received.", |c| {
            c.errors.load(Ordering::Relaxed)
        }),
        ("switchyard_webhooks_total", "Webhooks accepted.", |c| {
            c.webhooks.load(Ordering::Relaxed)
        }),
    ];
    for (metric, help, get) in counters {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
        for (name, p) in &rt.providers {
            let _ = writeln!(out, "{metric}{{provider=\"{name}\"}} {}", get(&p.counters));
        }
    }
    let views = provider_views(&rt);
    let _ = writeln!(out, "# HELP switchyard_credits Credits in the current budget period.\n# TYPE switchyard_credits gauge");
    for v in &views {
        let _ = writeln!(
            out,
            "switchyard_credits{{provider=\"{}\",kind=\"charged\"}} {}",
            v.name, v.budget_used
        );
        let _ = writeln!(
            out,
            "switchyard_credits{{provider=\"{}\",kind=\"reserved\"}} {}",
            v.name, v.budget_reserved
        );
        if let Some(left) = v.budget_left {
            let _ = writeln!(
                out,
                "switchyard_credits{{provider=\"{}\",kind=\"left\"}} {left}",
                v.name
            );
        }
    }
    type Gauge = fn(&ProviderView) -> f64;
    let gauges: [(&str, &str, Gauge); 4] = [
        (
            "switchyard_in_flight",
            "Jobs submitted and not finished.",
            |v| v.in_flight as f64,
        ),
        (
            "switchyard_max_in_flight",
            "Configured max_in_flight.",
            |v| v.max_in_flight as f64,
        ),
        (
            "switchyard_paused",
            "1 while dispatch is paused after a 402.",
            |v| f64::from(u8::from(v.paused)),
        ),
        (
            "switchyard_cooldown_seconds",
            "Time left in a 429 cool-down.",
            |v| v.cooldown_ms.unwrap_or(0) as f64 / 1000.0,
        ),
    ];
    for (metric, help, get) in gauges {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
        for v in &views {
            let _ = writeln!(out, "{metric}{{provider=\"{}\"}} {}", v.name, get(v));
        }
    }
    POLL_DELAY.render(
        &mut out,
        "switchyard_poll_delay_seconds",
        "Delay between a job's scheduled status polls (recorded by the poll scheduler).",
    );
    Ok(([("content-type", "text/plain; version=0.0.4")], out).into_response())
}

async fn webhook(
    State(rt): State<Arc<Runtime>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
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
            ApiError {
                status: 401,
                code: "unauthorized",
                message: "invalid webhook signature".into(),
            }
            .into_response()
        }
        WebhookCheck::Hint {
            provider_job_id,
            verified,
        } => {
            p.counters.webhooks.fetch_add(1, Ordering::Relaxed);
            if let Some(id) = provider_job_id {
                rt.due(&provider, &id, verified);
            }
            StatusCode::ACCEPTED.into_response()
        }
    }
}

/// A Prometheus histogram with fixed buckets, lock-free.
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, plus `+Inf`.
    counts: [AtomicU64; 12],
    sum_micros: AtomicU64,
}

impl Histogram {
    const fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: [const { AtomicU64::new(0) }; 12],
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, b) in self.bounds.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        cumulative += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

/// Delays between scheduled polls of a job. The scheduler records each
/// delay it sets with `POLL_DELAY.observe(d)`.
pub static POLL_DELAY: Histogram =
    Histogram::new(&[0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0]);
