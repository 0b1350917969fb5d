//! The rate limit across restarts, on the embedded store: a daemon killed
//! and started again at once must not spend the quota its predecessor had
//! just spent, and a provider's Retry-After must outlive the process that
//! received it. Measured at the simulator, which counts every request it
//! receives in a sliding window of the quota's period.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use common::{sim, P};
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};
use switchyard_core::{JobState, ProviderKind};

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

/// SIGKILL, then a new daemon on the same data dir at once.
async fn kill_and_restart(d: common::Daemon, env: &common::Env) -> common::Daemon {
    tokio::task::block_in_place(|| {
        let mut d = d;
        d.kill9().unwrap();
        common::spawn(env, &[])
    })
}

/// 160 jobs over four providers whose quotas (3 to 8 per second, no
/// burst) the run saturates, the daemon killed and restarted at once six
/// times: at the simulator, no second ever holds more requests than the
/// quota, and nothing is lost or created twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_an_immediate_restart_never_exceed_the_quota() {
    let rates = [
        (ProviderKind::Ugen, 3u32, 23usize),
        (ProviderKind::Viggle, 4, 30),
        (ProviderKind::Ugclab, 6, 46),
        (ProviderKind::Ulazai, 8, 61),
    ];
    let mut scenario = String::from("seed = 31\nspeedup = 1.0\n");
    for (k, rate, _) in rates {
        scenario.push_str(&format!(
            "[providers.{k}]\nduration = {{ fixed = \"1s\" }}\nfailure_rate = 0.0\nrate_limit = {{ per_second = {rate}, burst = 1 }}\n"
        ));
    }
    let sim = sim(&scenario).await;
    let extras: Vec<String> = rates
        .iter()
        .map(|(_, rate, _)| {
            format!("rate_limit = {{ per_second = {rate}, burst = 1 }}\nmax_in_flight = 40\npoll = {{ schedule = [\"1s\"], max = \"1s\", timeout = \"5m\" }}")
        })
        .collect();
    let ps: Vec<P> = rates
        .iter()
        .zip(&extras)
        .map(|((k, _, _), extra)| P {
            name: k.as_str(),
            kind: *k,
            extra,
        })
        .collect();
    let env = common::write_config(&sim, &ps, "");
    let mut jobs = Vec::new();
    for (k, _, n) in rates {
        for i in 0..n {
            jobs.push((format!("{k}-{i:03}"), k.to_string(), common::params(k, i)));
        }
    }
    assert_eq!(jobs.len(), 160);
    let path = common::batch_file(env.dir.path(), "batch.toml", &jobs);
    let mut daemon = tokio::task::block_in_place(|| common::spawn(&env, &[]));
    submit(&env.url, &path).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1000..2500))).await;
        daemon = kill_and_restart(daemon, &env).await;
    }
    let settled = common::wait_settled(&env.url, 160, Duration::from_secs(120)).await;
    let stats = sim.stats();
    let mut report = Vec::new();
    for (k, rate, _) in rates {
        let p = stats.provider(k);
        report.push(format!(
            "{k}: {} requests, peak {} in {} ms (quota {rate}), {} 429s",
            p.requests, p.peak_requests_in_window, p.window_ms, p.rate_limited
        ));
        assert!(
            p.duplicate_creates.is_empty(),
            "{k}: created twice: {:?}",
            p.duplicate_creates
        );
    }
    eprintln!("{}", report.join("\n"));
    for (k, rate, n) in rates {
        let p = stats.provider(k);
        assert!(
            p.requests >= n as u64,
            "{k}: the quota was not exercised ({} requests)",
            p.requests
        );
        assert!(
            p.peak_requests_in_window <= u64::from(rate),
            "{k}: {} requests in one second, quota {rate}/s:\n{}",
            p.peak_requests_in_window,
            report.join("\n")
        );
    }
    for j in &settled {
        assert!(
            matches!(j.state, JobState::Completed | JobState::Uncertain),
            "{} ended {}",
            j.key,
            j.state
        );
    }
    tokio::task::block_in_place(|| daemon.stop(Duration::from_secs(20))).unwrap();
    sim.shutdown().await;
}

/// A 429 with a Retry-After of about ten seconds, then SIGKILL and an
/// immediate restart: the new daemon sends nothing to that provider until
/// the Retry-After has passed, then carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_received_before_a_restart_holds_after_it() {
    // Six a minute at the provider, five a second in the config: the
    // second create is refused for the ten seconds until the next slot.
    let sim = sim("seed = 3\nspeedup = 1.0\n[providers.viggle]\nduration = { fixed = \"1s\" }\nfailure_rate = 0.0\nrate_limit = { per_minute = 6, burst = 1 }\n").await;
    let extra = "rate_limit = { per_second = 5, burst = 1 }\nmax_in_flight = 10\npoll = { schedule = [\"500ms\"], max = \"1s\", timeout = \"5m\" }";
    let env = common::write_config(
        &sim,
        &[P {
            name: "viggle",
            kind: ProviderKind::Viggle,
            extra,
        }],
        "",
    );
    let jobs: Vec<_> = (0..3)
        .map(|i| {
            (
                format!("viggle-{i}"),
                "viggle".to_string(),
                common::params(ProviderKind::Viggle, i),
            )
        })
        .collect();
    let path = common::batch_file(env.dir.path(), "batch.toml", &jobs);
    let daemon = tokio::task::block_in_place(|| common::spawn(&env, &[]));
    submit(&env.url, &path).await;
    // Wait for the 429, and for the daemon to say it cools down (its
    // hold is then in the store).
    let deadline = Instant::now() + Duration::from_secs(20);
    let seen_429 = loop {
        if sim.stats().provider(ProviderKind::Viggle).rate_limited > 0 {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "the provider never answered 429");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    loop {
        let v = common::providers(&env.url).await;
        if v[0]["cooldown_ms"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            seen_429.elapsed() < Duration::from_secs(5),
            "the daemon does not show the cool-down: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = sim.stats().provider(ProviderKind::Viggle).requests;
    let daemon = kill_and_restart(daemon, &env).await;
    let restarted = Instant::now();
    // The provider asked for about ten seconds (counted from before the
    // 429 was seen): nothing may arrive until then.
    let hold_ends = seen_429 + Duration::from_millis(9_500);
    assert!(
        restarted < hold_ends - Duration::from_secs(3),
        "the restart took too long for the test to mean anything"
    );
    let mut first_after = None;
    let deadline = seen_429 + Duration::from_secs(25);
    while Instant::now() < deadline {
        let now_requests = sim.stats().provider(ProviderKind::Viggle).requests;
        if now_requests > before {
            first_after = Some(Instant::now());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_after = first_after.expect("the daemon never sent a request after the hold");
    eprintln!(
        "429 seen, restart {:.1} s later, next request {:.1} s after the 429",
        (restarted - seen_429).as_secs_f64(),
        (first_after - seen_429).as_secs_f64()
    );
    assert!(
        first_after >= hold_ends,
        "a request reached the provider {:.1} s after its 429, within its Retry-After",
        (first_after - seen_429).as_secs_f64()
    );
    let mut daemon = daemon;
    tokio::task::block_in_place(|| daemon.stop(Duration::from_secs(20))).unwrap();
    sim.shutdown().await;
}
