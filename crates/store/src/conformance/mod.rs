//! The conformance suite: the rules every [`Store`] backend must keep,
//! written once and run against each backend in that backend's own tests
//! (sled in `cargo test`, PostgreSQL where a database is at hand).
//!
//! A backend's test passes in a [`Backend`] (how to open a fresh, empty
//! store, how to open the same data again after dropping a handle, and
//! what a crash would leave of it) and runs either every case through
//! [`run_all`], or each case as its own test, by name, through [`cases`]
//! or the functions themselves.
//!
//! Every case returns `Err` naming the broken rule and the `file:line` of
//! the check, rather than panicking, so that [`run_all`] can report every
//! failed case in one run. The races need parallel tasks: run the suite on
//! a multi-thread tokio runtime (the race cases refuse a current-thread
//! one, which would prove nothing).
//!
//! A case that is green must be able to go red: each was checked once
//! against a backend with its rule broken on purpose.

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::FutureExt;
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::{Change, Job, JobSpec, JobState, LedgerEntry, Transition};

use crate::{Claim, Claimed, Filter, IntakeReport, Lease, Owner, Store, StoreError};

mod budget;
mod claim;
mod durability;
mod fallback;
mod fleet;
mod intake;
mod rules;
mod stats;

pub use budget::{
    budget_holds_under_concurrent_claims, budget_holds_under_concurrent_reservations,
    budget_holds_when_claims_and_reservations_race, ledger_arithmetic_settle_release_refund,
    periods_roll_over,
};
pub use claim::{
    claim_stops_at_the_first_job_over_budget, claim_stops_where_admit_refuses,
    claim_takes_priority_then_fifo_per_provider, claimed_jobs_are_submitting_and_reserved,
    concurrent_claims_never_share_a_job,
};
pub use durability::{
    counts_match_a_recount, recover_returns_exactly_the_live_jobs,
    synced_writes_survive_a_crash_and_a_reopen, unsynced_writes_are_lost_whole_or_kept_whole,
};
pub use fallback::a_fallback_moves_the_job_to_the_next_provider;
pub use fleet::{
    a_hold_stops_permits_and_claims_and_survives_a_reopen, a_stale_owner_is_fenced_off,
    claims_and_permits_never_exceed_the_gate, claims_keep_to_the_in_flight_cap,
    daemons_lists_only_live_leases, hints_reach_the_other_daemons, pauses_survive_a_reopen,
    renew_keeps_a_live_epoch_and_raises_an_expired_one,
    rescue_takes_only_live_jobs_of_expired_leases,
};
pub use intake::{concurrent_intakes_accept_each_key_once, intake_is_all_or_nothing_with_dedup};
pub use rules::{
    cas_refuses_a_stale_expected_state, every_transition_follows_the_state_machine,
    field_only_changes_write_without_history, history_records_each_state_change_once,
};
pub use stats::saved_stats_survive_a_sync_and_a_reopen;

/// How the suite gets stores of one backend.
#[async_trait]
pub trait Backend: Send + Sync {
    /// A fresh, empty store that no other case sees.
    async fn open(&self) -> Result<Arc<dyn Store>, String>;
    /// Drops `old` (the suite hands over its last handle) and opens the
    /// same data again, as a clean restart of the daemon would.
    async fn reopen(&self, old: Arc<dyn Store>) -> Result<Arc<dyn Store>, String>;
    /// Opens the data as a crash (kill -9, power loss) at this instant
    /// would leave it, and drops `old`: only what was synced is promised
    /// to be there. A backend that writes on a clean close (sled flushes
    /// when its last handle goes) must not do so here, or a `sync` that
    /// does nothing would go unnoticed; one whose every accepted write is
    /// already durable may keep the default, a plain reopen.
    async fn crash(&self, old: Arc<dyn Store>) -> Result<Arc<dyn Store>, String> {
        self.reopen(old).await
    }
    /// A second store on the same data as `of`, opened as another daemon
    /// of a fleet would open it. `None` for a single-process backend: the
    /// cases that need two daemons then say they were skipped, and pass.
    async fn peer(&self, of: &Arc<dyn Store>) -> Option<Result<Arc<dyn Store>, String>> {
        let _ = of;
        None
    }
}

/// What a case returns: `Err` says which rule broke, and where.
pub type CaseResult = Result<(), String>;

/// One case of the suite, by name.
pub struct Case {
    pub name: &'static str,
    pub run: for<'a> fn(&'a dyn Backend) -> BoxFuture<'a, CaseResult>,
}

macro_rules! case_list {
    ($($name:ident),* $(,)?) => {
        /// Every case, in the order [`run_all`] runs them.
        pub fn cases() -> Vec<Case> {
            vec![$(Case { name: stringify!($name), run: |b| Box::pin($name(b)) }),*]
        }
    };
}

/// Calls the macro `$m` with every case's name, in suite order: the one
/// list of cases, so a backend's tests run each case as a test of its own
/// and none can be forgotten (`conformance_cases!(my_backend_cases)`).
#[macro_export]
macro_rules! conformance_cases {
    ($m:ident) => {
        $m!(
            intake_is_all_or_nothing_with_dedup,
            concurrent_intakes_accept_each_key_once,
            cas_refuses_a_stale_expected_state,
            every_transition_follows_the_state_machine,
            field_only_changes_write_without_history,
            history_records_each_state_change_once,
            budget_holds_under_concurrent_claims,
            budget_holds_under_concurrent_reservations,
            budget_holds_when_claims_and_reservations_race,
            ledger_arithmetic_settle_release_refund,
            periods_roll_over,
            claim_takes_priority_then_fifo_per_provider,
            claimed_jobs_are_submitting_and_reserved,
            claim_stops_at_the_first_job_over_budget,
            claim_stops_where_admit_refuses,
            concurrent_claims_never_share_a_job,
            synced_writes_survive_a_crash_and_a_reopen,
            unsynced_writes_are_lost_whole_or_kept_whole,
            counts_match_a_recount,
            recover_returns_exactly_the_live_jobs,
            saved_stats_survive_a_sync_and_a_reopen,
            a_fallback_moves_the_job_to_the_next_provider,
            claims_and_permits_never_exceed_the_gate,
            a_hold_stops_permits_and_claims_and_survives_a_reopen,
            pauses_survive_a_reopen,
            claims_keep_to_the_in_flight_cap,
            renew_keeps_a_live_epoch_and_raises_an_expired_one,
            daemons_lists_only_live_leases,
            a_stale_owner_is_fenced_off,
            rescue_takes_only_live_jobs_of_expired_leases,
            hints_reach_the_other_daemons,
        );
    };
}

conformance_cases!(case_list);

/// Runs every case, one after the other, and reports every one that
/// failed (or panicked) by name. `Ok` only when all passed.
pub async fn run_all(backend: &dyn Backend) -> Result<(), String> {
    let all = cases();
    let mut failed = Vec::new();
    for case in &all {
        // A panicking backend fails its case, not the whole report.
        match AssertUnwindSafe((case.run)(backend)).catch_unwind().await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed.push(format!("{}: {e}", case.name)),
            Err(panic) => failed.push(format!("{}: panicked: {}", case.name, panic_text(&*panic))),
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{} of {} conformance cases failed:\n{}",
        failed.len(),
        all.len(),
        failed.join("\n")
    ))
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}

/// Returns `Err` (with the place of the check) unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}", file!(), line!(), format!($($msg)+)));
        }
    };
}

/// Returns `Err` showing both values unless they are equal.
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($msg:tt)+) => {
        match (&$left, &$right) {
            (l, r) => {
                if l != r {
                    return Err(format!(
                        "{}:{}: {}\n  found:    {:?}\n  expected: {:?}",
                        file!(),
                        line!(),
                        format!($($msg)+),
                        l,
                        r
                    ));
                }
            }
        }
    };
}

pub(crate) use {ensure, ensure_eq};

/// The owner every case claims as.
const OWNER: &str = "conformance";
/// The history note of every claim the suite makes.
const CLAIMED: &str = "claimed";

pub(crate) fn spec(key: &str, provider: &str, priority: i32) -> JobSpec {
    JobSpec {
        key: key.into(),
        provider: provider.into(),
        priority,
        params: serde_json::json!({"key": key}),
        ..JobSpec::default()
    }
}

/// The legal way from `queued` to `state` (a job just taken in is
/// queued).
pub(crate) fn path_to(state: JobState) -> &'static [JobState] {
    use JobState::*;
    match state {
        Queued => &[],
        Submitting => &[Submitting],
        Pending => &[Submitting, Pending],
        Processing => &[Submitting, Processing],
        Completed => &[Submitting, Pending, Completed],
        Failed => &[Submitting, Failed],
        Cancelled => &[Cancelled],
        Uncertain => &[Submitting, Uncertain],
    }
}

/// Refuses a current-thread runtime: a race between tasks that never run
/// at the same time proves nothing.
pub(crate) fn require_parallel() -> CaseResult {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread => Ok(()),
        _ => Err("this case races tasks: run the suite on a multi-thread tokio runtime".into()),
    }
}

/// Jobs per (provider, state), zeros left out.
pub(crate) type Tally = BTreeMap<(String, JobState), u64>;

/// A store handle whose calls that must succeed say which call failed.
#[derive(Clone)]
pub(crate) struct Handle {
    pub(crate) store: Arc<dyn Store>,
}

fn failed(what: impl std::fmt::Display, e: StoreError) -> String {
    format!("{what}: {e}")
}

impl Handle {
    pub(crate) async fn open(b: &dyn Backend) -> Result<Handle, String> {
        Ok(Handle {
            store: b
                .open()
                .await
                .map_err(|e| format!("opening a store: {e}"))?,
        })
    }

    /// Syncs, then crashes: what the store holds now must survive.
    pub(crate) async fn restart(self, b: &dyn Backend) -> Result<Handle, String> {
        self.sync().await?;
        self.crash(b).await
    }

    /// Crashes without a sync first.
    pub(crate) async fn crash(self, b: &dyn Backend) -> Result<Handle, String> {
        let store = b
            .crash(self.store)
            .await
            .map_err(|e| format!("opening the store after a crash: {e}"))?;
        Ok(Handle { store })
    }

    /// Syncs, gives this handle up and opens the same data again.
    pub(crate) async fn reopen(self, b: &dyn Backend) -> Result<Handle, String> {
        self.sync().await?;
        let store = b
            .reopen(self.store)
            .await
            .map_err(|e| format!("reopening the store: {e}"))?;
        Ok(Handle { store })
    }

    pub(crate) async fn intake(&self, specs: Vec<JobSpec>) -> Result<IntakeReport, String> {
        self.store
            .intake(specs)
            .await
            .map_err(|e| failed("intake", e))
    }

    /// The job, which must exist.
    pub(crate) async fn job(&self, key: &str) -> Result<Job, String> {
        match self.store.get(key).await {
            Ok(Some(j)) => Ok(j),
            Ok(None) => Err(format!("job {key} is missing")),
            Err(e) => Err(failed(format_args!("get {key}"), e)),
        }
    }

    pub(crate) async fn history(&self, key: &str) -> Result<Vec<Transition>, String> {
        self.store
            .history(key)
            .await
            .map_err(|e| failed(format_args!("history of {key}"), e))
    }

    pub(crate) async fn list(&self, filter: &Filter) -> Result<Vec<Job>, String> {
        self.store
            .list(filter)
            .await
            .map_err(|e| failed(format_args!("list {filter:?}"), e))
    }

    pub(crate) async fn all(&self) -> Result<Vec<Job>, String> {
        self.list(&Filter::default()).await
    }

    /// A change that must be accepted.
    pub(crate) async fn apply(
        &self,
        key: &str,
        expect: JobState,
        change: Change,
    ) -> Result<Job, String> {
        let what = format!("{key}: {expect} -> {} ({:?})", change.to, change.ledger);
        self.store
            .apply(key, expect, change)
            .await
            .map_err(|e| failed(what, e))
    }

    /// A change that must be refused: the error.
    pub(crate) async fn refused(
        &self,
        key: &str,
        expect: JobState,
        change: Change,
    ) -> Result<StoreError, String> {
        let what = format!("{key}: {expect} -> {} ({:?})", change.to, change.ledger);
        match self.store.apply(key, expect, change).await {
            Ok(j) => Err(format!(
                "{what} was accepted (now {}), must be refused",
                j.state
            )),
            Err(e) => Ok(e),
        }
    }

    /// Takes a queued job along [`path_to`] `state`.
    pub(crate) async fn drive(&self, key: &str, state: JobState) -> Result<Job, String> {
        let mut job = self.job(key).await?;
        for &next in path_to(state) {
            job = self
                .apply(key, job.state, Change::to(next, format!("to {next}")))
                .await?;
        }
        Ok(job)
    }

    pub(crate) async fn ledger(&self, provider: &str, period: &str) -> Result<LedgerEntry, String> {
        self.store
            .ledger(provider, period)
            .await
            .map_err(|e| failed(format_args!("ledger of {provider} in {period}"), e))
    }

    pub(crate) async fn lease(&self) -> Result<Lease, String> {
        self.store
            .renew(&Owner(OWNER.into()), Duration::from_secs(300))
            .await
            .map_err(|e| failed("renew", e))
    }

    /// Claims up to `limit` jobs of `provider`, `estimate` credits each.
    pub(crate) async fn claim(
        &self,
        provider: &str,
        limit: usize,
        period: &str,
        budget: Option<u64>,
        estimate: u64,
    ) -> Result<Claimed, String> {
        let lease = self.lease().await?;
        self.store
            .claim(Claim {
                lease: &lease,
                provider,
                limit,
                period,
                budget,
                admit: &|_: &Job| Some(estimate),
                note: CLAIMED,
                gate: None,
                max_in_flight: None,
            })
            .await
            .map_err(|e| failed(format_args!("claim of {provider}"), e))
    }

    pub(crate) async fn sync(&self) -> Result<(), String> {
        self.store.sync().await.map_err(|e| failed("sync", e))
    }

    /// `counts()`, zeros left out; a (provider, state) reported twice is an
    /// error, and so is a provider with jobs whose row misses a state
    /// (the trait promises every state of every provider that has jobs).
    pub(crate) async fn counts(&self) -> Result<Tally, String> {
        let rows = self.store.counts().await.map_err(|e| failed("counts", e))?;
        let mut out = Tally::new();
        let mut seen = std::collections::BTreeSet::new();
        for c in &rows {
            if !seen.insert((c.provider.clone(), c.state)) {
                return Err(format!("counts() reports {} {} twice", c.provider, c.state));
            }
            if c.jobs > 0 {
                out.insert((c.provider.clone(), c.state), c.jobs);
            }
        }
        for (provider, _) in out.keys() {
            for state in JobState::ALL {
                if !seen.contains(&(provider.clone(), state)) {
                    return Err(format!("counts() has no row for {provider} {state}"));
                }
            }
        }
        Ok(out)
    }
}

/// Jobs per (provider, state) as `jobs` has them.
pub(crate) fn tally(jobs: &[Job]) -> Tally {
    let mut out = Tally::new();
    for j in jobs {
        *out.entry((j.provider.clone(), j.state)).or_default() += 1;
    }
    out
}

/// Joins spawned tasks, in order; a task that panicked or failed fails
/// the case.
pub(crate) async fn join_all<T: Send + 'static>(
    tasks: Vec<tokio::task::JoinHandle<Result<T, String>>>,
) -> Result<Vec<T>, String> {
    let mut out = Vec::with_capacity(tasks.len());
    for (i, t) in tasks.into_iter().enumerate() {
        out.push(t.await.map_err(|e| format!("task {i}: {e}"))??);
    }
    Ok(out)
}
