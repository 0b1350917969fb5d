//! Viggle (`/viggle/api`). The seed documents only the status call, which
//! needs no auth; create (`POST /render`, Bearer, required `image_url`) is
//! the contract's assumption, and so are, here: `DELETE /render/{job_id}`
//! (Bearer) cancelling a queued or processing job with a refund, the cost of
//! 10 credits per job, and FastAPI-like errors `{"detail", "error_code"}`.
//! `mask_cdn_url` is set on completion when the params ask for transparency
//! (`transparent: true` or `mode: "transparent"`).

use crate::common::{self, json_response, Fields};
use crate::state::{lock, release, CreateFail, Created, Job, NewJob, Phase, SimState, View};
use crate::util;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use std::sync::Arc;
use switchyard_core::ProviderKind;

const KIND: ProviderKind = ProviderKind::Viggle;
pub const COST: u64 = 10;

/// Checkpoints and the pipeline position at which each is reached.
const CHECKPOINTS: [(&str, f64); 4] = [
    ("ref_done", 0.2),
    ("dri_done", 0.45),
    ("bg_done", 0.7),
    ("render_done", 0.95),
];

const FAILURES: [(&str, &str); 3] = [
    (
        "CS-UORC01-009",
        "Character could not be detected in the reference image",
    ),
    ("CS-UORC01-002", "Motion reference could not be processed"),
    ("CS-UORC02-001", "Render worker failed"),
];

pub fn router() -> Router<Arc<SimState>> {
    Router::new()
        .route("/render", post(create))
        .route("/render/{job_id}", get(status).delete(cancel))
}

async fn create(State(sim): State<Arc<SimState>>, headers: HeaderMap, body: Bytes) -> Response {
    let prov = sim.provider(KIND);
    lock(&prov.inner).counters.create_requests += 1;
    if let Err(r) = common::check_auth(&sim, KIND, &headers) {
        return r;
    }
    let obj = match common::parse_object(&sim, KIND, &body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let mut f = Fields::new(&obj, "");
    f.required_url("image_url");
    f.opt_url("video_url");
    f.opt_str("mode");
    f.opt_bool("transparent");
    let (forced, forced_duration) = f.sim_params();
    if !f.problems.is_empty() {
        return common::error(
            &sim,
            KIND,
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
            &common::problems_text(&f.problems),
            None,
        );
    }
    let nj = NewJob {
        params: Value::Object(obj),
        client_key: common::header_key(&headers),
        cost: COST,
        forced,
        forced_duration,
        idem_key: None,
    };
    match prov.create(&sim, sim.now_ms(), vec![nj]) {
        Ok(c) => match c.first() {
            Some(Created::New(id) | Created::Existing(id)) => json_response(
                StatusCode::OK,
                &json!({"job_id": &**id, "status": "queued"}),
            ),
            None => common::internal_error(&sim, KIND),
        },
        Err(CreateFail::InsufficientCredits { needed, available }) => common::error(
            &sim,
            KIND,
            StatusCode::PAYMENT_REQUIRED,
            "INSUFFICIENT_CREDITS",
            &format!("Insufficient credits: {needed} required, {available} available"),
            None,
        ),
        Err(CreateFail::IdempotencyConflict { .. }) => common::internal_error(&sim, KIND),
    }
}

/// Documented as needing no authentication.
async fn status(State(sim): State<Arc<SimState>>, Path(job_id): Path<String>) -> Response {
    let prov = sim.provider(KIND);
    lock(&prov.inner).counters.status_requests += 1;
    let now = sim.now_ms();
    match prov.read(&job_id, |job| render(&sim, job, job.view(now))) {
        Some(b) => json_response(StatusCode::OK, &b),
        None => common::not_found(&sim, KIND, "Job not found"),
    }
}

async fn cancel(
    State(sim): State<Arc<SimState>>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let prov = sim.provider(KIND);
    lock(&prov.inner).counters.cancels += 1;
    if let Err(r) = common::check_auth(&sim, KIND, &headers) {
        return r;
    }
    let now = sim.now_ms();
    let res = prov.mutate(now, &job_id, |job, inner| {
        let v = job.view(now);
        match v.phase {
            Phase::Pending | Phase::Processing | Phase::Paused => {
                job.cancelled = Some((now, v.p));
                job.touched_ms = now;
                if !job.settled {
                    job.settled = true;
                    release(KIND, inner, job.cost);
                }
                Ok(render(&sim, job, job.view(now)))
            }
            _ => Err(format!(
                "Job is {} and cannot be cancelled",
                crate::state::raw_status(KIND, v)
            )),
        }
    });
    match res {
        None => common::not_found(&sim, KIND, "Job not found"),
        Some(Ok(b)) => json_response(StatusCode::OK, &b),
        Some(Err(msg)) => common::error(
            &sim,
            KIND,
            StatusCode::CONFLICT,
            "JOB_NOT_CANCELLABLE",
            &msg,
            None,
        ),
    }
}

fn transparent(job: &Job) -> bool {
    job.params.get("transparent").and_then(Value::as_bool) == Some(true)
        || job.params.get("mode").and_then(Value::as_str) == Some("transparent")
}

/// The documented status object.
pub fn render(sim: &SimState, job: &Job, v: View) -> Value {
    let checkpoint = if v.phase == Phase::Completed {
        Some("render_done")
    } else {
        CHECKPOINTS
            .iter()
            .filter(|(_, at)| v.p >= *at)
            .map(|(c, _)| *c)
            .next_back()
    };
    let progress = match v.phase {
        Phase::Completed => 100,
        _ => common::pct(v.p).min(99),
    };
    let (error_code, error_message) = if v.phase == Phase::Failed {
        let (c, m) = common::pick(job.salt, &FAILURES);
        (json!(c), json!(m))
    } else {
        (Value::Null, Value::Null)
    };
    let complete = v.phase == Phase::Completed;
    json!({
        "job_id": &*job.id,
        "status": crate::state::shown_status(sim, job, v),
        "mode": job.params.get("mode").and_then(Value::as_str).unwrap_or("full_pipeline"),
        "checkpoint": checkpoint,
        "progress_pct": progress,
        "cdn_url": if complete {
            Value::String(sim.media_url(KIND, &format!("{}.mp4", job.id)))
        } else {
            Value::Null
        },
        "mask_cdn_url": if complete && transparent(job) {
            Value::String(sim.media_url(KIND, &format!("{}_mask.mp4", job.id)))
        } else {
            Value::Null
        },
        "error_code": error_code,
        "error_message": error_message,
        "chunks": [],
        "created_at": util::iso_seconds(job.created_ms),
        "completed_at": if v.phase.is_terminal() {
            Value::String(util::iso_seconds(v.since_ms))
        } else {
            Value::Null
        },
    })
}
