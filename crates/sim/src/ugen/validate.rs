//! U-Gen's create rules and pricing: every documented constraint on a create
//! body, checked all at once so the answer lists each problem, the 422
//! `VALIDATION_ERROR` shape those problems are reported in, and the
//! per-segment credit rate of each video model.

use super::{DEFAULT_MODEL, KIND};
use crate::common::{self, Fields, Problem};
use crate::state::SimState;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

const STRING_FIELDS: [&str; 20] = [
    "video_resolution",
    "aspect_ratio",
    "interaction_mode",
    "environment_description",
    "cta_text",
    "custom_script",
    "script_structure",
    "script_tone",
    "caption_style",
    "music_mood",
    "custom_music_id",
    "qai_mode",
    "human_review_budget",
    "stop_at_stage",
    "video_model",
    "persona_id",
    "elevenlabs_voice_id",
    "human_review",
    "failure_behavior",
    "idempotency_key",
];
const BOOL_FIELDS: [&str; 3] = ["captions_enabled", "music_enabled", "qai_enabled"];

/// Credits per segment for a video model.
pub fn model_rate(model: &str) -> u64 {
    if model == "veo3_fast" {
        20
    } else if model.starts_with("veo") {
        40
    } else if model.starts_with("kling") {
        15
    } else {
        20
    }
}

pub(super) fn validation_error(sim: &SimState, problems: &[Problem]) -> Response {
    let errors: Vec<Value> = problems
        .iter()
        .map(|p| json!({"field": p.field, "message": p.message}))
        .collect();
    common::error(
        sim,
        KIND,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
        &format!(
            "Request validation failed ({} problem{}): {}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            common::problems_text(problems)
        ),
        Some(json!({"errors": errors})),
    )
}

/// Every documented create rule; returns the per-job cost when valid.
pub fn validate_create(obj: &Map<String, Value>) -> Result<u64, Vec<Problem>> {
    let mut f = Fields::new(obj, "");
    f.required_str("product_name");
    f.required_url("product_image_url");
    let segments = f.required_int_range("segment_count", 1, 10);
    for name in STRING_FIELDS {
        f.opt_str(name);
    }
    for name in BOOL_FIELDS {
        f.opt_bool(name);
    }
    f.opt_url("webhook_url");
    f.opt_str_array("key_selling_points");
    f.opt_object("custom_caption_options");
    f.opt_object("voice_settings");
    f.opt_number("music_volume");
    f.opt_int_range("human_review_max_rejections", 0, i64::MAX);
    f.opt_int_range("max_retries_keyframe", 0, 5);
    f.opt_int_range("max_retries_video", 0, 5);
    let model = match f.get("video_model") {
        Some(Value::String(s)) if s.trim().is_empty() => {
            f.problem("video_model", "must not be empty");
            DEFAULT_MODEL
        }
        Some(Value::String(s)) => s.as_str(),
        _ => DEFAULT_MODEL,
    };
    let veo = model.starts_with("veo");
    let kling = model.starts_with("kling");
    if let Ok(Some(d)) = f.opt_int("segment_duration") {
        if veo && d != 8 {
            f.problem(
                "segment_duration",
                format!("Veo models fix segment_duration at 8 seconds (got {d})"),
            );
        } else if kling && !(3..=10).contains(&d) {
            f.problem(
                "segment_duration",
                format!("Kling models allow segment_duration 3-10 seconds (got {d})"),
            );
        } else if d < 1 {
            f.problem("segment_duration", "must be a positive integer");
        }
    }
    if f.get("aspect_ratio").and_then(Value::as_str) == Some("1:1") && !kling {
        f.problem(
            "aspect_ratio",
            format!("Aspect ratio 1:1 is only supported by Kling models (video_model is {model})"),
        );
    }
    if let Some(Value::String(k)) = f.get("idempotency_key") {
        if k.trim().is_empty() {
            f.problem("idempotency_key", "must not be empty");
        }
    }
    f.sim_params();
    if f.problems.is_empty() {
        Ok(segments.unwrap_or(1) as u64 * model_rate(model))
    } else {
        Err(f.problems)
    }
}
