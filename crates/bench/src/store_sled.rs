//! `switchyard bench store` (and `cargo run --release -p switchyard-bench --example bench_store`): the store's intake and durable-transition
//! throughput, each printed beside a raw sled baseline measured in the same
//! run with the same number of inserts and flushes, so the figure says what
//! our layer costs rather than how fast this machine's disk is.

use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_core::{Change, Job, JobSpec, JobState};
use switchyard_store::{Store, StoreError};
use switchyard_store_sled::SledStore;

fn storage(e: sled::Error) -> StoreError {
    StoreError::Storage(e.to_string())
}

pub struct StoreFigures {
    pub jobs: usize,
    pub intake: Duration,
    pub intake_raw: Duration,
    pub transitions: u64,
    pub transitions_time: Duration,
    pub flushes: u64,
    pub raw_time: Duration,
}

fn spec(i: usize) -> JobSpec {
    JobSpec {
        key: format!("bench-{i:07}"),
        provider: if i % 2 == 0 {
            "ugen".into()
        } else {
            "viggle".into()
        },
        priority: (i % 3) as i32,
        params: serde_json::json!({"product_name": "Premium Wireless Headphones", "product_image_url": format!("https://example.com/{i}.jpg"), "segment_count": 3}),
        ..JobSpec::default()
    }
}

pub async fn store(
    dir: &std::path::Path,
    jobs: usize,
    writers: usize,
    per_writer: usize,
) -> Result<StoreFigures, StoreError> {
    let tmp = dir;

    // Baseline: the same records (a job record with its first history
    // entry, and an index entry, per job) inserted straight into sled,
    // configured as the store configures it, as one batch, then one flush.
    let raw_db = switchyard_store_sled::sled_config(&tmp.join("raw"))
        .open()
        .map_err(storage)?;
    let raw = raw_db.open_tree("raw").map_err(storage)?;
    let specs: Vec<JobSpec> = (0..jobs).map(spec).collect();
    let record = |s: &JobSpec| {
        let history = [switchyard_core::Transition {
            at: "2026-11-23T00:00:00.000Z".into(),
            from: None,
            to: JobState::Queued,
            note: "accepted".into(),
        }];
        switchyard_store_sled::encode_record(
            &Job::from_spec(s.clone(), 0, "2026-11-23T00:00:00.000Z"),
            &history,
        )
    };
    let sample = record(&spec(0))?;
    let t = Instant::now();
    let mut batch = sled::Batch::default();
    for s in &specs {
        batch.insert(format!("j{}", s.key).as_bytes(), record(s)?);
        batch.insert(format!("i{}", s.key).as_bytes(), s.key.as_bytes());
    }
    raw.apply_batch(batch).map_err(storage)?;
    raw_db.flush_async().await.map_err(storage)?;
    let intake_raw = t.elapsed();

    let store = SledStore::open(&tmp.join("store"))?;
    let t = Instant::now();
    store.intake(specs).await?;
    store.sync().await?;
    let intake = t.elapsed();

    // Durable transitions: `writers` concurrent tasks, each moving its own
    // jobs one step and awaiting durability before the next (as dispatch
    // does before a create call).
    let store = Arc::new(store);
    let flushes_before = store.flush_count();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            for i in 0..per_writer {
                let key = format!("bench-{:07}", (w + i * writers) % jobs);
                let Ok(Some(job)) = store.get(&key).await else {
                    continue;
                };
                let next = match job.state {
                    JobState::Queued => JobState::Submitting,
                    JobState::Submitting => JobState::Pending,
                    JobState::Pending => JobState::Processing,
                    JobState::Processing => JobState::Completed,
                    _ => continue,
                };
                if store
                    .apply(&key, job.state, Change::to(next, "bench"))
                    .await
                    .is_ok()
                    && store.sync().await.is_ok()
                {
                    n += 1;
                }
            }
            n
        }));
    }
    let mut transitions = 0;
    for t in tasks {
        transitions += t
            .await
            .map_err(|e| StoreError::Storage(format!("writer task: {e}")))?;
    }
    let transitions_time = t.elapsed();
    let flushes = store.flush_count() - flushes_before;

    // Baseline: the same writes (a transition rewrites the job record and
    // moves its index entry: one insert of the record, one insert and one
    // removal in the index) and the same number of flushes, straight into
    // sled.
    let per_flush = (transitions / flushes.max(1)).max(1);
    let t = Instant::now();
    for i in 0..transitions {
        raw.insert(format!("t{i:09}").as_bytes(), &sample[..])
            .map_err(storage)?;
        raw.insert(format!("x{i:09}").as_bytes(), &b"bench-0000000"[..])
            .map_err(storage)?;
        if i > 0 {
            raw.remove(format!("x{:09}", i - 1).as_bytes())
                .map_err(storage)?;
        }
        if (i + 1) % per_flush == 0 {
            raw_db.flush_async().await.map_err(storage)?;
        }
    }
    raw_db.flush_async().await.map_err(storage)?;
    let raw_time = t.elapsed();
    Ok(StoreFigures {
        jobs,
        intake,
        intake_raw,
        transitions,
        transitions_time,
        flushes,
        raw_time,
    })
}

pub fn print(f: &StoreFigures) {
    let per_s = |n: f64, d: Duration| n / d.as_secs_f64().max(1e-9);
    println!("store benchmark (sled 0.34, this machine, same run)");
    println!(
        "  intake of {} jobs:   switchyard {:>8.0} ms ({:>9.0} jobs/s) | raw sled {:>8.0} ms | ratio {:.2}x (goal <= 2x)",
        f.jobs,
        f.intake.as_secs_f64() * 1e3,
        per_s(f.jobs as f64, f.intake),
        f.intake_raw.as_secs_f64() * 1e3,
        f.intake.as_secs_f64() / f.intake_raw.as_secs_f64().max(1e-9)
    );
    println!(
        "  durable transitions: switchyard {:>9.0} /s ({} in {:.2} s, {} flushes, {:.1} per flush) | raw sled, same writes and flushes: {:>9.0} transitions/s | ratio {:.2}x (goal >= 20000/s)",
        per_s(f.transitions as f64, f.transitions_time),
        f.transitions,
        f.transitions_time.as_secs_f64(),
        f.flushes,
        f.transitions as f64 / f.flushes.max(1) as f64,
        per_s(f.transitions as f64, f.raw_time),
        f.transitions_time.as_secs_f64() / f.raw_time.as_secs_f64().max(1e-9)
    );
}
