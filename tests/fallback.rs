//! Fallbacks end to end: the real daemon, batches naming alternatives, the
//! simulator's providers failing, out of budget, or leaving the outcome
//! unknown. What a user must be able to trust: a job that fails at its
//! provider is done by the next one, each provider's credits are counted
//! once in its own ledger, and nothing is ever sent to a second provider
//! while the first may still be doing (and charging for) the work.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use common::{cli_async as cli, cli_json, text, wait_job as wait_for};

use common::{write_config, P};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use switchyard_core::{FallbackOn, HeldBy, JobState, ProviderKind};

const POLL: &str =
    "poll = { schedule = [\"200ms\", \"300ms\"], max = \"500ms\", timeout = \"5m\" }";

/// Every provider finishes in a simulated 2 s (0.1 s real), unless a job
/// scripts its outcome.
const QUICK: &str = "seed = 7\nspeedup = 20.0\n[providers.ugen]\nduration = { fixed = \"2s\" }\nfailure_rate = 0.0\n[providers.ulazai]\nduration = { fixed = \"2s\" }\nfailure_rate = 0.0\n[providers.viggle]\nduration = { fixed = \"2s\" }\nfailure_rate = 0.0\n[providers.ugclab]\nduration = { fixed = \"2s\" }\nfailure_rate = 0.0\n";

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

fn provider<'a>(views: &'a Value, name: &str) -> &'a Value {
    views
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no provider {name}: {views:#}"))
}

/// A job whose first provider fails it ends completed at its fallback:
/// both moves in its history, `show` and `jobs --json` name the provider
/// that did the work and the one tried before, and each provider's
/// credits are in its own ledger once (the simulator's own books agree).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_fails_at_its_provider_completes_at_its_fallback() {
    let sim = common::sim(QUICK).await;
    let extra = format!("{POLL}\nbudget = {{ credits = 1000, period = \"total\" }}");
    let env = write_config(
        &sim,
        &[
            P {
                name: "ugen",
                kind: ProviderKind::Ugen,
                extra: &extra,
            },
            P {
                name: "ulazai",
                kind: ProviderKind::Ulazai,
                extra: &extra,
            },
        ],
        "",
    );
    let mut d = common::spawn(&env, &[]);
    let batch = write(
        env.dir.path(),
        "batch.toml",
        "[[jobs]]\nkey = \"hp-01\"\nprovider = \"ugen\"\nparams = { product_name = \"Headphones\", product_image_url = \"https://example.com/h.jpg\", segment_count = 2, x_sim_outcome = \"failed\" }\n\n[[jobs.fallback]]\nprovider = \"ulazai\"\nparams = { model_slug = \"kling_3_0\", prompt = \"Headphones on a desk\", duration = 5 }\n",
    );
    let out = cli(&env.url, &["submit", batch.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let job = wait_for(
        &env.url,
        "hp-01",
        |j| j.state.is_terminal(),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        (job.state, job.provider.as_str()),
        (JobState::Completed, "ulazai"),
        "{job:?}"
    );
    assert_eq!(job.tried.len(), 1, "{job:?}");
    let first = &job.tried[0];
    assert_eq!(
        (first.provider.as_str(), first.why),
        ("ugen", FallbackOn::Failed)
    );
    assert!(
        first.error.is_some() && first.provider_job_id.is_some(),
        "{first:?}"
    );

    let shown = cli_json(&env.url, &["show", "hp-01", "--json"]).await;
    assert_eq!(shown["provider"], "ulazai");
    assert_eq!(shown["tried"][0]["provider"], "ugen");
    let moves: Vec<(String, String)> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["from"].as_str().unwrap_or("-").to_string(),
                h["to"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let hop = moves
        .iter()
        .position(|m| m == &("failed".to_string(), "queued".to_string()))
        .unwrap_or_else(|| panic!("no hop in {moves:?}"));
    assert!(
        moves[..hop].iter().filter(|m| m.1 == "submitting").count() == 1
            && moves[hop..].iter().filter(|m| m.1 == "submitting").count() == 1,
        "one submission at each provider: {moves:?}"
    );
    assert_eq!(moves.last().unwrap().1, "completed");
    let people = cli(&env.url, &["show", "hp-01"]).await;
    let people = text(&people.stdout);
    assert!(
        people.contains("providers: ugen (failed: ") && people.contains("-> ulazai (completed)"),
        "{people}"
    );

    // One create at each provider, and each ledger holds exactly what that
    // provider charged.
    let stats = sim.stats();
    let (ugen, ulazai) = (
        stats.provider(ProviderKind::Ugen),
        stats.provider(ProviderKind::Ulazai),
    );
    assert_eq!((ugen.creates, ulazai.creates), (1, 1));
    let views = cli_json(&env.url, &["providers", "--json"]).await;
    // U-Gen consumes credits on completion (its "refunds" are reservations
    // released); UlazAI charges at create and refunds a failure.
    let net = [
        ("ugen", ugen.credits_charged),
        ("ulazai", ulazai.credits_charged - ulazai.credits_refunded),
    ];
    for (name, charged) in net {
        let v = provider(&views, name);
        assert_eq!(v["budget_reserved"], 0, "{name}: {v:#}");
        assert_eq!(
            v["budget_used"].as_u64().unwrap(),
            charged,
            "{name}: {v:#} against the simulator's {stats:?}"
        );
    }
    assert!(ugen.credits_refunded > 0, "U-Gen released its reservation");
    assert_eq!(
        first.credits_charged, 0,
        "ugen charged nothing for the failure"
    );
    assert_eq!(
        job.credits_charged,
        ulazai.credits_charged - ulazai.credits_refunded
    );
    assert!(job.credits_charged > 0);
    common::sigterm(d.child());
}

/// A create whose answer is lost at a provider that cannot be asked
/// leaves the job `uncertain`: it stays there, at its provider, however
/// its fallbacks are set; the fallback's provider never hears of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_never_follows_an_uncertain_outcome() {
    // UGC Lab takes every create, then drops the connection.
    let sim = common::sim(&format!("{QUICK}faults = {{ drop = 1.0 }}\n")).await;
    let env = write_config(
        &sim,
        &[
            P {
                name: "ugclab",
                kind: ProviderKind::Ugclab,
                extra: &format!("{POLL}\nmax_attempts = 1"),
            },
            P {
                name: "viggle",
                kind: ProviderKind::Viggle,
                extra: POLL,
            },
        ],
        "",
    );
    let mut d = common::spawn(&env, &[]);
    let batch = write(
        env.dir.path(),
        "batch.jsonl",
        "{\"key\":\"lost-01\",\"provider\":\"ugclab\",\"params\":{\"script\":\"Hello\"},\"fallback_on\":[\"failed\",\"budget\",\"paused\"],\"fallback\":[{\"provider\":\"viggle\",\"params\":{\"image_url\":\"https://example.com/d.png\"}}]}\n",
    );
    let out = cli(&env.url, &["submit", batch.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let job = wait_for(
        &env.url,
        "lost-01",
        |j| j.state == JobState::Uncertain,
        Duration::from_secs(30),
    )
    .await;
    // Time for the fallback sweep (every second) to have looked, twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let job_now = wait_for(&env.url, "lost-01", |_| true, Duration::from_secs(1)).await;
    assert_eq!(
        (job_now.state, job_now.provider.as_str()),
        (JobState::Uncertain, "ugclab"),
        "{job_now:?}"
    );
    assert!(job_now.tried.is_empty() && job_now.fallback.len() == 1);
    assert_eq!(job.credits_reserved, job_now.credits_reserved);
    let stats = sim.stats();
    assert_eq!(stats.provider(ProviderKind::Ugclab).creates, 1);
    assert_eq!(stats.provider(ProviderKind::Viggle).create_requests, 0);
    common::sigterm(d.child());
}

/// `fallback_on = ["budget"]`: a job whose provider has no budget left for
/// it moves to its fallback; one that did not ask waits, held by budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_jobs_that_asked_leave_a_provider_out_of_budget() {
    let tight = format!("{POLL}\nbudget = {{ credits = 1, period = \"total\" }}");
    only_jobs_that_asked_leave(&tight, false, FallbackOn::Budget, HeldBy::Budget).await;
}

/// `fallback_on = ["paused"]`: while a user pauses a provider, a job that
/// asked moves to its fallback and completes there; one that did not ask
/// waits, held by the pause, and nothing reaches the paused provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_pause_sends_on_only_the_jobs_that_asked() {
    only_jobs_that_asked_leave(POLL, true, FallbackOn::Paused, HeldBy::Paused).await;
}

/// Two U-Gen jobs with a Viggle fallback, only `moves` asking for `why`:
/// with U-Gen held (by `ugen_extra`'s limits, or by a user's pause first),
/// `moves` completes at Viggle and `stays` waits at U-Gen, `held`; U-Gen
/// is never sent a create.
async fn only_jobs_that_asked_leave(ugen_extra: &str, pause: bool, why: FallbackOn, held: HeldBy) {
    let sim = common::sim(QUICK).await;
    let env = write_config(
        &sim,
        &[
            P {
                name: "ugen",
                kind: ProviderKind::Ugen,
                extra: ugen_extra,
            },
            P {
                name: "viggle",
                kind: ProviderKind::Viggle,
                extra: POLL,
            },
        ],
        "",
    );
    let mut d = common::spawn(&env, &[]);
    if pause {
        let out = cli(&env.url, &["pause", "ugen"]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let ugen = common::params(ProviderKind::Ugen, 1);
    let viggle = common::params(ProviderKind::Viggle, 1);
    let word = serde_json::to_value(why).unwrap();
    let batch = write(
        env.dir.path(),
        "batch.toml",
        &format!("[[jobs]]\nkey = \"stays\"\nprovider = \"ugen\"\nparams = {ugen}\n[[jobs.fallback]]\nprovider = \"viggle\"\nparams = {viggle}\n\n[[jobs]]\nkey = \"moves\"\nprovider = \"ugen\"\nparams = {ugen}\nfallback_on = [{word}]\n[[jobs.fallback]]\nprovider = \"viggle\"\nparams = {viggle}\n"),
    );
    let out = cli(&env.url, &["submit", batch.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let moved = wait_for(
        &env.url,
        "moves",
        |j| j.state.is_terminal(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        (moved.state, moved.provider.as_str()),
        (JobState::Completed, "viggle")
    );
    assert_eq!(moved.tried[0].why, why);
    let stays = wait_for(&env.url, "stays", |_| true, Duration::from_secs(1)).await;
    assert_eq!(
        (stays.state, stays.provider.as_str(), stays.held_by),
        (JobState::Queued, "ugen", Some(held)),
        "{stays:?}"
    );
    assert_eq!(sim.stats().provider(ProviderKind::Ugen).create_requests, 0);
    common::sigterm(d.child());
}

/// A fallback is checked at intake like the first choice: one naming a
/// provider that is not configured, or with params its provider refuses,
/// rejects the batch whole with the line of that fallback; nothing is
/// queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_fallback_refuses_the_batch_with_its_line() {
    let sim = common::sim(QUICK).await;
    let env = write_config(
        &sim,
        &[
            P {
                name: "ugen",
                kind: ProviderKind::Ugen,
                extra: POLL,
            },
            P {
                name: "ulazai",
                kind: ProviderKind::Ulazai,
                extra: POLL,
            },
        ],
        "",
    );
    let mut d = common::spawn(&env, &[]);
    let ugen = common::params(ProviderKind::Ugen, 1);
    let batch = write(
        env.dir.path(),
        "bad.toml",
        &format!("[[jobs]]\nkey = \"ok\"\nprovider = \"ugen\"\nparams = {ugen}\n\n[[jobs]]\nkey = \"bad\"\nprovider = \"ugen\"\nparams = {ugen}\n[[jobs.fallback]]\nprovider = \"ulazai\"\nparams = {{ prompt = \"no model\" }}\n[[jobs.fallback]]\nprovider = \"runway\"\nparams = {{}}\n"),
    );
    let path = batch.to_str().unwrap();
    for args in [
        vec!["submit", path],
        vec!["check", "--config", env.config.to_str().unwrap(), path],
    ] {
        let out = cli(&env.url, &args).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!(
                "{path}:10: job \"bad\": fallback #1 (provider \"ulazai\"): params.model_slug"
            )),
            "{args:?}: {err}"
        );
        assert!(
            err.contains(&format!("{path}:13: job \"bad\": fallback #2 (provider \"runway\"): provider \"runway\" is not configured")),
            "{args:?}: {err}"
        );
    }
    assert!(common::jobs(&env.url).await.is_empty(), "nothing queued");
    common::sigterm(d.child());
}
