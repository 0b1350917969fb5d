//! Fallbacks: a job may name other providers to try, in order, when its
//! own cannot do it. The rule of when a job moves on (a *hop*) is here, so
//! every store applies the same one: only from `failed` (the provider said
//! so, or certainly never had it) or from `queued` (its provider is out of
//! budget or paused), never from `uncertain` (the first provider may be
//! doing the work, and it would be paid twice), only when the job asked for
//! that reason, and only with no credits still reserved at the provider it
//! leaves (that reservation is settled or released first, in that
//! provider's ledger).

use crate::model::{Job, JobError};
use crate::state::JobState;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Another provider for a job, with its own create body
/// (`[[jobs.fallback]]` in a batch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alternative {
    /// A provider table name from the config.
    pub provider: String,
    /// That provider's create body, checked at intake like the first
    /// choice's.
    #[serde(
        default = "crate::model::empty_object",
        deserialize_with = "crate::model::null_as_empty"
    )]
    pub params: serde_json::Value,
}

/// When a job moves on to its next alternative (`fallback_on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FallbackOn {
    /// The job ended `failed` at its provider.
    Failed,
    /// Its provider's queue is held by the budget (or the provider said it
    /// has no credits left, 402).
    Budget,
    /// Its provider was paused by a user.
    Paused,
}

impl FallbackOn {
    pub const ALL: [FallbackOn; 3] = [FallbackOn::Failed, FallbackOn::Budget, FallbackOn::Paused];

    pub fn as_str(self) -> &'static str {
        match self {
            FallbackOn::Failed => "failed",
            FallbackOn::Budget => "budget",
            FallbackOn::Paused => "paused",
        }
    }
}

impl fmt::Display for FallbackOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `fallback_on` means when a batch leaves it out.
pub fn default_fallback_on() -> Vec<FallbackOn> {
    vec![FallbackOn::Failed]
}

/// A provider a job left for its next alternative: what happened there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tried {
    pub provider: String,
    /// Why the job left it.
    pub why: FallbackOn,
    pub provider_job_id: Option<String>,
    pub error: Option<JobError>,
    /// Charged by that provider (in its own ledger).
    pub credits_charged: u64,
    pub attempts: u32,
    /// When the job left it.
    pub at: String,
}

/// Whether `job`, as it stands now, moves on to its next alternative for
/// `why`.
pub fn can_hop(job: &Job, why: FallbackOn) -> bool {
    let state_fits = match why {
        FallbackOn::Failed => job.state == JobState::Failed,
        FallbackOn::Budget | FallbackOn::Paused => job.state == JobState::Queued,
    };
    state_fits
        && !job.fallback.is_empty()
        && job.fallback_on.contains(&why)
        && job.credits_reserved == 0
}

/// Moves `job` to its next alternative, queued there afresh, if
/// [`can_hop`]; returns the history note of the hop, or `None` (nothing
/// changed). What the job did at the provider it leaves is kept in `tried`.
pub fn hop(job: &mut Job, why: FallbackOn, now: &str) -> Option<String> {
    if !can_hop(job, why) {
        return None;
    }
    let next = job.fallback.remove(0);
    let left = Tried {
        provider: std::mem::replace(&mut job.provider, next.provider),
        why,
        provider_job_id: job.provider_job_id.take(),
        error: job.error.take(),
        credits_charged: std::mem::take(&mut job.credits_charged),
        attempts: std::mem::take(&mut job.attempts),
        at: now.to_string(),
    };
    let note = format!(
        "fallback ({why}): {} -> {} (alternative {} of {})",
        left.provider,
        job.provider,
        job.tried.len() + 1,
        job.tried.len() + 1 + job.fallback.len()
    );
    job.tried.push(left);
    job.params = next.params;
    job.state = JobState::Queued;
    job.held_by = None;
    job.provider_status = None;
    job.progress = None;
    job.stage = None;
    job.output_urls.clear();
    job.output_files.clear();
    // The next provider's reservation is taken in its own ledger, in the
    // period current when it is claimed.
    job.budget_period = None;
    job.submitted_at = None;
    job.paused_at = None;
    job.paused_ms = 0;
    Some(note)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::JobSpec;

    fn job(state: JobState, on: Option<Vec<FallbackOn>>) -> Job {
        let spec = JobSpec {
            key: "k".into(),
            provider: "a".into(),
            params: serde_json::json!({"x": 1}),
            fallback: vec![
                Alternative {
                    provider: "b".into(),
                    params: serde_json::json!({"y": 2}),
                },
                Alternative {
                    provider: "c".into(),
                    params: serde_json::json!({}),
                },
            ],
            fallback_on: on,
            ..JobSpec::default()
        };
        let mut j = Job::from_spec(spec, 1, "t0");
        j.state = state;
        j
    }

    #[test]
    fn a_failed_job_moves_to_its_next_alternative_with_a_fresh_start() {
        let mut j = job(JobState::Failed, None);
        j.provider_job_id = Some("a-1".into());
        j.error = Some(JobError::new("E", "broke"));
        j.credits_charged = 7;
        j.attempts = 2;
        j.budget_period = Some("2026-12".into());
        j.output_urls = vec!["u".into()];
        let note = hop(&mut j, FallbackOn::Failed, "t1").unwrap();
        assert_eq!(note, "fallback (failed): a -> b (alternative 1 of 2)");
        assert_eq!(
            (j.state, j.provider.as_str(), &j.params),
            (JobState::Queued, "b", &serde_json::json!({"y": 2}))
        );
        assert_eq!((j.attempts, j.credits_charged), (0, 0));
        assert_eq!(
            (&j.error, &j.provider_job_id, &j.budget_period),
            (&None, &None, &None)
        );
        assert!(j.output_urls.is_empty());
        assert_eq!(
            j.tried,
            vec![Tried {
                provider: "a".into(),
                why: FallbackOn::Failed,
                provider_job_id: Some("a-1".into()),
                error: Some(JobError::new("E", "broke")),
                credits_charged: 7,
                attempts: 2,
                at: "t1".into(),
            }]
        );
        assert_eq!(j.fallback.len(), 1);
        // And once more, then there is nothing left to try.
        j.state = JobState::Failed;
        assert!(hop(&mut j, FallbackOn::Failed, "t2").is_some());
        assert_eq!(j.provider, "c");
        j.state = JobState::Failed;
        assert_eq!(hop(&mut j, FallbackOn::Failed, "t3"), None);
        assert_eq!((j.provider.as_str(), j.state), ("c", JobState::Failed));
    }

    #[test]
    fn only_the_reasons_asked_for_and_never_from_uncertain() {
        // Default: failed only.
        assert!(!can_hop(&job(JobState::Queued, None), FallbackOn::Budget));
        assert!(!can_hop(&job(JobState::Queued, None), FallbackOn::Paused));
        assert!(can_hop(&job(JobState::Failed, None), FallbackOn::Failed));
        let on = Some(vec![FallbackOn::Budget, FallbackOn::Paused]);
        assert!(can_hop(
            &job(JobState::Queued, on.clone()),
            FallbackOn::Budget
        ));
        assert!(can_hop(
            &job(JobState::Queued, on.clone()),
            FallbackOn::Paused
        ));
        assert!(!can_hop(&job(JobState::Failed, on), FallbackOn::Failed));
        // Every state but failed (for failures) and queued (for holds) stays.
        for st in JobState::ALL {
            let all = Some(FallbackOn::ALL.to_vec());
            for why in FallbackOn::ALL {
                let expected = matches!(
                    (st, why),
                    (JobState::Failed, FallbackOn::Failed)
                        | (JobState::Queued, FallbackOn::Budget | FallbackOn::Paused)
                );
                assert_eq!(can_hop(&job(st, all.clone()), why), expected, "{st} {why}");
            }
        }
    }

    #[test]
    fn a_reservation_still_held_keeps_the_job_where_it_is() {
        let mut j = job(JobState::Failed, None);
        j.credits_reserved = 5;
        assert_eq!(hop(&mut j, FallbackOn::Failed, "t1"), None);
        assert_eq!(j.provider, "a");
    }
}
