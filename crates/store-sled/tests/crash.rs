//! Crash test: a child process writes transitions at full speed through the
//! group commit and reports each one only after its `sync()` returned; the
//! parent SIGKILLs it mid-stream, reopens the store, and checks that every
//! reported transition survived and every job is in a legal, consistent state.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use switchyard_core::{Change, JobSpec, JobState};
use switchyard_store::{Filter, Store};
use switchyard_store_sled::SledStore;

const JOBS: usize = 400;
const WRITERS: usize = 16;
const PATH: [JobState; 5] = [
    JobState::Queued,
    JobState::Submitting,
    JobState::Pending,
    JobState::Processing,
    JobState::Completed,
];

fn rank(s: JobState) -> usize {
    PATH.iter().position(|p| *p == s).unwrap_or(usize::MAX)
}

/// The writer: runs only when the parent test starts this binary with
/// SWITCHYARD_CRASH_DIR set.
#[test]
fn crash_writer_child() {
    let Ok(dir) = std::env::var("SWITCHYARD_CRASH_DIR") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = SledStore::open(std::path::Path::new(&dir)).unwrap();
        let specs: Vec<JobSpec> = (0..JOBS)
            .map(|i| JobSpec {
                key: format!("job-{i:04}"),
                provider: "p".into(),
                priority: 0,
                params: serde_json::json!({"i": i}),
                ..JobSpec::default()
            })
            .collect();
        store.intake(specs).await.unwrap();
        store.sync().await.unwrap();
        println!("INTAKE");
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                // Loop forever: the parent kills us.
                loop {
                    for i in (w..JOBS).step_by(WRITERS) {
                        let key = format!("job-{i:04}");
                        let cur = store.get(&key).await.unwrap().unwrap().state;
                        let next = match cur {
                            JobState::Completed => continue,
                            s => PATH[rank(s) + 1],
                        };
                        store
                            .apply(&key, cur, Change::to(next, "crash test"))
                            .await
                            .unwrap();
                        store.sync().await.unwrap();
                        println!("ACK {key} {}", next.as_str());
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

#[test]
fn sigkill_mid_write_keeps_every_acknowledged_transition() {
    if std::env::var("SWITCHYARD_CRASH_DIR").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_writer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SWITCHYARD_CRASH_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked: std::collections::HashMap<String, JobState> = Default::default();
    let mut lines = BufReader::new(stdout).lines();
    let start = Instant::now();
    let mut intake = false;
    // Kill after a few hundred acknowledged transitions (or 10 s).
    while let Some(Ok(line)) = lines.next() {
        if line.contains("INTAKE") {
            intake = true;
        }
        if let Some(rest) = line.strip_prefix("ACK ") {
            let mut it = rest.split(' ');
            let key = it.next().unwrap().to_string();
            let st: JobState = it.next().unwrap().parse().unwrap();
            acked.insert(key, st);
        }
        if acked.len() >= 300 || start.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(intake, "the child never finished intake");
    assert!(
        acked.len() >= 50,
        "too few transitions acknowledged before the kill: {}",
        acked.len()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = SledStore::open(dir.path()).unwrap();
        let jobs = store.list(&Filter::default()).await.unwrap();
        assert_eq!(
            jobs.len(),
            JOBS,
            "the intake batch was acknowledged: every job must be there"
        );
        for (key, st) in &acked {
            let job = store.get(key).await.unwrap().unwrap();
            assert!(
                rank(job.state) >= rank(*st),
                "{key}: acknowledged {st}, found {}",
                job.state
            );
        }
        for job in &jobs {
            assert!(
                rank(job.state) < PATH.len(),
                "{} is in an unexpected state {}",
                job.key,
                job.state
            );
            // The history is a legal chain ending in the current state.
            let hist = store.history(&job.key).await.unwrap();
            assert_eq!(
                hist.last().unwrap().to,
                job.state,
                "{}: history disagrees with state",
                job.key
            );
            for pair in hist.windows(2) {
                assert!(
                    pair[0].to.can_become(pair[1].to),
                    "{}: illegal step in history",
                    job.key
                );
            }
        }
        // The index agrees with the jobs (a listing by state reads the
        // index), and so do the counts kept beside it.
        let counts = store.counts().await.unwrap();
        for state in JobState::ALL {
            let real = jobs.iter().filter(|j| j.state == state).count() as u64;
            let indexed = store
                .list(&Filter {
                    state: Some(state),
                    provider: Some("p".into()),
                })
                .await
                .unwrap();
            assert_eq!(indexed.len() as u64, real, "index count for {state}");
            assert!(
                indexed.iter().all(|j| j.state == state),
                "index entry in the wrong state for {state}"
            );
            let n = counts
                .iter()
                .filter(|c| c.provider == "p" && c.state == state)
                .map(|c| c.jobs)
                .sum::<u64>();
            assert_eq!(n, real, "count for {state}");
        }
    });
}
