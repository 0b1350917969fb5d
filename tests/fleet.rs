//! A fleet: three daemons on one PostgreSQL store and one simulator, run
//! like a production fleet is: daemons die (SIGKILL) and come back, one
//! stays dead. What the fleet shares must hold for the fleet as a whole:
//! one queue (nothing lost, nothing created twice), one rate limit per
//! provider (measured at the simulator), one budget, and a dead daemon's
//! jobs are finished by the others. Needs `SWITCHYARD_TEST_DATABASE_URL`
//! (else `skipped: SWITCHYARD_TEST_DATABASE_URL not set`); also here, what
//! `check` says about a `[store]` table, which needs no database.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use common::{pg::TestDb, sim, Env, P};
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_core::{HeldBy, Job, JobState, ProviderKind};
use switchyard_sim::SimServer;

const URL_ENV: &str = "E2E_DATABASE_URL";
const KINDS: [ProviderKind; 4] = [
    ProviderKind::Ugen,
    ProviderKind::Viggle,
    ProviderKind::Ugclab,
    ProviderKind::Ulazai,
];
/// Every provider's quota, at the simulator and in each daemon's config.
const RATE: u64 = 8;
const BURST: u64 = 3;
/// UGC Lab charges 125 credits a job: 40 of its 75 fit.
const UGCLAB_BUDGET: u64 = 125 * 40;

fn member(sim: &SimServer, name: &str) -> Env {
    let env = Env::new().unwrap();
    let common = format!(
        "rate_limit = {{ per_second = {RATE}, burst = {BURST} }}\nmax_in_flight = 20\npoll = {{ schedule = [\"1s\"], max = \"2s\", timeout = \"5m\" }}"
    );
    let ugclab = format!("{common}\nbudget = {{ credits = {UGCLAB_BUDGET}, period = \"total\" }}");
    let ps: Vec<P> = KINDS
        .iter()
        .map(|k| P {
            name: k.as_str(),
            kind: *k,
            extra: if *k == ProviderKind::Ugclab {
                &ugclab
            } else {
                &common
            },
        })
        .collect();
    env.write(sim, &ps, &format!("name = \"{name}\"")).unwrap();
    env.append(&format!(
        "[store]\nbackend = \"postgres\"\nurl_env = \"{URL_ENV}\"\nlease_ttl = \"3s\"\npool_size = 4\n"
    ))
    .unwrap();
    env
}

/// The jobs as any live daemon shows them (each answers for the fleet).
async fn fleet_jobs(urls: &[String]) -> Option<Vec<Job>> {
    for url in urls {
        let Ok(resp) = reqwest::get(format!("{url}/v1/jobs")).await else {
            continue;
        };
        if let Ok(jobs) = resp.json().await {
            return Some(jobs);
        }
    }
    None
}

/// Settled: no job live, and every queued one is UGC Lab's, held by the
/// budget.
fn settled(jobs: &[Job]) -> bool {
    jobs.iter().all(|j| match j.state {
        JobState::Queued => j.provider == "ugclab" && j.held_by == Some(HeldBy::Budget),
        s => !s.is_live(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_killed_and_restarted_share_one_queue_quota_and_budget() {
    let Some(db) = TestDb::create("fleet").await.unwrap() else {
        return;
    };
    let mut scenario = String::from("seed = 41\nspeedup = 1.0\n");
    for k in KINDS {
        // UGC Lab never fails, so the budget's count is exact.
        let failures = if k == ProviderKind::Ugclab { 0.0 } else { 0.05 };
        scenario.push_str(&format!(
            "[providers.{k}]\nduration = {{ median = \"2s\", sigma = 0.3, min = \"1s\", max = \"5s\" }}\nfailure_rate = {failures}\nrate_limit = {{ per_second = {RATE}, burst = {BURST} }}\n"
        ));
    }
    let sim = sim(&scenario).await;
    let names = ["fleet-a", "fleet-b", "fleet-c"];
    let envs: Vec<Env> = names.iter().map(|n| member(&sim, n)).collect();
    let urls: Vec<String> = envs.iter().map(|e| e.url.clone()).collect();
    let vars = [(URL_ENV, db.url.as_str())];
    let mut daemons: Vec<Option<common::Daemon>> = tokio::task::block_in_place(|| {
        envs.iter().map(|e| Some(common::spawn(e, &vars))).collect()
    });

    let jobs: Vec<_> = (0..300)
        .map(|i| {
            let k = KINDS[i % 4];
            (format!("{k}-{i:03}"), k.to_string(), common::params(k, i))
        })
        .collect();
    let path = common::batch_file(envs[0].dir.path(), "batch.toml", &jobs);
    let out =
        tokio::task::block_in_place(|| common::cli(&urls[1], &["submit", path.to_str().unwrap()]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The budget, watched through whichever daemon answers.
    let stop_watch = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (stop, worst, urls) = (stop_watch.clone(), worst.clone(), urls.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for url in &urls {
                    let Ok(resp) = reqwest::get(format!("{url}/v1/providers")).await else {
                        continue;
                    };
                    let Ok(v) = resp.json::<serde_json::Value>().await else {
                        continue;
                    };
                    for p in v.as_array().into_iter().flatten() {
                        if p["name"] == "ugclab" {
                            let spent = p["budget_used"].as_u64().unwrap_or(0)
                                + p["budget_reserved"].as_u64().unwrap_or(0);
                            worst.fetch_max(spent, Ordering::Relaxed);
                        }
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // Random daemons killed and started again at once, four times.
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1500..3500))).await;
        let i = rng.gen_range(0..3);
        let pause = Duration::from_millis(rng.gen_range(0..1500));
        tokio::task::block_in_place(|| {
            daemons[i].as_mut().unwrap().kill9().unwrap();
            std::thread::sleep(pause);
            daemons[i] = Some(common::spawn(&envs[i], &vars));
        });
        eprintln!("round {round}: killed and restarted {}", names[i]);
    }
    // The third daemon dies for good, holding live jobs.
    let pg = db.client().await.unwrap();
    let held_by_dead = || async {
        pg.query(
            "SELECT key FROM jobs WHERE owner = $1 AND state IN ('submitting', 'pending', 'processing')",
            &[&names[2]],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<BTreeSet<String>>()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while held_by_dead().await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} never held a live job",
            names[2]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::task::block_in_place(|| daemons[2].as_mut().unwrap().kill9().unwrap());
    let orphans = held_by_dead().await;
    daemons[2] = None;
    eprintln!(
        "{} killed for good holding {} live jobs",
        names[2],
        orphans.len()
    );

    let live_urls = &urls[..2];
    let deadline = Instant::now() + Duration::from_secs(150);
    let jobs = loop {
        if let Some(js) = fleet_jobs(live_urls).await {
            if js.len() == 300 && settled(&js) {
                break js;
            }
            if Instant::now() > deadline {
                let mut counts = std::collections::BTreeMap::new();
                for j in &js {
                    *counts
                        .entry(format!("{} {}", j.provider, j.state))
                        .or_insert(0) += 1;
                }
                panic!("the fleet did not settle: {counts:?}");
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    stop_watch.store(true, Ordering::Relaxed);
    watcher.await.unwrap();

    let stats = sim.stats();
    let mut lines = Vec::new();
    for k in KINDS {
        let p = stats.provider(k);
        lines.push(format!(
            "{k}: {} requests, {} creates, peak {} in {} ms, {} 429s",
            p.requests, p.creates, p.peak_requests_in_window, p.window_ms, p.rate_limited
        ));
    }
    let count = |s: JobState| jobs.iter().filter(|j| j.state == s).count();
    eprintln!(
        "{}\n{} completed, {} failed, {} uncertain, {} held by budget; budget seen at most {}",
        lines.join("\n"),
        count(JobState::Completed),
        count(JobState::Failed),
        count(JobState::Uncertain),
        count(JobState::Queued),
        worst.load(Ordering::Relaxed)
    );
    for k in KINDS {
        let p = stats.provider(k);
        assert!(
            p.duplicate_creates.is_empty(),
            "{k}: created twice: {:?}",
            p.duplicate_creates
        );
        assert_eq!(p.rate_limited, 0, "{k}: 429s\n{}", lines.join("\n"));
        // What the provider's quota admits in a second: a burst, then the
        // rate.
        assert!(
            p.peak_requests_in_window < RATE + BURST,
            "{k}: over the quota\n{}",
            lines.join("\n")
        );
        assert!(p.requests > 75, "{k}: quota not exercised");
    }
    // Nothing lost: every job ended as the simulator says, or is held.
    let sim_jobs = sim.jobs();
    for j in &jobs {
        match j.state {
            JobState::Completed | JobState::Failed => {
                let id = j.provider_job_id.as_deref().unwrap();
                let s = sim_jobs.iter().find(|s| s.job_id == id).unwrap();
                assert_eq!(s.outcome.as_str(), j.state.as_str(), "{}", j.key);
            }
            JobState::Uncertain | JobState::Queued => {}
            other => panic!("{} ended {other}", j.key),
        }
    }
    // The budget: never above it while running, nor at the provider.
    let ugc = stats.provider(ProviderKind::Ugclab);
    assert!(worst.load(Ordering::Relaxed) <= UGCLAB_BUDGET);
    assert!(ugc.credits_charged - ugc.credits_refunded <= UGCLAB_BUDGET);
    assert!(
        count(JobState::Queued) >= 75 - 40,
        "the budget did not bind"
    );
    // The dead daemon's jobs were finished by the others.
    for key in &orphans {
        let j = jobs.iter().find(|j| &j.key == key).unwrap();
        assert!(!j.state.is_live(), "{key} is still {}", j.state);
    }
    let v: serde_json::Value = reqwest::get(format!("{}/v1/daemons", urls[0]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let live: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["owner"].as_str().unwrap())
        .collect();
    assert_eq!(live, ["fleet-a", "fleet-b"], "{v}");
    tokio::task::block_in_place(|| {
        for d in daemons.iter_mut().flatten() {
            d.stop(Duration::from_secs(20)).unwrap();
        }
    });
    sim.shutdown().await;
    db.drop_db().await;
}

/// `check` on a config with a broken `[store]` table: every problem at
/// once, each with file, line and key, and never the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_every_store_problem_and_never_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let write = |name: &str, store: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[daemon]\ndata_dir = \"{}\"\n\n[store]\n{store}\n\n[providers.viggle]\nkind = \"viggle\"\napi_key_env = \"E2E_KEY\"\n",
                data.display()
            ),
        )
        .unwrap();
        path
    };
    let check = |path: &std::path::Path, vars: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(common::BIN);
        cmd.arg("check")
            .arg(path)
            .env_remove("SWITCHYARD_CONFIG")
            .env_remove("E2E_DB")
            .env("E2E_KEY", "k");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let semantic = write(
        "semantic.toml",
        "backend = \"postgres\"\nlease_ttl = \"100ms\"\npool_size = 0",
    );
    let (code, err) = check(&semantic, &[]);
    assert_eq!(code, Some(2), "{err}");
    let file = semantic.display().to_string();
    for (line, key) in [
        (5, "store.backend"),
        (6, "store.lease_ttl"),
        (7, "store.pool_size"),
    ] {
        assert!(
            err.contains(&format!("{file}:{line}:1: {key}:")),
            "{key} at line {line}:\n{err}"
        );
    }
    let unset = write("unset.toml", "backend = \"postgres\"\nurl_env = \"E2E_DB\"");
    let (code, err) = check(&unset, &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("store.url_env: environment variable E2E_DB is not set"),
        "{err}"
    );
    let secret = "mysql://root:hunter2@db.example/queue";
    let (code, err) = check(&unset, &[("E2E_DB", secret)]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("does not hold a postgres:// or postgresql:// URL"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "the URL leaked: {err}");
    let (code, err) = check(&unset, &[("E2E_DB", "postgres://u:hunter2@127.0.0.1:1/x")]);
    assert_eq!(code, Some(0), "{err}");
    let typo = write("typo.toml", "backend = \"postgre\"");
    let (code, err) = check(&typo, &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains(&format!("{}:5:", typo.display())), "{err}");
    let sled_url = write("sled.toml", "url_file = \"db.url\"");
    let (code, err) = check(&sled_url, &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("store.url_file: only used with backend = \"postgres\""),
        "{err}"
    );
}

/// U-Gen's signed webhooks all reach one daemon of two; polling is set to
/// a minute. The jobs the other daemon follows still finish within
/// seconds: the webhook is passed on through the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_for_a_job_another_daemon_follows_is_passed_on() {
    let Some(db) = TestDb::create("fleethook").await.unwrap() else {
        return;
    };
    let envs = [Env::new().unwrap(), Env::new().unwrap()];
    let sim = sim(&format!(
        "seed = 5\nspeedup = 1.0\n[providers.ugen]\nduration = {{ fixed = \"2s\" }}\nfailure_rate = 0.0\nwebhook_url = \"{}/webhooks/ugen\"\nwebhook_secret = \"hook-secret\"\n",
        envs[0].url
    ))
    .await;
    let extra = "max_in_flight = 4\npoll = { schedule = [\"60s\"], max = \"60s\", timeout = \"5m\" }\nwebhook_secret_env = \"E2E_HOOK\"";
    for (env, name) in envs.iter().zip(["hook-a", "hook-b"]) {
        env.write(
            &sim,
            &[P {
                name: "ugen",
                kind: ProviderKind::Ugen,
                extra,
            }],
            &format!("name = \"{name}\""),
        )
        .unwrap();
        env.append(&format!(
            "[store]\nbackend = \"postgres\"\nurl_env = \"{URL_ENV}\"\nlease_ttl = \"3s\"\npool_size = 4\n"
        ))
        .unwrap();
    }
    let vars = [(URL_ENV, db.url.as_str()), ("E2E_HOOK", "hook-secret")];
    let mut ds: Vec<common::Daemon> =
        tokio::task::block_in_place(|| envs.iter().map(|e| common::spawn(e, &vars)).collect());
    // Submitted to the daemon the webhooks do not reach: it claims some.
    let jobs: Vec<_> = (0..8)
        .map(|i| {
            (
                format!("ugen-{i}"),
                "ugen".to_string(),
                common::params(ProviderKind::Ugen, i),
            )
        })
        .collect();
    let path = common::batch_file(envs[1].dir.path(), "batch.toml", &jobs);
    let started = Instant::now();
    let out = tokio::task::block_in_place(|| {
        common::cli(&envs[1].url, &["submit", path.to_str().unwrap()])
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = common::wait_settled(&envs[0].url, 8, Duration::from_secs(40)).await;
    let took = started.elapsed();
    assert!(done.iter().all(|j| j.state == JobState::Completed));
    let by_b = ds[1].log().matches("job finished").count();
    eprintln!(
        "8 jobs in {:.1} s with a 60 s poll interval; {by_b} finished by the daemon the webhooks do not reach",
        took.as_secs_f64()
    );
    assert!(by_b > 0, "the second daemon followed no job");
    assert!(
        took < Duration::from_secs(30),
        "the jobs waited for their polls: {took:?}"
    );
    // Either daemon lists the fleet below its providers.
    let out = tokio::task::block_in_place(|| common::cli(&envs[1].url, &["providers"]));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    assert!(
        table.contains("hook-a") && table.contains("hook-b (this one)"),
        "{table}"
    );
    tokio::task::block_in_place(|| {
        for d in &mut ds {
            d.stop(Duration::from_secs(20)).unwrap();
        }
    });
    sim.shutdown().await;
    db.drop_db().await;
}
