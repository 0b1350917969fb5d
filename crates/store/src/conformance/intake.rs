//! Intake: a batch is taken whole, deduplicated by key, and a key is
//! accepted once however many intakes race.

use super::{
    ensure, ensure_eq, join_all, require_parallel, spec, tally, Backend, CaseResult, Handle,
};
use crate::Filter;
use std::collections::{BTreeMap, BTreeSet};
use switchyard_core::JobState;

/// Duplicates within a batch and keys already known are reported as known
/// and left unchanged; everything accepted is there, queued, with one
/// history entry, and still there after sync and reopen.
pub async fn intake_is_all_or_nothing_with_dedup(b: &dyn Backend) -> CaseResult {
    let h = Handle::open(b).await?;
    let mut dup = spec("a", "p", 5);
    dup.params = serde_json::json!({"second": true});
    let r = h
        .intake(vec![spec("a", "p", 0), spec("b", "p", 1), dup])
        .await?;
    ensure_eq!(r.accepted, ["a", "b"], "accepted, in batch order");
    ensure_eq!(r.already_known, ["a"], "a key repeated within the batch");
    let a = h.job("a").await?;
    ensure_eq!(
        (a.priority, &a.params),
        (0, &serde_json::json!({"key": "a"})),
        "the first of two specs with one key is the one kept"
    );
    ensure_eq!(a.state, JobState::Queued, "a job taken in is queued");
    ensure_eq!(
        (a.attempts, a.credits_reserved, a.credits_charged),
        (0, 0, 0),
        "a job taken in has no attempt and no credits"
    );
    let hist = h.history("a").await?;
    ensure_eq!(hist.len(), 1, "one history entry at intake: {hist:?}");
    ensure_eq!(
        (hist[0].from, hist[0].to),
        (None, JobState::Queued),
        "the intake entry"
    );

    let (b_before, b_hist) = (h.job("b").await?, h.history("b").await?);
    let mut known = spec("b", "p", 9);
    known.params = serde_json::json!({"changed": true});
    let r = h.intake(vec![known, spec("c", "q", 0)]).await?;
    ensure_eq!(r.accepted, ["c"], "only the new key is accepted");
    ensure_eq!(r.already_known, ["b"], "the known key is reported");
    ensure_eq!(h.job("b").await?, b_before, "a known job is left unchanged");
    ensure_eq!(h.history("b").await?, b_hist, "a known job's history");

    let r = h.intake(vec![spec("a", "p", 0), spec("c", "q", 0)]).await?;
    ensure!(
        r.accepted.is_empty(),
        "nothing new, nothing accepted: {r:?}"
    );
    ensure_eq!(r.already_known, ["a", "c"], "every known key is reported");
    let r = h.intake(Vec::new()).await?;
    ensure_eq!(r, Default::default(), "an empty batch");
    ensure_eq!(h.all().await?.len(), 3, "jobs after the small batches");

    // A large batch over two providers, accepted whole and in order.
    let big: Vec<String> = (0..300).map(|i| format!("big-{i:03}")).collect();
    let specs = big
        .iter()
        .enumerate()
        .map(|(i, k)| spec(k, if i % 2 == 0 { "p" } else { "q" }, (i % 3) as i32))
        .collect();
    let r = h.intake(specs).await?;
    ensure_eq!(
        r.accepted,
        big,
        "a batch of new keys is accepted whole, in order"
    );
    ensure!(r.already_known.is_empty(), "nothing known in the big batch");

    let h = h.restart(b).await?;
    let jobs = h.all().await?;
    let keys: BTreeSet<&str> = jobs.iter().map(|j| j.key.as_str()).collect();
    let mut expect: BTreeSet<&str> = big.iter().map(String::as_str).collect();
    expect.extend(["a", "b", "c"]);
    ensure_eq!(keys, expect, "every accepted job after sync and reopen");
    ensure_eq!(jobs.len(), expect.len(), "no job listed twice after reopen");
    for j in &jobs {
        ensure_eq!(j.state, JobState::Queued, "{} after reopen", j.key);
        let hist = h.history(&j.key).await?;
        ensure_eq!(hist.len(), 1, "history of {} after reopen", j.key);
    }
    let seqs: BTreeSet<u64> = jobs.iter().map(|j| j.seq).collect();
    ensure_eq!(
        seqs.len(),
        jobs.len(),
        "every job has its own enqueue number"
    );
    // Found by state too (the index, where a backend keeps one), and
    // counted.
    let queued = h
        .list(&Filter {
            state: Some(JobState::Queued),
            provider: None,
        })
        .await?;
    let queued: BTreeSet<&str> = queued.iter().map(|j| j.key.as_str()).collect();
    ensure_eq!(
        queued,
        expect,
        "every accepted job listed as queued after reopen"
    );
    ensure_eq!(h.counts().await?, tally(&jobs), "counts after reopen");
    Ok(())
}

/// Intakes racing over overlapping keys: each key is accepted by exactly
/// one of them, and every report accounts for its whole batch.
pub async fn concurrent_intakes_accept_each_key_once(b: &dyn Backend) -> CaseResult {
    require_parallel()?;
    let h = Handle::open(b).await?;
    const TASKS: usize = 16;
    // Batch i holds keys 5i .. 5i+20: each key is in up to four batches.
    let batch =
        |i: usize| -> Vec<String> { (5 * i..5 * i + 20).map(|k| format!("k-{k:03}")).collect() };
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let (h, barrier) = (h.clone(), barrier.clone());
        let keys = batch(i);
        tasks.push(tokio::spawn(async move {
            let specs = keys.iter().map(|k| spec(k, "p", 0)).collect();
            barrier.wait().await;
            h.intake(specs).await
        }));
    }
    let reports = join_all(tasks).await?;
    let mut accepted: BTreeMap<String, usize> = BTreeMap::new();
    for (i, r) in reports.iter().enumerate() {
        let mut got: Vec<&String> = r.accepted.iter().chain(&r.already_known).collect();
        got.sort();
        let want = batch(i);
        ensure_eq!(
            got,
            want.iter().collect::<Vec<_>>(),
            "intake {i}: accepted and known together are its batch"
        );
        for k in &r.accepted {
            *accepted.entry(k.clone()).or_default() += 1;
        }
    }
    let all: BTreeSet<String> = (0..TASKS).flat_map(batch).collect();
    ensure_eq!(
        accepted.keys().cloned().collect::<BTreeSet<_>>(),
        all,
        "every key accepted by some intake"
    );
    let twice: Vec<_> = accepted.iter().filter(|(_, n)| **n > 1).collect();
    ensure!(twice.is_empty(), "keys accepted more than once: {twice:?}");
    ensure_eq!(h.all().await?.len(), all.len(), "jobs stored");
    let queued = h
        .list(&Filter {
            state: Some(JobState::Queued),
            provider: Some("p".into()),
        })
        .await?;
    ensure_eq!(queued.len(), all.len(), "queued jobs of p");
    let counts = h.counts().await?;
    ensure_eq!(
        counts.get(&("p".to_string(), JobState::Queued)).copied(),
        Some(all.len() as u64),
        "counts of p after the race"
    );
    Ok(())
}
