//! U-Gen (`api.u-gen.ai/api/v1`): the one provider that deduplicates creates
//! by `idempotency_key`, so it is the one where a resend after a crash is
//! safe, and the one that signs its webhooks. Its create rules are many and
//! documented, so they are all checked here before a job is queued: a
//! batch fails at intake, not at dispatch hours later.
//!
//! Assumptions, because the seed documents do not show them (kept in
//! [`paths`] and the constants below):
//!
//! - `segment_count` must be 1..=10 ([`SEGMENT_COUNT`]; the documents give
//!   no bound, the simulator uses the same).
//! - Responses are the job object itself (`job_id` or `id`, `status`,
//!   `current_stage`, `progress_percent`, `final_video_url`, `segments`,
//!   `credits_charged`, `error {code, message}`); a `{"job": …}` or
//!   `{"data": …}` wrapper is unwrapped too. Without `final_video_url`, the
//!   segments' `video_url` / `output_url` / `url` are the outputs.
//! - `paused` is reported as processing (it is not finished; `raw_status`
//!   keeps the word). Unknown status words are treated the same way.
//! - A cancel that answers without a job object is taken as cancelled.
//! - List items carry `idempotency_key`; `find_by_key` reads at most
//!   [`FIND_MAX_PAGES`] pages of [`FIND_PAGE_SIZE`] and then says not found.
//! - The local estimate is `segment_count` x a per-model rate
//!   ([`credits_per_segment`]), the simulator's table; the provider's own
//!   estimate is [`UGen::estimate_credits_remote`], asked with
//!   [`estimate_body`] (`plan`), its total read from `total_credits`.
//! - Pause, resume and retry answer with the job object; an answer without
//!   one is taken as accepted (the next poll tells the state).
//! - A job's `credits_charged` counts every run of it: after a retry from a
//!   stage it includes the earlier runs' charges (the engine counts only
//!   the difference).
//! - Keyframes are `{"keyframes": [{index, status, image_url, qai_score}]}`
//!   and videos `{"videos": [{index, status, video_url, duration_seconds}]}`
//!   (also read: `items`, `data`, a bare list, `url` for the media).
//! - Webhook signatures: lowercase hex HMAC-SHA256 keyed by the secret's
//!   bytes over `timestamp + "." + raw body`, timestamp in Unix seconds,
//!   accepted within [`WEBHOOK_TOLERANCE_SECS`].

use crate::http::{self, refs, Auth, Call, CodeClass, Params, Transport};
use crate::paths::Resolved;
use crate::probe::{self, Probe};
use crate::{
    Action, Lookup, ParamProblem, Provider, ProviderError, RemoteState, RemoteStatus, Settings,
    WebhookCheck,
};
use async_trait::async_trait;
use hmac::{Hmac, Mac};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use sha2::Sha256;
use std::ops::RangeInclusive;
use switchyard_core::detail::{Keyframe, Segment};
use switchyard_core::{JobError, ProviderKind, Secret};

/// Endpoint paths under the base URL (all documented). Create, status,
/// cancel and list follow the config's `paths` overrides
/// ([`crate::paths::defaults`]); the calls only this adapter offers do not.
pub mod paths {
    pub const JOBS: &str = "jobs";
    pub const SUGGEST_FIELDS: &str = "suggest-fields";
    pub const PAUSE: &str = "pause";
    pub const RESUME: &str = "resume";
    pub const RETRY: &str = "retry";
    pub const KEYFRAMES: &str = "keyframes";
    pub const VIDEOS: &str = "videos";
    pub const CREDITS: &str = "credits";
    pub const ESTIMATE: &str = "estimate";
    pub const TENANTS: &str = "tenants";
    pub const ME: &str = "me";
    pub const WEBHOOK: &str = "webhook";
}

pub const API_KEY_HEADER: &str = "X-API-Key";
pub const SIGNATURE_HEADER: &str = "X-UGen-Signature";
pub const TIMESTAMP_HEADER: &str = "X-UGen-Timestamp";
pub const WEBHOOK_TOLERANCE_SECS: u64 = 300;

pub const DEFAULT_MODEL: &str = "veo3_fast";
pub const SEGMENT_COUNT: RangeInclusive<i64> = 1..=10;
pub const VEO_SEGMENT_DURATION: i64 = 8;
pub const KLING_SEGMENT_DURATION: RangeInclusive<i64> = 3..=10;
pub const ASPECT_RATIOS: [&str; 3] = ["9:16", "16:9", "1:1"];
pub const MAX_RETRIES: RangeInclusive<i64> = 0..=5;
pub const FIND_PAGE_SIZE: u32 = 100;
pub const FIND_MAX_PAGES: u32 = 20;

/// The documented status words (and `queued`, `canceled`); any other is an
/// unexpected answer.
const KNOWN_WORDS: &[&str] = &[
    "pending",
    "queued",
    "processing",
    "paused",
    "completed",
    "failed",
    "cancelled",
    "canceled",
];

const STRING_FIELDS: &[&str] = &[
    "video_resolution",
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
    "idempotency_key",
    "persona_id",
    "elevenlabs_voice_id",
    "human_review",
    "failure_behavior",
];
const BOOL_FIELDS: &[&str] = &["captions_enabled", "music_enabled", "qai_enabled"];
const NUMBER_FIELDS: &[&str] = &["music_volume"];
const OBJECT_FIELDS: &[&str] = &["custom_caption_options", "voice_settings"];

/// Credits per segment by model: veo3_fast 20, other Veo models 40, Kling
/// models 15, anything else 20.
pub fn credits_per_segment(model: &str) -> u64 {
    if model == DEFAULT_MODEL {
        20
    } else if model.starts_with("veo") {
        40
    } else if model.starts_with("kling") {
        15
    } else {
        20
    }
}

/// U-Gen does not document its error codes beyond the nested body shape;
/// the HTTP status decides (429, 402, 404, 409 and the rest).
fn codes(_code: &str) -> Option<CodeClass> {
    None
}

#[derive(Debug)]
pub struct UGen {
    http: Transport,
    webhook_secret: Option<Secret>,
    paths: Resolved,
}

/// One page of `GET /jobs`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPage {
    pub items: Vec<Value>,
    pub total: Option<u64>,
    pub page: Option<u64>,
    pub page_size: Option<u64>,
    pub total_pages: Option<u64>,
}

impl UGen {
    pub fn new(settings: Settings, client: reqwest::Client) -> Self {
        let http = Transport::new(
            client,
            &settings.base_url,
            settings.api_key,
            std::slice::from_ref(&settings.webhook_secret),
            Auth::Header(API_KEY_HEADER),
            codes,
        )
        .with_recorder(settings.recorder);
        UGen {
            http,
            webhook_secret: settings.webhook_secret.filter(|s| !s.is_empty()),
            paths: Resolved::new(ProviderKind::Ugen, &settings.paths),
        }
    }

    fn list_path(&self) -> Vec<String> {
        self.paths
            .list
            .as_ref()
            .map(|t| t.render(""))
            .unwrap_or_else(|| vec![paths::JOBS.into()])
    }

    /// The create body: the params unchanged, plus `idempotency_key` = the
    /// job key unless the params set their own.
    pub fn create_body(key: &str, params: &Value) -> Value {
        let mut body = params.clone();
        if let Some(map) = body.as_object_mut() {
            let set = map.get("idempotency_key").is_some_and(|v| !v.is_null());
            if !set {
                map.insert("idempotency_key".into(), Value::String(key.to_string()));
            }
        }
        body
    }

    /// `POST /jobs/{id}/pause`: stops after the current stage.
    pub async fn pause(&self, job_id: &str) -> Result<Value, ProviderError> {
        self.http
            .json(Call::post(&[paths::JOBS, job_id, paths::PAUSE], None))
            .await
    }

    /// `POST /jobs/{id}/resume`.
    pub async fn resume(&self, job_id: &str) -> Result<Value, ProviderError> {
        self.http
            .json(Call::post(&[paths::JOBS, job_id, paths::RESUME], None))
            .await
    }

    /// `POST /jobs/{id}/retry`, from `restart_from_stage` or, if `None`, from
    /// where the job failed. Credits are re-reserved by the provider.
    pub async fn retry(
        &self,
        job_id: &str,
        restart_from_stage: Option<&str>,
    ) -> Result<Value, ProviderError> {
        let body = match restart_from_stage {
            Some(stage) => json!({ "restart_from_stage": stage }),
            None => json!({}),
        };
        self.http
            .json(Call::post(
                &[paths::JOBS, job_id, paths::RETRY],
                Some(&body),
            ))
            .await
    }

    /// `GET /jobs/{id}/keyframes`: keyframe images with QAI scores.
    pub async fn keyframes(&self, job_id: &str) -> Result<Value, ProviderError> {
        self.http
            .json(Call::get(&[paths::JOBS, job_id, paths::KEYFRAMES]))
            .await
    }

    /// `GET /jobs/{id}/videos`: video segments with status and URLs.
    pub async fn videos(&self, job_id: &str) -> Result<Value, ProviderError> {
        self.http
            .json(Call::get(&[paths::JOBS, job_id, paths::VIDEOS]))
            .await
    }

    /// `GET /jobs?status=&page=&page_size=`.
    pub async fn list(
        &self,
        status: Option<&str>,
        page: u32,
        page_size: u32,
    ) -> Result<JobPage, ProviderError> {
        let path = self.list_path();
        let mut call = Call::get(&refs(&path));
        if let Some(status) = status {
            call = call.query("status", status);
        }
        let v = self
            .http
            .json(call.query("page", page).query("page_size", page_size))
            .await?;
        let items = v
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| http::missing("U-Gen", "items list"))?;
        let number = |k: &str| v.get(k).and_then(Value::as_u64);
        Ok(JobPage {
            items,
            total: number("total"),
            page: number("page"),
            page_size: number("page_size"),
            total_pages: number("total_pages"),
        })
    }

    /// `POST /credits/estimate` (fields as documented: `segment_count`,
    /// `model_id`, `variant`, `music_enabled`, `voice_enabled`); the answer
    /// includes a breakdown by component.
    pub async fn estimate_credits_remote(&self, body: &Value) -> Result<Value, ProviderError> {
        self.http
            .json(Call::post(&[paths::CREDITS, paths::ESTIMATE], Some(body)))
            .await
    }

    /// `POST /jobs/suggest-fields`: free AI suggestions for the script
    /// fields (needs `product_name` and `product_image_url`).
    pub async fn suggest_fields(&self, body: &Value) -> Result<Value, ProviderError> {
        self.http
            .json(Call::post(
                &[paths::JOBS, paths::SUGGEST_FIELDS],
                Some(body),
            ))
            .await
    }

    /// `PUT /tenants/me/webhook`: points the account's one webhook at `url`,
    /// signed with the configured webhook secret.
    pub async fn configure_webhook(&self, url: &str) -> Result<Value, ProviderError> {
        let secret = self
            .webhook_secret
            .as_ref()
            .ok_or(ProviderError::Permanent {
                code: "no_webhook_secret".into(),
                message: "no webhook secret is configured for this provider".into(),
            })?;
        let body = json!({ "webhook_url": url, "webhook_secret": secret.expose() });
        self.http
            .json(Call::put(
                &[paths::TENANTS, paths::ME, paths::WEBHOOK],
                &body,
            ))
            .await
    }
}

#[async_trait]
impl Provider for UGen {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Ugen
    }

    fn validate(&self, params: &Value) -> Result<(), Vec<ParamProblem>> {
        validate(params)
    }

    fn estimate_credits(&self, params: &Value) -> u64 {
        let model = params
            .get("video_model")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_MODEL);
        // Invalid counts never pass validation; the largest one keeps this an
        // upper estimate if one slips through anyway.
        let segments = params
            .get("segment_count")
            .and_then(Value::as_i64)
            .filter(|n| SEGMENT_COUNT.contains(n))
            .unwrap_or(*SEGMENT_COUNT.end());
        segments.unsigned_abs() * credits_per_segment(model)
    }

    fn idempotent_create(&self) -> bool {
        true
    }

    fn remote_estimate_body(&self, params: &Value) -> Option<Value> {
        Some(estimate_body(params))
    }

    async fn remote_estimate(&self, body: &Value) -> Result<u64, ProviderError> {
        let answer = self.estimate_credits_remote(body).await?;
        ESTIMATE_TOTALS
            .iter()
            .find_map(|k| http::credits(answer.get(*k)))
            .ok_or_else(|| http::missing("U-Gen", "total_credits"))
    }

    async fn register_webhook(&self, url: &str) -> Result<(), ProviderError> {
        self.configure_webhook(url).await.map(|_| ())
    }

    async fn create(&self, key: &str, params: &Value) -> Result<RemoteStatus, ProviderError> {
        let body = Self::create_body(key, params);
        let path = self.paths.create.render("");
        let answer = self
            .http
            .json(Call::post(&refs(&path), Some(&body)).idempotency_key(key))
            .await?;
        parse_job(&answer, Some("pending"))
    }

    async fn status(&self, provider_job_id: &str) -> Result<RemoteStatus, ProviderError> {
        let path = self.paths.status.render(provider_job_id);
        let answer = self.http.json(Call::get(&refs(&path))).await?;
        let status = parse_job(&answer, None)?;
        http::known_word(&self.http, status, KNOWN_WORDS, || answer.to_string())
    }

    /// `GET /jobs?page_size=1`: read-only, costs nothing, needs the key.
    async fn probe(&self) -> Probe {
        let path = self.list_path();
        let template = self.paths.list.as_ref().map_or("/jobs", |t| t.as_str());
        let request = probe::describe("GET", template, "page_size=1");
        let call = Call::get(&refs(&path)).query("page_size", 1);
        probe::run(&self.http, request, call, |a| {
            if !a.status.is_success() {
                return Err("not the documented job list".into());
            }
            let v = serde_json::from_slice::<Value>(&a.body)
                .map_err(|_| "the job list is not JSON".to_string())?;
            match v.get("items").and_then(Value::as_array) {
                Some(_) => Ok(format!(
                    "reachable, key accepted (the account lists {} job(s))",
                    v.get("total")
                        .and_then(Value::as_u64)
                        .map_or("some".into(), |n| n.to_string())
                )),
                None => Err("the job list has no `items`".into()),
            }
        })
        .await
    }

    async fn cancel(&self, provider_job_id: &str) -> Result<RemoteStatus, ProviderError> {
        let template = self
            .paths
            .cancel
            .as_ref()
            .ok_or(ProviderError::Unsupported("cancel"))?;
        let path = template.render(provider_job_id);
        let body = self.http.send(Call::delete(&refs(&path))).await?;
        let answer = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
        match parse_job(&answer, None) {
            Ok(status) => Ok(status),
            // A 2xx without a job in it: the cancel was accepted.
            Err(_) => Ok(RemoteStatus {
                provider_job_id: provider_job_id.to_string(),
                state: RemoteState::Cancelled,
                raw_status: "cancelled".into(),
                ..RemoteStatus::default()
            }),
        }
    }

    async fn find_by_key(&self, key: &str, params: &Value) -> Result<Lookup, ProviderError> {
        let wanted = params
            .get("idempotency_key")
            .and_then(Value::as_str)
            .unwrap_or(key);
        let mut page = 1;
        while page <= FIND_MAX_PAGES {
            let listed = self.list(None, page, FIND_PAGE_SIZE).await?;
            let found = listed
                .items
                .iter()
                .find(|item| item.get("idempotency_key").and_then(Value::as_str) == Some(wanted));
            if let Some(item) = found {
                let listed_status = parse_job(item, None)?;
                // The list item may be a summary; the job itself is the truth.
                return match self.status(&listed_status.provider_job_id).await {
                    Ok(full) => Ok(Lookup::Found(full)),
                    Err(ProviderError::NotFound(_)) => Ok(Lookup::Found(listed_status)),
                    Err(e) => Err(e),
                };
            }
            let last = listed.total_pages.unwrap_or(u64::from(page));
            if listed.items.is_empty() || u64::from(page) >= last {
                break;
            }
            page += 1;
        }
        Ok(Lookup::NotFound)
    }

    fn verify_webhook(&self, headers: &HeaderMap, body: &[u8], now_unix: i64) -> WebhookCheck {
        verify_signature(self.webhook_secret.as_ref(), headers, body, now_unix)
    }

    fn supports(&self, action: Action) -> bool {
        action != Action::Steps
    }

    async fn pause_job(
        &self,
        provider_job_id: &str,
    ) -> Result<Option<RemoteStatus>, ProviderError> {
        Ok(parse_job(&self.pause(provider_job_id).await?, None).ok())
    }

    async fn resume_job(
        &self,
        provider_job_id: &str,
    ) -> Result<Option<RemoteStatus>, ProviderError> {
        Ok(parse_job(&self.resume(provider_job_id).await?, None).ok())
    }

    async fn retry_job(
        &self,
        provider_job_id: &str,
        from_stage: &str,
    ) -> Result<Option<RemoteStatus>, ProviderError> {
        let answer = self.retry(provider_job_id, Some(from_stage)).await?;
        Ok(parse_job(&answer, None).ok())
    }

    async fn list_keyframes(&self, provider_job_id: &str) -> Result<Vec<Keyframe>, ProviderError> {
        let v = self.keyframes(provider_job_id).await?;
        Ok(items(&v, "keyframes")?
            .iter()
            .map(|k| Keyframe {
                index: k.get("index").and_then(Value::as_u64),
                status: http::text(k, "status"),
                image_url: http::text(k, "image_url").or_else(|| http::text(k, "url")),
                qai_score: k
                    .get("qai_score")
                    .or_else(|| k.get("score"))
                    .and_then(Value::as_f64),
            })
            .collect())
    }

    async fn list_segments(&self, provider_job_id: &str) -> Result<Vec<Segment>, ProviderError> {
        let v = self.videos(provider_job_id).await?;
        Ok(items(&v, "videos")?
            .iter()
            .map(|s| Segment {
                index: s.get("index").and_then(Value::as_u64),
                status: http::text(s, "status"),
                video_url: ["video_url", "output_url", "url"]
                    .iter()
                    .find_map(|k| http::text(s, k)),
                duration_seconds: s
                    .get("duration_seconds")
                    .or_else(|| s.get("duration"))
                    .and_then(Value::as_f64),
            })
            .collect())
    }
}

/// The list in an answer: under `name`, `items` or `data`, or the answer
/// itself.
fn items<'v>(v: &'v Value, name: &str) -> Result<&'v Vec<Value>, ProviderError> {
    v.as_array()
        .or_else(|| {
            [name, "items", "data"]
                .iter()
                .find_map(|k| v.get(*k).and_then(Value::as_array))
        })
        .ok_or_else(|| http::missing("U-Gen", name))
}

/// Where the total may be in an estimate's answer: the seed shows only
/// that it has "a detailed breakdown by component"; the simulator says
/// `total_credits`.
const ESTIMATE_TOTALS: &[&str] = &["total_credits", "credits", "total", "estimated_credits"];

/// The `POST /credits/estimate` body for a create's params: the documented
/// fields, read from the create's own (`video_model` is the estimate's
/// `model_id`; `variant` is `i2v`, since every job starts from a product
/// image; `music_enabled` as the job says, `voice_enabled` when the job
/// names a voice). Nothing else changes the price, so equal bodies cost
/// the same.
pub fn estimate_body(params: &Value) -> Value {
    let model = params
        .get("video_model")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_MODEL);
    let mut body = json!({
        "segment_count": params.get("segment_count").cloned().unwrap_or(Value::Null),
        "model_id": model,
        "variant": "i2v",
    });
    if let Some(map) = body.as_object_mut() {
        if let Some(m) = params.get("music_enabled").and_then(Value::as_bool) {
            map.insert("music_enabled".into(), Value::Bool(m));
        }
        let voice = ["elevenlabs_voice_id", "voice_settings"]
            .iter()
            .any(|k| params.get(*k).is_some_and(|v| !v.is_null()));
        map.insert("voice_enabled".into(), Value::Bool(voice));
    }
    body
}

/// Every documented create rule, all problems at once.
pub fn validate(params: &Value) -> Result<(), Vec<ParamProblem>> {
    let mut p = Params::new(params);
    p.required_string("product_name");
    p.required_url("product_image_url");
    p.required_integer("segment_count", SEGMENT_COUNT);
    for name in STRING_FIELDS {
        p.optional_string(name);
    }
    for name in BOOL_FIELDS {
        p.optional_bool(name);
    }
    for name in NUMBER_FIELDS {
        p.optional_number(name);
    }
    for name in OBJECT_FIELDS {
        p.optional_object(name);
    }
    p.optional_string_array("key_selling_points");
    p.optional_url("webhook_url");
    p.optional_integer("human_review_max_rejections", Some(0..=i64::MAX));
    p.optional_integer("max_retries_keyframe", Some(MAX_RETRIES));
    p.optional_integer("max_retries_video", Some(MAX_RETRIES));

    let model = match p.get("video_model") {
        None => Some(DEFAULT_MODEL),
        Some(_) => p.optional_string("video_model"),
    };
    let veo = model.is_some_and(|m| m.starts_with("veo"));
    let kling = model.is_some_and(|m| m.starts_with("kling"));
    let model_name = model.unwrap_or("?");

    if let Some(duration) = p.optional_integer("segment_duration", None) {
        if veo && duration != VEO_SEGMENT_DURATION {
            p.problem(
                "segment_duration",
                format!(
                    "must be {VEO_SEGMENT_DURATION} for Veo models ({model_name}), not {duration}"
                ),
            );
        } else if kling && !KLING_SEGMENT_DURATION.contains(&duration) {
            p.problem(
                "segment_duration",
                format!(
                    "must be between {} and {} for Kling models ({model_name}), not {duration}",
                    KLING_SEGMENT_DURATION.start(),
                    KLING_SEGMENT_DURATION.end()
                ),
            );
        } else if duration < 1 {
            p.problem(
                "segment_duration",
                format!("must be positive, not {duration}"),
            );
        }
    }
    if let Some(ratio) = p.optional_string("aspect_ratio") {
        if !ASPECT_RATIOS.contains(&ratio) {
            p.problem(
                "aspect_ratio",
                format!("must be one of {}, not {ratio:?}", ASPECT_RATIOS.join(", ")),
            );
        } else if ratio == "1:1" && !kling && model.is_some() {
            p.problem(
                "aspect_ratio",
                format!("1:1 is only supported by Kling models, not {model_name}"),
            );
        }
    }
    p.finish()
}

/// Reads a job object (or one wrapped in `job` / `data`).
/// `default_status` fills in for a create answer that leaves it out.
pub fn parse_job(v: &Value, default_status: Option<&str>) -> Result<RemoteStatus, ProviderError> {
    let job = if v.get("job_id").is_some() || v.get("status").is_some() {
        v
    } else {
        ["job", "data"]
            .iter()
            .find_map(|k| v.get(*k).filter(|j| j.is_object()))
            .ok_or_else(|| http::missing("U-Gen", "job object"))?
    };
    let id = http::text(job, "job_id")
        .or_else(|| http::text(job, "id"))
        .ok_or_else(|| http::missing("U-Gen", "job_id"))?;
    let raw_status = http::text(job, "status")
        .or_else(|| default_status.map(str::to_string))
        .ok_or_else(|| http::missing("U-Gen", "status"))?;
    let state = match raw_status.to_ascii_lowercase().as_str() {
        "pending" | "queued" => RemoteState::Pending,
        "completed" => RemoteState::Completed,
        "failed" => RemoteState::Failed,
        "cancelled" | "canceled" => RemoteState::Cancelled,
        // processing, paused, and words added later: not finished.
        _ => RemoteState::Processing,
    };
    let mut output_urls: Vec<String> = http::text(job, "final_video_url").into_iter().collect();
    if output_urls.is_empty() {
        if let Some(segments) = job.get("segments").and_then(Value::as_array) {
            output_urls = segments
                .iter()
                .filter_map(|s| {
                    ["video_url", "output_url", "url"]
                        .iter()
                        .find_map(|k| http::text(s, k))
                })
                .collect();
        }
    }
    let error = match job.get("error") {
        Some(e @ Value::Object(_)) => {
            let (code, message) = http::error_parts_value(&json!({ "error": e }));
            message.map(|m| JobError::new(code.unwrap_or_else(|| "job_failed".into()), m))
        }
        Some(Value::String(m)) if !m.trim().is_empty() => {
            Some(JobError::new("job_failed", m.trim()))
        }
        _ => http::text(job, "error_message").map(|m| JobError::new("job_failed", m)),
    };
    Ok(RemoteStatus {
        provider_job_id: id,
        state,
        raw_status,
        progress: http::percent(job.get("progress_percent")),
        stage: http::text(job, "current_stage"),
        output_urls,
        credits_charged: http::credits(job.get("credits_charged")),
        credits_refunded: http::credits(job.get("credits_refunded")),
        error,
    })
}

/// The signature U-Gen sends: lowercase hex HMAC-SHA256 keyed by `secret`
/// over `timestamp + "." + body`.
pub fn signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length, so `mac` only fails in theory; an empty
    // signature then matches nothing.
    mac(secret, timestamp, body)
        .map(|m| hex::encode(m.finalize().into_bytes()))
        .unwrap_or_default()
}

fn mac(secret: &str, timestamp: &str, body: &[u8]) -> Option<Hmac<Sha256>> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// Checks `X-UGen-Signature` and `X-UGen-Timestamp`. Reasons never include
/// the secret or the expected signature.
pub fn verify_signature(
    secret: Option<&Secret>,
    headers: &HeaderMap,
    body: &[u8],
    now_unix: i64,
) -> WebhookCheck {
    let reject = |why: &str| WebhookCheck::Rejected(why.to_string());
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return reject("no webhook secret is configured for this provider");
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let Some(given) = header(SIGNATURE_HEADER).filter(|s| !s.is_empty()) else {
        return reject("missing X-UGen-Signature header");
    };
    let Some(timestamp) = header(TIMESTAMP_HEADER).filter(|s| !s.is_empty()) else {
        return reject("missing X-UGen-Timestamp header");
    };
    let Ok(sent_at) = timestamp.parse::<i64>() else {
        return reject("X-UGen-Timestamp is not a Unix time in seconds");
    };
    if now_unix.abs_diff(sent_at) > WEBHOOK_TOLERANCE_SECS {
        return reject("X-UGen-Timestamp is outside the accepted window of 300 s");
    }
    let Ok(given) = hex::decode(given) else {
        return reject("X-UGen-Signature is not hex");
    };
    let Some(expected) = mac(secret.expose(), timestamp, body) else {
        return reject("the webhook secret cannot key HMAC-SHA256");
    };
    if expected.verify_slice(&given).is_err() {
        return reject("X-UGen-Signature does not match");
    }
    let provider_job_id = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        [&["job_id"][..], &["data", "job_id"], &["job", "job_id"]]
            .iter()
            .find_map(|p| http::at(&v, p).and_then(Value::as_str).map(str::to_string))
            .filter(|id| http::plausible_id(id))
    });
    WebhookCheck::Hint {
        provider_job_id,
        verified: true,
    }
}
