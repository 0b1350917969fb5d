//! Property test: random sequences of intake, dispatch, claims, acknowledge,
//! poll results, refunds, cancels, restarts and budget changes, run against
//! the sled store and a plain in-memory model. After every step the store
//! must agree with the model, and the ledger invariant must hold.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use proptest::prelude::*;
use std::collections::BTreeMap;
use std::time::Duration;
use switchyard_core::{Change, Job, JobSpec, JobState, LedgerOp, Refusal};
use switchyard_store::{Claim, Filter, Owner, Store, StoreError};
use switchyard_store_sled::SledStore;

const PROVIDERS: [&str; 2] = ["p", "q"];

#[derive(Debug, Clone)]
enum Op {
    Intake(Vec<(u8, usize, i8)>),
    Dispatch(u8, u64),
    /// Claim up to `.1` queued jobs of provider `.0`, `.2` credits each.
    Claim(usize, usize, u64),
    Ack(u8),
    Finish(u8, bool, u64),
    Refund(u8, u64),
    Cancel(u8),
    Retry(u8),
    Restart,
    SetLimit(usize, u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        prop::collection::vec((0u8..24, 0usize..2, -2i8..3), 1..5).prop_map(Op::Intake),
        (0u8..24, 1u64..60).prop_map(|(k, a)| Op::Dispatch(k, a)),
        (0usize..2, 1usize..4, 1u64..60).prop_map(|(p, n, a)| Op::Claim(p, n, a)),
        (0u8..24).prop_map(Op::Ack),
        (0u8..24, any::<bool>(), 0u64..80).prop_map(|(k, ok, c)| Op::Finish(k, ok, c)),
        (0u8..24, 0u64..50).prop_map(|(k, a)| Op::Refund(k, a)),
        (0u8..24).prop_map(Op::Cancel),
        (0u8..24).prop_map(Op::Retry),
        Just(Op::Restart),
        (0usize..2, 0u64..200).prop_map(|(p, l)| Op::SetLimit(p, l)),
    ]
}

#[derive(Debug, Clone, Default)]
struct MJob {
    provider: usize,
    priority: i32,
    /// Intake order: FIFO within a priority.
    order: u64,
    state: Option<JobState>,
    reserved: u64,
    charged: u64,
}

#[derive(Debug, Default)]
struct Model {
    jobs: BTreeMap<String, MJob>,
    reserved: [u64; 2],
    charged: [u64; 2],
    limit: [u64; 2],
    accepted: u64,
}

fn key(k: u8) -> String {
    format!("job-{k:02}")
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SledStore::open(dir.path()).unwrap();
        let mut m = Model {
            limit: [100, 100],
            ..Default::default()
        };
        for op in ops {
            step(&mut store, &mut m, &op, dir.path()).await?;
            check(&store, &m).await?;
        }
        Ok(())
    })
}

async fn step(
    store: &mut SledStore,
    m: &mut Model,
    op: &Op,
    dir: &std::path::Path,
) -> Result<(), TestCaseError> {
    match op {
        Op::Intake(items) => {
            let specs: Vec<JobSpec> = items
                .iter()
                .map(|(k, p, prio)| JobSpec {
                    key: key(*k),
                    provider: PROVIDERS[*p].into(),
                    priority: *prio as i32,
                    params: serde_json::json!({}),
                    ..JobSpec::default()
                })
                .collect();
            let report = store.intake(specs).await.unwrap();
            let mut expect_new = Vec::new();
            for (k, p, prio) in items {
                let kk = key(*k);
                if !m.jobs.contains_key(&kk) && !expect_new.contains(&kk) {
                    expect_new.push(kk.clone());
                    m.accepted += 1;
                    m.jobs.insert(
                        kk,
                        MJob {
                            provider: *p,
                            priority: *prio as i32,
                            order: m.accepted,
                            state: Some(JobState::Queued),
                            ..Default::default()
                        },
                    );
                }
            }
            prop_assert_eq!(report.accepted, expect_new);
        }
        Op::Dispatch(k, amount) => {
            let kk = key(*k);
            let res = store
                .apply(
                    &kk,
                    JobState::Queued,
                    Change::to(JobState::Submitting, "").ledger(LedgerOp::Reserve {
                        period: "total".into(),
                        amount: *amount,
                        limit: None.or(m.jobs.get(&kk).map(|j| m.limit[j.provider])),
                    }),
                )
                .await;
            match m.jobs.get_mut(&kk) {
                Some(j) if j.state == Some(JobState::Queued) => {
                    let p = j.provider;
                    if m.reserved[p] + m.charged[p] + amount > m.limit[p] {
                        prop_assert!(
                            matches!(res, Err(StoreError::Refused(Refusal::OverBudget { .. }))),
                            "{:?}",
                            res
                        );
                    } else {
                        prop_assert!(res.is_ok(), "{:?}", res);
                        j.state = Some(JobState::Submitting);
                        j.reserved = *amount;
                        m.reserved[p] += amount;
                    }
                }
                Some(_) => prop_assert!(
                    matches!(res, Err(StoreError::Refused(Refusal::StateMismatch { .. }))),
                    "{:?}",
                    res
                ),
                None => prop_assert!(matches!(res, Err(StoreError::NotFound(_))), "{:?}", res),
            }
        }
        Op::Claim(p, limit, amount) => {
            let budget = m.limit[*p];
            let lease = store
                .renew(&Owner("model".into()), Duration::from_secs(60))
                .await
                .unwrap();
            let res = store
                .claim(Claim {
                    lease: &lease,
                    provider: PROVIDERS[*p],
                    limit: *limit,
                    period: "total",
                    budget: Some(budget),
                    admit: &|_: &Job| Some(*amount),
                    note: "claimed",
                    gate: None,
                    max_in_flight: None,
                })
                .await;
            prop_assert!(res.is_ok(), "{:?}", res);
            let claimed = res.unwrap();
            // The model's queue: highest priority first, FIFO within one;
            // the claim stops at the first job over budget.
            let mut queue: Vec<(&String, &MJob)> = m
                .jobs
                .iter()
                .filter(|(_, j)| j.provider == *p && j.state == Some(JobState::Queued))
                .collect();
            queue.sort_by_key(|(_, j)| (std::cmp::Reverse(j.priority), j.order));
            let mut expect = Vec::new();
            let mut over = false;
            let mut used = m.reserved[*p] + m.charged[*p];
            for (k, _) in queue.into_iter().take(*limit) {
                if used + amount > budget {
                    over = true;
                    break;
                }
                used += amount;
                expect.push(k.clone());
            }
            let got: Vec<String> = claimed.jobs.iter().map(|j| j.key.clone()).collect();
            prop_assert_eq!(&got, &expect, "claim order");
            prop_assert_eq!(claimed.over_budget, over);
            for j in &claimed.jobs {
                prop_assert_eq!(j.state, JobState::Submitting);
                prop_assert_eq!(j.credits_reserved, *amount);
                let mj = m.jobs.get_mut(&j.key).unwrap();
                mj.state = Some(JobState::Submitting);
                mj.reserved = *amount;
                m.reserved[*p] += amount;
            }
        }
        Op::Ack(k) => {
            let kk = key(*k);
            let res = store
                .apply(
                    &kk,
                    JobState::Submitting,
                    Change::to(JobState::Pending, "created"),
                )
                .await;
            match m.jobs.get_mut(&kk) {
                Some(j) if j.state == Some(JobState::Submitting) => {
                    prop_assert!(res.is_ok());
                    j.state = Some(JobState::Pending);
                }
                _ => prop_assert!(res.is_err()),
            }
        }
        Op::Finish(k, ok, charge) => {
            let kk = key(*k);
            let (to, ledger) = if *ok {
                (JobState::Completed, LedgerOp::Settle { charged: *charge })
            } else {
                (JobState::Failed, LedgerOp::Release)
            };
            let res = store
                .apply(&kk, JobState::Pending, Change::to(to, "").ledger(ledger))
                .await;
            match m.jobs.get_mut(&kk) {
                Some(j) if j.state == Some(JobState::Pending) => {
                    prop_assert!(res.is_ok());
                    let p = j.provider;
                    m.reserved[p] -= j.reserved;
                    j.reserved = 0;
                    if *ok {
                        m.charged[p] += charge;
                        j.charged += charge;
                    }
                    j.state = Some(to);
                }
                _ => prop_assert!(res.is_err()),
            }
        }
        Op::Refund(k, amount) => {
            let kk = key(*k);
            let res = store
                .apply(
                    &kk,
                    JobState::Completed,
                    Change::to(JobState::Completed, "")
                        .ledger(LedgerOp::Refund { amount: *amount }),
                )
                .await;
            match m.jobs.get_mut(&kk) {
                Some(j) if j.state == Some(JobState::Completed) => {
                    prop_assert!(res.is_ok());
                    let a = (*amount).min(j.charged);
                    j.charged -= a;
                    m.charged[j.provider] -= a;
                }
                _ => prop_assert!(res.is_err()),
            }
        }
        Op::Cancel(k) => {
            let kk = key(*k);
            let cur = m.jobs.get(&kk).and_then(|j| j.state);
            let from = cur.unwrap_or(JobState::Queued);
            let res = store
                .apply(
                    &kk,
                    from,
                    Change::to(JobState::Cancelled, "user").ledger(LedgerOp::Release),
                )
                .await;
            match m.jobs.get_mut(&kk) {
                Some(j) if from.can_become(JobState::Cancelled) => {
                    prop_assert!(res.is_ok(), "{:?}", res);
                    m.reserved[j.provider] -= j.reserved;
                    j.reserved = 0;
                    j.state = Some(JobState::Cancelled);
                }
                // Same state: a field update, not a transition (idempotent).
                Some(j) if from == JobState::Cancelled => {
                    prop_assert!(res.is_ok(), "{:?}", res);
                    prop_assert_eq!(j.reserved, 0);
                }
                Some(_) => prop_assert!(
                    matches!(res, Err(StoreError::Refused(Refusal::Illegal(_)))),
                    "{:?}",
                    res
                ),
                None => prop_assert!(res.is_err()),
            }
        }
        Op::Retry(k) => {
            let kk = key(*k);
            let res = store
                .apply(
                    &kk,
                    JobState::Failed,
                    Change::to(JobState::Queued, "retry").ledger(LedgerOp::Release),
                )
                .await;
            match m.jobs.get_mut(&kk) {
                Some(j) if j.state == Some(JobState::Failed) => {
                    prop_assert!(res.is_ok());
                    j.state = Some(JobState::Queued);
                }
                _ => prop_assert!(res.is_err()),
            }
        }
        Op::Restart => {
            store.sync().await.unwrap();
            let placeholder = SledStore::open(&dir.join("scratch")).unwrap();
            drop(std::mem::replace(store, placeholder));
            // The flusher may still hold the database for a moment.
            let mut tries = 0;
            *store = loop {
                match SledStore::open(dir) {
                    Ok(s) => break s,
                    Err(_) if tries < 100 => {
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("reopen: {e}"))),
                }
            };
        }
        Op::SetLimit(p, l) => m.limit[*p] = *l,
    }
    Ok(())
}

async fn check(store: &SledStore, m: &Model) -> Result<(), TestCaseError> {
    let jobs = store.list(&Filter::default()).await.unwrap();
    prop_assert_eq!(jobs.len(), m.jobs.len());
    for j in &jobs {
        let mj = &m.jobs[&j.key];
        prop_assert_eq!(Some(j.state), mj.state, "state of {}", j.key);
        prop_assert_eq!(j.credits_reserved, mj.reserved, "reserved of {}", j.key);
        prop_assert_eq!(j.credits_charged, mj.charged, "charged of {}", j.key);
    }
    for (i, p) in PROVIDERS.iter().enumerate() {
        let e = store.ledger(p, "total").await.unwrap();
        prop_assert_eq!(
            (e.reserved, e.charged),
            (m.reserved[i], m.charged[i]),
            "ledger of {}",
            p
        );
        // The ledger is the sum of its jobs.
        let sum_r: u64 = jobs
            .iter()
            .filter(|j| j.provider == *p)
            .map(|j| j.credits_reserved)
            .sum();
        let sum_c: u64 = jobs
            .iter()
            .filter(|j| j.provider == *p)
            .map(|j| j.credits_charged)
            .sum();
        prop_assert_eq!((sum_r, sum_c), (e.reserved, e.charged));
        // The index agrees with the jobs (a listing by state reads the
        // index). The order a claim takes them in is checked by `Op::Claim`
        // against the model's own order.
        let queued = store
            .list(&Filter {
                state: Some(JobState::Queued),
                provider: Some(p.to_string()),
            })
            .await
            .unwrap();
        let expect = jobs
            .iter()
            .filter(|j| j.provider == *p && j.state == JobState::Queued)
            .count();
        prop_assert_eq!(queued.len(), expect);
        prop_assert!(queued
            .iter()
            .all(|j| j.provider == *p && j.state == JobState::Queued));
        prop_assert!(queued.windows(2).all(|w| w[0].seq < w[1].seq));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn store_agrees_with_the_model_and_never_overspends(ops in prop::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}
