//! What survives a restart (everything synced), the counts kept beside
//! the jobs, and what a restarted daemon must follow.

use super::{ensure, ensure_eq, spec, tally, Backend, CaseResult, Handle, Tally};
use crate::Filter;
use std::collections::BTreeSet;
use switchyard_core::{
    Attempts, Change, Job, JobError, JobState, LedgerEntry, LedgerOp, Patch, Transition,
};

/// Periods the durability case writes ledger rows in.
const PERIODS: [&str; 3] = ["total", "2026-11", "2026-12"];

/// Everything a store holds that the suite can see.
#[derive(Debug, PartialEq)]
struct Contents {
    jobs: Vec<Job>,
    histories: Vec<Vec<Transition>>,
    ledgers: Vec<LedgerEntry>,
    counts: Tally,
}

async fn contents(h: &Handle, providers: &[&str]) -> Result<Contents, String> {
    let jobs = h.all().await?;
    let mut histories = Vec::new();
    for j in &jobs {
        histories.push(h.history(&j.key).await?);
    }
    let mut ledgers = Vec::new();
    for p in providers {
        for period in PERIODS {
            ledgers.push(h.ledger(p, period).await?);
        }
    }
    Ok(Contents {
        jobs,
        histories,
        ledgers,
        counts: h.counts().await?,
    })
}

/// Jobs in every state, with every field a change can set, ledger rows in
/// several periods: after a sync and a crash, and again after a clean
/// reopen, the store holds exactly what it held (jobs field for field,
/// histories, ledgers, counts).
pub async fn synced_writes_survive_a_crash_and_a_reopen(b: &dyn Backend) -> CaseResult {
    let h = Handle::open(b).await?;
    let providers = ["d1", "d2"];
    let mut specs = Vec::new();
    for p in providers {
        for state in JobState::ALL {
            specs.push(spec(&format!("{p}-{state}"), p, state.code() as i32 - 3));
        }
    }
    h.intake(specs).await?;
    for p in providers {
        for state in JobState::ALL {
            let key = format!("{p}-{state}");
            if state == JobState::Queued {
                continue;
            }
            // Every live or finished job reserved first, as a claim does.
            if state != JobState::Cancelled {
                h.apply(
                    &key,
                    JobState::Queued,
                    Change::to(JobState::Submitting, "dispatched")
                        .ledger(LedgerOp::Reserve {
                            period: "2026-11".into(),
                            amount: 7,
                            limit: Some(1000),
                        })
                        .patch(Patch {
                            attempts: Some(Attempts::Increment),
                            ..Patch::default()
                        }),
                )
                .await?;
            }
            let mut job = h.job(&key).await?;
            let from = job.state;
            for &next in super::path_to(state).iter().skip_while(|s| **s == from) {
                let (ledger, patch) = match next {
                    JobState::Completed => (
                        LedgerOp::Settle { charged: 6 },
                        Patch {
                            output_urls: Some(vec![format!("https://example.com/{key}.mp4")]),
                            output_files: Some(vec![format!("/out/{key}.mp4")]),
                            progress: Some(Some(100)),
                            ..Patch::default()
                        },
                    ),
                    JobState::Failed => (
                        LedgerOp::Release,
                        Patch {
                            error: Some(Some(JobError::new("E_BAD", "bad input"))),
                            ..Patch::default()
                        },
                    ),
                    JobState::Cancelled => (LedgerOp::Release, Patch::default()),
                    _ => (
                        LedgerOp::None,
                        Patch {
                            provider_job_id: Some(Some(format!("prov-{key}"))),
                            provider_status: Some(Some("running".into())),
                            stage: Some(Some("render".into())),
                            progress: Some(Some(40)),
                            submitted_at: Some(Some("2026-11-30T12:00:00.000Z".into())),
                            ..Patch::default()
                        },
                    ),
                };
                job = h
                    .apply(
                        &key,
                        job.state,
                        Change::to(next, format!("to {next}"))
                            .ledger(ledger)
                            .patch(patch),
                    )
                    .await?;
            }
        }
    }
    // A refund, and a reservation in another period.
    h.apply(
        "d1-completed",
        JobState::Completed,
        Change::to(JobState::Completed, "refund").ledger(LedgerOp::Refund { amount: 2 }),
    )
    .await?;
    h.apply(
        "d2-queued",
        JobState::Queued,
        Change::to(JobState::Submitting, "dispatched").ledger(LedgerOp::Reserve {
            period: "2026-12".into(),
            amount: 3,
            limit: None,
        }),
    )
    .await?;
    let before = contents(&h, &providers).await?;
    ensure_eq!(before.jobs.len(), 2 * JobState::ALL.len(), "jobs written");
    let h = h.restart(b).await?;
    let after = contents(&h, &providers).await?;
    ensure_eq!(after, before, "the store after a sync and a crash");

    // Writes after a restart survive the next one too.
    h.apply(
        "d2-submitting",
        JobState::Submitting,
        Change::to(JobState::Pending, "created"),
    )
    .await?;
    h.intake(vec![spec("late", "d1", 0)]).await?;
    let before = contents(&h, &providers).await?;
    let h = h.reopen(b).await?;
    let after = contents(&h, &providers).await?;
    ensure_eq!(after, before, "the store after a clean reopen");
    Ok(())
}

/// Checks what must hold after any crash, synced or not: every job's
/// history is a legal chain ending in its state, each ledger row is the
/// sum of its jobs' credits, and counts and listings agree with the jobs.
async fn check_consistent(h: &Handle, providers: &[&str], when: &str) -> CaseResult {
    let jobs = h.all().await?;
    for j in &jobs {
        let hist = h.history(&j.key).await?;
        let last = hist
            .last()
            .ok_or_else(|| format!("{}: no history, {when}", j.key))?;
        ensure_eq!(
            last.to,
            j.state,
            "{}: history ends in the job's state, {when}",
            j.key
        );
        for w in hist.windows(2) {
            ensure!(
                w[0].to.can_become(w[1].to) && w[1].from == Some(w[0].to),
                "{}: illegal step in history {:?}, {when}",
                j.key,
                hist
            );
        }
    }
    for p in providers {
        for period in PERIODS {
            let mine = jobs
                .iter()
                .filter(|j| j.provider == *p && j.budget_period.as_deref() == Some(period));
            let (reserved, charged) = mine.fold((0, 0), |(r, c), j| {
                (r + j.credits_reserved, c + j.credits_charged)
            });
            ensure_eq!(
                h.ledger(p, period).await?,
                LedgerEntry { reserved, charged },
                "ledger of {p} in {period} is the sum of its jobs, {when}"
            );
        }
    }
    check_counts(h, providers, when).await
}

/// A crash keeps or loses each change whole: after writes of which only
/// some were synced, the store is consistent (history, ledger, counts,
/// index), holds every synced change, and the unsynced ones it kept are
/// kept whole.
pub async fn unsynced_writes_are_lost_whole_or_kept_whole(b: &dyn Backend) -> CaseResult {
    let h = Handle::open(b).await?;
    let providers = ["w1", "w2"];
    let keys: Vec<String> = (0..40).map(|i| format!("w-{i:02}")).collect();
    h.intake(
        keys.iter()
            .enumerate()
            .map(|(i, k)| spec(k, providers[i % 2], 0))
            .collect(),
    )
    .await?;
    h.sync().await?;
    let reserve = |amount| {
        Change::to(JobState::Submitting, "dispatched").ledger(LedgerOp::Reserve {
            period: "2026-11".into(),
            amount,
            limit: Some(10_000),
        })
    };
    // The first half is taken to pending and synced.
    for k in &keys[..20] {
        h.apply(k, JobState::Queued, reserve(5)).await?;
        h.apply(
            k,
            JobState::Submitting,
            Change::to(JobState::Pending, "created"),
        )
        .await?;
    }
    h.sync().await?;
    let mut synced = Vec::new();
    for k in &keys {
        synced.push((k.clone(), h.history(k).await?));
    }
    // The second half moves without a sync, and a listing in between
    // (which may push writes towards the disk) does not make them durable.
    for (i, k) in keys[20..].iter().enumerate() {
        h.apply(k, JobState::Queued, reserve(3)).await?;
        if i % 3 == 0 {
            h.all().await?;
        }
        if i % 2 == 0 {
            h.apply(
                k,
                JobState::Submitting,
                Change::to(JobState::Completed, "done").ledger(LedgerOp::Settle { charged: 2 }),
            )
            .await?;
        }
    }
    for k in &keys[..10] {
        h.apply(
            k,
            JobState::Pending,
            Change::to(JobState::Failed, "x").ledger(LedgerOp::Release),
        )
        .await?;
    }
    let h = h.crash(b).await?;
    check_consistent(&h, &providers, "after a crash").await?;
    ensure_eq!(
        h.all().await?.len(),
        keys.len(),
        "every synced intake after a crash"
    );
    for (k, was) in &synced {
        let now = h.history(k).await?;
        ensure!(
            now.starts_with(was),
            "{k}: a synced change was lost: history {was:?} became {now:?}"
        );
    }
    // Going on from the crash keeps it consistent.
    let left = h
        .list(&Filter {
            state: Some(JobState::Queued),
            provider: None,
        })
        .await?;
    for j in left.iter().take(4) {
        h.apply(&j.key, JobState::Queued, reserve(1)).await?;
    }
    let h = h.restart(b).await?;
    check_consistent(&h, &providers, "after work resumed and another crash").await
}

/// Compares `counts()` with a recount of `list`, and each filtered listing
/// (they read the index where a backend keeps one) with the full one.
async fn check_counts(h: &Handle, providers: &[&str], when: &str) -> CaseResult {
    let jobs = h.all().await?;
    let recount = tally(&jobs);
    ensure_eq!(
        h.counts().await?,
        recount,
        "counts() and a recount of list(), {when}"
    );
    for state in JobState::ALL {
        let listed = h
            .list(&Filter {
                state: Some(state),
                provider: None,
            })
            .await?;
        let want: Vec<&str> = jobs
            .iter()
            .filter(|j| j.state == state)
            .map(|j| j.key.as_str())
            .collect();
        let got: Vec<&str> = listed.iter().map(|j| j.key.as_str()).collect();
        ensure_eq!(got, want, "list of {state}, in enqueue order, {when}");
        for p in providers {
            let listed = h
                .list(&Filter {
                    state: Some(state),
                    provider: Some((*p).into()),
                })
                .await?;
            ensure!(
                listed.iter().all(|j| j.state == state && j.provider == *p),
                "list of {p} {state} holds only {p} {state} jobs, {when}"
            );
            let want = jobs
                .iter()
                .filter(|j| j.state == state && j.provider == *p)
                .count();
            ensure_eq!(listed.len(), want, "list of {p} {state}, {when}");
        }
    }
    for p in providers {
        let listed = h
            .list(&Filter {
                state: None,
                provider: Some((*p).into()),
            })
            .await?;
        ensure_eq!(
            listed.len(),
            jobs.iter().filter(|j| j.provider == *p).count(),
            "list of {p}, {when}"
        );
    }
    ensure!(
        jobs.windows(2).all(|w| w[0].seq < w[1].seq),
        "list() in enqueue order, {when}"
    );
    Ok(())
}

/// After a mix of intakes (with duplicates), claims, transitions, refused
/// changes and field edits, `counts()` matches a recount from `list`, and
/// still does after a restart.
pub async fn counts_match_a_recount(b: &dyn Backend) -> CaseResult {
    let h = Handle::open(b).await?;
    let providers = ["k1", "k2", "k3"];
    let specs = (0..30)
        .map(|i| spec(&format!("n-{i:02}"), providers[i % 3], (i % 2) as i32))
        .collect();
    h.intake(specs).await?;
    check_counts(&h, &providers, "after intake").await?;
    h.intake(vec![
        spec("n-00", "k2", 0),
        spec("n-30", "k1", 0),
        spec("n-30", "k1", 0),
    ])
    .await?;
    ensure_eq!(
        h.counts()
            .await?
            .get(&("k2".to_string(), JobState::Queued))
            .copied(),
        Some(10),
        "a known key counts once, under its first provider"
    );
    h.claim("k1", 4, "total", Some(1000), 3).await?;
    h.claim("k2", 2, "total", None, 1).await?;
    for (i, state) in JobState::ALL.into_iter().enumerate() {
        let key = format!("n-{:02}", 2 + 3 * i);
        h.drive(&key, state).await?;
    }
    let queued = h
        .list(&Filter {
            state: Some(JobState::Queued),
            provider: Some("k3".into()),
        })
        .await?;
    let first = queued.first().ok_or("k3 has queued jobs")?.key.clone();
    // Refused and field-only changes move no count.
    h.refused(
        &first,
        JobState::Pending,
        Change::to(JobState::Processing, "stale"),
    )
    .await?;
    h.refused(
        &first,
        JobState::Queued,
        Change::to(JobState::Completed, "illegal"),
    )
    .await?;
    h.apply(
        &first,
        JobState::Queued,
        Change::to(JobState::Queued, "edit").patch(Patch {
            stage: Some(Some("waiting".into())),
            ..Patch::default()
        }),
    )
    .await?;
    // Failed and retried, cancelled, and moved back and forth.
    h.apply(
        "n-17",
        JobState::Failed,
        Change::to(JobState::Queued, "retry"),
    )
    .await?;
    h.apply(
        "n-11",
        JobState::Processing,
        Change::to(JobState::Pending, "requeued"),
    )
    .await?;
    check_counts(&h, &providers, "after transitions").await?;
    let h = h.restart(b).await?;
    check_counts(&h, &providers, "after a restart").await?;
    // Counting goes on from the reloaded counts.
    h.claim("k3", 2, "total", None, 1).await?;
    h.intake(vec![spec("n-31", "k2", 0)]).await?;
    check_counts(&h, &providers, "after more writes").await?;
    Ok(())
}

/// After a restart, `recover` returns exactly the `submitting`, `pending`
/// and `processing` jobs, each once and as stored.
pub async fn recover_returns_exactly_the_live_jobs(b: &dyn Backend) -> CaseResult {
    let h = Handle::open(b).await?;
    let mut specs = Vec::new();
    for p in ["v1", "v2"] {
        for state in JobState::ALL {
            for n in 0..2 {
                specs.push(spec(&format!("{p}-{state}-{n}"), p, 0));
            }
        }
    }
    h.intake(specs).await?;
    let mut live = BTreeSet::new();
    for p in ["v1", "v2"] {
        for state in JobState::ALL {
            for n in 0..2 {
                let key = format!("{p}-{state}-{n}");
                h.drive(&key, state).await?;
                if matches!(
                    state,
                    JobState::Submitting | JobState::Pending | JobState::Processing
                ) {
                    live.insert(key);
                }
            }
        }
    }
    let h = h.restart(b).await?;
    let lease = h.lease().await?;
    let jobs = h
        .store
        .recover(&lease)
        .await
        .map_err(|e| format!("recover: {e}"))?;
    let got: Vec<&str> = jobs.iter().map(|j| j.key.as_str()).collect();
    let distinct: BTreeSet<String> = got.iter().map(|k| k.to_string()).collect();
    ensure_eq!(
        distinct.len(),
        got.len(),
        "each live job recovered once: {got:?}"
    );
    ensure_eq!(distinct, live, "the recovered jobs are the live ones");
    for j in &jobs {
        ensure_eq!(&h.job(&j.key).await?, j, "{} recovered as stored", j.key);
    }
    Ok(())
}
