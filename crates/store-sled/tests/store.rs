//! Behaviour of the sled store that the daemon relies on.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::time::Duration;
use switchyard_core::{Change, Job, JobSpec, JobState, LedgerOp, Patch, Refusal};
use switchyard_store::{Claim, Filter, Owner, StateCount, Store, StoreError};
use switchyard_store_sled::SledStore;

fn spec(key: &str, provider: &str, priority: i32) -> JobSpec {
    JobSpec {
        key: key.into(),
        provider: provider.into(),
        priority,
        params: serde_json::json!({"x": 1}),
        ..JobSpec::default()
    }
}

async fn open() -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    (dir, store)
}

/// Keys of every queued job of `provider`, in the order a claim takes them
/// (the claim moves them: call it where the test ends, or on a copy).
async fn claim_order(s: &SledStore, provider: &str) -> Vec<String> {
    let lease = s
        .renew(&Owner("t".into()), Duration::from_secs(60))
        .await
        .unwrap();
    let claimed = s
        .claim(Claim {
            lease: &lease,
            provider,
            limit: 10,
            period: "total",
            budget: None,
            admit: &|_: &Job| Some(0),
            note: "claimed",
            gate: None,
            max_in_flight: None,
        })
        .await
        .unwrap();
    claimed.jobs.into_iter().map(|j| j.key).collect()
}

#[tokio::test]
async fn intake_dedups_by_key_and_reports_known_keys() {
    let (_d, s) = open().await;
    let r = s
        .intake(vec![
            spec("a", "p", 0),
            spec("b", "p", 0),
            spec("a", "p", 0),
        ])
        .await
        .unwrap();
    assert_eq!(r.accepted, vec!["a", "b"]);
    assert_eq!(r.already_known, vec!["a"]);
    let r = s
        .intake(vec![spec("b", "p", 5), spec("c", "p", 0)])
        .await
        .unwrap();
    assert_eq!(r.accepted, vec!["c"]);
    assert_eq!(r.already_known, vec!["b"]);
    // The known job is unchanged (priority 0, not 5).
    assert_eq!(s.get("b").await.unwrap().unwrap().priority, 0);
    assert_eq!(s.list(&Filter::default()).await.unwrap().len(), 3);
}

#[tokio::test]
async fn claims_are_priority_first_then_fifo_and_per_provider() {
    let (_d, s) = open().await;
    s.intake(vec![
        spec("low1", "p", -1),
        spec("mid1", "p", 0),
        spec("other", "q", 9),
        spec("high", "p", 7),
        spec("mid2", "p", 0),
    ])
    .await
    .unwrap();
    assert_eq!(
        claim_order(&s, "p").await,
        vec!["high", "mid1", "mid2", "low1"]
    );
    assert_eq!(claim_order(&s, "q").await, vec!["other"]);
}

#[tokio::test]
async fn transitions_are_compare_and_swap_and_checked() {
    let (_d, s) = open().await;
    s.intake(vec![spec("a", "p", 0)]).await.unwrap();
    // Wrong expected state: refused, nothing changes.
    let e = s
        .apply("a", JobState::Pending, Change::to(JobState::Processing, ""))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Refused(Refusal::StateMismatch {
                actual: JobState::Queued,
                ..
            })
        ),
        "{e}"
    );
    // Illegal edge: refused.
    let e = s
        .apply("a", JobState::Queued, Change::to(JobState::Completed, ""))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Refused(Refusal::Illegal(_))), "{e}");
    s.apply(
        "a",
        JobState::Queued,
        Change::to(JobState::Submitting, "dispatched"),
    )
    .await
    .unwrap();
    s.apply(
        "a",
        JobState::Submitting,
        Change::to(JobState::Pending, "created"),
    )
    .await
    .unwrap();
    let hist: Vec<JobState> = s
        .history("a")
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.to)
        .collect();
    assert_eq!(
        hist,
        vec![JobState::Queued, JobState::Submitting, JobState::Pending]
    );
    let queued = Filter {
        state: Some(JobState::Queued),
        provider: Some("p".into()),
    };
    assert!(
        s.list(&queued).await.unwrap().is_empty(),
        "the index follows the state"
    );
    assert!(
        claim_order(&s, "p").await.is_empty(),
        "the index follows the state"
    );
    let counts = s.counts().await.unwrap();
    let count = |state| StateCount {
        provider: "p".into(),
        state,
        jobs: u64::from(state == JobState::Pending),
    };
    assert!(counts.contains(&count(JobState::Pending)), "{counts:?}");
    assert!(counts.contains(&count(JobState::Queued)), "{counts:?}");
}

#[tokio::test]
async fn reservations_never_exceed_the_budget_and_settle_to_the_charge() {
    let (_d, s) = open().await;
    s.intake(vec![
        spec("a", "p", 0),
        spec("b", "p", 0),
        spec("c", "p", 0),
    ])
    .await
    .unwrap();
    let reserve = |amount| LedgerOp::Reserve {
        period: "total".into(),
        amount,
        limit: Some(100),
    };
    s.apply(
        "a",
        JobState::Queued,
        Change::to(JobState::Submitting, "").ledger(reserve(60)),
    )
    .await
    .unwrap();
    let e = s
        .apply(
            "b",
            JobState::Queued,
            Change::to(JobState::Submitting, "").ledger(reserve(60)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Refused(Refusal::OverBudget {
                used: 60,
                limit: 100,
                ..
            })
        ),
        "{e}"
    );
    assert_eq!(
        s.get("b").await.unwrap().unwrap().state,
        JobState::Queued,
        "a refused reservation changes nothing"
    );
    s.apply(
        "b",
        JobState::Queued,
        Change::to(JobState::Submitting, "").ledger(reserve(40)),
    )
    .await
    .unwrap();
    assert_eq!(s.ledger("p", "total").await.unwrap().reserved, 100);
    // a completes for 50: reservation 60 replaced by charge 50.
    s.apply("a", JobState::Submitting, Change::to(JobState::Pending, ""))
        .await
        .unwrap();
    s.apply(
        "a",
        JobState::Pending,
        Change::to(JobState::Completed, "").ledger(LedgerOp::Settle { charged: 50 }),
    )
    .await
    .unwrap();
    let e = s.ledger("p", "total").await.unwrap();
    assert_eq!((e.reserved, e.charged), (40, 50));
    // b fails before any charge: released.
    s.apply(
        "b",
        JobState::Submitting,
        Change::to(JobState::Failed, "").ledger(LedgerOp::Release),
    )
    .await
    .unwrap();
    let e = s.ledger("p", "total").await.unwrap();
    assert_eq!((e.reserved, e.charged), (0, 50));
    // A lowered limit stops new reservations but forgets nothing.
    let e2 = s
        .apply(
            "c",
            JobState::Queued,
            Change::to(JobState::Submitting, "").ledger(LedgerOp::Reserve {
                period: "total".into(),
                amount: 1,
                limit: Some(40),
            }),
        )
        .await
        .unwrap_err();
    assert!(e2.is_over_budget(), "{e2}");
    assert_eq!(s.ledger("p", "total").await.unwrap().charged, 50);
}

#[tokio::test]
async fn synced_writes_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path()).unwrap();
        s.intake(vec![spec("a", "p", 0)]).await.unwrap();
        s.apply("a", JobState::Queued, Change::to(JobState::Submitting, ""))
            .await
            .unwrap();
        s.sync().await.unwrap();
    }
    let s = reopen(dir.path()).await;
    assert_eq!(
        s.get("a").await.unwrap().unwrap().state,
        JobState::Submitting
    );
    assert_eq!(s.history("a").await.unwrap().len(), 2);
}

/// Opens `dir` again once the last handle's group-commit task, which may
/// still hold a clone for a moment after `sync` returned, has let go.
async fn reopen(dir: &std::path::Path) -> SledStore {
    for _ in 0..500 {
        if let Ok(s) = SledStore::open(dir) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    SledStore::open(dir).unwrap()
}

#[tokio::test]
async fn an_update_that_changes_nothing_writes_nothing() {
    let (_d, s) = open().await;
    s.intake(vec![spec("a", "p", 0)]).await.unwrap();
    s.apply("a", JobState::Queued, Change::to(JobState::Submitting, ""))
        .await
        .unwrap();
    let edit = Patch {
        progress: Some(Some(40)),
        ..Patch::default()
    };
    let first = s
        .apply(
            "a",
            JobState::Submitting,
            Change::to(JobState::Submitting, "").patch(edit.clone()),
        )
        .await
        .unwrap();
    // Timestamps have millisecond resolution: let the clock move first.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = s
        .apply(
            "a",
            JobState::Submitting,
            Change::to(JobState::Submitting, "").patch(edit),
        )
        .await
        .unwrap();
    assert_eq!(
        again.updated_at, first.updated_at,
        "a no-op poll must not rewrite the job"
    );
    assert_eq!(s.get("a").await.unwrap().unwrap().progress, Some(40));
    assert_eq!(s.history("a").await.unwrap().len(), 2);
}
