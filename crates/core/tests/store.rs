//! Behaviour of the sled store that the daemon relies on.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use switchyard_core::{Change, Filter, JobSpec, JobState, LedgerOp, SledStore, Store, StoreError};

fn spec(key: &str, provider: &str, priority: i32) -> JobSpec {
    JobSpec {
        key: key.into(),
        provider: provider.into(),
        priority,
        params: serde_json::json!({"x": 1}),
    }
}

async fn open() -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    (dir, store)
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
        .unwrap();
    assert_eq!(r.accepted, vec!["a", "b"]);
    assert_eq!(r.already_known, vec!["a"]);
    let r = s
        .intake(vec![spec("b", "p", 5), spec("c", "p", 0)])
        .unwrap();
    assert_eq!(r.accepted, vec!["c"]);
    assert_eq!(r.already_known, vec!["b"]);
    // The known job is unchanged (priority 0, not 5).
    assert_eq!(s.get("b").unwrap().unwrap().priority, 0);
    assert_eq!(s.list(&Filter::default()).unwrap().len(), 3);
}

#[tokio::test]
async fn next_queued_is_priority_first_then_fifo_and_per_provider() {
    let (_d, s) = open().await;
    s.intake(vec![
        spec("low1", "p", -1),
        spec("mid1", "p", 0),
        spec("other", "q", 9),
        spec("high", "p", 7),
        spec("mid2", "p", 0),
    ])
    .unwrap();
    let keys: Vec<String> = s
        .next_queued("p", 10)
        .unwrap()
        .into_iter()
        .map(|j| j.key)
        .collect();
    assert_eq!(keys, vec!["high", "mid1", "mid2", "low1"]);
    let keys: Vec<String> = s
        .next_queued("q", 10)
        .unwrap()
        .into_iter()
        .map(|j| j.key)
        .collect();
    assert_eq!(keys, vec!["other"]);
}

#[tokio::test]
async fn transitions_are_compare_and_swap_and_checked() {
    let (_d, s) = open().await;
    s.intake(vec![spec("a", "p", 0)]).unwrap();
    // Wrong expected state: refused, nothing changes.
    let e = s
        .apply("a", JobState::Pending, Change::to(JobState::Processing, ""))
        .unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::StateMismatch {
                actual: JobState::Queued,
                ..
            }
        ),
        "{e}"
    );
    // Illegal edge: refused.
    let e = s
        .apply("a", JobState::Queued, Change::to(JobState::Completed, ""))
        .unwrap_err();
    assert!(matches!(e, StoreError::Illegal(_)), "{e}");
    s.apply(
        "a",
        JobState::Queued,
        Change::to(JobState::Submitting, "dispatched"),
    )
    .unwrap();
    s.apply(
        "a",
        JobState::Submitting,
        Change::to(JobState::Pending, "created"),
    )
    .unwrap();
    let hist: Vec<JobState> = s.history("a").unwrap().into_iter().map(|t| t.to).collect();
    assert_eq!(
        hist,
        vec![JobState::Queued, JobState::Submitting, JobState::Pending]
    );
    assert!(
        s.next_queued("p", 10).unwrap().is_empty(),
        "the index follows the state"
    );
    let counts = s.count_by_state(Some("p")).unwrap();
    assert!(counts.contains(&(JobState::Pending, 1)));
    assert!(counts.contains(&(JobState::Queued, 0)));
}

#[tokio::test]
async fn reservations_never_exceed_the_budget_and_settle_to_the_charge() {
    let (_d, s) = open().await;
    s.intake(vec![
        spec("a", "p", 0),
        spec("b", "p", 0),
        spec("c", "p", 0),
    ])
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
    .unwrap();
    let e = s
        .apply(
            "b",
            JobState::Queued,
            Change::to(JobState::Submitting, "").ledger(reserve(60)),
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::OverBudget {
                used: 60,
                limit: 100,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        s.get("b").unwrap().unwrap().state,
        JobState::Queued,
        "a refused reservation changes nothing"
    );
    s.apply(
        "b",
        JobState::Queued,
        Change::to(JobState::Submitting, "").ledger(reserve(40)),
    )
    .unwrap();
    assert_eq!(s.ledger("p", "total").unwrap().reserved, 100);
    // a completes for 50: reservation 60 replaced by charge 50.
    s.apply("a", JobState::Submitting, Change::to(JobState::Pending, ""))
        .unwrap();
    s.apply(
        "a",
        JobState::Pending,
        Change::to(JobState::Completed, "").ledger(LedgerOp::Settle { charged: 50 }),
    )
    .unwrap();
    let e = s.ledger("p", "total").unwrap();
    assert_eq!((e.reserved, e.charged), (40, 50));
    // b fails before any charge: released.
    s.apply(
        "b",
        JobState::Submitting,
        Change::to(JobState::Failed, "").ledger(LedgerOp::Release),
    )
    .unwrap();
    let e = s.ledger("p", "total").unwrap();
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
        .unwrap_err();
    assert!(matches!(e2, StoreError::OverBudget { .. }));
    assert_eq!(s.ledger("p", "total").unwrap().charged, 50);
}

#[tokio::test]
async fn synced_writes_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path()).unwrap();
        s.intake(vec![spec("a", "p", 0)]).unwrap();
        s.apply("a", JobState::Queued, Change::to(JobState::Submitting, ""))
            .unwrap();
        s.sync().await.unwrap();
    }
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(s.get("a").unwrap().unwrap().state, JobState::Submitting);
    assert_eq!(s.history("a").unwrap().len(), 2);
}

#[tokio::test]
async fn an_update_that_changes_nothing_writes_nothing() {
    let (_d, s) = open().await;
    s.intake(vec![spec("a", "p", 0)]).unwrap();
    s.apply("a", JobState::Queued, Change::to(JobState::Submitting, ""))
        .unwrap();
    let edit = |j: &mut switchyard_core::Job| j.progress = Some(40);
    let first = s
        .apply(
            "a",
            JobState::Submitting,
            Change::to(JobState::Submitting, "").edit(&edit),
        )
        .unwrap();
    // Timestamps have millisecond resolution: let the clock move first.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let again = s
        .apply(
            "a",
            JobState::Submitting,
            Change::to(JobState::Submitting, "").edit(&edit),
        )
        .unwrap();
    assert_eq!(
        again.updated_at, first.updated_at,
        "a no-op poll must not rewrite the job"
    );
    assert_eq!(s.get("a").unwrap().unwrap().progress, Some(40));
    assert_eq!(s.history("a").unwrap().len(), 2);
}
