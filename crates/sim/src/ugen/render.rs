//! The U-Gen job object, as create, status, list items and webhooks all show
//! it: the pipeline stages and where a job is among them, per-segment
//! progress and media, the failure code of the stage a job failed in, and
//! the credit figures of the current attempt. Handlers only pick the job;
//! what it looks like on the wire is decided here.

use super::{DEFAULT_MODEL, KIND};
use crate::common;
use crate::state::{Job, Phase, SimState, View};
use crate::util;
use serde_json::{json, Map, Value};

/// Pipeline stages and the position at which each starts.
pub const STAGES: [(&str, f64); 7] = [
    ("script", 0.0),
    ("keyframes", 0.1),
    ("generation", 0.3),
    ("assembly", 0.75),
    ("captions", 0.85),
    ("music", 0.9),
    ("delivery", 0.95),
];
pub(super) const GEN_START: f64 = 0.3;
const GEN_END: f64 = 0.75;
pub(super) const KEYFRAMES_START: f64 = 0.1;

pub fn stage_at(p: f64) -> &'static str {
    let mut name = STAGES[0].0;
    for (s, start) in STAGES {
        if p >= start {
            name = s;
        }
    }
    name
}

pub(super) fn stage_start(name: &str) -> Option<f64> {
    STAGES.iter().find(|(s, _)| *s == name).map(|(_, p)| *p)
}

pub(super) fn segment_count(job: &Job) -> u64 {
    job.params
        .get("segment_count")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .max(1)
}

fn model(job: &Job) -> &str {
    job.params
        .get("video_model")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_MODEL)
}

fn segment_duration(job: &Job) -> u64 {
    job.params
        .get("segment_duration")
        .and_then(Value::as_u64)
        .unwrap_or(8)
}

/// Segments finished by position `p` (generation is per segment).
pub(super) fn segments_done(p: f64, n: u64) -> u64 {
    if p < GEN_START {
        0
    } else if p >= GEN_END {
        n
    } else {
        (((p - GEN_START) / (GEN_END - GEN_START)) * n as f64).floor() as u64
    }
}

fn progress_percent(v: View, n: u64) -> u64 {
    if v.phase == Phase::Completed {
        return 100;
    }
    let pct = if (GEN_START..GEN_END).contains(&v.p) {
        let k = segments_done(v.p, n);
        ((GEN_START + (GEN_END - GEN_START) * k as f64 / n as f64) * 100.0).round() as u64
    } else {
        common::pct(v.p)
    };
    pct.min(99)
}

pub(super) fn segment_items(sim: &SimState, job: &Job, v: View, with_duration: bool) -> Vec<Value> {
    let n = segment_count(job);
    let done = if v.phase == Phase::Completed {
        n
    } else {
        segments_done(v.p, n)
    };
    let in_gen = (GEN_START..GEN_END).contains(&v.p);
    (0..n)
        .map(|i| {
            let status = if i < done {
                "completed"
            } else if i == done && in_gen && v.phase == Phase::Failed {
                "failed"
            } else if i == done && in_gen && v.phase == Phase::Processing {
                "processing"
            } else {
                "pending"
            };
            let url = if i < done {
                Value::String(sim.media_url(KIND, &format!("{}_seg{i}.mp4", job.id)))
            } else {
                Value::Null
            };
            let mut item = json!({"index": i, "status": status, "video_url": url});
            if with_duration {
                item["duration_seconds"] = json!(segment_duration(job));
            }
            item
        })
        .collect()
}

fn failure(stage: &str) -> (&'static str, &'static str) {
    match stage {
        "script" => ("SCRIPT_GENERATION_FAILED", "Script generation failed"),
        "keyframes" => (
            "KEYFRAME_QAI_FAILED",
            "Keyframes did not pass quality checks after the allowed retries",
        ),
        "generation" => (
            "VIDEO_GENERATION_FAILED",
            "Video generation failed for a segment",
        ),
        "assembly" => ("ASSEMBLY_FAILED", "Assembling the segments failed"),
        "captions" => ("CAPTIONS_FAILED", "Caption rendering failed"),
        "music" => ("MUSIC_FAILED", "Adding music failed"),
        _ => ("DELIVERY_FAILED", "Delivering the final video failed"),
    }
}

/// The job object of `GET /jobs/{id}` (and of create, list items, webhooks).
pub fn render(sim: &SimState, job: &Job, v: View) -> Value {
    let n = segment_count(job);
    let current_stage = match v.phase {
        Phase::Pending => "queued",
        Phase::Completed => "completed",
        _ => stage_at(v.p),
    };
    let error = if v.phase == Phase::Failed {
        let (code, message) = failure(stage_at(v.p));
        json!({"code": code, "message": message})
    } else {
        Value::Null
    };
    let terminal = v.phase.is_terminal();
    json!({
        "job_id": &*job.id,
        "status": crate::state::shown_status(sim, job, v),
        "current_stage": current_stage,
        "progress_percent": progress_percent(v, n),
        "idempotency_key": job.params.get("idempotency_key").cloned().unwrap_or(Value::Null),
        "product_name": job.params.get("product_name").cloned().unwrap_or(Value::Null),
        "video_model": model(job),
        "segment_count": n,
        "segment_duration": segment_duration(job),
        "aspect_ratio": job.params.get("aspect_ratio").and_then(Value::as_str).unwrap_or("9:16"),
        "segments": segment_items(sim, job, v, false),
        "final_video_url": if v.phase == Phase::Completed {
            Value::String(sim.media_url(KIND, &format!("{}.mp4", job.id)))
        } else {
            Value::Null
        },
        "credits_reserved": job.reserved_now(v.phase),
        "credits_charged": job.charged_now(v.phase),
        "credits_released": job.released_now(v.phase),
        "retry_count": job.attempt,
        "error": error,
        "created_at": util::iso_millis(job.created_ms),
        "updated_at": util::iso_millis(v.since_ms),
        "completed_at": if terminal { Value::String(util::iso_millis(v.since_ms)) } else { Value::Null },
    })
}

/// Webhook body: the job object plus the event name.
pub fn webhook_body(sim: &SimState, job: &Job, v: View) -> Value {
    let mut body = render(sim, job, v);
    let event = if v.phase == Phase::Completed {
        "job.completed"
    } else {
        "job.failed"
    };
    if let Value::Object(m) = &mut body {
        let mut out = Map::new();
        out.insert("event".into(), Value::String(event.into()));
        out.extend(std::mem::take(m));
        return Value::Object(out);
    }
    body
}
