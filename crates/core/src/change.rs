//! A change to one job, given as data, and the rules every store backend
//! applies to it: compare-and-swap on the state, legal transitions only, the
//! history entry, and the ledger arithmetic of [`crate::budget`]. A backend
//! reads the job and the ledger rows [`ledger_periods`] names, calls
//! [`apply`], and writes what it returns atomically; it decides nothing.
//!
//! Why data rather than closures: a change that crosses a process (to
//! PostgreSQL, to another daemon) or is recorded in a test must be a value.

use crate::budget::{LedgerEntry, LedgerOp};
use crate::fallback::{self, FallbackOn};
use crate::model::{Job, JobError, Transition};
use crate::state::{JobState, TransitionError};
use serde::{Deserialize, Serialize};

/// What happens to a job's attempt counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attempts {
    Set(u32),
    Increment,
    /// Never below zero.
    Decrement,
}

/// Field edits applied with a change. `None`: the field is left alone;
/// `Some(None)`: it is cleared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patch {
    pub attempts: Option<Attempts>,
    pub error: Option<Option<JobError>>,
    pub provider_job_id: Option<Option<String>>,
    pub provider_status: Option<Option<String>>,
    pub progress: Option<Option<u8>>,
    pub stage: Option<Option<String>>,
    pub output_urls: Option<Vec<String>>,
    pub output_files: Option<Vec<String>>,
    pub submitted_at: Option<Option<String>>,
    #[serde(default)]
    pub paused_at: Option<Option<String>>,
    #[serde(default)]
    pub paused_ms: Option<u64>,
}

impl Patch {
    pub fn apply(&self, job: &mut Job) {
        match self.attempts {
            Some(Attempts::Set(n)) => job.attempts = n,
            Some(Attempts::Increment) => job.attempts = job.attempts.saturating_add(1),
            Some(Attempts::Decrement) => job.attempts = job.attempts.saturating_sub(1),
            None => {}
        }
        if let Some(v) = &self.error {
            job.error.clone_from(v);
        }
        if let Some(v) = &self.provider_job_id {
            job.provider_job_id.clone_from(v);
        }
        if let Some(v) = &self.provider_status {
            job.provider_status.clone_from(v);
        }
        if let Some(v) = self.progress {
            job.progress = v;
        }
        if let Some(v) = &self.stage {
            job.stage.clone_from(v);
        }
        if let Some(v) = &self.output_urls {
            job.output_urls.clone_from(v);
        }
        if let Some(v) = &self.output_files {
            job.output_files.clone_from(v);
        }
        if let Some(v) = &self.submitted_at {
            job.submitted_at.clone_from(v);
        }
        if let Some(v) = &self.paused_at {
            job.paused_at.clone_from(v);
        }
        if let Some(v) = self.paused_ms {
            job.paused_ms = v;
        }
    }
}

/// A requested change to one job, checked against its current state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub to: JobState,
    /// Recorded in the history when the state changes.
    pub note: String,
    pub ledger: LedgerOp,
    pub patch: Patch,
    /// After the change: move the job on to its next alternative if it
    /// asked to for this reason and the rules of [`crate::fallback`] allow
    /// (recorded as a second history entry); otherwise nothing more.
    #[serde(default)]
    pub fallback: Option<FallbackOn>,
    /// Recorded in the history even when the state stays (a user's pause
    /// or resume at the provider): such a change is never "unchanged".
    #[serde(default)]
    pub noted: bool,
}

impl Change {
    pub fn to(to: JobState, note: impl Into<String>) -> Self {
        Change {
            to,
            note: note.into(),
            ledger: LedgerOp::None,
            patch: Patch::default(),
            fallback: None,
            noted: false,
        }
    }

    pub fn noted(mut self) -> Self {
        self.noted = true;
        self
    }

    pub fn fallback(mut self, why: FallbackOn) -> Self {
        self.fallback = Some(why);
        self
    }

    pub fn ledger(mut self, op: LedgerOp) -> Self {
        self.ledger = op;
        self
    }

    pub fn patch(mut self, patch: Patch) -> Self {
        self.patch = patch;
        self
    }
}

/// Why a change was refused. Nothing is written for a refused change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("job {key} is {actual}, expected {expected}")]
    StateMismatch {
        key: String,
        expected: JobState,
        actual: JobState,
    },
    #[error(transparent)]
    Illegal(#[from] TransitionError),
    #[error(
        "budget exceeded for {provider} in {period}: {used} used of {limit}, {amount} more needed"
    )]
    OverBudget {
        provider: String,
        period: String,
        used: u64,
        limit: u64,
        amount: u64,
    },
}

/// What a backend writes for an accepted change.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A field-only change that changed nothing: write nothing.
    Unchanged(Job),
    Changed {
        /// The job after the change. Its `provider` is another one when the
        /// change moved it to a fallback: the backend moves its index entry
        /// and counts from the provider it had.
        job: Job,
        /// Appended to the job's history, in order: the state change, and
        /// a fallback's hop after it.
        entries: Vec<Transition>,
        /// New values of the ledger rows the change touched, by period, all
        /// of the provider the job had *before* the change (a reservation
        /// is settled or released where it was taken).
        ledger: Vec<(String, LedgerEntry)>,
    },
}

impl Outcome {
    pub fn job(&self) -> &Job {
        match self {
            Outcome::Unchanged(j) | Outcome::Changed { job: j, .. } => j,
        }
    }

    pub fn into_job(self) -> Job {
        match self {
            Outcome::Unchanged(j) | Outcome::Changed { job: j, .. } => j,
        }
    }
}

/// The ledger periods (of `job.provider`, before the change) whose rows [`apply`] reads for
/// `op`: a backend fetches exactly these before calling it.
pub fn ledger_periods(job: &Job, op: &LedgerOp) -> Vec<String> {
    let held = || {
        job.budget_period
            .clone()
            .filter(|_| job.credits_reserved > 0)
    };
    match op {
        LedgerOp::None => vec![],
        LedgerOp::Reserve { period, .. } => {
            let mut v: Vec<String> = held().into_iter().collect();
            if !v.contains(period) {
                v.push(period.clone());
            }
            v
        }
        LedgerOp::Settle { .. } | LedgerOp::Refund { .. } => {
            vec![job.budget_period.clone().unwrap_or_else(|| "total".into())]
        }
        LedgerOp::Release => job.budget_period.clone().into_iter().collect(),
    }
}

/// Applies `change` to `job` (expected in `expect`) at time
/// `now`. `ledger` gives the current row of each period
/// [`ledger_periods`] named. Every check, the budget included, happens
/// before anything is returned to write, so a refused change writes nothing.
///
/// Takes the job by value: a transition is the store's hot path, and a job
/// (its params a JSON tree) is costly to copy; only a field-only change,
/// which may turn out to change nothing, keeps a copy to compare with.
pub fn apply(
    mut job: Job,
    expect: JobState,
    change: &Change,
    now: &str,
    ledger: &dyn Fn(&str) -> LedgerEntry,
) -> Result<Outcome, Refusal> {
    if job.state != expect {
        return Err(Refusal::StateMismatch {
            key: job.key,
            expected: expect,
            actual: job.state,
        });
    }
    if change.to != expect && !expect.can_become(change.to) {
        return Err(Refusal::Illegal(TransitionError {
            key: job.key,
            from: expect,
            to: change.to,
        }));
    }
    let field_only = change.to == expect && change.ledger == LedgerOp::None && !change.noted;
    let before = field_only.then(|| job.clone());
    change.patch.apply(&mut job);
    job.state = change.to;
    if change.to != JobState::Queued {
        job.held_by = None;
    }
    let rows = plan_ledger(&mut job, &change.ledger, ledger)?;
    let mut entries: Vec<Transition> = (change.to != expect || change.noted)
        .then(|| Transition {
            at: now.to_string(),
            from: Some(expect),
            to: change.to,
            note: change.note.clone(),
        })
        .into_iter()
        .collect();
    if let Some(why) = change.fallback {
        let from = job.state;
        if let Some(note) = fallback::hop(&mut job, why, now) {
            entries.push(Transition {
                at: now.to_string(),
                from: Some(from),
                to: job.state,
                note,
            });
        }
    }
    // A poll that changed nothing writes nothing: idle polling should not
    // cost a store write (and a flush's share) per job.
    if before.as_ref() == Some(&job) {
        return Ok(Outcome::Unchanged(job));
    }
    job.updated_at = now.to_string();
    Ok(Outcome::Changed {
        job,
        entries,
        ledger: rows,
    })
}

/// The ledger rows a change writes, with the job's credit fields updated;
/// refuses if a reservation would exceed the limit.
fn plan_ledger(
    job: &mut Job,
    op: &LedgerOp,
    lookup: &dyn Fn(&str) -> LedgerEntry,
) -> Result<Vec<(String, LedgerEntry)>, Refusal> {
    let mut rows: Vec<(String, LedgerEntry)> = Vec::new();
    let get = |rows: &Vec<(String, LedgerEntry)>, p: &str| {
        rows.iter()
            .find(|(rp, _)| rp == p)
            .map_or_else(|| lookup(p), |(_, e)| *e)
    };
    let set = |rows: &mut Vec<(String, LedgerEntry)>, p: String, e: LedgerEntry| match rows
        .iter_mut()
        .find(|(rp, _)| *rp == p)
    {
        Some(slot) => slot.1 = e,
        None => rows.push((p, e)),
    };
    match op {
        LedgerOp::None => {}
        LedgerOp::Reserve {
            period,
            amount,
            limit,
        } => {
            // A job never holds two reservations: release any old one.
            if let Some(old) = job
                .budget_period
                .clone()
                .filter(|_| job.credits_reserved > 0)
            {
                let mut e = get(&rows, &old);
                e.reserved = e.reserved.saturating_sub(job.credits_reserved);
                set(&mut rows, old, e);
                job.credits_reserved = 0;
            }
            let mut e = get(&rows, period);
            if let Some(limit) = *limit {
                if e.used().saturating_add(*amount) > limit {
                    return Err(Refusal::OverBudget {
                        provider: job.provider.clone(),
                        period: period.clone(),
                        used: e.used(),
                        limit,
                        amount: *amount,
                    });
                }
            }
            e.reserved = e.reserved.saturating_add(*amount);
            set(&mut rows, period.clone(), e);
            job.credits_reserved = *amount;
            job.budget_period = Some(period.clone());
        }
        LedgerOp::Settle { charged } => {
            let period = job.budget_period.clone().unwrap_or_else(|| "total".into());
            let mut e = get(&rows, &period);
            e.reserved = e.reserved.saturating_sub(job.credits_reserved);
            e.charged = e.charged.saturating_add(*charged);
            set(&mut rows, period.clone(), e);
            job.credits_reserved = 0;
            job.credits_charged = job.credits_charged.saturating_add(*charged);
            job.budget_period = Some(period);
        }
        LedgerOp::Release => {
            if let Some(period) = job.budget_period.clone() {
                let mut e = get(&rows, &period);
                e.reserved = e.reserved.saturating_sub(job.credits_reserved);
                set(&mut rows, period, e);
            }
            job.credits_reserved = 0;
        }
        LedgerOp::Refund { amount } => {
            let period = job.budget_period.clone().unwrap_or_else(|| "total".into());
            let amount = (*amount).min(job.credits_charged);
            let mut e = get(&rows, &period);
            e.charged = e.charged.saturating_sub(amount);
            set(&mut rows, period, e);
            job.credits_charged -= amount;
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::JobSpec;

    fn job(state: JobState) -> Job {
        let spec = JobSpec {
            key: "k".into(),
            provider: "p".into(),
            ..JobSpec::default()
        };
        let mut j = Job::from_spec(spec, 1, "t0");
        j.state = state;
        j
    }

    #[test]
    fn the_periods_read_are_the_periods_written() {
        let mut j = job(JobState::Queued);
        let reserve = LedgerOp::Reserve {
            period: "2026-12".into(),
            amount: 5,
            limit: Some(10),
        };
        let change = Change::to(JobState::Submitting, "d").ledger(reserve.clone());
        let out = apply(j.clone(), JobState::Queued, &change, "t1", &|_| {
            LedgerEntry::default()
        })
        .unwrap();
        let Outcome::Changed {
            job: after, ledger, ..
        } = out
        else {
            panic!("changed")
        };
        assert_eq!(ledger_periods(&j, &reserve), vec!["2026-12".to_string()]);
        assert_eq!(
            ledger,
            vec![(
                "2026-12".into(),
                LedgerEntry {
                    reserved: 5,
                    charged: 0
                }
            )]
        );
        // A second reservation in a new period releases the first.
        j = after;
        j.state = JobState::Queued;
        let next = LedgerOp::Reserve {
            period: "2027-01".into(),
            amount: 3,
            limit: None,
        };
        assert_eq!(
            ledger_periods(&j, &next),
            vec!["2026-12".to_string(), "2027-01".to_string()]
        );
    }

    #[test]
    fn adopting_an_uncertain_job_moves_its_reservation_to_this_period_whatever_the_limit() {
        // Uncertain since last month, holding 40 there; this month is full.
        let mut j = job(JobState::Uncertain);
        j.credits_reserved = 40;
        j.budget_period = Some("2026-11".into());
        let rows = |p: &str| match p {
            "2026-11" => LedgerEntry {
                reserved: 40,
                charged: 0,
            },
            _ => LedgerEntry {
                reserved: 0,
                charged: 100,
            },
        };
        let adopt = Change::to(JobState::Pending, "adopted").ledger(LedgerOp::Reserve {
            period: "2026-12".into(),
            amount: 40,
            limit: None,
        });
        let Outcome::Changed {
            job: after, ledger, ..
        } = apply(j.clone(), JobState::Uncertain, &adopt, "t1", &rows).unwrap()
        else {
            panic!("changed")
        };
        assert_eq!(after.state, JobState::Pending);
        assert_eq!(after.budget_period.as_deref(), Some("2026-12"));
        assert_eq!(after.credits_reserved, 40);
        assert!(ledger.contains(&("2026-11".into(), LedgerEntry::default())));
        assert!(ledger.contains(&(
            "2026-12".into(),
            LedgerEntry {
                reserved: 40,
                charged: 100
            }
        )));
        // With the limit, the same change would be refused.
        let limited = Change::to(JobState::Pending, "adopted").ledger(LedgerOp::Reserve {
            period: "2026-12".into(),
            amount: 40,
            limit: Some(100),
        });
        assert!(matches!(
            apply(j, JobState::Uncertain, &limited, "t1", &rows),
            Err(Refusal::OverBudget { .. })
        ));
    }

    #[test]
    fn a_field_only_change_that_changes_nothing_writes_nothing() {
        let j = job(JobState::Pending);
        let patch = Patch {
            provider_status: Some(None),
            ..Patch::default()
        };
        let change = Change::to(JobState::Pending, "").patch(patch);
        let out = apply(j.clone(), JobState::Pending, &change, "t1", &|_| {
            LedgerEntry::default()
        })
        .unwrap();
        assert!(matches!(out, Outcome::Unchanged(_)));
    }

    #[test]
    fn a_failure_with_a_fallback_is_recorded_then_hops_in_one_change() {
        let mut j = job(JobState::Processing);
        j.fallback = vec![crate::Alternative {
            provider: "q".into(),
            params: serde_json::json!({"prompt": "x"}),
        }];
        j.credits_reserved = 5;
        j.budget_period = Some("2026-12".into());
        let change = Change::to(JobState::Failed, "FAILED (E: broke)")
            .ledger(LedgerOp::Release)
            .fallback(FallbackOn::Failed);
        // The rows read are the provider's the job had: its reservation.
        assert_eq!(ledger_periods(&j, &change.ledger), vec!["2026-12"]);
        let reserved = LedgerEntry {
            reserved: 5,
            charged: 0,
        };
        let out = apply(j, JobState::Processing, &change, "t1", &|_| reserved).unwrap();
        let Outcome::Changed {
            job,
            entries,
            ledger,
        } = out
        else {
            panic!("changed")
        };
        let hops: Vec<_> = entries.iter().map(|e| (e.from, e.to)).collect();
        assert_eq!(
            hops,
            vec![
                (Some(JobState::Processing), JobState::Failed),
                (Some(JobState::Failed), JobState::Queued)
            ]
        );
        assert_eq!(
            entries[1].note,
            "fallback (failed): p -> q (alternative 1 of 1)"
        );
        // Released at p, in p's row; nothing reserved at q yet.
        assert_eq!(ledger, vec![("2026-12".into(), LedgerEntry::default())]);
        assert_eq!((job.provider.as_str(), job.state), ("q", JobState::Queued));
        assert_eq!((job.credits_reserved, job.budget_period), (0, None));
        assert_eq!(job.tried[0].provider, "p");
    }

    #[test]
    fn an_uncertain_outcome_never_hops() {
        let mut j = job(JobState::Submitting);
        j.fallback = vec![crate::Alternative {
            provider: "q".into(),
            params: serde_json::json!({}),
        }];
        j.fallback_on = FallbackOn::ALL.to_vec();
        for why in FallbackOn::ALL {
            let change = Change::to(JobState::Uncertain, "stopped mid-create").fallback(why);
            let out = apply(j.clone(), JobState::Submitting, &change, "t1", &|_| {
                LedgerEntry::default()
            })
            .unwrap();
            assert_eq!(out.job().state, JobState::Uncertain, "{why}");
            assert_eq!(out.job().provider, "p", "{why}");
        }
    }

    #[test]
    fn a_hold_that_the_job_did_not_ask_to_leave_writes_nothing() {
        let mut j = job(JobState::Queued);
        j.fallback = vec![crate::Alternative {
            provider: "q".into(),
            params: serde_json::json!({}),
        }];
        let stay = Change::to(JobState::Queued, "").fallback(FallbackOn::Budget);
        let out = apply(j.clone(), JobState::Queued, &stay, "t1", &|_| {
            LedgerEntry::default()
        })
        .unwrap();
        assert!(matches!(out, Outcome::Unchanged(_)));
        j.fallback_on = vec![FallbackOn::Budget];
        let out = apply(j, JobState::Queued, &stay, "t1", &|_| {
            LedgerEntry::default()
        })
        .unwrap();
        let Outcome::Changed { job, entries, .. } = out else {
            panic!("changed")
        };
        assert_eq!(job.provider, "q");
        assert_eq!(entries.len(), 1);
        assert_eq!(
            (entries[0].from, entries[0].to),
            (Some(JobState::Queued), JobState::Queued)
        );
    }

    #[test]
    fn a_noted_change_is_in_the_history_though_the_state_stays() {
        let j = job(JobState::Processing);
        let change = Change::to(JobState::Processing, "paused by user").noted();
        let out = apply(j, JobState::Processing, &change, "t1", &|_| {
            LedgerEntry::default()
        })
        .unwrap();
        let Outcome::Changed { entries, .. } = out else {
            panic!("changed")
        };
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].note, "paused by user");
        assert_eq!(entries[0].from, Some(JobState::Processing));
    }
}
