//! UGC Lab (`/ugclab/api/v1`). The seed documents status, cancel, the
//! `{data, meta}` envelope and the error codes; the create call is the
//! contract's assumption (`POST /ugc`, required `script`). The cost is the
//! seed's example, 125 credits, charged at create and refunded on failure or
//! cancel. A cancel of anything but PENDING is refused, as documented.
//! Undocumented and assumed here: the 401/402/validation codes, and the
//! webhook body `{"event": "ugc_completed"|"ugc_failed", "data": <status>}`.

use crate::common::{self, json_response, ugc_meta, Fields};
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

const KIND: ProviderKind = ProviderKind::Ugclab;
pub const COST: u64 = 125;
/// Pipeline positions at which each processing step completes.
const REFINE_SCRIPT_AT: f64 = 0.15;
const REFINE_ACTIONS_AT: f64 = 0.3;
/// Video generation is done here; the rest of the run is SAVING.
pub const SAVING_AT: f64 = 0.9;

const ACTORS: [&str; 6] = ["Sarah", "Mike", "Priya", "Lena", "Jamal", "Sofia"];
const FAILURES: [&str; 3] = [
    "Video generation failed: the actor render timed out",
    "Script refinement failed: the script violates the content policy",
    "Video generation failed: upstream model error",
];

pub fn router() -> Router<Arc<SimState>> {
    Router::new()
        .route("/ugc", post(create))
        .route("/ugc/{id}", get(status).delete(cancel))
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
    f.required_str("script");
    f.opt_str("model");
    let (forced, forced_duration) = f.sim_params();
    if !f.problems.is_empty() {
        let details = json!({"errors": f.problems.iter().map(|p| json!({"field": p.field, "message": p.message})).collect::<Vec<_>>()});
        return common::error(
            &sim,
            KIND,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &common::problems_text(&f.problems),
            Some(details),
        );
    }
    let now = sim.now_ms();
    let nj = NewJob {
        params: Value::Object(obj),
        client_key: common::header_key(&headers),
        cost: COST,
        forced,
        forced_duration,
        idem_key: None,
    };
    match prov.create(&sim, now, vec![nj]) {
        Ok(created) => {
            let id = match created.first() {
                Some(Created::New(id) | Created::Existing(id)) => id.clone(),
                None => return common::internal_error(&sim, KIND),
            };
            json_response(
                StatusCode::CREATED,
                &json!({
                    "data": {"id": &*id, "status": "PENDING", "creditsCharged": COST},
                    "meta": ugc_meta(&sim),
                }),
            )
        }
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

async fn status(
    State(sim): State<Arc<SimState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let prov = sim.provider(KIND);
    lock(&prov.inner).counters.status_requests += 1;
    if let Err(r) = common::check_auth(&sim, KIND, &headers) {
        return r;
    }
    let now = sim.now_ms();
    match prov.read(&id, |job| render(&sim, job, job.view(now))) {
        Some(data) => json_response(
            StatusCode::OK,
            &json!({"data": data, "meta": ugc_meta(&sim)}),
        ),
        None => common::not_found(&sim, KIND, "UGC job not found"),
    }
}

async fn cancel(
    State(sim): State<Arc<SimState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let prov = sim.provider(KIND);
    lock(&prov.inner).counters.cancels += 1;
    if let Err(r) = common::check_auth(&sim, KIND, &headers) {
        return r;
    }
    let now = sim.now_ms();
    let res = prov.mutate(now, &id, |job, inner| {
        let v = job.view(now);
        match v.phase {
            Phase::Pending => {
                job.cancelled = Some((now, v.p));
                job.touched_ms = now;
                if !job.settled {
                    job.settled = true;
                    release(KIND, inner, job.cost);
                }
                Ok(job.cost)
            }
            Phase::Processing | Phase::Paused => Err((
                "UGC_PROCESSING",
                "Cannot cancel a job that is already processing",
            )),
            Phase::Completed => Err(("UGC_ALREADY_COMPLETED", "Cannot cancel a completed job")),
            Phase::Failed => Err(("UGC_ALREADY_FAILED", "Cannot cancel a failed job")),
            Phase::Cancelled => Err(("UGC_ALREADY_CANCELLED", "Job is already cancelled")),
        }
    });
    match res {
        None => common::not_found(&sim, KIND, "UGC job not found"),
        Some(Ok(refunded)) => json_response(
            StatusCode::OK,
            &json!({
                "data": {"id": id, "status": "CANCELLED", "creditsRefunded": refunded},
                "meta": ugc_meta(&sim),
            }),
        ),
        Some(Err((code, msg))) => {
            common::error(&sim, KIND, StatusCode::BAD_REQUEST, code, msg, None)
        }
    }
}

fn step(done_at: f64, prev_at: f64, v: View) -> &'static str {
    if v.p >= done_at || v.phase == Phase::Completed {
        "completed"
    } else if v.phase == Phase::Failed && v.p >= prev_at {
        "failed"
    } else {
        "pending"
    }
}

/// The documented status object (the `data` of `GET /ugc/{id}`).
pub fn render(sim: &SimState, job: &Job, v: View) -> Value {
    let custom = job.params.get("customActor").is_some_and(Value::is_object)
        || job.params.get("custom_actor").is_some_and(Value::is_object);
    let actor = if custom {
        Value::Null
    } else {
        let id = job
            .params
            .get("actorId")
            .or_else(|| job.params.get("actor_id"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("clactor{:016x}", util::mix64(job.salt) >> 1));
        json!({"id": id, "name": common::pick(job.salt, &ACTORS)})
    };
    let model = job
        .params
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("talking-actor-pro-15sec");
    let progress = match v.phase {
        Phase::Completed => 100,
        Phase::Pending | Phase::Cancelled => common::pct(v.p),
        _ => common::pct(v.p).min(99),
    };
    json!({
        "id": &*job.id,
        "status": crate::state::shown_status(sim, job, v),
        "progress": progress,
        "videoUrl": if v.phase == Phase::Completed {
            Value::String(sim.media_url(KIND, &format!("{}.mp4", job.id)))
        } else {
            Value::Null
        },
        "processingSteps": {
            "refineScript": step(REFINE_SCRIPT_AT, 0.0, v),
            "refineActions": step(REFINE_ACTIONS_AT, REFINE_SCRIPT_AT, v),
            "videoGeneration": step(SAVING_AT, REFINE_ACTIONS_AT, v),
        },
        "actor": actor,
        "isCustomActor": custom,
        "model": model,
        "creditsCharged": job.cost,
        "creditsRefunded": job.released_now(v.phase),
        "errorMessage": if v.phase == Phase::Failed {
            Value::String(common::pick(job.salt, &FAILURES).to_string())
        } else {
            Value::Null
        },
        "createdAt": util::iso_millis(job.created_ms),
        "updatedAt": util::iso_millis(v.since_ms),
    })
}

/// The webhook body for a finished job.
pub fn webhook_body(sim: &SimState, job: &Job, v: View) -> Value {
    let event = if v.phase == Phase::Completed {
        "ugc_completed"
    } else {
        "ugc_failed"
    };
    json!({
        "event": event,
        "data": render(sim, job, v),
        "timestamp": util::iso_millis(sim.now_ms()),
    })
}
