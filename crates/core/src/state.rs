//! The contract's job states and the only changes between them that the store
//! accepts. Every write goes through [`JobState::can_become`], so an illegal
//! change is an error at the write, never a silent overwrite.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Submitting,
    Pending,
    Processing,
    Completed,
    Failed,
    Cancelled,
    /// The daemon stopped between sending a create call and recording its
    /// answer, and the provider offers no way to find out. Never re-sent alone.
    Uncertain,
}

impl JobState {
    pub const ALL: [JobState; 8] = [
        JobState::Queued,
        JobState::Submitting,
        JobState::Pending,
        JobState::Processing,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Uncertain,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Submitting => "submitting",
            JobState::Pending => "pending",
            JobState::Processing => "processing",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Uncertain => "uncertain",
        }
    }

    /// Stable one-byte code used in store index keys.
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<JobState> {
        JobState::ALL.get(code as usize).copied()
    }

    /// Completed, failed and cancelled jobs never change again on their own.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }

    /// Known to the provider and not finished: these are polled.
    pub fn is_live(self) -> bool {
        matches!(self, JobState::Pending | JobState::Processing)
    }

    /// Counts against `max_in_flight`: sent (or being sent) and not finished.
    pub fn is_in_flight(self) -> bool {
        matches!(
            self,
            JobState::Submitting | JobState::Pending | JobState::Processing
        )
    }

    /// The legal state machine of the contract.
    ///
    /// * `queued → submitting` (dispatch), `queued → cancelled` (user cancel).
    /// * `submitting → pending|processing|completed|failed` (create answered),
    ///   `submitting → queued` (create refused before the provider kept it, e.g.
    ///   429/402/transient), `submitting → uncertain` (crash, no way to know).
    /// * `pending → processing|completed|failed|cancelled`,
    ///   `processing → completed|failed|cancelled` (poll results; `processing →
    ///   pending` is accepted because some providers report a requeue).
    /// * `failed|uncertain → queued` (user retry, or a fallback to another
    ///   provider: see [`crate::fallback`]), `uncertain → cancelled|pending`
    ///   (user cancel, or reconciliation found it).
    /// * `failed|completed → submitting`: a user's retry at the provider
    ///   (U-Gen's retry from a stage), which re-runs the same provider job;
    ///   `submitting` because a request that costs credits is about to go
    ///   out, with them reserved, exactly as for a create.
    pub fn can_become(self, to: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, to),
            (Queued, Submitting)
                | (Queued, Cancelled)
                | (Submitting, Queued)
                | (Submitting, Pending)
                | (Submitting, Processing)
                | (Submitting, Completed)
                | (Submitting, Failed)
                | (Submitting, Uncertain)
                | (Pending, Processing)
                | (Pending, Completed)
                | (Pending, Failed)
                | (Pending, Cancelled)
                | (Processing, Pending)
                | (Processing, Completed)
                | (Processing, Failed)
                | (Processing, Cancelled)
                | (Failed, Queued)
                | (Failed, Submitting)
                | (Completed, Submitting)
                | (Uncertain, Queued)
                | (Uncertain, Cancelled)
                | (Uncertain, Pending)
                | (Uncertain, Processing)
                | (Uncertain, Completed)
                | (Uncertain, Failed)
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .iter()
            .copied()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown state {s:?} (expected one of: {})",
                    JobState::ALL.map(|s| s.as_str()).join(", ")
                )
            })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition for job {key}: {from} -> {to}")]
pub struct TransitionError {
    pub key: String,
    pub from: JobState,
    pub to: JobState,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_only_leave_by_a_user_retry() {
        for to in JobState::ALL {
            assert!(!JobState::Cancelled.can_become(to), "cancelled -> {to}");
            // Retried at the provider (from a stage).
            assert_eq!(
                JobState::Completed.can_become(to),
                to == JobState::Submitting,
                "completed -> {to}"
            );
            // Queued again (here, or at a fallback), or retried at the provider.
            assert_eq!(
                JobState::Failed.can_become(to),
                matches!(to, JobState::Queued | JobState::Submitting),
                "failed -> {to}"
            );
        }
    }

    #[test]
    fn an_uncertain_job_is_never_sent_again_on_its_own() {
        // Retry (queued), cancel, or the provider's word about it (a
        // reconciliation, or the user's `adopt`); never straight back to
        // `submitting`, which would send the create a second time.
        for to in JobState::ALL {
            let legal = matches!(
                to,
                JobState::Queued
                    | JobState::Cancelled
                    | JobState::Pending
                    | JobState::Processing
                    | JobState::Completed
                    | JobState::Failed
            );
            assert_eq!(
                JobState::Uncertain.can_become(to),
                legal,
                "uncertain -> {to}"
            );
        }
    }

    #[test]
    fn codes_round_trip() {
        for s in JobState::ALL {
            assert_eq!(JobState::from_code(s.code()), Some(s));
            assert_eq!(s.as_str().parse::<JobState>(), Ok(s));
        }
    }
}
