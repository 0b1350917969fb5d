//! End-to-end: the real `switchyard` binary as a child process, driving the
//! provider simulator (in this test process) over loopback. These tests are
//! the proof that a batch survives a stop in the middle: nothing lost,
//! nothing created twice.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use common::{cli, sigterm, sim, start_daemon, Env, BIN};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use switchyard_core::{Job, JobState, ProviderKind};
use switchyard_sim::SimServer;

fn write_config(sim: &SimServer, max_in_flight: u32) -> Env {
    let poll =
        "poll = { schedule = [\"200ms\", \"300ms\", \"500ms\"], max = \"1s\", timeout = \"5m\" }";
    let extra = format!(
        "rate_limit = {{ per_second = 20, burst = 5 }}\nmax_in_flight = {max_in_flight}\n{poll}"
    );
    common::write_config(
        sim,
        &[
            common::P {
                name: "ugen",
                kind: ProviderKind::Ugen,
                extra: &extra,
            },
            common::P {
                name: "viggle",
                kind: ProviderKind::Viggle,
                extra: &extra,
            },
        ],
        "",
    )
}

fn jobs(env: &Env) -> Vec<Job> {
    let out = cli(&env.url, &["jobs", "--json"]);
    assert!(
        out.status.success(),
        "jobs --json failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("jobs --json prints one JSON array and nothing else")
}

fn batch_file(dir: &Path, n: usize) -> PathBuf {
    let jobs: Vec<(String, String, String)> = (0..n)
        .map(|i| {
            if i % 2 == 0 {
                (
                    format!("ugen-{i:02}"),
                    "ugen".to_string(),
                    common::params(ProviderKind::Ugen, i),
                )
            } else {
                (
                    format!("viggle-{i:02}"),
                    "viggle".to_string(),
                    common::params(ProviderKind::Viggle, i),
                )
            }
        })
        .collect();
    common::batch_file(dir, "batch.toml", &jobs)
}

const SCENARIO: &str = r#"
seed = 3
speedup = 10.0
[providers.ugen]
duration = { median = "15s", sigma = 0.2, min = "10s", max = "25s" }
failure_rate = 0.0
[providers.viggle]
duration = { median = "15s", sigma = 0.2, min = "10s", max = "25s" }
failure_rate = 0.0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_batch_then_restart_loses_nothing_and_creates_nothing_twice() {
    let sim = sim(SCENARIO).await;
    let env = write_config(&sim, 3);
    let batch = batch_file(env.dir.path(), 16);
    let batch_s = batch.to_str().unwrap().to_string();

    let mut daemon = start_daemon(&env);
    let out = tokio::task::spawn_blocking({
        let env_url = env.url.clone();
        let b = batch_s.clone();
        move || {
            Command::new(BIN)
                .args(["submit", &b, "--daemon-url", &env_url])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "submit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("16 accepted, 0 already known"), "{stdout}");

    // Stop once some jobs were created but the batch is far from done.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let creates: u64 = sim.stats().providers.values().map(|p| p.creates).sum();
        if creates >= 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no creates reached the simulator"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = tokio::task::spawn_blocking(move || {
        let s = sigterm(&mut daemon);
        (s, daemon)
    })
    .await
    .unwrap();
    assert!(
        status.0.success(),
        "SIGTERM must drain and exit 0, got {:?}",
        status.0
    );
    let created_before_restart: u64 = sim.stats().providers.values().map(|p| p.creates).sum();
    assert!(
        created_before_restart < 16,
        "the stop came too late to test anything ({created_before_restart} created)"
    );

    // Restart: the remaining jobs continue.
    let mut daemon = start_daemon(&env);
    let deadline = Instant::now() + Duration::from_secs(90);
    let finished = loop {
        let env2 = Env {
            dir: tempfile::tempdir().unwrap(),
            config: env.config.clone(),
            url: env.url.clone(),
        };
        let js = tokio::task::spawn_blocking(move || jobs(&env2))
            .await
            .unwrap();
        if js.len() == 16
            && js
                .iter()
                .all(|j| j.state.is_terminal() || j.state == JobState::Uncertain)
        {
            break js;
        }
        assert!(
            Instant::now() < deadline,
            "jobs did not finish after restart: {:?}",
            js.iter().map(|j| (&j.key, j.state)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };

    // Resubmitting the same batch is a no-op.
    let out = cli(&env.url, &["submit", &batch_s]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 accepted, 16 already known"));

    let st = tokio::task::spawn_blocking(move || sigterm(&mut daemon))
        .await
        .unwrap();
    assert!(st.success());

    assert!(
        finished.iter().all(|j| j.state == JobState::Completed),
        "{:?}",
        finished
            .iter()
            .map(|j| (&j.key, j.state))
            .collect::<Vec<_>>()
    );
    let stats = sim.stats();
    for (kind, p) in &stats.providers {
        assert!(
            p.duplicate_creates.is_empty(),
            "{kind}: created twice: {:?}",
            p.duplicate_creates
        );
        assert!(
            p.creates_by_key.values().all(|n| *n == 1),
            "{kind}: {:?}",
            p.creates_by_key
        );
    }
    let keys: usize = stats
        .providers
        .values()
        .map(|p| p.creates_by_key.len())
        .sum();
    assert_eq!(keys, 16, "every job created exactly once at the simulator");
    let sim_jobs = sim.jobs();
    assert_eq!(sim_jobs.len(), 16);
    for j in &finished {
        let id = j
            .provider_job_id
            .as_deref()
            .expect("completed job has a provider id");
        assert!(
            sim_jobs.iter().any(|s| s.job_id == id),
            "{} has an id the simulator does not know",
            j.key
        );
        assert!(
            !j.output_urls.is_empty(),
            "{} completed without an output URL",
            j.key
        );
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_batch_is_rejected_whole_with_file_and_line() {
    let sim = sim(SCENARIO).await;
    let env = write_config(&sim, 3);
    let mut daemon = start_daemon(&env);
    let path = env.dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[jobs]]\nkey = \"ok-1\"\nprovider = \"viggle\"\nparams = { image_url = \"https://example.com/a.png\" }\n\n[[jobs]]\nkey = \"bad-1\"\nprovider = \"ugen\"\nparams = { product_name = \"X\", segment_count = 0 }\n\n[[jobs]]\nkey = \"bad-2\"\nprovider = \"nobody\"\n",
    )
    .unwrap();
    let p = path.to_str().unwrap().to_string();
    let env2 = Env {
        dir: tempfile::tempdir().unwrap(),
        config: env.config.clone(),
        url: env.url.clone(),
    };
    let (out, listed) =
        tokio::task::spawn_blocking(move || (cli(&env2.url, &["submit", &p]), jobs(&env2)))
            .await
            .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "invalid input exits 2: {stderr}"
    );
    assert!(stderr.contains("bad.toml:6: job \"bad-1\""), "{stderr}");
    assert!(stderr.contains("product_image_url"), "{stderr}");
    assert!(stderr.contains("segment_count"), "{stderr}");
    assert!(
        stderr.contains("bad.toml:11: job \"bad-2\": provider \"nobody\" is not configured"),
        "{stderr}"
    );
    assert!(
        listed.is_empty(),
        "nothing may be queued from a rejected batch"
    );
    let st = tokio::task::spawn_blocking(move || sigterm(&mut daemon))
        .await
        .unwrap();
    assert!(st.success());
    sim.shutdown().await;
}

/// Progress reports are kept in memory, not written per poll (see
/// `LiveReport`): the API must still show them while the job runs, and the
/// stored job must carry the final state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_of_a_running_job_is_shown_while_it_runs() {
    let sim =
        sim("seed = 5\n[providers.viggle]\nduration = { fixed = \"5s\" }\nfailure_rate = 0.0\n")
            .await;
    let env = write_config(&sim, 3);
    let batch = common::batch_file(
        env.dir.path(),
        "one.toml",
        &[(
            "vg-progress".to_string(),
            "viggle".to_string(),
            common::params(ProviderKind::Viggle, 1),
        )],
    );
    let mut daemon = common::Guard(Some(start_daemon(&env)));
    let out = cli(&env.url, &["submit", batch.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let client = reqwest::Client::new();
    let url = format!("{}/v1/jobs/vg-progress", env.url);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let last = loop {
        let v: serde_json::Value = client.get(&url).send().await.unwrap().json().await.unwrap();
        let state = v["state"].as_str().unwrap_or_default().to_string();
        if state == "processing" {
            if let Some(p) = v["progress"].as_u64() {
                if seen.last() != Some(&p) {
                    seen.push(p);
                }
            }
        }
        if state == "completed" {
            break v;
        }
        assert!(Instant::now() < deadline, "job did not complete: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        seen.len() >= 2 && seen.windows(2).all(|w| w[0] < w[1]) && seen[0] < 100,
        "progress while processing should be shown and rise, saw {seen:?}"
    );
    assert_eq!(last["progress"], 100, "{last}");
    assert!(sigterm(daemon.child()).success());
}
