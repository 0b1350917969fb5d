//! Claims: strict queue order (priority, then FIFO, per provider), what a
//! claimed job looks like, where a claim stops, and that racing claims
//! never share a job.

use super::{
    ensure, ensure_eq, join_all, require_parallel, spec, Backend, CaseResult, Handle, CLAIMED,
};
use crate::{Claim, Claimed, Filter};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use switchyard_core::{Change, Job, JobError, JobState, LedgerOp, Patch};

fn keys(c: &Claimed) -> Vec<&str> {
    c.jobs.iter().map(|j| j.key.as_str()).collect()
}

/// Highest priority first, FIFO within a priority (across batches and
/// across a restart), one provider at a time, at most `limit`; a requeued
/// job keeps its place.
pub async fn claim_takes_priority_then_fifo_per_provider(b: &dyn Backend) -> CaseResult {
    let h = Handle::open(b).await?;
    h.intake(vec![
        spec("low1", "p", -1),
        spec("mid1", "p", 0),
        spec("other", "q", 9),
        spec("high", "p", 7),
        spec("mid2", "p", 0),
    ])
    .await?;
    h.intake(vec![
        spec("mid3", "p", 0),
        spec("top", "p", 100),
        spec("neg", "p", -5),
    ])
    .await?;
    let h = h.restart(b).await?;
    h.intake(vec![spec("mid4", "p", 0)]).await?;

    let c = h.claim("p", 2, "total", None, 1).await?;
    ensure_eq!(keys(&c), ["top", "high"], "the first two of p");
    ensure!(
        !c.over_budget && !c.not_admitted,
        "a claim that stopped at its limit: {c:?}"
    );
    let c = h.claim("p", 3, "total", None, 1).await?;
    ensure_eq!(
        keys(&c),
        ["mid1", "mid2", "mid3"],
        "FIFO within a priority, across batches"
    );

    // Requeued, mid1 and mid2 go back to their places, ahead of mid4.
    for k in ["mid2", "mid1"] {
        h.apply(
            k,
            JobState::Submitting,
            Change::to(JobState::Queued, "busy").ledger(LedgerOp::Release),
        )
        .await?;
    }
    let c = h.claim("p", 10, "total", None, 1).await?;
    ensure_eq!(
        keys(&c),
        ["mid1", "mid2", "mid4", "low1", "neg"],
        "the rest of p: requeued jobs keep their place, then FIFO across a restart, then lower priorities"
    );
    let c = h.claim("q", 10, "total", None, 1).await?;
    ensure_eq!(keys(&c), ["other"], "q's own queue");
    let c = h.claim("p", 10, "total", None, 1).await?;
    ensure!(
        c.jobs.is_empty() && !c.over_budget,
        "an empty queue: nothing taken, not over budget: {c:?}"
    );
    let c = h.claim("nobody", 10, "total", None, 1).await?;
    ensure!(c.jobs.is_empty(), "a provider without jobs");
    Ok(())
}

/// A claimed job is `submitting`, its attempt counted, its estimate
/// reserved in the claim's period, its error cleared, and its history
/// records the move with the claim's note; the store agrees with what the
/// claim returned.
pub async fn claimed_jobs_are_submitting_and_reserved(b: &dyn Backend) -> CaseResult {
    let h = Handle::open(b).await?;
    h.intake(vec![
        spec("a", "p", 0),
        spec("bb", "p", 0),
        spec("ccc", "p", 0),
    ])
    .await?;
    // a is claimed, fails with an error and is retried: its second claim
    // is its second attempt, and clears the error.
    let first = h.claim("p", 1, "2026-11", None, 5).await?;
    ensure_eq!(keys(&first), ["a"], "the first claim");
    h.apply(
        "a",
        JobState::Submitting,
        Change::to(JobState::Failed, "broke")
            .ledger(LedgerOp::Release)
            .patch(Patch {
                error: Some(Some(JobError::new("E_X", "broke"))),
                ..Patch::default()
            }),
    )
    .await?;
    ensure!(h.job("a").await?.error.is_some(), "a failed with an error");
    h.apply("a", JobState::Failed, Change::to(JobState::Queued, "retry"))
        .await?;
    let lease = h.lease().await?;
    // The estimate depends on the job: its key's length.
    let estimate = |j: &Job| Some(10 * j.key.len() as u64);
    let c = h
        .store
        .claim(Claim {
            lease: &lease,
            provider: "p",
            limit: 10,
            period: "2026-12",
            budget: Some(1000),
            admit: &estimate,
            note: CLAIMED,
            gate: None,
            max_in_flight: None,
        })
        .await
        .map_err(|e| format!("claim: {e}"))?;
    ensure_eq!(keys(&c), ["a", "bb", "ccc"], "claimed");
    for j in &c.jobs {
        let want_attempts = if j.key == "a" { 2 } else { 1 };
        ensure_eq!(j.state, JobState::Submitting, "{} is submitting", j.key);
        ensure_eq!(j.attempts, want_attempts, "{}: attempts counted", j.key);
        ensure_eq!(
            (j.credits_reserved, j.budget_period.as_deref()),
            (10 * j.key.len() as u64, Some("2026-12")),
            "{}: its estimate reserved in the claim's period",
            j.key
        );
        ensure!(
            j.error.is_none(),
            "{}: a claim clears the last error",
            j.key
        );
        ensure_eq!(&h.job(&j.key).await?, j, "{}: stored as returned", j.key);
        let hist = h.history(&j.key).await?;
        let last = hist
            .last()
            .ok_or_else(|| format!("{}: no history", j.key))?;
        ensure_eq!(
            (last.from, last.to, last.note.as_str()),
            (Some(JobState::Queued), JobState::Submitting, CLAIMED),
            "{}: the claim's history entry",
            j.key
        );
    }
    let e = h.ledger("p", "2026-12").await?;
    ensure_eq!(
        (e.reserved, e.charged),
        (60, 0),
        "the ledger holds the three estimates"
    );
    ensure!(
        h.list(&Filter {
            state: Some(JobState::Queued),
            provider: None
        })
        .await?
        .is_empty(),
        "no claimed job is still listed as queued"
    );
    Ok(())
}

/// The first job in queue order that does not fit stops the claim
/// (`over_budget`), and the jobs behind it wait even if they would fit:
/// strict order, no skipping.
pub async fn claim_stops_at_the_first_job_over_budget(b: &dyn Backend) -> CaseResult {
    let h = Handle::open(b).await?;
    h.intake(vec![
        spec("j1", "p", 0),
        spec("j2", "p", 0),
        spec("j3", "p", 0),
    ])
    .await?;
    let lease = h.lease().await?;
    let estimate = |j: &Job| {
        Some(match j.key.as_str() {
            "j1" => 30,
            "j2" => 50,
            _ => 10,
        })
    };
    let claim = |lease| Claim {
        lease,
        provider: "p",
        limit: 10,
        period: "total",
        budget: Some(60),
        admit: &estimate,
        note: CLAIMED,
        gate: None,
        max_in_flight: None,
    };
    let c = h
        .store
        .claim(claim(&lease))
        .await
        .map_err(|e| e.to_string())?;
    ensure_eq!(keys(&c), ["j1"], "only j1 fits before j2");
    ensure!(c.over_budget, "the claim says it stopped at the budget");
    for k in ["j2", "j3"] {
        let j = h.job(k).await?;
        ensure_eq!(
            (j.state, j.attempts, j.credits_reserved),
            (JobState::Queued, 0, 0),
            "{k} waits behind the job that did not fit"
        );
    }
    let c = h
        .store
        .claim(claim(&lease))
        .await
        .map_err(|e| e.to_string())?;
    ensure!(c.jobs.is_empty() && c.over_budget, "still full: {c:?}");
    // j1 fails: its credits come back, and j2 then j3 fit (50 + 10 = 60).
    h.apply(
        "j1",
        JobState::Submitting,
        Change::to(JobState::Failed, "x").ledger(LedgerOp::Release),
    )
    .await?;
    let c = h
        .store
        .claim(claim(&lease))
        .await
        .map_err(|e| e.to_string())?;
    ensure_eq!(keys(&c), ["j2", "j3"], "after the release");
    ensure!(!c.over_budget, "everything fitted: {c:?}");
    let e = h.ledger("p", "total").await?;
    ensure_eq!((e.reserved, e.charged), (60, 0), "the budget, exactly");
    Ok(())
}

/// `admit` is asked in queue order; the first `None` stops the claim
/// (`not_admitted`) and leaves that job queued, untouched.
pub async fn claim_stops_where_admit_refuses(b: &dyn Backend) -> CaseResult {
    let h = Handle::open(b).await?;
    h.intake(vec![
        spec("a1", "p", 0),
        spec("a2", "p", 0),
        spec("a3", "p", 0),
        spec("a4", "p", 0),
    ])
    .await?;
    let lease = h.lease().await?;
    let asked = Mutex::new(Vec::new());
    let admit = |j: &Job| {
        let mut asked = asked.lock().unwrap_or_else(|p| p.into_inner());
        asked.push(j.key.clone());
        (asked.len() <= 2).then_some(5)
    };
    let c = h
        .store
        .claim(Claim {
            lease: &lease,
            provider: "p",
            limit: 10,
            period: "total",
            budget: None,
            admit: &admit,
            note: CLAIMED,
            gate: None,
            max_in_flight: None,
        })
        .await
        .map_err(|e| e.to_string())?;
    ensure_eq!(keys(&c), ["a1", "a2"], "admitted");
    ensure!(c.not_admitted && !c.over_budget, "stopped by admit: {c:?}");
    let asked = asked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    ensure_eq!(
        asked,
        ["a1", "a2", "a3"],
        "admit asked in queue order, until it refused"
    );
    for k in ["a3", "a4"] {
        let j = h.job(k).await?;
        ensure_eq!(
            (j.state, j.attempts, j.credits_reserved),
            (JobState::Queued, 0, 0),
            "{k} left queued"
        );
    }
    let e = h.ledger("p", "total").await?;
    ensure_eq!(e.reserved, 10, "only the admitted jobs reserved");
    Ok(())
}

/// Sixteen claimers empty a queue of 200 at once: every job is claimed
/// exactly once, with one attempt.
pub async fn concurrent_claims_never_share_a_job(b: &dyn Backend) -> CaseResult {
    require_parallel()?;
    const JOBS: usize = 200;
    const TASKS: usize = 16;
    let h = Handle::open(b).await?;
    let all: Vec<String> = (0..JOBS).map(|i| format!("cc-{i:03}")).collect();
    h.intake(
        all.iter()
            .enumerate()
            .map(|(i, k)| spec(k, "cc", (i % 4) as i32))
            .collect(),
    )
    .await?;
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (h, barrier) = (h.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut mine = Vec::new();
            for _ in 0..10_000 {
                let c = h.claim("cc", 1 + t % 5, "total", None, 1).await?;
                if c.jobs.is_empty() {
                    // Empty because others took what this claim looked at,
                    // or because the queue is empty.
                    let queued = h.counts().await?;
                    if !queued.contains_key(&("cc".to_string(), JobState::Queued)) {
                        return Ok(mine);
                    }
                    tokio::task::yield_now().await;
                }
                mine.extend(c.jobs.into_iter().map(|j| (j.key, j.attempts)));
            }
            Err(format!("claimer {t} never saw the queue empty"))
        }));
    }
    let claimed: Vec<(String, u32)> = join_all(tasks).await?.into_iter().flatten().collect();
    let distinct: BTreeSet<&String> = claimed.iter().map(|(k, _)| k).collect();
    ensure_eq!(distinct.len(), claimed.len(), "no job claimed twice");
    ensure_eq!(
        distinct.into_iter().cloned().collect::<Vec<_>>(),
        all,
        "every job claimed"
    );
    ensure!(
        claimed.iter().all(|(_, a)| *a == 1),
        "each job attempted once"
    );
    let e = h.ledger("cc", "total").await?;
    ensure_eq!(e.reserved, JOBS as u64, "one reservation per job");
    Ok(())
}
