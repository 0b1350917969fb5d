//! Polls learned from finished jobs, through the real daemon: a provider
//! without progress learns its jobs' durations, shows them in
//! `/v1/providers`, and keeps them across a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use common::{sim, BIN};
use std::process::Command;
use std::time::Duration;
use switchyard_core::ProviderKind;

const SCENARIO: &str = r#"
seed = 5
speedup = 10.0
[providers.ulazai]
duration = { median = "20s", sigma = 0.2, min = "12s", max = "40s" }
failure_rate = 0.0
"#;

const JOBS: usize = 30;

fn class_of(providers: &serde_json::Value) -> serde_json::Value {
    let ulazai = providers
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "ulazai"))
        .expect("ulazai in /v1/providers");
    let classes = ulazai["poll_classes"].as_array().expect("poll_classes");
    assert_eq!(classes.len(), 1, "one class of job: {classes:?}");
    classes[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_without_progress_learns_durations_and_keeps_them() {
    let sim = sim(SCENARIO).await;
    let extra = "rate_limit = { per_second = 50, burst = 10 }\nmax_in_flight = 40\n\
                 poll = { schedule = [\"200ms\", \"300ms\", \"500ms\"], max = \"1s\", timeout = \"5m\", target_delay = \"300ms\" }";
    let env = common::write_config(
        &sim,
        &[common::P {
            name: "ulazai",
            kind: ProviderKind::Ulazai,
            extra,
        }],
        "",
    );
    let jobs: Vec<(String, String, String)> = (0..JOBS)
        .map(|i| {
            (
                format!("ulazai-{i:02}"),
                "ulazai".to_string(),
                common::params(ProviderKind::Ulazai, i),
            )
        })
        .collect();
    let batch = common::batch_file(env.dir.path(), "batch.toml", &jobs);
    // In a killing guard: a failed assertion does not leave it running.
    let mut daemon = common::spawn(&env, &[]);
    let out = Command::new(BIN)
        .args(["submit", batch.to_str().unwrap(), "--daemon-url", &env.url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = common::wait_settled(&env.url, JOBS, Duration::from_secs(60)).await;
    assert!(done
        .iter()
        .all(|j| j.state == switchyard_core::JobState::Completed));

    let class = class_of(&common::providers(&env.url).await);
    assert_eq!(class["samples"], JOBS as u64, "{class}");
    assert!(
        class["class"].as_str().unwrap().contains("model_slug="),
        "{class}"
    );
    assert_eq!(class["learned"], true, "{class}");
    // 20 s at a speed-up of 10, measured between two polls: about 2 s.
    let p50 = class["p50_s"].as_f64().unwrap();
    assert!((1.2..4.0).contains(&p50), "{class}");
    assert!(class["p90_s"].as_f64().unwrap() >= p50, "{class}");
    assert!(class["polls_per_job"].as_f64().unwrap() >= 1.0, "{class}");

    // The CLI table shows it too.
    let out = common::cli(&env.url, &["providers"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("POLLS/JOB") && table.contains("learned"),
        "{table}"
    );

    // Saved every 10 completions: a restart starts from what was learned.
    daemon.stop(Duration::from_secs(20)).unwrap();
    let mut daemon = common::spawn(&env, &[]);
    let again = class_of(&common::providers(&env.url).await);
    assert_eq!(again["samples"], JOBS as u64, "{again}");
    assert_eq!(again["learned"], true, "{again}");
    assert_eq!(again["p50_s"], class["p50_s"], "{again}");
    daemon.stop(Duration::from_secs(20)).unwrap();
}
