//! UGC Lab (`api.ugclab.app/api/v1`): every answer is a `{data, meta}`
//! envelope, and a refused cancel is a 400 whose code says why, so the codes
//! are what classify it, not the status.
//!
//! Assumptions, because the seed document does not show them (the paths in
//! [`crate::paths::defaults`], which the config can override, and the
//! constants below):
//!
//! - Create is `POST {base}/ugc` with the params as the JSON body, Bearer
//!   auth, required `script` (string); it answers
//!   `{"data": {"id", "status": "PENDING", "creditsCharged"}, "meta"}`.
//! - The reservation is a flat [`ESTIMATE_CREDITS`] (the seed's example
//!   charge); settlement replaces it with `creditsCharged`.
//! - `CANCELLED` is a status (the cancel example answers with it) though the
//!   status table omits it.
//! - There is no list or history endpoint, so a job lost in a crash cannot
//!   be found again (`find_by_key` is `Unsupported`).
//! - Webhooks are unsigned: one is only a hint naming a job to poll, taken
//!   from the body's `data.id` (or `id`, `ugcId`), never trusted otherwise.
//! - The job's `stage` is the first processing step not yet completed or
//!   skipped, in the order the provider lists them (`SAVING` while saving).

use crate::http::{self, refs, Auth, Call, CodeClass, Params, Transport};
use crate::paths::Resolved;
use crate::probe::{self, Probe, IMPOSSIBLE_ID};
use crate::{
    Action, Lookup, ParamProblem, Provider, ProviderError, RemoteState, RemoteStatus, Settings,
    WebhookCheck,
};
use async_trait::async_trait;
use reqwest::header::HeaderMap;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use std::fmt;
use switchyard_core::detail::Step;
use switchyard_core::{JobError, ProviderKind};

/// The status words the seed shows (and `CANCELLED`, which its cancel
/// example answers); any other is an unexpected answer.
const KNOWN_WORDS: &[&str] = &[
    "PENDING",
    "PROCESSING",
    "SAVING",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "CANCELED",
];

/// Credits reserved per job (the seed's example `creditsCharged`).
pub const ESTIMATE_CREDITS: u64 = 125;

/// Where an unsigned webhook might name the job.
const WEBHOOK_ID_PATHS: &[&[&str]] = &[
    &["data", "id"],
    &["data", "ugcId"],
    &["id"],
    &["ugcId"],
    &["ugc_id"],
];

/// UGC Lab's documented error codes; everything else falls to the HTTP status.
fn codes(code: &str) -> Option<CodeClass> {
    match code {
        "UGC_NOT_FOUND" => Some(CodeClass::NotFound),
        "UGC_ALREADY_COMPLETED" | "UGC_ALREADY_FAILED" | "UGC_PROCESSING" => {
            Some(CodeClass::Conflict)
        }
        // Not in the table, but the same refusal for the one state it omits.
        "UGC_ALREADY_CANCELLED" => Some(CodeClass::Conflict),
        "RATE_LIMIT_EXCEEDED" => Some(CodeClass::RateLimited),
        "INTERNAL_ERROR" => Some(CodeClass::Transient),
        _ => None,
    }
}

#[derive(Debug)]
pub struct UgcLab {
    http: Transport,
    paths: Resolved,
}

impl UgcLab {
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
        UgcLab {
            http,
            paths: Resolved::new(ProviderKind::Ugclab, &settings.paths),
        }
    }
}

#[async_trait]
impl Provider for UgcLab {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Ugclab
    }

    fn validate(&self, params: &Value) -> Result<(), Vec<ParamProblem>> {
        let mut p = Params::new(params);
        p.required_string("script");
        p.finish()
    }

    fn estimate_credits(&self, _params: &Value) -> u64 {
        ESTIMATE_CREDITS
    }

    async fn create(&self, key: &str, params: &Value) -> Result<RemoteStatus, ProviderError> {
        let path = self.paths.create.render("");
        let body = self
            .http
            .send(Call::post(&refs(&path), Some(params)).idempotency_key(key))
            .await?;
        parse_job(&body, Some("PENDING"))
    }

    async fn status(&self, provider_job_id: &str) -> Result<RemoteStatus, ProviderError> {
        let path = self.paths.status.render(provider_job_id);
        let body = self.http.send(Call::get(&refs(&path))).await?;
        let status = parse_job(&body, None)?;
        http::known_word(&self.http, status, KNOWN_WORDS, || body)
    }

    async fn cancel(&self, provider_job_id: &str) -> Result<RemoteStatus, ProviderError> {
        let template = self
            .paths
            .cancel
            .as_ref()
            .ok_or(ProviderError::Unsupported("cancel"))?;
        let path = template.render(provider_job_id);
        let body = self.http.send(Call::delete(&refs(&path))).await?;
        parse_job(&body, Some("CANCELLED"))
    }

    /// A status request for an id that cannot exist: the documented
    /// `404 UGC_NOT_FOUND` comes only after the key was accepted.
    async fn probe(&self) -> Probe {
        let path = self.paths.status.render(IMPOSSIBLE_ID);
        let request = probe::describe("GET", self.paths.status.as_str(), "");
        probe::run(&self.http, request, Call::get(&refs(&path)), |a| {
            let (code, _) = http::error_parts(&a.body);
            match (a.status.as_u16(), code.as_deref()) {
                (404, Some("UGC_NOT_FOUND")) => {
                    Ok("reachable, key accepted (the documented 404 UGC_NOT_FOUND)".into())
                }
                (404, _) => {
                    Err("a 404 without the documented UGC_NOT_FOUND code (wrong path?)".into())
                }
                (s, _) if (200..300).contains(&s) => {
                    Err("an id that cannot exist was answered as found".into())
                }
                _ => Err("not the documented answer".into()),
            }
        })
        .await
    }

    async fn find_by_key(&self, _key: &str, _params: &Value) -> Result<Lookup, ProviderError> {
        Ok(Lookup::Unsupported)
    }

    fn verify_webhook(&self, _headers: &HeaderMap, body: &[u8], _now_unix: i64) -> WebhookCheck {
        http::unsigned_hint(body, WEBHOOK_ID_PATHS)
    }

    fn supports(&self, action: Action) -> bool {
        action == Action::Steps
    }

    /// The job's `processingSteps`, from its status, in the provider's order.
    async fn list_steps(&self, provider_job_id: &str) -> Result<Vec<Step>, ProviderError> {
        let path = self.paths.status.render(provider_job_id);
        let body = self.http.send(Call::get(&refs(&path))).await?;
        // The status itself must read, as for a poll.
        parse_job(&body, None)?;
        Ok(steps(&body)
            .into_iter()
            .map(|(name, status)| Step {
                name,
                status: match status {
                    Value::String(s) => s,
                    other => other.to_string(),
                },
            })
            .collect())
    }
}

/// Reads a `{data: job}` answer. `default_status` fills in for answers that
/// may leave the status out (create, cancel).
pub fn parse_job(body: &[u8], default_status: Option<&str>) -> Result<RemoteStatus, ProviderError> {
    let v = http::parse_json(body)?;
    let data = v
        .get("data")
        .filter(|d| d.is_object())
        .ok_or_else(|| http::missing("UGC Lab", "data object"))?;
    let id = http::text(data, "id").ok_or_else(|| http::missing("UGC Lab", "data.id"))?;
    let raw_status = http::text(data, "status")
        .or_else(|| default_status.map(str::to_string))
        .ok_or_else(|| http::missing("UGC Lab", "data.status"))?;
    let state = match raw_status.to_ascii_uppercase().as_str() {
        "PENDING" => RemoteState::Pending,
        "COMPLETED" => RemoteState::Completed,
        "FAILED" => RemoteState::Failed,
        "CANCELLED" | "CANCELED" => RemoteState::Cancelled,
        // PROCESSING, SAVING, and any status added later: still running, so
        // keep polling until the provider says otherwise or the job times out.
        _ => RemoteState::Processing,
    };
    let stage = if raw_status.eq_ignore_ascii_case("SAVING") {
        Some("SAVING".to_string())
    } else {
        current_step(body)
    };
    let error = http::text(data, "errorMessage").map(|m| JobError::new("job_failed", m));
    Ok(RemoteStatus {
        provider_job_id: id,
        state,
        raw_status,
        progress: http::percent(data.get("progress")),
        stage,
        output_urls: http::text(data, "videoUrl").into_iter().collect(),
        credits_charged: http::credits(data.get("creditsCharged")),
        credits_refunded: http::credits(data.get("creditsRefunded")),
        error,
    })
}

/// The first processing step not completed or skipped.
fn current_step(body: &[u8]) -> Option<String> {
    steps(body)
        .into_iter()
        .find(|(_, status)| !matches!(status.as_str(), Some("completed" | "skipped")))
        .map(|(name, _)| name)
}

/// The processing steps with their statuses. Read separately from the raw
/// body because `serde_json::Value` sorts object keys, and the provider's
/// order is the pipeline's order.
fn steps(body: &[u8]) -> Vec<(String, Value)> {
    #[derive(Deserialize)]
    struct Envelope {
        data: Data,
    }
    #[derive(Deserialize)]
    struct Data {
        #[serde(rename = "processingSteps", default)]
        processing_steps: Option<OrderedSteps>,
    }
    serde_json::from_slice::<Envelope>(body)
        .ok()
        .and_then(|e| e.data.processing_steps)
        .map(|s| s.0)
        .unwrap_or_default()
}

/// A JSON object's entries in document order.
struct OrderedSteps(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for OrderedSteps {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StepsVisitor;
        impl<'de> Visitor<'de> for StepsVisitor {
            type Value = OrderedSteps;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of step statuses")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedSteps, A::Error> {
                let mut steps = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    steps.push(entry);
                }
                Ok(OrderedSteps(steps))
            }
        }
        deserializer.deserialize_map(StepsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_keep_the_provider_order() {
        let body = br#"{"data": {"id": "a", "status": "PROCESSING",
            "processingSteps": {"refineScript": "pending", "refineActions": "pending"}}}"#;
        assert_eq!(
            parse_job(body, None).unwrap().stage.as_deref(),
            Some("refineScript")
        );
        let body = br#"{"data": {"id": "a", "status": "PROCESSING",
            "processingSteps": {"refineScript": "completed", "refineActions": "skipped", "videoGeneration": "failed"}}}"#;
        assert_eq!(
            parse_job(body, None).unwrap().stage.as_deref(),
            Some("videoGeneration")
        );
        let body = br#"{"data": {"id": "a", "status": "SAVING", "processingSteps": null}}"#;
        assert_eq!(
            parse_job(body, None).unwrap().stage.as_deref(),
            Some("SAVING")
        );
        let body = br#"{"data": {"id": "a", "status": "COMPLETED", "processingSteps": {"x": "completed"}}}"#;
        assert_eq!(parse_job(body, None).unwrap().stage, None);
    }

    #[test]
    fn unreadable_answers_are_transient() {
        for body in [
            &b"{"[..],
            b"{}",
            br#"{"data": {"status": "PENDING"}}"#,
            br#"{"data": {"id": "x"}}"#,
        ] {
            assert!(matches!(
                parse_job(body, None),
                Err(ProviderError::Transient(_))
            ));
        }
    }
}
