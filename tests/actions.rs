//! A user's actions on one job at its provider, end to end: the real
//! daemon and CLI, the simulator's U-Gen and UGC Lab. Each action is seen
//! arriving at the simulator (its counters and its view of the job), and
//! the credits a retry costs are checked in the ledger.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use common::{cli_async as cli, cli_json, text, wait_job as wait_for};

use common::{write_config, P};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use switchyard_core::{JobState, ProviderKind};
use switchyard_sim::SimServer;

const SCENARIO: &str = "seed = 11\nspeedup = 20.0\n[providers.ugen]\nduration = { fixed = \"2s\" }\nfailure_rate = 0.0\n[providers.ugclab]\nduration = { fixed = \"2s\" }\nfailure_rate = 0.0\n[providers.viggle]\nduration = { fixed = \"2s\" }\nfailure_rate = 0.0\n";

/// The simulator's raw status word for the job it made for `key`.
fn sim_status(sim: &SimServer, key: &str) -> String {
    let jobs = sim.jobs();
    let job = jobs.iter().find(|j| j.client_key.as_deref() == Some(key));
    job.map_or("?".into(), |j| j.status.clone())
}

async fn provider_view(url: &str, name: &str) -> Value {
    let views = common::providers(url).await;
    views
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .cloned()
        .unwrap()
}

fn submit_one(env_dir: &Path, url: &str, key: &str, provider: &str, params: &str) {
    let batch = common::batch_file(
        env_dir,
        &format!("{key}.toml"),
        &[(key.into(), provider.into(), params.into())],
    );
    let out = common::cli(url, &["submit", batch.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

fn env(sim: &SimServer, ugen_extra: &str) -> common::Env {
    write_config(
        sim,
        &[
            P {
                name: "ugen",
                kind: ProviderKind::Ugen,
                extra: ugen_extra,
            },
            P {
                name: "ugclab",
                kind: ProviderKind::Ugclab,
                extra: POLL,
            },
            P {
                name: "viggle",
                kind: ProviderKind::Viggle,
                extra: POLL,
            },
        ],
        "",
    )
}

const POLL: &str =
    "poll = { schedule = [\"200ms\", \"300ms\"], max = \"500ms\", timeout = \"5m\" }";

/// `retry --from-stage`: reaches U-Gen with the stage, the job runs again
/// and its second charge is counted once (U-Gen reports the job's total);
/// a retry the budget cannot pay for never reaches the provider; one the
/// provider refuses gives its reservation back and leaves the job as it
/// was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_from_a_stage_at_ugen_reserves_first_and_counts_each_run_once() {
    let sim = common::sim(SCENARIO).await;
    // One segment of veo3_fast: 20 credits a run; room for two runs.
    let env = env(
        &sim,
        &format!("{POLL}\nbudget = {{ credits = 50, period = \"total\" }}"),
    );
    let mut d = common::spawn(&env, &[]);
    submit_one(
        env.dir.path(),
        &env.url,
        "clip",
        "ugen",
        &common::params(ProviderKind::Ugen, 1),
    );
    wait_for(
        &env.url,
        "clip",
        |j| j.state == JobState::Completed,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(provider_view(&env.url, "ugen").await["budget_used"], 20);

    // A stage U-Gen does not have: refused there, reservation given back.
    let out = cli(&env.url, &["retry", "clip", "--from-stage", "nowhere"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("409") && err.contains("ugen refused to retry"),
        "{err}"
    );
    let view = provider_view(&env.url, "ugen").await;
    assert_eq!(
        (
            view["budget_used"].as_u64(),
            view["budget_reserved"].as_u64()
        ),
        (Some(20), Some(0)),
        "{view:#}"
    );
    let shown = cli_json(&env.url, &["show", "clip", "--json"]).await;
    assert_eq!(shown["state"], "completed");
    assert!(!shown["output_urls"].as_array().unwrap().is_empty());
    let notes: Vec<&str> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["note"].as_str().unwrap())
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("the provider refused the retry")),
        "{notes:?}"
    );

    let again = cli_json(
        &env.url,
        &["retry", "clip", "--from-stage", "captions", "--json"],
    )
    .await;
    assert!(
        matches!(again["state"].as_str(), Some("pending" | "processing")),
        "{again:#}"
    );
    assert!(
        again["output_urls"].as_array().unwrap().is_empty(),
        "{again:#}"
    );
    let seen = sim.stats().provider(ProviderKind::Ugen);
    assert_eq!(
        seen.retries_from_stage.get("captions"),
        Some(&1),
        "{seen:?}"
    );
    assert_eq!(seen.creates, 1, "the same job re-ran: no new create");
    let job = wait_for(
        &env.url,
        "clip",
        |j| j.state == JobState::Completed,
        Duration::from_secs(30),
    )
    .await;
    let view = provider_view(&env.url, "ugen").await;
    assert_eq!(
        (
            view["budget_used"].as_u64(),
            view["budget_reserved"].as_u64()
        ),
        (Some(40), Some(0)),
        "two runs of 20, each counted once: {view:#}"
    );
    assert_eq!(job.credits_charged, 40);
    assert_eq!(sim.stats().provider(ProviderKind::Ugen).credits_charged, 40);

    // 10 credits left: the reservation is refused before any request.
    let out = cli(&env.url, &["retry", "clip", "--from-stage", "music"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("budget exceeded"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(sim.stats().provider(ProviderKind::Ugen).retries, 1);
    common::sigterm(d.child());
}

/// `job-pause` / `job-resume` reach U-Gen (its counters and its own view of
/// the job say so); while paused the poll timeout does not run, and the
/// time paused is not counted against it afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_one_job_at_ugen() {
    let sim = common::sim(SCENARIO).await;
    // A run of 3 s (60 s simulated), a timeout of 5 s, a pause of 6 s.
    let env = env(
        &sim,
        "poll = { schedule = [\"200ms\", \"300ms\"], max = \"500ms\", timeout = \"5s\" }",
    );
    let mut d = common::spawn(&env, &[]);
    let params = "{ product_name = \"Lamp\", product_image_url = \"https://example.com/l.jpg\", segment_count = 1, x_sim_duration = \"60s\" }";
    submit_one(env.dir.path(), &env.url, "lamp", "ugen", params);
    wait_for(
        &env.url,
        "lamp",
        |j| j.state.is_live(),
        Duration::from_secs(20),
    )
    .await;
    let out = cli(&env.url, &["job-pause", "lamp"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("paused at the provider"));
    assert_eq!(sim.stats().provider(ProviderKind::Ugen).pauses, 1);
    assert_eq!(sim_status(&sim, "lamp"), "paused");
    let polls = sim.stats().provider(ProviderKind::Ugen).status_requests;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        sim.stats().provider(ProviderKind::Ugen).status_requests > polls + 3,
        "a paused job is still followed (it may end meanwhile)"
    );
    let paused = wait_for(&env.url, "lamp", |_| true, Duration::from_secs(1)).await;
    assert!(
        paused.state.is_live(),
        "no timeout while paused: {paused:?}"
    );
    assert!(paused.paused_at.is_some());
    let out = cli(&env.url, &["job-resume", "lamp", "--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(sim.stats().provider(ProviderKind::Ugen).resumes, 1);
    assert_ne!(sim_status(&sim, "lamp"), "paused");
    let done = wait_for(
        &env.url,
        "lamp",
        |j| j.state.is_terminal(),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(done.state, JobState::Completed, "{:?}", done.error);
    assert!(done.paused_ms >= 5000, "{}", done.paused_ms);
    let shown = cli_json(&env.url, &["show", "lamp", "--json"]).await;
    let notes: Vec<&str> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["note"].as_str().unwrap())
        .collect();
    assert!(
        notes.contains(&"paused by user at the provider"),
        "{notes:?}"
    );
    assert!(
        notes.contains(&"resumed by user at the provider"),
        "{notes:?}"
    );
    common::sigterm(d.child());
}

/// `show --detail` lists U-Gen's keyframes (with QAI scores) and segments
/// and UGC Lab's processing steps; a provider without the action (here
/// Viggle) gets a 409 naming it, for pause, resume, a retry from a stage
/// and the detail alike, and nothing reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detail_at_the_provider_and_a_clear_no_where_there_is_none() {
    let sim = common::sim(SCENARIO).await;
    let env = env(&sim, POLL);
    let mut d = common::spawn(&env, &[]);
    let two = "{ product_name = \"Mug\", product_image_url = \"https://example.com/m.jpg\", segment_count = 2 }";
    submit_one(env.dir.path(), &env.url, "mug", "ugen", two);
    submit_one(
        env.dir.path(),
        &env.url,
        "talk",
        "ugclab",
        &common::params(ProviderKind::Ugclab, 1),
    );
    submit_one(
        env.dir.path(),
        &env.url,
        "dance",
        "viggle",
        &common::params(ProviderKind::Viggle, 1),
    );
    for key in ["mug", "talk", "dance"] {
        wait_for(
            &env.url,
            key,
            |j| j.state == JobState::Completed,
            Duration::from_secs(30),
        )
        .await;
    }
    let mug = cli_json(&env.url, &["show", "mug", "--detail", "--json"]).await;
    let keyframes = mug["detail"]["keyframes"].as_array().unwrap();
    assert_eq!(keyframes.len(), 2, "{mug:#}");
    assert!(
        keyframes.iter().all(|k| k["qai_score"].as_f64().is_some()),
        "{mug:#}"
    );
    assert_eq!(mug["detail"]["segments"].as_array().unwrap().len(), 2);
    assert_eq!(
        mug["history"].as_array().unwrap().last().unwrap()["to"],
        "completed"
    );
    let people = text(&cli(&env.url, &["show", "mug", "--detail"]).await.stdout);
    assert!(
        people.contains("keyframes:") && people.contains("QAI 0."),
        "{people}"
    );
    let talk = cli_json(&env.url, &["show", "talk", "--detail", "--json"]).await;
    let steps: Vec<&str> = talk["detail"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps.len(), 3, "{talk:#}");
    assert!(steps.contains(&"videoGeneration"));
    // A plain show asks the provider nothing.
    let polls = sim.stats().provider(ProviderKind::Ugen).requests;
    let plain = cli_json(&env.url, &["show", "mug", "--json"]).await;
    assert!(plain.get("detail").is_none());
    assert_eq!(sim.stats().provider(ProviderKind::Ugen).requests, polls);

    let before = sim.stats().provider(ProviderKind::Viggle).requests;
    for args in [
        vec!["job-pause", "dance"],
        vec!["job-resume", "dance"],
        vec!["retry", "dance", "--from-stage", "render"],
        vec!["show", "dance", "--detail"],
    ] {
        let out = cli(&env.url, &args).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("409") && err.contains("\"viggle\""),
            "{args:?}: {err}"
        );
    }
    let http = reqwest::Client::new()
        .post(format!("{}/v1/jobs/dance/pause", env.url))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(http.status(), 409);
    let body: Value = http.json().await.unwrap();
    assert_eq!(body["error"]["code"], "conflict");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("provider \"viggle\" (viggle) cannot pause a job"),
        "{body:#}"
    );
    assert_eq!(sim.stats().provider(ProviderKind::Viggle).requests, before);
    common::sigterm(d.child());
}
