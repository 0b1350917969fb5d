//! The job as users see it (`jobs --json`) and as the store keeps it. One
//! struct serves both so that what is stored is exactly what is shown.

use crate::fallback::{default_fallback_on, Alternative, FallbackOn, Tried};
use crate::state::JobState;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Which API dialect a configured provider speaks (`kind` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Ugclab,
    Ugen,
    Ulazai,
    Viggle,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 4] = [
        ProviderKind::Ugclab,
        ProviderKind::Ugen,
        ProviderKind::Ulazai,
        ProviderKind::Viggle,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Ugclab => "ugclab",
            ProviderKind::Ugen => "ugen",
            ProviderKind::Ulazai => "ulazai",
            ProviderKind::Viggle => "viggle",
        }
    }

    /// The documented production host of each provider (CONTRACT.md).
    pub fn default_base_url(self) -> &'static str {
        match self {
            ProviderKind::Ugclab => "https://api.ugclab.app/api/v1",
            ProviderKind::Ugen => "https://api.u-gen.ai/api/v1",
            ProviderKind::Ulazai => "https://ulazai.com/api/v1/video-studio",
            ProviderKind::Viggle => "https://apis.viggle.ai/api",
        }
    }

    /// The path prefix under which the simulator serves this provider.
    pub fn sim_prefix(self) -> &'static str {
        match self {
            ProviderKind::Ugclab => "/ugclab/api/v1",
            ProviderKind::Ugen => "/ugen/api/v1",
            ProviderKind::Ulazai => "/ulazai/api/v1/video-studio",
            ProviderKind::Viggle => "/viggle/api",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProviderKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown provider kind {s:?} (expected ugclab, ugen, ulazai or viggle)")
            })
    }
}

/// What a batch asks for: one job, before it is accepted. Unknown fields
/// are refused wherever a job comes from (file, `POST /v1/jobs`, inbox): a
/// misspelt `priorty` must not silently mean priority 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The client's idempotency key; unique across the store. See
    /// [`check_key`] for what a key may be.
    pub key: String,
    /// A provider table name from the config (not the kind).
    pub provider: String,
    #[serde(default)]
    pub priority: i32,
    /// The provider's own create body, passed through unchanged. Absent or
    /// `null`: an empty body.
    #[serde(default = "empty_object", deserialize_with = "null_as_empty")]
    pub params: serde_json::Value,
    /// Other providers to try, in order (`[[jobs.fallback]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback: Vec<Alternative>,
    /// When to move on to the next alternative; absent: `["failed"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_on: Option<Vec<FallbackOn>>,
}

impl Default for JobSpec {
    /// An empty job (no key, no provider, an empty create body): for
    /// building one field by field.
    fn default() -> Self {
        JobSpec {
            key: String::new(),
            provider: String::new(),
            priority: 0,
            params: empty_object(),
            fallback: Vec::new(),
            fallback_on: None,
        }
    }
}

pub(crate) fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

pub(crate) fn null_as_empty<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<serde_json::Value, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(if v.is_null() { empty_object() } else { v })
}

/// Longest job key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 200;

/// Why a job key is refused at intake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key must not be empty")]
    Empty,
    #[error("key must be at most {MAX_KEY_BYTES} bytes")]
    TooLong,
    #[error("key must not contain control characters or '/'")]
    Forbidden,
    #[error("key must not be \".\" or \"..\": a URL path cannot carry them, even percent-encoded")]
    DotSegment,
}

/// The one rule for job keys, applied at every way in (check, submit,
/// `POST /v1/jobs`, inbox) and by the CLI before it asks for a key.
///
/// A key travels as one percent-encoded URL path segment
/// (`/v1/jobs/{key}`), which carries any text except `.` and `..`: URL
/// parsers resolve those as "this" and "parent" segments, encoded or not,
/// so such a job could never be shown, cancelled or retried. `/` and control
/// characters are refused too (proxies and logs mangle them).
pub fn check_key(key: &str) -> Result<(), KeyError> {
    if key.trim().is_empty() {
        Err(KeyError::Empty)
    } else if key.len() > MAX_KEY_BYTES {
        Err(KeyError::TooLong)
    } else if key.chars().any(|c| c.is_control() || c == '/') {
        Err(KeyError::Forbidden)
    } else if key == "." || key == ".." {
        Err(KeyError::DotSegment)
    } else {
        Ok(())
    }
}

/// Why a queued job is not being dispatched right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeldBy {
    Budget,
    Rate,
    Concurrency,
    Paused,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    pub code: String,
    pub message: String,
}

impl JobError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        JobError {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// A job as stored and as shown by `jobs --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub key: String,
    pub provider: String,
    pub priority: i32,
    pub params: serde_json::Value,
    pub state: JobState,
    pub held_by: Option<HeldBy>,
    pub provider_job_id: Option<String>,
    /// The provider's own status word, as last seen.
    #[serde(default)]
    pub provider_status: Option<String>,
    pub progress: Option<u8>,
    pub stage: Option<String>,
    pub output_urls: Vec<String>,
    pub credits_reserved: u64,
    pub credits_charged: u64,
    pub attempts: u32,
    pub error: Option<JobError>,
    /// Local files the finished outputs were downloaded to.
    #[serde(default)]
    pub output_files: Vec<String>,
    /// Enqueue order, unique and increasing: FIFO within a priority.
    pub seq: u64,
    /// The budget period the reservation was taken in (e.g. `2026-11`).
    #[serde(default)]
    pub budget_period: Option<String>,
    /// When the provider acknowledged the create: polling and the poll
    /// timeout count from here, not from intake, and survive restarts.
    #[serde(default)]
    pub submitted_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Alternatives not tried yet, in order.
    #[serde(default)]
    pub fallback: Vec<Alternative>,
    /// When the job moves on to its next alternative.
    #[serde(default = "default_fallback_on")]
    pub fallback_on: Vec<FallbackOn>,
    /// The providers this job left for an alternative, in order: with
    /// `provider`, the chain tried so far.
    #[serde(default)]
    pub tried: Vec<Tried>,
    /// Since when a user has had the job paused at the provider.
    #[serde(default)]
    pub paused_at: Option<String>,
    /// Time the job spent paused by users (pauses that ended), which the
    /// poll timeout does not count.
    #[serde(default)]
    pub paused_ms: u64,
}

impl Job {
    pub fn from_spec(spec: JobSpec, seq: u64, now: &str) -> Job {
        Job {
            key: spec.key,
            provider: spec.provider,
            priority: spec.priority,
            params: spec.params,
            state: JobState::Queued,
            held_by: None,
            provider_job_id: None,
            provider_status: None,
            progress: None,
            stage: None,
            output_urls: Vec::new(),
            credits_reserved: 0,
            credits_charged: 0,
            attempts: 0,
            error: None,
            output_files: Vec::new(),
            seq,
            budget_period: None,
            submitted_at: None,
            created_at: now.to_string(),
            updated_at: now.to_string(),
            fallback: spec.fallback,
            fallback_on: spec.fallback_on.unwrap_or_else(default_fallback_on),
            tried: Vec::new(),
            paused_at: None,
            paused_ms: 0,
        }
    }
}

/// One entry of a job's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub at: String,
    pub from: Option<JobState>,
    pub to: JobState,
    pub note: String,
}

/// RFC 3339 UTC timestamp with millisecond precision, as shown to users.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_that_a_url_path_cannot_carry_are_refused() {
        assert_eq!(check_key("."), Err(KeyError::DotSegment));
        assert_eq!(check_key(".."), Err(KeyError::DotSegment));
        assert_eq!(check_key(""), Err(KeyError::Empty));
        assert_eq!(check_key("  "), Err(KeyError::Empty));
        assert_eq!(check_key("a/b"), Err(KeyError::Forbidden));
        assert_eq!(check_key("a\nb"), Err(KeyError::Forbidden));
        assert_eq!(check_key(&"k".repeat(201)), Err(KeyError::TooLong));
        for ok in [
            "...",
            ".a",
            "a.",
            "%2e",
            "a b",
            "50%",
            "q?x=1",
            "#1",
            "ünï-😀",
            "a\\b",
        ] {
            assert_eq!(check_key(ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn a_job_with_an_unknown_field_is_refused() {
        let e = serde_json::from_str::<JobSpec>(r#"{"key":"a","provider":"p","priorty":5}"#)
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `priorty`"), "{e}");
        let j: JobSpec =
            serde_json::from_str(r#"{"key":"a","provider":"p","params":null}"#).unwrap();
        assert_eq!(j.params, serde_json::json!({}));
    }
}
