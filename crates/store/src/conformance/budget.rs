//! The ledger: reserved + charged never exceeds the budget however many
//! claims and reservations race, settle/release/refund do their arithmetic
//! in the period the job reserved in, and periods start afresh.

use super::{ensure, ensure_eq, join_all, require_parallel, spec, Backend, CaseResult, Handle};
use crate::{Filter, StoreError};
use std::collections::BTreeSet;
use std::sync::Arc;
use switchyard_core::{Change, JobState, LedgerEntry, LedgerOp, Refusal};
use tokio::sync::Barrier;

const RACERS: usize = 64;

fn reserve(period: &str, amount: u64, limit: Option<u64>) -> LedgerOp {
    LedgerOp::Reserve {
        period: period.into(),
        amount,
        limit,
    }
}

fn dispatch(period: &str, amount: u64, limit: Option<u64>) -> Change {
    Change::to(JobState::Submitting, "dispatched").ledger(reserve(period, amount, limit))
}

async fn intake_n(
    h: &Handle,
    prefix: &str,
    provider: &str,
    n: usize,
) -> Result<Vec<String>, String> {
    let keys: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:03}")).collect();
    h.intake(keys.iter().map(|k| spec(k, provider, 0)).collect())
        .await?;
    Ok(keys)
}

/// After a race on `provider`: the ledger holds exactly `each` per
/// submitting job, within `budget`, and `fits` jobs were taken.
async fn check_after_race(
    h: &Handle,
    provider: &str,
    budget: u64,
    each: u64,
    fits: usize,
) -> CaseResult {
    let e = h.ledger(provider, "total").await?;
    ensure!(
        e.used() <= budget,
        "{provider}: reserved + charged = {} over the budget {budget}",
        e.used()
    );
    let taken = h
        .list(&Filter {
            state: Some(JobState::Submitting),
            provider: Some(provider.into()),
        })
        .await?;
    ensure_eq!(
        taken.len(),
        fits,
        "{provider}: jobs that fit the budget were taken"
    );
    ensure!(
        taken.iter().all(|j| j.credits_reserved == each),
        "{provider}: each taken job holds its reservation: {:?}",
        taken.iter().map(|j| j.credits_reserved).collect::<Vec<_>>()
    );
    ensure_eq!(
        e,
        LedgerEntry {
            reserved: each * fits as u64,
            charged: 0
        },
        "{provider}: the ledger is the sum of its jobs' reservations"
    );
    let rest = h
        .list(&Filter {
            state: Some(JobState::Queued),
            provider: Some(provider.into()),
        })
        .await?;
    ensure!(
        rest.iter()
            .all(|j| j.credits_reserved == 0 && j.attempts == 0),
        "{provider}: jobs left queued hold nothing and were not attempted"
    );
    let after = h.claim(provider, 10, "total", Some(budget), each).await?;
    ensure!(
        after.jobs.is_empty() && after.over_budget,
        "{provider}: once full, a claim takes nothing and says over budget: {} taken, over_budget {}",
        after.jobs.len(),
        after.over_budget
    );
    Ok(())
}

/// Claims (`limit` at a time) until a claim reports the budget full, and
/// returns the keys taken. A claim may come back empty without being over
/// budget when others took the jobs it looked at first: it tries again.
async fn claim_until_full(
    h: &Handle,
    provider: &str,
    limit: usize,
    budget: u64,
    each: u64,
) -> Result<Vec<String>, String> {
    let mut taken = Vec::new();
    for _ in 0..10_000 {
        let c = h
            .claim(provider, limit, "total", Some(budget), each)
            .await?;
        let full = c.over_budget;
        taken.extend(c.jobs.into_iter().map(|j| j.key));
        if full {
            return Ok(taken);
        }
        tokio::task::yield_now().await;
    }
    Err(format!("{provider}: claims never reported the budget full"))
}

/// 64 claims race for 64 jobs against a budget that fits 14: exactly 14
/// are taken, none twice, and the ledger holds exactly their estimates.
pub async fn budget_holds_under_concurrent_claims(b: &dyn Backend) -> CaseResult {
    require_parallel()?;
    let h = Handle::open(b).await?;
    intake_n(&h, "c", "cp", RACERS).await?;
    let (budget, each) = (100, 7);
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let (h, barrier) = (h.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            claim_until_full(&h, "cp", 1 + i % 3, budget, each).await
        }));
    }
    let claimed: Vec<String> = join_all(tasks).await?.into_iter().flatten().collect();
    let distinct: BTreeSet<&String> = claimed.iter().collect();
    ensure_eq!(
        distinct.len(),
        claimed.len(),
        "no job claimed twice: {claimed:?}"
    );
    ensure_eq!(
        claimed.len(),
        14,
        "claims that succeeded: exactly what fits"
    );
    check_after_race(&h, "cp", budget, each, 14).await
}

/// 64 direct reservations (`apply` with a reserve) race against a budget
/// that fits 16: exactly 16 are accepted, the rest refused as over budget
/// with nothing written.
pub async fn budget_holds_under_concurrent_reservations(b: &dyn Backend) -> CaseResult {
    require_parallel()?;
    let h = Handle::open(b).await?;
    let keys = intake_n(&h, "r", "rp", RACERS).await?;
    let (budget, each) = (50, 3);
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for key in keys {
        let (h, barrier) = (h.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let res = h
                .store
                .apply(
                    &key,
                    JobState::Queued,
                    dispatch("total", each, Some(budget)),
                )
                .await;
            Ok((key, res))
        }));
    }
    let mut ok = 0;
    for (key, res) in join_all(tasks).await? {
        match res {
            Ok(j) => {
                ensure_eq!(
                    (j.state, j.credits_reserved),
                    (JobState::Submitting, each),
                    "{key}: an accepted reservation"
                );
                ok += 1;
            }
            Err(e) if e.is_over_budget() => {
                ensure_eq!(h.job(&key).await?.state, JobState::Queued, "{key} refused");
            }
            Err(e) => return Err(format!("{key}: only over budget may refuse it: {e}")),
        }
    }
    ensure_eq!(ok, 16, "reservations accepted: exactly what fits");
    check_after_race(&h, "rp", budget, each, 16).await
}

/// Claims and direct reservations race on one provider and one budget
/// (60, 5 a job: 12 fit): between them exactly 12 jobs are taken.
pub async fn budget_holds_when_claims_and_reservations_race(b: &dyn Backend) -> CaseResult {
    require_parallel()?;
    let h = Handle::open(b).await?;
    intake_n(&h, "m", "mp", RACERS).await?;
    let (budget, each) = (60, 5);
    let half = RACERS / 2;
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let (h, barrier) = (h.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            if i < half {
                // The claims take jobs from the head of the queue, the
                // very ones the reservations below aim at.
                return claim_until_full(&h, "mp", 1, budget, each).await;
            }
            let target = format!("m-{:03}", i - half);
            match h
                .store
                .apply(
                    &target,
                    JobState::Queued,
                    dispatch("total", each, Some(budget)),
                )
                .await
            {
                Ok(_) => Ok(vec![target]),
                Err(e) if e.is_over_budget() || e.is_state_mismatch() => Ok(vec![]),
                Err(e) => Err(format!("{target}: {e}")),
            }
        }));
    }
    let taken: Vec<String> = join_all(tasks).await?.into_iter().flatten().collect();
    let distinct: BTreeSet<&String> = taken.iter().collect();
    ensure_eq!(distinct.len(), taken.len(), "no job taken twice: {taken:?}");
    ensure_eq!(
        taken.len(),
        12,
        "jobs taken by claims and reservations together"
    );
    check_after_race(&h, "mp", budget, each, 12).await
}

/// Reserve, settle, release, refund and a lowered limit, step by step.
pub async fn ledger_arithmetic_settle_release_refund(b: &dyn Backend) -> CaseResult {
    let h = Handle::open(b).await?;
    let ledger = |r, c| LedgerEntry {
        reserved: r,
        charged: c,
    };
    for k in ["a", "b", "c", "d", "e"] {
        h.intake(vec![spec(k, "s", 0)]).await?;
    }
    let a = h
        .apply("a", JobState::Queued, dispatch("total", 60, Some(100)))
        .await?;
    ensure_eq!(
        (a.credits_reserved, a.budget_period.as_deref()),
        (60, Some("total")),
        "a reserved"
    );
    let before = (h.job("b").await?, h.history("b").await?);
    let e = h
        .refused("b", JobState::Queued, dispatch("total", 60, Some(100)))
        .await?;
    ensure!(
        matches!(
            &e,
            StoreError::Refused(Refusal::OverBudget { provider, period, used: 60, limit: 100, amount: 60 })
                if provider == "s" && period == "total"
        ),
        "60 more over 60 of 100: {e:?}"
    );
    ensure_eq!(
        (h.job("b").await?, h.history("b").await?),
        before,
        "a refused reservation writes nothing"
    );
    ensure_eq!(
        h.ledger("s", "total").await?,
        ledger(60, 0),
        "after a refusal"
    );
    h.apply("b", JobState::Queued, dispatch("total", 40, Some(100)))
        .await?;
    ensure_eq!(
        h.ledger("s", "total").await?,
        ledger(100, 0),
        "exactly the limit is allowed"
    );
    let e = h
        .refused("c", JobState::Queued, dispatch("total", 1, Some(100)))
        .await?;
    ensure!(e.is_over_budget(), "one over a full budget: {e}");

    // a completes for 50: its reservation of 60 is replaced by the charge.
    h.apply(
        "a",
        JobState::Submitting,
        Change::to(JobState::Pending, "created"),
    )
    .await?;
    let a = h
        .apply(
            "a",
            JobState::Pending,
            Change::to(JobState::Completed, "done").ledger(LedgerOp::Settle { charged: 50 }),
        )
        .await?;
    ensure_eq!(
        (a.credits_reserved, a.credits_charged),
        (0, 50),
        "a settled"
    );
    ensure_eq!(
        h.ledger("s", "total").await?,
        ledger(40, 50),
        "after a settle"
    );
    // b fails before any charge: released.
    let bj = h
        .apply(
            "b",
            JobState::Submitting,
            Change::to(JobState::Failed, "x").ledger(LedgerOp::Release),
        )
        .await?;
    ensure_eq!(
        (bj.credits_reserved, bj.credits_charged),
        (0, 0),
        "b released"
    );
    ensure_eq!(
        h.ledger("s", "total").await?,
        ledger(0, 50),
        "after a release"
    );
    // A lowered limit stops new reservations and forgets no charge.
    let e = h
        .refused("c", JobState::Queued, dispatch("total", 1, Some(40)))
        .await?;
    ensure!(e.is_over_budget(), "under a lowered limit: {e}");
    ensure_eq!(
        h.ledger("s", "total").await?,
        ledger(0, 50),
        "a lowered limit forgets nothing"
    );
    // No limit: no check.
    h.apply("c", JobState::Queued, dispatch("total", 500, None))
        .await?;
    ensure_eq!(
        h.ledger("s", "total").await?,
        ledger(500, 50),
        "a reservation without a limit"
    );
    // The charge is a fact, even above the estimate.
    h.apply(
        "c",
        JobState::Submitting,
        Change::to(JobState::Completed, "done").ledger(LedgerOp::Settle { charged: 700 }),
    )
    .await?;
    ensure_eq!(
        h.ledger("s", "total").await?,
        ledger(0, 750),
        "a charge above the estimate"
    );
    // Refunds give back charges, never more than the job was charged.
    let refund =
        |amount| Change::to(JobState::Completed, "refund").ledger(LedgerOp::Refund { amount });
    let a = h.apply("a", JobState::Completed, refund(20)).await?;
    ensure_eq!(a.credits_charged, 30, "a after a refund of 20");
    ensure_eq!(
        h.ledger("s", "total").await?,
        ledger(0, 730),
        "after a refund"
    );
    let a = h.apply("a", JobState::Completed, refund(100)).await?;
    ensure_eq!(
        a.credits_charged,
        0,
        "a refund is capped at the job's charge"
    );
    ensure_eq!(
        h.ledger("s", "total").await?,
        ledger(0, 700),
        "after a capped refund"
    );
    // Releasing a job that holds nothing changes nothing.
    h.apply(
        "d",
        JobState::Queued,
        Change::to(JobState::Cancelled, "user").ledger(LedgerOp::Release),
    )
    .await?;
    ensure_eq!(
        h.ledger("s", "total").await?,
        ledger(0, 700),
        "releasing nothing"
    );
    // Requeued and dispatched again: one reservation, not two.
    h.apply("e", JobState::Queued, dispatch("total", 10, Some(1000)))
        .await?;
    h.apply(
        "e",
        JobState::Submitting,
        Change::to(JobState::Queued, "busy"),
    )
    .await?;
    let ej = h
        .apply("e", JobState::Queued, dispatch("total", 15, Some(1000)))
        .await?;
    ensure_eq!(
        ej.credits_reserved,
        15,
        "a job holds its latest reservation only"
    );
    ensure_eq!(
        h.ledger("s", "total").await?,
        ledger(15, 700),
        "a reservation made twice"
    );
    ensure_eq!(
        h.ledger("other", "total").await?,
        ledger(0, 0),
        "another provider's ledger"
    );
    Ok(())
}

/// Each period has its own row: what was reserved in one does not count
/// against the next, and a job's settle, release and refund go to the
/// period it reserved in; a job reserved again in a new period leaves the
/// old one.
pub async fn periods_roll_over(b: &dyn Backend) -> CaseResult {
    let h = Handle::open(b).await?;
    let (nov, dec) = ("2026-11", "2026-12");
    let ledger = |r, c| LedgerEntry {
        reserved: r,
        charged: c,
    };
    for k in ["a", "b", "c", "d"] {
        h.intake(vec![spec(k, "m", 0)]).await?;
    }
    h.apply("a", JobState::Queued, dispatch(nov, 60, Some(100)))
        .await?;
    let got = h.claim("m", 1, nov, Some(100), 40).await?;
    ensure_eq!(got.jobs.len(), 1, "b fits November");
    let full = h.claim("m", 1, nov, Some(100), 40).await?;
    ensure!(
        full.jobs.is_empty() && full.over_budget,
        "November is full: {} taken",
        full.jobs.len()
    );
    let got = h.claim("m", 1, dec, Some(100), 100).await?;
    ensure_eq!(
        got.jobs.iter().map(|j| j.key.as_str()).collect::<Vec<_>>(),
        ["c"],
        "December starts afresh: its whole budget is free"
    );
    ensure_eq!(
        got.jobs[0].budget_period.as_deref(),
        Some(dec),
        "c reserved in December"
    );
    ensure_eq!(h.ledger("m", nov).await?, ledger(100, 0), "November");
    ensure_eq!(h.ledger("m", dec).await?, ledger(100, 0), "December");
    ensure_eq!(
        h.ledger("m", "total").await?,
        ledger(0, 0),
        "no period leaks into another"
    );

    // a settles in December's time, to November's row.
    h.apply(
        "a",
        JobState::Submitting,
        Change::to(JobState::Pending, "created"),
    )
    .await?;
    let a = h
        .apply(
            "a",
            JobState::Pending,
            Change::to(JobState::Completed, "done").ledger(LedgerOp::Settle { charged: 55 }),
        )
        .await?;
    ensure_eq!(a.budget_period.as_deref(), Some(nov), "a stays in November");
    ensure_eq!(
        h.ledger("m", nov).await?,
        ledger(40, 55),
        "November after a's settle"
    );
    ensure_eq!(
        h.ledger("m", dec).await?,
        ledger(100, 0),
        "December after a's settle"
    );
    h.apply(
        "b",
        JobState::Submitting,
        Change::to(JobState::Failed, "x").ledger(LedgerOp::Release),
    )
    .await?;
    ensure_eq!(
        h.ledger("m", nov).await?,
        ledger(0, 55),
        "November after b's release"
    );
    h.apply(
        "a",
        JobState::Completed,
        Change::to(JobState::Completed, "refund").ledger(LedgerOp::Refund { amount: 5 }),
    )
    .await?;
    ensure_eq!(
        h.ledger("m", nov).await?,
        ledger(0, 50),
        "November after a's refund"
    );
    h.apply(
        "c",
        JobState::Submitting,
        Change::to(JobState::Completed, "done").ledger(LedgerOp::Settle { charged: 90 }),
    )
    .await?;
    ensure_eq!(
        h.ledger("m", dec).await?,
        ledger(0, 90),
        "December after c's settle"
    );
    ensure_eq!(
        h.ledger("m", nov).await?,
        ledger(0, 50),
        "November after c's settle"
    );

    // d reserves in November, is requeued holding it, and is claimed in
    // December: the November reservation moves, it does not stay behind.
    h.apply("d", JobState::Queued, dispatch(nov, 10, Some(100)))
        .await?;
    ensure_eq!(h.ledger("m", nov).await?, ledger(10, 50), "November with d");
    h.apply(
        "d",
        JobState::Submitting,
        Change::to(JobState::Queued, "busy"),
    )
    .await?;
    let got = h.claim("m", 1, dec, Some(100), 10).await?;
    ensure_eq!(got.jobs.len(), 1, "d fits December (90 + 10 of 100)");
    ensure_eq!(
        (
            got.jobs[0].credits_reserved,
            got.jobs[0].budget_period.as_deref()
        ),
        (10, Some(dec)),
        "d reserved in December"
    );
    ensure_eq!(
        h.ledger("m", nov).await?,
        ledger(0, 50),
        "November after d moved"
    );
    ensure_eq!(
        h.ledger("m", dec).await?,
        ledger(10, 90),
        "December after d moved"
    );
    Ok(())
}
