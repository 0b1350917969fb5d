//! Viggle (`apis.viggle.ai/api`): polling needs no key (documented), so
//! status calls send none: a key not sent cannot leak. A finished render
//! can have two outputs, the video and its alpha mask; the video comes first.
//!
//! Assumptions, because the seed document does not show them (the paths in
//! [`crate::paths::defaults`], which the config can override, and the
//! constants below):
//!
//! - Create is `POST {base}/render`, Bearer, with the params as the body;
//!   `image_url` (an http(s) URL) is required; the answer is
//!   `{"job_id", "status": "queued"}`.
//! - Cancel is `DELETE {base}/render/{job_id}`, Bearer: the status
//!   vocabulary has `cancelled` but no call is shown. An answer without a
//!   job object is taken as cancelled.
//! - The reservation is a flat [`ESTIMATE_CREDITS`].
//! - There is no list endpoint (`find_by_key` is `Unsupported`) and
//!   webhooks are unsigned hints.
//! - Error bodies carry `error_code` / `error_message` like failed jobs do.

use crate::http::{self, refs, Auth, Call, CodeClass, Params, Transport};
use crate::paths::Resolved;
use crate::probe::{self, Probe, IMPOSSIBLE_ID};
use crate::{
    Lookup, ParamProblem, Provider, ProviderError, RemoteState, RemoteStatus, Settings,
    WebhookCheck,
};
use async_trait::async_trait;
use reqwest::header::HeaderMap;
use serde_json::Value;
use switchyard_core::{JobError, ProviderKind};

/// The documented status words (and `pending`, `completed`, `canceled`
/// spellings); any other is an unexpected answer.
const KNOWN_WORDS: &[&str] = &[
    "queued",
    "pending",
    "processing",
    "complete",
    "completed",
    "failed",
    "cancelled",
    "canceled",
];

pub const ESTIMATE_CREDITS: u64 = 10;

const WEBHOOK_ID_PATHS: &[&[&str]] = &[
    &["job_id"],
    &["data", "job_id"],
    &["job", "job_id"],
    &["id"],
];

/// Viggle's structured codes (`CS-UORC01-009`) describe failed renders, not
/// requests; the HTTP status decides.
fn codes(_code: &str) -> Option<CodeClass> {
    None
}

#[derive(Debug)]
pub struct Viggle {
    http: Transport,
    paths: Resolved,
}

impl Viggle {
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
        Viggle {
            http,
            paths: Resolved::new(ProviderKind::Viggle, &settings.paths),
        }
    }
}

#[async_trait]
impl Provider for Viggle {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Viggle
    }

    fn validate(&self, params: &Value) -> Result<(), Vec<ParamProblem>> {
        let mut p = Params::new(params);
        p.required_url("image_url");
        p.finish()
    }

    fn estimate_credits(&self, _params: &Value) -> u64 {
        ESTIMATE_CREDITS
    }

    async fn create(&self, key: &str, params: &Value) -> Result<RemoteStatus, ProviderError> {
        let path = self.paths.create.render("");
        let v = self
            .http
            .json(Call::post(&refs(&path), Some(params)).idempotency_key(key))
            .await?;
        parse_job(&v, Some("queued"))
    }

    async fn status(&self, provider_job_id: &str) -> Result<RemoteStatus, ProviderError> {
        let path = self.paths.status.render(provider_job_id);
        let v = self
            .http
            .json(Call::get(&refs(&path)).without_auth())
            .await?;
        let status = parse_job(&v, None)?;
        http::known_word(&self.http, status, KNOWN_WORDS, || v.to_string())
    }

    async fn cancel(&self, provider_job_id: &str) -> Result<RemoteStatus, ProviderError> {
        let template = self
            .paths
            .cancel
            .as_ref()
            .ok_or(ProviderError::Unsupported("cancel"))?;
        let path = template.render(provider_job_id);
        let body = self.http.send(Call::delete(&refs(&path))).await?;
        let v = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
        match parse_job(&v, Some("cancelled")) {
            Ok(status) => Ok(status),
            Err(_) => Ok(RemoteStatus {
                provider_job_id: provider_job_id.to_string(),
                state: RemoteState::Cancelled,
                raw_status: "cancelled".into(),
                ..RemoteStatus::default()
            }),
        }
    }

    async fn find_by_key(&self, _key: &str, _params: &Value) -> Result<Lookup, ProviderError> {
        Ok(Lookup::Unsupported)
    }

    /// A status request for an id that cannot exist, key attached. Viggle
    /// documents its status call as needing no key, so a 404 proves the
    /// host and path, not the key (a provider that checks it answers 401).
    async fn probe(&self) -> Probe {
        let path = self.paths.status.render(IMPOSSIBLE_ID);
        let request = probe::describe("GET", self.paths.status.as_str(), "");
        probe::run(&self.http, request, Call::get(&refs(&path)), |a| {
            let json = serde_json::from_slice::<Value>(&a.body).is_ok_and(|v| v.is_object());
            match a.status.as_u16() {
                404 if json => Ok(
                    "reachable (404 for an id that cannot exist); the key is not proven: Viggle's status call needs none"
                        .into(),
                ),
                404 => Err("a 404 without a JSON body (wrong path?)".into()),
                s if (200..300).contains(&s) => {
                    Err("an id that cannot exist was answered as found".into())
                }
                _ => Err("not a not-found answer".into()),
            }
        })
        .await
    }

    fn verify_webhook(&self, _headers: &HeaderMap, body: &[u8], _now_unix: i64) -> WebhookCheck {
        http::unsigned_hint(body, WEBHOOK_ID_PATHS)
    }
}

/// Reads a render job. `default_status` fills in for answers that may leave
/// it out (create, cancel).
pub fn parse_job(v: &Value, default_status: Option<&str>) -> Result<RemoteStatus, ProviderError> {
    let id = http::text(v, "job_id").ok_or_else(|| http::missing("Viggle", "job_id"))?;
    let raw_status = http::text(v, "status")
        .or_else(|| default_status.map(str::to_string))
        .ok_or_else(|| http::missing("Viggle", "status"))?;
    let state = match raw_status.to_ascii_lowercase().as_str() {
        "queued" | "pending" => RemoteState::Pending,
        "complete" | "completed" => RemoteState::Completed,
        "failed" => RemoteState::Failed,
        "cancelled" | "canceled" => RemoteState::Cancelled,
        // processing, and words added later: not finished.
        _ => RemoteState::Processing,
    };
    let output_urls = ["cdn_url", "mask_cdn_url"]
        .iter()
        .filter_map(|k| http::text(v, k))
        .collect();
    let error = match (http::text(v, "error_code"), http::text(v, "error_message")) {
        (None, None) => None,
        (code, message) => Some(JobError::new(
            code.unwrap_or_else(|| "job_failed".into()),
            message.unwrap_or_default(),
        )),
    };
    Ok(RemoteStatus {
        provider_job_id: id,
        state,
        raw_status,
        progress: http::percent(v.get("progress_pct")),
        stage: http::text(v, "checkpoint"),
        output_urls,
        credits_charged: None,
        credits_refunded: None,
        error,
    })
}
