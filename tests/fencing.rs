//! Fencing on a shared PostgreSQL store: a daemon frozen (SIGSTOP) until
//! its lease expires and another daemon takes its jobs over, then thawed
//! (SIGCONT), must change nothing the new owner did, although it wakes
//! with every job's poll overdue and answers at the provider that it could
//! record. Needs `SWITCHYARD_TEST_DATABASE_URL`; without it the test says
//! `skipped: SWITCHYARD_TEST_DATABASE_URL not set` and passes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use common::{pg::TestDb, sim, Env, Signal, P};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use switchyard_core::{JobState, ProviderKind};
use switchyard_sim::SimServer;

const URL_ENV: &str = "E2E_DATABASE_URL";
const JOBS: usize = 40;

/// A daemon of the fleet: its own dir, port, name and output dir; the
/// shared store; Viggle polled every `poll`.
fn member(sim: &SimServer, name: &str, poll: &str) -> Env {
    let env = Env::new().unwrap();
    let extra = format!(
        "rate_limit = {{ per_second = 400, burst = 20 }}\nmax_in_flight = 100\npoll = {{ schedule = [\"{poll}\"], max = \"{poll}\", timeout = \"5m\" }}"
    );
    let out = env.dir.path().join("out");
    env.write(
        sim,
        &[P {
            name: "viggle",
            kind: ProviderKind::Viggle,
            extra: &extra,
        }],
        &format!("name = \"{name}\"\noutput_dir = \"{}\"", out.display()),
    )
    .unwrap();
    env.append(&format!(
        "[store]\nbackend = \"postgres\"\nurl_env = \"{URL_ENV}\"\nlease_ttl = \"3s\"\n"
    ))
    .unwrap();
    env
}

fn out_dir(env: &Env) -> PathBuf {
    env.dir.path().join("out")
}

/// Keys listed in a daemon's manifest, with how often.
fn manifest(env: &Env) -> Vec<String> {
    let text = std::fs::read_to_string(out_dir(env).join("manifest.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["key"].as_str().unwrap().to_string()
        })
        .collect()
}

async fn wait_for<F: FnMut() -> bool>(what: &str, limit: Duration, mut f: F) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn daemons(url: &str) -> Vec<String> {
    let v: serde_json::Value = reqwest::get(format!("{url}/v1/daemons"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d["owner"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_stopped_past_its_lease_changes_nothing_the_new_owner_did() {
    let Some(db) = TestDb::create("fencing").await.unwrap() else {
        return;
    };
    let sim = sim("seed = 12\nspeedup = 1.0\n[providers.viggle]\nduration = { median = \"7s\", sigma = 0.4, min = \"4s\", max = \"16s\" }\nfailure_rate = 0.0\n").await;
    // A polls often: when it wakes, every due poll goes out at once. B
    // polls seldom, so that many jobs finish at the provider while A is
    // frozen and before B has looked: answers A could record first.
    let env_a = member(&sim, "fence-a", "200ms");
    let env_b = member(&sim, "fence-b", "5s");
    let vars = [(URL_ENV, db.url.as_str())];
    let mut a = tokio::task::block_in_place(|| common::spawn(&env_a, &vars));
    let jobs: Vec<_> = (0..JOBS)
        .map(|i| {
            (
                format!("viggle-{i:02}"),
                "viggle".to_string(),
                common::params(ProviderKind::Viggle, i),
            )
        })
        .collect();
    let path = common::batch_file(env_a.dir.path(), "batch.toml", &jobs);
    let out =
        tokio::task::block_in_place(|| common::cli(a.url(), &["submit", path.to_str().unwrap()]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every job created (by A, the only daemon so far) before B starts.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let js = common::jobs(a.url()).await;
        if js.len() == JOBS
            && js
                .iter()
                .all(|j| !matches!(j.state, JobState::Queued | JobState::Submitting))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A did not create every job: {:?}\n{}",
            js.iter().map(|j| j.state).collect::<Vec<_>>(),
            a.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "A created {JOBS} jobs in {:.1} s",
        (Instant::now() + Duration::from_secs(20) - deadline).as_secs_f64()
    );
    let mut b = tokio::task::block_in_place(|| common::spawn(&env_b, &vars));

    a.signal(Signal::Stop).unwrap();
    let stopped = Instant::now();
    // What A recorded before it froze (writes it had sent land meanwhile).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let done_by_a: BTreeSet<String> = common::jobs(b.url())
        .await
        .into_iter()
        .filter(|j| j.state == JobState::Completed)
        .map(|j| j.key)
        .collect();
    // A's lease runs out, then B takes its jobs.
    let b_url = b.url().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while daemons(&b_url).await.contains(&"fence-a".to_string()) {
        assert!(Instant::now() < deadline, "A's lease never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for("B to take A's jobs over", Duration::from_secs(10), || {
        b.log().contains("took over the live jobs")
    })
    .await;
    let taken = Instant::now();
    // Let jobs finish at the provider that B has not polled yet.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let finished_at_provider = sim.jobs().iter().filter(|j| j.status == "complete").count();
    let store_done = common::jobs(&b_url)
        .await
        .iter()
        .filter(|j| j.state == JobState::Completed)
        .count();
    let raced = finished_at_provider.saturating_sub(store_done);
    eprintln!(
        "frozen {:.1} s; B took over {:.1} s after the stop; {} completed by A before; {raced} finished at the provider and not yet recorded at the thaw",
        stopped.elapsed().as_secs_f64(),
        (taken - stopped).as_secs_f64(),
        done_by_a.len()
    );
    assert!(
        raced >= 3,
        "the test needs answers A could record first ({raced})"
    );
    a.signal(Signal::Cont).unwrap();

    let settled = common::wait_settled(&b_url, JOBS, Duration::from_secs(60)).await;
    // A noticed: its writes were refused and it learned its lease was gone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log_a = a.log();
    assert!(
        log_a.contains("lease had expired"),
        "A did not notice its lease was lost:\n{}",
        a.log_tail(30)
    );

    let stats = sim.stats().provider(ProviderKind::Viggle);
    assert!(
        stats.duplicate_creates.is_empty(),
        "created twice: {:?}",
        stats.duplicate_creates
    );
    assert_eq!(stats.creates_by_key.len(), JOBS);
    let (man_a, man_b) = (manifest(&env_a), manifest(&env_b));
    let b_out = out_dir(&env_b);
    let mut written_by_a = Vec::new();
    for j in &settled {
        assert_eq!(j.state, JobState::Completed, "{} ended {}", j.key, j.state);
        let in_a = man_a.iter().filter(|k| **k == j.key).count();
        let in_b = man_b.iter().filter(|k| **k == j.key).count();
        assert_eq!(in_a + in_b, 1, "{}: listed {in_a} + {in_b} times", j.key);
        if done_by_a.contains(&j.key) {
            continue;
        }
        // Everything after the freeze was B's to record.
        let b_files = !j.output_files.is_empty()
            && j.output_files
                .iter()
                .all(|f| Path::new(f).starts_with(&b_out));
        if in_a > 0 || !b_files {
            written_by_a.push(j.key.clone());
        }
    }
    assert!(
        written_by_a.is_empty(),
        "the thawed daemon recorded jobs it no longer held: {written_by_a:?}"
    );
    // Every history is one walk through the states, none twice.
    for j in &settled {
        let v: serde_json::Value = reqwest::get(format!("{b_url}/v1/jobs/{}", j.key))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let states: Vec<String> = v["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["to"].as_str().unwrap().to_string())
            .collect();
        let unique: BTreeSet<&String> = states.iter().collect();
        assert_eq!(unique.len(), states.len(), "{}: {states:?}", j.key);
        assert_eq!(states.last().map(String::as_str), Some("completed"));
    }
    tokio::task::block_in_place(|| {
        a.stop(Duration::from_secs(20)).unwrap();
        b.stop(Duration::from_secs(20)).unwrap();
    });
    sim.shutdown().await;
    db.drop_db().await;
}
