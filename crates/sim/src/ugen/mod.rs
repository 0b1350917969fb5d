//! U-Gen (`/ugen/api/v1`), the most fully documented provider, so the one
//! where the simulator is strictest: every documented create rule is checked
//! and every problem is listed, idempotency keys replay or conflict, credits
//! are reserved at create and consumed or released at the end, and webhooks
//! are signed exactly as the SDK page describes.
//!
//! Assumed where the seeds are silent: the stage names and their share of the
//! run (script, keyframes, generation, assembly, captions, music, delivery),
//! the per-segment model rates (veo3_fast 20, other veo 40, kling 15, else 20),
//! 422 `VALIDATION_ERROR` with `details.errors`, 409 codes for refused state
//! changes, pause being allowed on pending jobs too, the keyframes/videos
//! list shapes, and the webhook body (the job object plus `event`).

mod render;
mod validate;

pub use render::{render, stage_at, webhook_body, STAGES};
pub use validate::{model_rate, validate_create};

#[cfg(test)]
use render::segments_done;
use render::{segment_count, segment_items, stage_start, GEN_START, KEYFRAMES_START};
use validate::validation_error;

use crate::common::{self, json_response, Fields, Problem};
use crate::state::{kind_index, lock, release, CreateFail, Created, Job, NewJob, Phase, SimState};
use crate::util::{self, STREAM_JOB};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;
#[cfg(test)]
use serde_json::Map;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use switchyard_core::ProviderKind;

const KIND: ProviderKind = ProviderKind::Ugen;
pub const DEFAULT_MODEL: &str = "veo3_fast";

const STATUSES: [&str; 6] = [
    "pending",
    "processing",
    "paused",
    "completed",
    "failed",
    "cancelled",
];

pub fn router() -> Router<Arc<SimState>> {
    Router::new()
        .route("/jobs", post(create).get(list))
        .route("/jobs/suggest-fields", post(suggest_fields))
        .route("/jobs/{id}", get(status).delete(cancel))
        .route("/jobs/{id}/pause", post(pause))
        .route("/jobs/{id}/resume", post(resume))
        .route("/jobs/{id}/retry", post(retry))
        .route("/jobs/{id}/keyframes", get(keyframes))
        .route("/jobs/{id}/videos", get(videos))
        .route("/credits/estimate", post(estimate))
        .route("/tenants/me/webhook", put(set_webhook))
}

async fn create(State(sim): State<Arc<SimState>>, headers: HeaderMap, body: Bytes) -> Response {
    let prov = sim.provider(KIND);
    lock(&prov.inner).counters.create_requests += 1;
    if let Err(r) = common::check_auth(&sim, KIND, &headers) {
        return r;
    }
    let mut obj = match common::parse_object(&sim, KIND, &body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let cost = match validate_create(&obj) {
        Ok(c) => c,
        Err(problems) => return validation_error(&sim, &problems),
    };
    let (forced, forced_duration) = Fields::new(&obj, "").sim_params();
    let body_key = obj
        .get("idempotency_key")
        .and_then(Value::as_str)
        .map(str::to_string);
    let idem_key = match &body_key {
        Some(k) => k.clone(),
        None => {
            let n = sim
                .request_ids
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut rng = util::rng_for(sim.seed, 99, STREAM_JOB, n, u64::from(u32::MAX));
            let k = util::uuid(&mut rng);
            obj.insert("idempotency_key".into(), Value::String(k.clone()));
            k
        }
    };
    let nj = NewJob {
        params: Value::Object(obj),
        client_key: common::header_key(&headers).or(body_key),
        cost,
        forced,
        forced_duration,
        idem_key: Some(idem_key),
    };
    let now = sim.now_ms();
    let (status, id) = match prov.create(&sim, now, vec![nj]) {
        Ok(c) => match c.into_iter().next() {
            Some(Created::New(id)) => (StatusCode::CREATED, id),
            Some(Created::Existing(id)) => (StatusCode::OK, id),
            None => return common::internal_error(&sim, KIND),
        },
        Err(CreateFail::InsufficientCredits { needed, available }) => {
            return common::error(
                &sim,
                KIND,
                StatusCode::PAYMENT_REQUIRED,
                "INSUFFICIENT_CREDITS",
                &format!("Insufficient credits: {needed} required, {available} available"),
                Some(json!({"required": needed, "available": available})),
            )
        }
        Err(CreateFail::IdempotencyConflict { job_id }) => {
            return common::error(
                &sim,
                KIND,
                StatusCode::CONFLICT,
                "IDEMPOTENCY_CONFLICT",
                "idempotency_key was already used with different parameters",
                Some(json!({"job_id": &*job_id})),
            )
        }
    };
    match prov.read(&id, |job| render(&sim, job, job.view(now))) {
        Some(body) => json_response(status, &body),
        None => common::internal_error(&sim, KIND),
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
        Some(body) => json_response(StatusCode::OK, &body),
        None => common::not_found(&sim, KIND, "Job not found"),
    }
}

async fn list(
    State(sim): State<Arc<SimState>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = common::check_auth(&sim, KIND, &headers) {
        return r;
    }
    let mut problems = Vec::new();
    let mut int = |name: &str, default: u64, max: u64| match q.get(name) {
        None => default,
        Some(s) => match s.parse::<u64>() {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => {
                problems.push(Problem::new(
                    name,
                    format!("must be an integer between 1 and {max}"),
                ));
                default
            }
        },
    };
    let page = int("page", 1, u64::MAX / 1000);
    let page_size = int("page_size", 20, 100);
    let status = q.get("status").filter(|s| !s.is_empty()).cloned();
    if let Some(s) = &status {
        if !STATUSES.contains(&s.as_str()) {
            problems.push(Problem::new(
                "status",
                format!("must be one of {}", STATUSES.join(", ")),
            ));
        }
    }
    if !problems.is_empty() {
        return validation_error(&sim, &problems);
    }
    let now = sim.now_ms();
    let skip = (page - 1) * page_size;
    let mut total = 0u64;
    let mut items = Vec::new();
    sim.provider(KIND).for_each_newest(now, |job| {
        let v = job.view(now);
        let raw = crate::state::raw_status(KIND, v);
        if status.as_deref().is_some_and(|s| s != raw) {
            return true;
        }
        if total >= skip && total < skip + page_size {
            items.push(render(&sim, job, v));
        }
        total += 1;
        true
    });
    json_response(
        StatusCode::OK,
        &json!({
            "items": items,
            "total": total,
            "page": page,
            "page_size": page_size,
            "total_pages": total.div_ceil(page_size),
        }),
    )
}

/// Outcome of a state change requested on one job.
type Change = Result<(), (StatusCode, &'static str, String)>;

async fn change(
    sim: &Arc<SimState>,
    id: &str,
    headers: &HeaderMap,
    f: impl FnOnce(&SimState, &mut Job, &mut crate::state::Inner, u64) -> Change,
) -> Response {
    if let Err(r) = common::check_auth(sim, KIND, headers) {
        return r;
    }
    let now = sim.now_ms();
    let res = sim.provider(KIND).mutate(now, id, |job, inner| {
        f(sim, job, inner, now).map(|()| render(sim, job, job.view(now)))
    });
    match res {
        None => common::not_found(sim, KIND, "Job not found"),
        Some(Ok(body)) => json_response(StatusCode::OK, &body),
        Some(Err((status, code, msg))) => common::error(sim, KIND, status, code, &msg, None),
    }
}

fn refuse(code: &'static str, phase: Phase, what: &str) -> Change {
    let word = match phase {
        Phase::Pending => "pending",
        Phase::Processing => "processing",
        Phase::Paused => "paused",
        Phase::Completed => "completed",
        Phase::Failed => "failed",
        Phase::Cancelled => "cancelled",
    };
    Err((
        StatusCode::CONFLICT,
        code,
        format!("Cannot {what} a job that is {word}"),
    ))
}

async fn cancel(
    State(sim): State<Arc<SimState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    lock(&sim.provider(KIND).inner).counters.cancels += 1;
    change(&sim, &id, &headers, |_, job, inner, now| {
        let v = job.view(now);
        match v.phase {
            Phase::Pending | Phase::Processing | Phase::Paused => {
                job.cancelled = Some((now, v.p));
                job.paused_at = None;
                job.touched_ms = now;
                if !job.settled {
                    job.settled = true;
                    release(KIND, inner, job.cost);
                }
                Ok(())
            }
            p => refuse("JOB_NOT_CANCELLABLE", p, "cancel"),
        }
    })
    .await
}

async fn pause(
    State(sim): State<Arc<SimState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    change(&sim, &id, &headers, |_, job, inner, now| {
        let v = job.view(now);
        match v.phase {
            Phase::Pending | Phase::Processing => {
                job.paused_at = Some(now);
                job.touched_ms = now;
                inner.counters.pauses += 1;
                Ok(())
            }
            p => refuse("JOB_NOT_PAUSABLE", p, "pause"),
        }
    })
    .await
}

async fn resume(
    State(sim): State<Arc<SimState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    change(&sim, &id, &headers, |sim, job, inner, now| {
        let v = job.view(now);
        match (v.phase, job.paused_at) {
            (Phase::Paused, Some(at)) => {
                job.t0_ms += now.saturating_sub(at);
                job.paused_at = None;
                job.touched_ms = now;
                inner.settle_queue.push(std::cmp::Reverse((
                    job.end_ms(),
                    job.id.clone(),
                    job.attempt,
                )));
                sim.schedule_webhook(inner, job);
                inner.counters.resumes += 1;
                Ok(())
            }
            (p, _) => refuse("JOB_NOT_PAUSED", p, "resume"),
        }
    })
    .await
}

async fn retry(
    State(sim): State<Arc<SimState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let restart: Option<String> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let obj = match common::parse_object(&sim, KIND, &body) {
            Ok(o) => o,
            Err(r) => return r,
        };
        match obj.get("restart_from_stage") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if stage_start(s).is_some() => Some(s.clone()),
            Some(_) => {
                let names: Vec<&str> = STAGES.iter().map(|(s, _)| *s).collect();
                return validation_error(
                    &sim,
                    &[Problem::new(
                        "restart_from_stage",
                        format!("must be one of {}", names.join(", ")),
                    )],
                );
            }
        }
    };
    change(&sim, &id, &headers, move |sim, job, inner, now| {
        let v = job.view(now);
        if !matches!(v.phase, Phase::Failed | Phase::Completed | Phase::Cancelled) {
            return refuse("JOB_NOT_RETRYABLE", v.phase, "retry");
        }
        let prov = sim.provider(KIND);
        if let Some(avail) = prov.available(inner) {
            if job.cost > avail {
                return Err((
                    StatusCode::PAYMENT_REQUIRED,
                    "INSUFFICIENT_CREDITS",
                    format!(
                        "Insufficient credits: {} required, {avail} available",
                        job.cost
                    ),
                ));
            }
        }
        let p_start = match &restart {
            Some(s) => stage_start(s).unwrap_or(0.0),
            None if v.phase == Phase::Failed => stage_start(stage_at(v.p)).unwrap_or(0.0),
            None => 0.0,
        };
        job.prior_charged = job.charged_now(v.phase);
        job.prior_released = job.released_now(v.phase);
        job.attempt += 1;
        let mut rng = util::rng_for(
            sim.seed,
            kind_index(KIND) as u64,
            STREAM_JOB,
            job.ordinal,
            u64::from(job.attempt),
        );
        job.start_attempt(&mut rng, &prov.cfg, sim.speedup, now, p_start);
        inner.counters.retries += 1;
        *inner
            .counters
            .retry_stages
            .entry(restart.clone().unwrap_or_default())
            .or_insert(0) += 1;
        inner.committed += job.cost;
        inner.reserved += job.cost;
        inner.settle_queue.push(std::cmp::Reverse((
            job.end_ms(),
            job.id.clone(),
            job.attempt,
        )));
        sim.schedule_webhook(inner, job);
        Ok(())
    })
    .await
}

async fn keyframes(
    State(sim): State<Arc<SimState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = common::check_auth(&sim, KIND, &headers) {
        return r;
    }
    let now = sim.now_ms();
    let res = sim.provider(KIND).read(&id, |job| {
        let v = job.view(now);
        let n = segment_count(job);
        let items: Vec<Value> = (0..n)
            .map(|i| {
                let done_at =
                    KEYFRAMES_START + (GEN_START - KEYFRAMES_START) * (i + 1) as f64 / n as f64;
                let done = v.phase == Phase::Completed || v.p >= done_at;
                let score = common::salted(job.salt, i, 0.72, 0.99);
                json!({
                    "index": i,
                    "status": if done { "approved" } else { "pending" },
                    "image_url": if done {
                        Value::String(sim.media_url(KIND, &format!("{}_kf{i}.jpg", job.id)))
                    } else {
                        Value::Null
                    },
                    "qai_score": if done { json!((score * 100.0).round() / 100.0) } else { Value::Null },
                })
            })
            .collect();
        json!({"job_id": &*job.id, "keyframes": items})
    });
    match res {
        Some(b) => json_response(StatusCode::OK, &b),
        None => common::not_found(&sim, KIND, "Job not found"),
    }
}

async fn videos(
    State(sim): State<Arc<SimState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = common::check_auth(&sim, KIND, &headers) {
        return r;
    }
    let now = sim.now_ms();
    let res = sim.provider(KIND).read(&id, |job| {
        let v = job.view(now);
        json!({"job_id": &*job.id, "videos": segment_items(&sim, job, v, true)})
    });
    match res {
        Some(b) => json_response(StatusCode::OK, &b),
        None => common::not_found(&sim, KIND, "Job not found"),
    }
}

async fn suggest_fields(
    State(sim): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = common::check_auth(&sim, KIND, &headers) {
        return r;
    }
    let obj = match common::parse_object(&sim, KIND, &body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let mut f = Fields::new(&obj, "");
    let name = f.required_str("product_name").unwrap_or("").to_string();
    f.required_url("product_image_url");
    f.opt_str("persona_id");
    f.opt_str("interaction_mode");
    f.opt_int_range("segment_count", 1, 10);
    if !f.problems.is_empty() {
        return validation_error(&sim, &f.problems);
    }
    json_response(
        StatusCode::OK,
        &json!({
            "key_selling_points": [
                format!("{name} delivers premium quality"),
                "Comfortable for all-day use",
                "Great value for the price",
            ],
            "cta_text": format!("Get your {name} today"),
            "environment_description": "A bright, modern living room with natural light",
            "custom_script": format!("I never thought {name} would change my day, but it did."),
        }),
    )
}

async fn estimate(State(sim): State<Arc<SimState>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = common::check_auth(&sim, KIND, &headers) {
        return r;
    }
    let obj = match common::parse_object(&sim, KIND, &body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let mut f = Fields::new(&obj, "");
    let segments = f.required_int_range("segment_count", 1, 10);
    let model = f.opt_str("model_id").unwrap_or(DEFAULT_MODEL).to_string();
    let variant = f.opt_str("variant").unwrap_or("i2v").to_string();
    let music = f.opt_bool("music_enabled").unwrap_or(true);
    let voice = f.opt_bool("voice_enabled").unwrap_or(false);
    if !f.problems.is_empty() {
        return validation_error(&sim, &f.problems);
    }
    let n = segments.unwrap_or(1) as u64;
    let rate = model_rate(&model);
    let mut breakdown = vec![json!({
        "item": "video_generation",
        "model_id": model,
        "variant": variant,
        "quantity": n,
        "unit_credits": rate,
        "credits": n * rate,
    })];
    if music {
        breakdown.push(json!({"item": "music", "quantity": 1, "unit_credits": 0, "credits": 0}));
    }
    if voice {
        breakdown.push(json!({"item": "voice", "quantity": 1, "unit_credits": 0, "credits": 0}));
    }
    json_response(
        StatusCode::OK,
        &json!({"total_credits": n * rate, "breakdown": breakdown}),
    )
}

async fn set_webhook(
    State(sim): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = common::check_auth(&sim, KIND, &headers) {
        return r;
    }
    let obj = match common::parse_object(&sim, KIND, &body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let mut f = Fields::new(&obj, "");
    let url = f.required_url("webhook_url").map(str::to_string);
    let secret = f.opt_str("webhook_secret").map(str::to_string);
    if !f.problems.is_empty() {
        return validation_error(&sim, &f.problems);
    }
    let Some(url) = url else {
        return common::internal_error(&sim, KIND);
    };
    let mut inner = lock(&sim.provider(KIND).inner);
    let secret = secret.or_else(|| inner.webhook.as_ref().and_then(|w| w.secret.clone()));
    let has_secret = secret.is_some();
    inner.webhook = Some(crate::state::WebhookTarget {
        url: url.clone(),
        secret,
    });
    inner.counters.webhook_registrations += 1;
    drop(inner);
    json_response(
        StatusCode::OK,
        &json!({
            "webhook_url": url,
            "webhook_secret_set": has_secret,
            "updated_at": util::iso_millis(sim.now_ms()),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn rates_and_stages() {
        assert_eq!(model_rate("veo3_fast"), 20);
        assert_eq!(model_rate("veo3"), 40);
        assert_eq!(model_rate("kling_2"), 15);
        assert_eq!(model_rate("other"), 20);
        assert_eq!(stage_at(0.0), "script");
        assert_eq!(stage_at(0.5), "generation");
        assert_eq!(stage_at(1.0), "delivery");
        assert_eq!(segments_done(0.3, 3), 0);
        assert_eq!(segments_done(0.45, 3), 1);
        assert_eq!(segments_done(0.8, 3), 3);
    }

    #[test]
    fn validation_lists_every_problem() {
        let e = validate_create(&obj(json!({
            "segment_count": 11,
            "video_model": "veo3",
            "segment_duration": 5,
            "aspect_ratio": "1:1",
            "max_retries_video": 6,
            "qai_enabled": "yes",
        })))
        .unwrap_err();
        let fields: Vec<&str> = e.iter().map(|p| p.field.as_str()).collect();
        for f in [
            "product_name",
            "product_image_url",
            "segment_count",
            "segment_duration",
            "aspect_ratio",
            "max_retries_video",
            "qai_enabled",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        assert_eq!(
            validate_create(&obj(json!({
                "product_name": "x", "product_image_url": "https://e.com/a.jpg",
                "segment_count": 4, "video_model": "kling_2", "segment_duration": 10,
                "aspect_ratio": "1:1"
            }))),
            Ok(60)
        );
    }
}
