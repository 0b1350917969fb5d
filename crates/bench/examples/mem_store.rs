//! Resident memory per job of the store alone (no daemon): intake of N jobs
//! in batches of 1,000, then each taken to `pending` as the daemon does.
//! `MIMALLOC_PURGE_DELAY=0 cargo run --release -p switchyard-bench --example mem_store [JOBS]`
//! (the daemon runs with that setting; see its `main`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use switchyard_core::model::now_rfc3339;
use switchyard_core::{Change, JobSpec, JobState, Patch};
use switchyard_store::Store;
use switchyard_store_sled::SledStore;

fn rss_kib() -> u64 {
    switchyard_testkit::procfs::rss_kib(std::process::id())
        .unwrap()
        .0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let before = rss_kib();
    for chunk in 0..n.div_ceil(1000) {
        let specs = (chunk * 1000..((chunk + 1) * 1000).min(n))
            .map(|i| JobSpec {
                key: format!("mem-{i:07}"),
                provider: "viggle".into(),
                priority: 0,
                params: serde_json::json!({ "image_url": format!("https://example.com/products/{i}.png") }),
                ..JobSpec::default()
            })
            .collect();
        store.intake(specs).await.unwrap();
        store.sync().await.unwrap();
    }
    let queued = rss_kib();
    for i in 0..n {
        let key = format!("mem-{i:07}");
        store
            .apply(&key, JobState::Queued, Change::to(JobState::Submitting, ""))
            .await
            .unwrap();
        let id = format!("{:032x}", i as u128 * 7919);
        // As the daemon records an acknowledged create: the provider's id
        // and when it answered.
        let edit = Patch {
            provider_job_id: Some(Some(id)),
            submitted_at: Some(Some(now_rfc3339())),
            ..Patch::default()
        };
        store
            .apply(
                &key,
                JobState::Submitting,
                Change::to(JobState::Pending, "created").patch(edit),
            )
            .await
            .unwrap();
        if i % 1000 == 999 {
            store.sync().await.unwrap();
        }
    }
    store.sync().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let pending = rss_kib();
    let per_job = |kib: u64| kib.saturating_sub(before) * 1024 / n.max(1) as u64;
    println!(
        "store alone, {n} jobs: {} B/job resident when queued, {} B/job when pending",
        per_job(queued),
        per_job(pending)
    );
}
