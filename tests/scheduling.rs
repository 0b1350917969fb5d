//! Scheduling against the simulator over loopback, with the real daemon
//! process: rate limits are never exceeded at the provider, budgets never
//! overspent, SIGKILLs lose nothing and duplicate nothing, faults end every
//! job within bounded attempts. Each test asserts at the simulator's stats.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use common::{kill9, sim, start_daemon, wait_settled, P};
use rand::{Rng, SeedableRng};
use std::time::Duration;
use switchyard_core::{JobState, ProviderKind};
use switchyard_sim::SimServer;

const KINDS: [ProviderKind; 4] = [
    ProviderKind::Ugen,
    ProviderKind::Viggle,
    ProviderKind::Ugclab,
    ProviderKind::Ulazai,
];

fn jobs_for(kinds: &[ProviderKind], n: usize) -> Vec<(String, String, String)> {
    (0..n)
        .map(|i| {
            let kind = kinds[i % kinds.len()];
            (
                format!("{kind}-{i:03}"),
                kind.to_string(),
                common::params(kind, i),
            )
        })
        .collect()
}

/// SIGTERM must drain and exit 0; then the simulator stops.
async fn stop(mut daemon: common::Guard, sim: SimServer) {
    let st = tokio::task::spawn_blocking(move || common::sigterm(daemon.child()))
        .await
        .unwrap();
    assert!(st.success(), "SIGTERM must drain and exit 0");
    sim.shutdown().await;
}

async fn submit(url: &str, path: &std::path::Path) {
    let (url, p) = (url.to_string(), path.to_str().unwrap().to_string());
    let out = tokio::task::spawn_blocking(move || common::cli(&url, &["submit", &p]))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "submit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (a) 300 jobs over four providers whose quotas bind the whole run:
/// not one 429, and the peak at the simulator within each quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_jobs_under_tight_rate_limits_get_no_429() {
    let mut scenario = String::from("seed = 11\nspeedup = 1.0\n");
    for k in KINDS {
        scenario.push_str(&format!(
            "[providers.{k}]\nduration = {{ fixed = \"2s\" }}\nfailure_rate = 0.0\nrate_limit = {{ per_second = 15, burst = 3 }}\n"
        ));
    }
    let sim = sim(&scenario).await;
    let extra = "rate_limit = { per_second = 15, burst = 3 }\nmax_in_flight = 30\npoll = { schedule = [\"1s\", \"1s\", \"2s\"], max = \"2s\", timeout = \"5m\" }";
    let ps: Vec<P> = KINDS
        .iter()
        .map(|k| P {
            name: k.as_str(),
            kind: *k,
            extra,
        })
        .collect();
    let env = common::write_config(&sim, &ps, "");
    let daemon = common::Guard(Some(start_daemon(&env)));
    let path = common::batch_file(env.dir.path(), "batch.toml", &jobs_for(&KINDS, 300));
    submit(&env.url, &path).await;
    let jobs = wait_settled(&env.url, 300, Duration::from_secs(150)).await;
    assert!(jobs.iter().all(|j| j.state == JobState::Completed));
    let stats = sim.stats();
    for k in KINDS {
        let p = stats.provider(k);
        assert_eq!(p.rate_limited, 0, "{k}: the simulator served 429s");
        assert!(
            p.requests >= 75 * 2,
            "{k}: the quota was not exercised ({} requests)",
            p.requests
        );
        assert!(
            p.peak_requests_in_window <= 15 + 3,
            "{k}: peak {} requests in one second, quota 15/s burst 3",
            p.peak_requests_in_window
        );
        assert!(p.duplicate_creates.is_empty());
    }
    stop(daemon, sim).await;
}

/// (b) A budget smaller than the batch: never more charged than the budget,
/// the rest held as `budget`; a second provider in the same run is not held
/// up by the first one's budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_smaller_than_the_batch_is_never_overspent() {
    let sim = sim("seed = 5\nspeedup = 10.0\n[providers.ugclab]\nduration = { fixed = \"5s\" }\nfailure_rate = 0.0\n[providers.viggle]\nduration = { fixed = \"5s\" }\nfailure_rate = 0.0\n").await;
    // UGC Lab charges 125 per job: 1000 credits pay for 8 of 20.
    let extra = "budget = { credits = 1000, period = \"month\" }\nmax_in_flight = 20\npoll = { schedule = [\"200ms\"], max = \"500ms\", timeout = \"5m\" }";
    let viggle =
        "max_in_flight = 20\npoll = { schedule = [\"200ms\"], max = \"500ms\", timeout = \"5m\" }";
    let env = common::write_config(
        &sim,
        &[
            P {
                name: "ugclab",
                kind: ProviderKind::Ugclab,
                extra,
            },
            P {
                name: "viggle",
                kind: ProviderKind::Viggle,
                extra: viggle,
            },
        ],
        "",
    );
    let daemon = common::Guard(Some(start_daemon(&env)));
    let path = common::batch_file(
        env.dir.path(),
        "batch.toml",
        &jobs_for(&[ProviderKind::Ugclab, ProviderKind::Viggle], 40),
    );
    submit(&env.url, &path).await;
    // Watch the ledger while the jobs run: never above the budget.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let v = common::providers(&env.url).await;
        let ugc = v
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "ugclab")
            .unwrap()
            .clone();
        let used = ugc["budget_used"].as_u64().unwrap();
        let reserved = ugc["budget_reserved"].as_u64().unwrap();
        assert!(
            used + reserved <= 1000,
            "reserved {reserved} + charged {used} > budget 1000"
        );
        let js = common::jobs(&env.url).await;
        let of = |p: &str, s: JobState| {
            js.iter()
                .filter(|j| j.provider == p && j.state == s)
                .count()
        };
        let held = js
            .iter()
            .filter(|j| {
                j.state == JobState::Queued && j.held_by == Some(switchyard_core::HeldBy::Budget)
            })
            .count();
        if of("ugclab", JobState::Completed) == 8
            && held == 12
            && of("viggle", JobState::Completed) == 20
        {
            assert_eq!(used, 1000);
            assert_eq!(ugc["budget_left"].as_u64(), Some(0));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected 8 UGC Lab jobs completed, 12 held by budget, 20 Viggle jobs completed: {} completed, {held} held, {} Viggle completed",
            of("ugclab", JobState::Completed),
            of("viggle", JobState::Completed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let p = sim.stats().provider(ProviderKind::Ugclab);
    assert_eq!(p.creates, 8, "only what the budget pays for is created");
    assert!(p.credits_charged - p.credits_refunded <= 1000);
    stop(daemon, sim).await;
}

/// (c) SIGKILL at random moments, ten times, during a 300-job run: every job
/// ends (or is `uncertain`), no key is created twice, budgets hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_sigkills_during_a_run_lose_nothing_and_duplicate_nothing() {
    let mut scenario = String::from("seed = 21\nspeedup = 10.0\n");
    for k in KINDS {
        scenario.push_str(&format!("[providers.{k}]\nduration = {{ median = \"20s\", sigma = 0.5, min = \"5s\", max = \"60s\" }}\nfailure_rate = 0.1\n"));
    }
    let sim = sim(&scenario).await;
    let extra = "rate_limit = { per_second = 40, burst = 10 }\nmax_in_flight = 25\nbudget = { credits = 1000000, period = \"total\" }\npoll = { schedule = [\"300ms\", \"500ms\", \"1s\"], max = \"1s\", timeout = \"5m\" }";
    let ps: Vec<P> = KINDS
        .iter()
        .map(|k| P {
            name: k.as_str(),
            kind: *k,
            extra,
        })
        .collect();
    let env = common::write_config(&sim, &ps, "");
    let mut daemon = common::Guard(Some(start_daemon(&env)));
    let path = common::batch_file(env.dir.path(), "batch.toml", &jobs_for(&KINDS, 300));
    submit(&env.url, &path).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..1500))).await;
        kill9(daemon.child());
        daemon = common::Guard(Some(start_daemon(&env)));
    }
    let jobs = wait_settled(&env.url, 300, Duration::from_secs(150)).await;
    let stats = sim.stats();
    for k in KINDS {
        let p = stats.provider(k);
        assert!(
            p.duplicate_creates.is_empty(),
            "{k}: created twice: {:?}",
            p.duplicate_creates
        );
    }
    let sim_jobs = sim.jobs();
    for j in &jobs {
        match j.state {
            JobState::Completed | JobState::Failed => {
                let id = j
                    .provider_job_id
                    .as_deref()
                    .unwrap_or_else(|| panic!("{} ended without a provider id", j.key));
                let s = sim_jobs.iter().find(|s| s.job_id == id).unwrap();
                assert_eq!(
                    s.outcome.as_str(),
                    j.state.as_str(),
                    "{}: daemon and simulator disagree",
                    j.key
                );
            }
            JobState::Uncertain => {}
            other => panic!("{} ended {other}", j.key),
        }
    }
    let created: usize = stats
        .providers
        .values()
        .map(|p| p.creates_by_key.len())
        .sum();
    let uncertain = jobs
        .iter()
        .filter(|j| j.state == JobState::Uncertain)
        .count();
    assert!(
        created >= 300 - uncertain,
        "{created} created, {uncertain} uncertain"
    );
    for v in common::providers(&env.url).await.as_array().unwrap() {
        let used = v["budget_used"].as_u64().unwrap() + v["budget_reserved"].as_u64().unwrap();
        assert!(used <= 1_000_000);
    }
    eprintln!(
        "after 10 SIGKILLs: {} completed, {} failed, {uncertain} uncertain",
        jobs.iter()
            .filter(|j| j.state == JobState::Completed)
            .count(),
        jobs.iter().filter(|j| j.state == JobState::Failed).count()
    );
    stop(daemon, sim).await;
}

/// (d) 20 % injected 5xx and malformed answers: every job still ends, and no
/// job used more create attempts than configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_end_every_job_within_bounded_attempts() {
    let mut scenario = String::from("seed = 8\nspeedup = 10.0\n");
    for k in KINDS {
        scenario.push_str(&format!(
            "[providers.{k}]\nduration = {{ fixed = \"10s\" }}\nfailure_rate = 0.0\nfaults = {{ error_5xx = 0.1, malformed_json = 0.1 }}\n"
        ));
    }
    let sim = sim(&scenario).await;
    let extra = "max_in_flight = 20\nmax_attempts = 4\npoll = { schedule = [\"300ms\", \"500ms\"], max = \"1s\", timeout = \"5m\" }";
    let ps: Vec<P> = KINDS
        .iter()
        .map(|k| P {
            name: k.as_str(),
            kind: *k,
            extra,
        })
        .collect();
    let env = common::write_config(&sim, &ps, "");
    let daemon = common::Guard(Some(start_daemon(&env)));
    let path = common::batch_file(env.dir.path(), "batch.toml", &jobs_for(&KINDS, 120));
    submit(&env.url, &path).await;
    let jobs = wait_settled(&env.url, 120, Duration::from_secs(120)).await;
    for j in &jobs {
        assert!(j.attempts <= 4, "{}: {} attempts", j.key, j.attempts);
    }
    let stats = sim.stats();
    let faults: u64 = stats
        .providers
        .values()
        .map(|p| p.faults.error_5xx + p.faults.malformed_json)
        .sum();
    assert!(faults > 20, "the faults were not exercised ({faults})");
    for k in KINDS {
        assert!(
            stats.provider(k).duplicate_creates.is_empty(),
            "{k}: created twice"
        );
    }
    let count = |s: JobState| jobs.iter().filter(|j| j.state == s).count();
    eprintln!(
        "with 20% faults: {} completed, {} failed, {} uncertain, {faults} faults injected",
        count(JobState::Completed),
        count(JobState::Failed),
        count(JobState::Uncertain)
    );
    assert!(
        count(JobState::Completed) >= 60,
        "most jobs should complete despite faults"
    );
    stop(daemon, sim).await;
}

/// A job that outlives its provider's poll timeout fails with a clear reason
/// and is cancelled at the provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_job_times_out_and_is_cancelled_at_the_provider() {
    let sim = sim("seed = 2\n[providers.viggle]\nduration = { fixed = \"1h\" }\n").await;
    let extra = "poll = { schedule = [\"200ms\"], max = \"300ms\", timeout = \"2s\" }";
    let env = common::write_config(
        &sim,
        &[P {
            name: "viggle",
            kind: ProviderKind::Viggle,
            extra,
        }],
        "",
    );
    let daemon = common::Guard(Some(start_daemon(&env)));
    let path = common::batch_file(
        env.dir.path(),
        "batch.toml",
        &jobs_for(&[ProviderKind::Viggle], 2),
    );
    submit(&env.url, &path).await;
    let jobs = wait_settled(&env.url, 2, Duration::from_secs(20)).await;
    for j in &jobs {
        assert_eq!(j.state, JobState::Failed, "{}", j.key);
        let e = j.error.as_ref().unwrap();
        assert_eq!(e.code, "timeout");
        assert!(e.message.contains("poll timeout"), "{}", e.message);
    }
    let p = sim.stats().provider(ProviderKind::Viggle);
    assert_eq!(
        p.cancels, 2,
        "each timed-out job is cancelled at the provider"
    );
    assert!(
        sim.jobs().iter().all(|j| j.status == "cancelled"),
        "{:?}",
        sim.jobs()
    );
    stop(daemon, sim).await;
}

/// A 402 pauses dispatch to that provider (the rest stays queued, held by
/// `paused`) until the config is reloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_credits_pause_the_provider_until_reload() {
    // U-Gen reserves 20 credits per one-segment veo3_fast job: 40 pay for two.
    let sim = sim("seed = 4\nspeedup = 10.0\n[providers.ugen]\nduration = { fixed = \"2s\" }\nfailure_rate = 0.0\ncredits = 40\n").await;
    let extra =
        "max_in_flight = 1\npoll = { schedule = [\"100ms\"], max = \"200ms\", timeout = \"1m\" }";
    let env = common::write_config(
        &sim,
        &[P {
            name: "ugen",
            kind: ProviderKind::Ugen,
            extra,
        }],
        "",
    );
    let mut daemon = common::Guard(Some(start_daemon(&env)));
    let path = common::batch_file(
        env.dir.path(),
        "batch.toml",
        &jobs_for(&[ProviderKind::Ugen], 5),
    );
    submit(&env.url, &path).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let js = common::jobs(&env.url).await;
        let done = js.iter().filter(|j| j.state == JobState::Completed).count();
        let paused = js
            .iter()
            .filter(|j| {
                j.state == JobState::Queued && j.held_by == Some(switchyard_core::HeldBy::Paused)
            })
            .count();
        if done == 2 && paused == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected 2 completed and 3 paused: {done} completed, {paused} paused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v = common::providers(&env.url).await;
    assert_eq!(v[0]["paused"], true);
    // No retry storm while paused: the 402 was answered once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let creates = sim.stats().provider(ProviderKind::Ugen).create_requests;
    assert_eq!(
        creates, 3,
        "two creates that fit and one refused with 402, then nothing"
    );
    // A reload (SIGHUP) lifts the pause; the simulator still has no credits,
    // so the next create gets 402 again and pauses again.
    common::signal(daemon.child(), "-HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sim.stats().provider(ProviderKind::Ugen).create_requests < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "a reload must resume dispatch"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop(daemon, sim).await;
}

/// A provider stricter than our config answers 429 with Retry-After: the
/// daemon cools the whole provider down instead of retrying into it, and
/// every job still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_cools_the_provider_down_instead_of_retrying_into_it() {
    let sim = sim("seed = 6\nspeedup = 10.0\n[providers.viggle]\nduration = { fixed = \"2s\" }\nfailure_rate = 0.0\nrate_limit = { per_second = 10, burst = 5 }\n").await;
    let extra = "rate_limit = { per_second = 100, burst = 6 }\nmax_in_flight = 40\npoll = { schedule = [\"200ms\"], max = \"500ms\", timeout = \"2m\" }";
    let env = common::write_config(
        &sim,
        &[P {
            name: "viggle",
            kind: ProviderKind::Viggle,
            extra,
        }],
        "",
    );
    let daemon = common::Guard(Some(start_daemon(&env)));
    let path = common::batch_file(
        env.dir.path(),
        "batch.toml",
        &jobs_for(&[ProviderKind::Viggle], 80),
    );
    submit(&env.url, &path).await;
    let jobs = wait_settled(&env.url, 80, Duration::from_secs(90)).await;
    assert!(jobs.iter().all(|j| j.state == JobState::Completed));
    let p = sim.stats().provider(ProviderKind::Viggle);
    assert!(p.rate_limited > 0, "the test must provoke 429s");
    // Each 429 cools the provider down for its Retry-After and halves the
    // rate in use, so 429s are a short learning phase, not a storm that
    // lasts as long as the batch.
    eprintln!("{} 429s out of {} requests", p.rate_limited, p.requests);
    assert!(
        p.rate_limited <= 25,
        "{} 429s out of {} requests",
        p.rate_limited,
        p.requests
    );
    assert!(
        p.rate_limited * 5 < p.requests,
        "{} 429s out of {} requests",
        p.rate_limited,
        p.requests
    );
    assert!(p.duplicate_creates.is_empty());
    stop(daemon, sim).await;
}
