//! UlazAI Video Studio (`/ulazai/api/v1/video-studio`). The seed documents
//! the paths (with Django's trailing slashes), the status envelope and the
//! failure shape; the create body (`model_slug`, `prompt`, optional
//! `duration`, or `"jobs": [...]`) is the contract's assumption. There is no
//! cancel and no idempotency: after a lost create answer a client can only
//! find its job in `history`, which therefore carries `model_slug` and
//! `prompt` (newest first, `?limit=` 1-500, default 50).
//! Cost (assumed from the seed's example): 20 credits per second of duration.

use crate::common::{self, json_response, Fields};
use crate::state::{lock, CreateFail, Created, Job, NewJob, Phase, SimState, View};
use crate::util;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use switchyard_core::ProviderKind;

const KIND: ProviderKind = ProviderKind::Ulazai;
pub const CREDITS_PER_SECOND: u64 = 20;
pub const DEFAULT_DURATION: u64 = 5;
const MAX_BATCH: usize = 20;

const FAILURES: [&str; 3] = [
    "Invalid duration for this model",
    "Provider task failed: content moderation rejected the prompt",
    "Provider task timed out",
];

pub fn router() -> Router<Arc<SimState>> {
    Router::new()
        .route("/generate/", post(generate))
        .route("/status/{job_id}/", get(status))
        .route("/history/", get(history))
}

fn bad_request(sim: &SimState, msg: &str) -> Response {
    common::error(
        sim,
        KIND,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        msg,
        None,
    )
}

async fn generate(State(sim): State<Arc<SimState>>, headers: HeaderMap, body: Bytes) -> Response {
    let prov = sim.provider(KIND);
    lock(&prov.inner).counters.create_requests += 1;
    if let Err(r) = common::check_auth(&sim, KIND, &headers) {
        return r;
    }
    let obj = match common::parse_object(&sim, KIND, &body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let batch = obj.contains_key("jobs");
    let specs: Vec<Map<String, Value>> = if batch {
        match obj.get("jobs") {
            Some(Value::Array(a)) if !a.is_empty() && a.len() <= MAX_BATCH => {
                let mut out = Vec::with_capacity(a.len());
                for (i, j) in a.iter().enumerate() {
                    match j {
                        Value::Object(m) => out.push(m.clone()),
                        _ => return bad_request(&sim, &format!("jobs[{i}] must be an object")),
                    }
                }
                out
            }
            _ => {
                return bad_request(
                    &sim,
                    &format!("jobs must be a non-empty array of at most {MAX_BATCH} objects"),
                )
            }
        }
    } else {
        vec![obj]
    };
    let key = common::header_key(&headers);
    let mut problems = Vec::new();
    let mut jobs = Vec::with_capacity(specs.len());
    for (i, spec) in specs.into_iter().enumerate() {
        let prefix = if batch {
            format!("jobs[{i}].")
        } else {
            String::new()
        };
        let mut f = Fields::new(&spec, &prefix);
        f.required_str("model_slug");
        f.required_str("prompt");
        let duration = f
            .opt_int_range("duration", 1, 60)
            .map(|d| d as u64)
            .unwrap_or(DEFAULT_DURATION);
        f.opt_str("mode");
        f.opt_str("quality_mode");
        f.opt_url("image_url");
        let (forced, forced_duration) = f.sim_params();
        problems.append(&mut f.problems);
        let client_key = match (&key, batch) {
            (Some(k), true) => Some(format!("{k}[{i}]")),
            (k, _) => k.clone(),
        };
        jobs.push(NewJob {
            params: Value::Object(spec),
            client_key,
            cost: duration * CREDITS_PER_SECOND,
            forced,
            forced_duration,
            idem_key: None,
        });
    }
    if !problems.is_empty() {
        return bad_request(&sim, &common::problems_text(&problems));
    }
    let now = sim.now_ms();
    let created = match prov.create(&sim, now, jobs) {
        Ok(c) => c,
        Err(CreateFail::InsufficientCredits { needed, available }) => {
            return common::error(
                &sim,
                KIND,
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_credits",
                &format!("Insufficient credits: {needed} required, {available} available"),
                None,
            )
        }
        Err(CreateFail::IdempotencyConflict { .. }) => return common::internal_error(&sim, KIND),
    };
    let summaries: Vec<Value> = created
        .iter()
        .filter_map(|c| match c {
            Created::New(id) | Created::Existing(id) => prov.read(id, |job| {
                json!({
                    "job_id": &*job.id,
                    "status": "pending",
                    "model_slug": job.params.get("model_slug").cloned().unwrap_or(Value::Null),
                    "credits_charged": job.cost,
                })
            }),
        })
        .collect();
    let body = if batch {
        json!({"success": true, "jobs": summaries})
    } else {
        match summaries.into_iter().next() {
            Some(job) => json!({"success": true, "job": job}),
            None => return common::internal_error(&sim, KIND),
        }
    };
    json_response(StatusCode::CREATED, &body)
}

async fn status(
    State(sim): State<Arc<SimState>>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let prov = sim.provider(KIND);
    lock(&prov.inner).counters.status_requests += 1;
    if let Err(r) = common::check_auth(&sim, KIND, &headers) {
        return r;
    }
    let now = sim.now_ms();
    match prov.read(&job_id, |job| render(&sim, job, job.view(now), false)) {
        Some(job) => json_response(StatusCode::OK, &json!({"success": true, "job": job})),
        None => common::not_found(&sim, KIND, "Job not found"),
    }
}

async fn history(
    State(sim): State<Arc<SimState>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = common::check_auth(&sim, KIND, &headers) {
        return r;
    }
    let limit = match q.get("limit").map(|s| s.parse::<usize>()) {
        None => 50,
        Some(Ok(n)) if (1..=500).contains(&n) => n,
        Some(_) => return bad_request(&sim, "limit must be an integer between 1 and 500"),
    };
    let now = sim.now_ms();
    let mut jobs = Vec::with_capacity(limit);
    sim.provider(KIND).for_each_newest(now, |job| {
        jobs.push(render(&sim, job, job.view(now), true));
        jobs.len() < limit
    });
    json_response(
        StatusCode::OK,
        &json!({"success": true, "count": jobs.len(), "jobs": jobs}),
    )
}

fn mode(job: &Job) -> String {
    match job.params.get("mode").and_then(Value::as_str) {
        Some(m) => m.to_string(),
        None if job.params.get("image_url").is_some_and(Value::is_string) => {
            "image_to_video".into()
        }
        None => "text_to_video".into(),
    }
}

/// The documented job object; history entries add `prompt`.
pub fn render(sim: &SimState, job: &Job, v: View, with_prompt: bool) -> Value {
    let duration = job.cost / CREDITS_PER_SECOND;
    let quality = job
        .params
        .get("quality_mode")
        .and_then(Value::as_str)
        .unwrap_or("std");
    let mut out = json!({
        "job_id": &*job.id,
        "model_slug": job.params.get("model_slug").cloned().unwrap_or(Value::Null),
        "mode": mode(job),
        "status": crate::state::shown_status(sim, job, v),
        "result_urls": if v.phase == Phase::Completed {
            vec![sim.media_url(KIND, &format!("job-{}.mp4", job.id))]
        } else {
            Vec::new()
        },
        "credits_charged": job.cost,
        "provider_meta": {
            "effective_duration_seconds": duration,
            "quality_mode": quality,
        },
        "created_at": util::iso_micros_offset(job.created_ms),
        "completed_at": if v.phase.is_terminal() {
            Value::String(util::iso_micros_offset(v.since_ms))
        } else {
            Value::Null
        },
    });
    if v.phase == Phase::Failed {
        out["error_message"] = json!(common::pick(job.salt, &FAILURES));
        out["credits_refunded"] = json!(true);
    }
    if with_prompt {
        out["prompt"] = job.params.get("prompt").cloned().unwrap_or(Value::Null);
    }
    out
}
