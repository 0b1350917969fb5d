//! Viggle (`apis.viggle.ai/api`): polling needs no key (documented), so
//! status calls send none: a key not sent cannot leak. A finished render
//! can have two outputs, the video and its alpha mask; the video comes first.
//!
//! Assumptions, because the seed document does not show them (kept in
//! [`paths`] and the constants below):
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

use crate::http::{self, Auth, Call, CodeClass, Params, Transport};
use crate::{
    Lookup, ParamProblem, Provider, ProviderError, RemoteState, RemoteStatus, Settings,
    WebhookCheck,
};
use async_trait::async_trait;
use reqwest::header::HeaderMap;
use serde_json::Value;
use switchyard_core::{JobError, ProviderKind};

/// Endpoint paths under the base URL.
pub mod paths {
    /// `GET {RENDER}/{id}`: documented; `POST` and `DELETE`: assumed.
    pub const RENDER: &str = "render";
}

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
        );
        Viggle { http }
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
        let v = self
            .http
            .json(Call::post(&[paths::RENDER], Some(params)).idempotency_key(key))
            .await?;
        parse_job(&v, Some("queued"))
    }

    async fn status(&self, provider_job_id: &str) -> Result<RemoteStatus, ProviderError> {
        let v = self
            .http
            .json(Call::get(&[paths::RENDER, provider_job_id]).without_auth())
            .await?;
        parse_job(&v, None)
    }

    async fn cancel(&self, provider_job_id: &str) -> Result<RemoteStatus, ProviderError> {
        let body = self
            .http
            .send(Call::delete(&[paths::RENDER, provider_job_id]))
            .await?;
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
