//! UlazAI Video Studio (`ulazai.com/api/v1/video-studio`): answers wrap the
//! job in `{"success", "job"}` (or `"jobs": [...]`), paths end in a slash,
//! and a refund is a boolean, not an amount. It has no client-side key, so a
//! job lost in a crash can only be recognised by what it asked for.
//!
//! Assumptions, because the seed document does not show them (the paths in
//! [`crate::paths::defaults`], which the config can override, and the
//! constants below):
//!
//! - Create is `POST {base}/generate/` (documented path), Bearer, with the
//!   params as the body; `model_slug` and `prompt` are required strings and
//!   `duration`, if given, a positive integer (seconds). The answer is
//!   `{"success": true, "job": {"job_id", "status", "credits_charged"}}` or
//!   `"jobs": [...]`, of which the first is ours.
//! - `find_by_key` reads `GET {base}/history/` (a `jobs`, `results`,
//!   `history` or `items` list, or a bare list) and takes the one job whose
//!   `model_slug` and `prompt` equal the params'. Two such jobs cannot be
//!   told apart, so that is reported as `Unsupported` (the daemon then marks
//!   the job uncertain instead of guessing); none is `NotFound`.
//! - Cancel is not documented: `Unsupported("cancel")`.
//! - The reservation is [`CREDITS_PER_SECOND`] x `duration` (default
//!   [`DEFAULT_DURATION_SECS`]: the seed's example, 5 s for 100 credits).
//! - `credits_refunded: true` refunds everything charged. When the answer
//!   carries no `credits_charged` (the seed's failure example), the job is
//!   reported as charged 0 and refunded 0: the net, which is what settles.
//! - A 2xx answer with `"success": false` is an error, classified by its
//!   code like any other (default: permanent).
//! - Webhooks are not documented: any that arrives is an unverified hint.
//! - No stage is reported (`provider_meta` has none).

use crate::http::{self, refs, Auth, Call, CodeClass, Params, Transport};
use crate::paths::Resolved;
use crate::probe::{self, Probe};
use crate::{
    Lookup, ParamProblem, Provider, ProviderError, RemoteState, RemoteStatus, Settings,
    WebhookCheck,
};
use async_trait::async_trait;
use reqwest::header::HeaderMap;
use serde_json::Value;
use switchyard_core::{JobError, ProviderKind};

/// The documented lifecycle; any other word is an unexpected answer.
const KNOWN_WORDS: &[&str] = &[
    "pending",
    "processing",
    "completed",
    "failed",
    "cancelled",
    "canceled",
];

pub const CREDITS_PER_SECOND: u64 = 20;
pub const DEFAULT_DURATION_SECS: u64 = 5;

const WEBHOOK_ID_PATHS: &[&[&str]] = &[
    &["job_id"],
    &["job", "job_id"],
    &["data", "job_id"],
    &["id"],
];

/// UlazAI documents no error codes; the HTTP status decides.
fn codes(_code: &str) -> Option<CodeClass> {
    None
}

#[derive(Debug)]
pub struct UlazAi {
    http: Transport,
    paths: Resolved,
}

impl UlazAi {
    pub fn new(settings: Settings, client: reqwest::Client) -> Self {
        let http = Transport::new(
            client,
            &settings.base_url,
            settings.api_key,
            &[settings.webhook_secret],
            Auth::Bearer,
            codes,
        )
        .with_recorder(settings.recorder);
        UlazAi {
            http,
            paths: Resolved::new(ProviderKind::Ulazai, &settings.paths),
        }
    }

    fn history_path(&self) -> Vec<String> {
        self.paths
            .list
            .as_ref()
            .map(|t| t.render(""))
            .unwrap_or_else(|| vec!["history".into(), String::new()])
    }

    /// `GET /history/`: recent jobs, as the provider lists them.
    pub async fn history(&self) -> Result<Vec<Value>, ProviderError> {
        let path = self.history_path();
        let v = self.http.json(Call::get(&refs(&path))).await?;
        history_list(&v)
    }
}

/// The job list of a history answer.
fn history_list(v: &Value) -> Result<Vec<Value>, ProviderError> {
    check_success(v)?;
    let list = if v.is_array() {
        Some(v)
    } else {
        ["jobs", "results", "history", "items"]
            .iter()
            .find_map(|k| v.get(*k).filter(|l| l.is_array()))
    };
    list.and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| http::missing("UlazAI history", "job list"))
}

#[async_trait]
impl Provider for UlazAi {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Ulazai
    }

    fn validate(&self, params: &Value) -> Result<(), Vec<ParamProblem>> {
        let mut p = Params::new(params);
        p.required_string("model_slug");
        p.required_string("prompt");
        p.optional_integer("duration", Some(1..=i64::MAX));
        p.finish()
    }

    fn estimate_credits(&self, params: &Value) -> u64 {
        let seconds = params
            .get("duration")
            .and_then(Value::as_u64)
            .filter(|d| *d > 0)
            .unwrap_or(DEFAULT_DURATION_SECS);
        seconds.saturating_mul(CREDITS_PER_SECOND)
    }

    async fn create(&self, key: &str, params: &Value) -> Result<RemoteStatus, ProviderError> {
        let path = self.paths.create.render("");
        let v = self
            .http
            .json(Call::post(&refs(&path), Some(params)).idempotency_key(key))
            .await?;
        parse_answer(&v, Some("pending"))
    }

    async fn status(&self, provider_job_id: &str) -> Result<RemoteStatus, ProviderError> {
        let path = self.paths.status.render(provider_job_id);
        let v = self.http.json(Call::get(&refs(&path))).await?;
        let status = parse_answer(&v, None)?;
        http::known_word(&self.http, status, KNOWN_WORDS, || v.to_string())
    }

    /// `GET /history/`: read-only, costs nothing, and needs the key.
    async fn probe(&self) -> Probe {
        let path = self.history_path();
        let template = self.paths.list.as_ref().map_or("/history/", |t| t.as_str());
        let request = probe::describe("GET", template, "");
        probe::run(&self.http, request, Call::get(&refs(&path)), |a| {
            if !a.status.is_success() {
                return Err("not the documented history answer".into());
            }
            let v = serde_json::from_slice::<Value>(&a.body)
                .map_err(|_| "the history answer is not JSON".to_string())?;
            match history_list(&v) {
                Ok(jobs) => Ok(format!(
                    "reachable, key accepted (history lists {} job(s))",
                    jobs.len()
                )),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    async fn cancel(&self, _provider_job_id: &str) -> Result<RemoteStatus, ProviderError> {
        Err(ProviderError::Unsupported("cancel"))
    }

    async fn find_by_key(&self, _key: &str, params: &Value) -> Result<Lookup, ProviderError> {
        let (Some(model), Some(prompt)) = (
            params.get("model_slug").and_then(Value::as_str),
            params.get("prompt").and_then(Value::as_str),
        ) else {
            return Ok(Lookup::Unsupported);
        };
        let history = self.history().await?;
        let mut matches = history.iter().filter(|job| {
            job.get("model_slug").and_then(Value::as_str) == Some(model)
                && job.get("prompt").and_then(Value::as_str) == Some(prompt)
        });
        match (matches.next(), matches.next()) {
            (None, _) => Ok(Lookup::NotFound),
            (Some(job), None) => Ok(Lookup::Found(parse_job(job, None)?)),
            (Some(_), Some(_)) => Ok(Lookup::Unsupported),
        }
    }

    fn verify_webhook(&self, _headers: &HeaderMap, body: &[u8], _now_unix: i64) -> WebhookCheck {
        http::unsigned_hint(body, WEBHOOK_ID_PATHS)
    }
}

/// `"success": false` in a 2xx answer is still an error.
fn check_success(v: &Value) -> Result<(), ProviderError> {
    if v.get("success").and_then(Value::as_bool) != Some(false) {
        return Ok(());
    }
    let (code, message) = http::error_parts_value(v);
    Err(ProviderError::Permanent {
        code: code.unwrap_or_else(|| "request_failed".into()),
        message: message.unwrap_or_else(|| "UlazAI answered success: false".into()),
    })
}

/// Reads a `{"success", "job"}` or `{"success", "jobs": [...]}` answer.
pub fn parse_answer(
    v: &Value,
    default_status: Option<&str>,
) -> Result<RemoteStatus, ProviderError> {
    check_success(v)?;
    let job = v
        .get("job")
        .filter(|j| j.is_object())
        .or_else(|| {
            v.get("jobs")
                .and_then(Value::as_array)
                .and_then(|l| l.first())
        })
        .ok_or_else(|| http::missing("UlazAI", "job"))?;
    parse_job(job, default_status)
}

/// Reads one job object.
pub fn parse_job(job: &Value, default_status: Option<&str>) -> Result<RemoteStatus, ProviderError> {
    let id = http::text(job, "job_id")
        .or_else(|| http::text(job, "id"))
        .ok_or_else(|| http::missing("UlazAI", "job_id"))?;
    let raw_status = http::text(job, "status")
        .or_else(|| default_status.map(str::to_string))
        .ok_or_else(|| http::missing("UlazAI", "status"))?;
    let state = match raw_status.to_ascii_lowercase().as_str() {
        "pending" => RemoteState::Pending,
        "completed" => RemoteState::Completed,
        "failed" => RemoteState::Failed,
        "cancelled" | "canceled" => RemoteState::Cancelled,
        // processing, and words added later: not finished.
        _ => RemoteState::Processing,
    };
    let output_urls = job
        .get("result_urls")
        .and_then(Value::as_array)
        .map(|urls| {
            urls.iter()
                .filter_map(Value::as_str)
                .filter(|u| !u.trim().is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let mut credits_charged = http::credits(job.get("credits_charged"));
    let credits_refunded = match job.get("credits_refunded") {
        Some(Value::Bool(true)) => {
            let all = credits_charged.unwrap_or(0);
            credits_charged = Some(all);
            Some(all)
        }
        Some(Value::Bool(false)) => credits_charged.map(|_| 0),
        other => http::credits(other),
    };
    Ok(RemoteStatus {
        provider_job_id: id,
        state,
        raw_status,
        progress: http::percent(job.get("progress")),
        stage: None,
        output_urls,
        credits_charged,
        credits_refunded,
        error: http::text(job, "error_message").map(|m| JobError::new("job_failed", m)),
    })
}
