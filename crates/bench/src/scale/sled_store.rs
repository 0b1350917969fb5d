//! The restart part's store, built straight through `SledStore` (open,
//! import, flush) rather than through a daemon, which would take minutes
//! for a million jobs. The only place the benchmark touches the store's
//! own API: when that API changes, this file changes with it.

use super::{spec, RESTART_QUEUED};
use anyhow::Context;
use std::path::Path;
use std::time::{Duration, Instant};
use switchyard_core::{Job, JobError, JobState};
use switchyard_store_sled::SledStore;

/// Jobs per `SledStore::import` call when building a restart store.
const IMPORT_CHUNK: usize = 50_000;

/// A store of `n` jobs: the first ones finished (one in 50 failed, the rest
/// completed, as a long-running daemon's store looks), the last
/// [`RESTART_QUEUED`] queued.
pub async fn build_store(db: &Path, n: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(db)?;
    let store = SledStore::open(db)?;
    let now = switchyard_core::model::now_rfc3339();
    let queued_from = n.saturating_sub(RESTART_QUEUED);
    let mut i = 0;
    let mut last = Instant::now();
    while i < n {
        let end = (i + IMPORT_CHUNK).min(n);
        let jobs: Vec<Job> = (i..end)
            .map(|k| restart_job(k, k >= queued_from, &now))
            .collect();
        let st = store.clone();
        tokio::task::spawn_blocking(move || st.import(jobs))
            .await
            .context("import task")??;
        i = end;
        if last.elapsed() >= Duration::from_secs(5) {
            eprintln!("  imported {i} of {n} jobs");
            last = Instant::now();
        }
    }
    let st = store.clone();
    tokio::task::spawn_blocking(move || st.flush_now())
        .await
        .context("flush task")??;
    drop(store);
    // The flusher task may still hold a clone for a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

fn restart_job(i: usize, queued: bool, now: &str) -> Job {
    let mut j = Job::from_spec(spec("rs", i), 0, now);
    if queued {
        return j;
    }
    j.provider_job_id = Some(format!("vg_{i:012x}"));
    j.attempts = 1;
    j.budget_period = Some("total".into());
    if i % 50 == 49 {
        j.state = JobState::Failed;
        j.provider_status = Some("failed".into());
        j.progress = Some(45);
        j.error = Some(JobError::new("CS-UORC02-001", "Render worker failed"));
    } else {
        j.state = JobState::Completed;
        j.provider_status = Some("completed".into());
        j.progress = Some(100);
        j.output_urls = vec![format!("https://cdn.example.com/viggle/vg_{i:012x}.mp4")];
        j.credits_charged = 10;
    }
    j
}
