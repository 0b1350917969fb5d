//! Bulk actions over every job a filter matches (not one page of them),
//! confirmed by count: `GET /v1/bulk/{action}` says how many jobs the
//! action would touch, and `POST /v1/bulk/{action}` carries that count
//! back. The server refuses (409 `count_changed`, with the new count) when
//! the filter matches another number by then, so a user never cancels or
//! retries more (or other) jobs than the number they agreed to.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use switchyard_core::JobState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BulkAction {
    /// Queued, uncertain and live jobs (live ones at the provider, whose
    /// rules apply); jobs being submitted are left alone.
    Cancel,
    /// Failed and uncertain jobs go back to the queue.
    Retry,
}

impl BulkAction {
    pub fn as_str(self) -> &'static str {
        match self {
            BulkAction::Cancel => "cancel",
            BulkAction::Retry => "retry",
        }
    }

    /// Whether the action applies to a job in `state` (the count counts
    /// only these).
    pub fn applies_to(self, state: JobState) -> bool {
        match self {
            BulkAction::Cancel => matches!(
                state,
                JobState::Queued | JobState::Uncertain | JobState::Pending | JobState::Processing
            ),
            BulkAction::Retry => matches!(state, JobState::Failed | JobState::Uncertain),
        }
    }
}

impl fmt::Display for BulkAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BulkAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cancel" => Ok(BulkAction::Cancel),
            "retry" => Ok(BulkAction::Retry),
            other => Err(format!(
                "unknown bulk action {other:?} (expected cancel or retry)"
            )),
        }
    }
}

/// The filter of a bulk action: the jobs table's (state, provider, and a
/// substring of the key or provider job id).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkFilter {
    #[serde(default)]
    pub state: Option<JobState>,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub q: Option<String>,
}

/// `GET /v1/bulk/{action}?state=&provider=&q=`: what a confirmation says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkPreview {
    pub action: BulkAction,
    /// Jobs matching the filter that the action applies to.
    pub count: u64,
}

/// `POST /v1/bulk/{action}`: the filter and the count the user confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    #[serde(flatten)]
    pub filter: BulkFilter,
    pub count: u64,
}

/// What a bulk action did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkAnswer {
    pub action: BulkAction,
    /// Jobs it was applied to (the confirmed count).
    pub matched: u64,
    /// Of those, how many it changed.
    pub done: u64,
    /// The ones it could not change (a job that moved meanwhile, a
    /// provider that refused a cancel), at most 50 of them.
    pub failed: Vec<BulkFailure>,
    /// How many could not be changed in all.
    pub failed_total: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkFailure {
    pub key: String,
    pub message: String,
}

/// `POST /v1/batches`: a batch file as the user picked it, checked and
/// queued with the files' rules (every problem with its line; nothing
/// queued unless all of it is valid). `name` says which format (`.toml`,
/// else JSON Lines) and names the file in problems; the content is `text`
/// or, to keep the bytes as they are (a bad byte is reported at its line
/// and column), `base64`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchUpload {
    pub name: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub base64: Option<String>,
}
