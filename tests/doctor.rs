//! First contact with real accounts, end to end with the real binary and the
//! simulator over loopback: `switchyard doctor` sorts each provider account
//! into what a user can act on and never spends a credit; `record_dir`
//! captures a run without a secret in it, and `sim --replay` plays it back
//! to the same outcome; a status word no document shows leaves the job live
//! and counted until the word goes away; a create answered in a shape no
//! document shows makes the job uncertain, never a failure that frees its
//! credits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{free_port, wait_listening, wait_settled, write_config, Guard, BIN, P};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use switchyard_core::{JobState, ProviderKind};
use switchyard_sim::{Scenario, SimServer};

/// A key that must never appear anywhere it could leak.
const CANARY_KEY: &str = "sk_live_CANARY_4f9d2c81e7b3";
const CANARY_HOOK: &str = "whsec_CANARY_a17c55e0d2";

const ALL: [ProviderKind; 4] = [
    ProviderKind::Ugclab,
    ProviderKind::Ugen,
    ProviderKind::Ulazai,
    ProviderKind::Viggle,
];

async fn sim(toml: &str) -> SimServer {
    let sc = Scenario::from_toml_str(toml).unwrap();
    SimServer::start("127.0.0.1:0".parse().unwrap(), sc)
        .await
        .unwrap()
}

/// A scenario in which every provider insists on `key`.
fn pinned_key(key: &str) -> String {
    ALL.iter()
        .map(|k| format!("[providers.{k}]\napi_key = \"{key}\"\n"))
        .collect()
}

fn all_providers(extra: &str) -> Vec<P<'_>> {
    ALL.iter()
        .map(|&kind| P {
            name: kind.as_str(),
            kind,
            extra,
        })
        .collect()
}

fn doctor(config: &Path, key: Option<&str>, args: &[&str]) -> (Output, Value) {
    let mut cmd = Command::new(BIN);
    cmd.args(["doctor", "--json", "--config"])
        .arg(config)
        .args(args)
        .env("E2E_HOOK", CANARY_HOOK)
        .env_remove("E2E_KEY");
    if let Some(k) = key {
        cmd.env("E2E_KEY", k);
    }
    let out = cmd.output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, v)
}

fn outcomes(v: &Value) -> BTreeMap<String, String> {
    v["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["probe"]["outcome"].as_str().unwrap_or("none").to_string(),
            )
        })
        .collect()
}

async fn sim_stats(sim: &SimServer) -> Value {
    reqwest::get(format!("http://{}/_sim/stats", sim.addr()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_finds_every_account_fit_and_spends_nothing() {
    let sim = sim(&pinned_key(CANARY_KEY)).await;
    let env = write_config(&sim, &all_providers(""), "");
    let (out, v) = doctor(&env.config, Some(CANARY_KEY), &[]);
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    let all_ok: BTreeMap<String, String> = ALL
        .iter()
        .map(|k| (k.to_string(), "ok".to_string()))
        .collect();
    assert_eq!(outcomes(&v), all_ok);
    assert_eq!(v["dirs"][0]["key"], "daemon.data_dir");
    assert_eq!(v["dirs"][0]["writable"], true);
    assert!(v["dirs"][0]["free_bytes"].as_u64().unwrap() > 0);
    for p in v["providers"].as_array().unwrap() {
        assert!(p["probe"]["clock_skew_secs"].as_i64().unwrap().abs() <= 2);
    }
    let printed =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!printed.contains(CANARY_KEY));

    // What the providers saw: one request each, no create, no charge.
    let stats = sim_stats(&sim).await;
    for kind in ALL {
        let s = &stats["providers"][kind.as_str()];
        assert!(s["requests"].as_u64().unwrap() >= 1, "{kind}: {s:#}");
        assert_eq!(s["create_requests"], 0, "{kind}");
        assert_eq!(s["creates"], 0, "{kind}");
        assert_eq!(s["credits_charged"], 0, "{kind}");
        assert_eq!(s["credits_reserved"], 0, "{kind}");
    }
    assert_eq!(stats["jobs"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_says_which_keys_the_providers_refuse() {
    let sim = sim(&pinned_key(CANARY_KEY)).await;
    let env = write_config(&sim, &all_providers(""), "");
    let (out, v) = doctor(&env.config, Some("sk_live_wrong_key"), &[]);
    assert_eq!(out.status.code(), Some(1), "{v:#}");
    let got = outcomes(&v);
    for kind in ["ugclab", "ugen", "ulazai"] {
        assert_eq!(got[kind], "key_refused", "{v:#}");
    }
    // Viggle's status call needs no key: reachable, and said to be unproven.
    assert_eq!(got["viggle"], "ok");
    let viggle = &v["providers"].as_array().unwrap()[3];
    assert_eq!(viggle["name"], "viggle");
    assert!(viggle["probe"]["detail"]
        .as_str()
        .unwrap()
        .contains("not proven"));

    // One provider asked for: only it is probed.
    let (out, v) = doctor(
        &env.config,
        Some("sk_live_wrong_key"),
        &["--provider", "ugen"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(outcomes(&v).len(), 1);
    // A missing key is a setup problem (2), and nothing is sent.
    let before = sim_stats(&sim).await["providers"]["ugen"]["requests"].clone();
    let (out, v) = doctor(&env.config, None, &["--provider", "ugen"]);
    assert_eq!(out.status.code(), Some(2), "{v:#}");
    assert_eq!(
        sim_stats(&sim).await["providers"]["ugen"]["requests"],
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_flags_a_path_override_that_answers_in_an_unexpected_shape() {
    let sim = sim(&pinned_key(CANARY_KEY)).await;
    let providers = [
        P {
            name: "ugen",
            kind: ProviderKind::Ugen,
            extra: "paths = { list = \"/no-such-list\" }",
        },
        P {
            name: "ulazai",
            kind: ProviderKind::Ulazai,
            extra: "paths = { history = \"/history/\" }",
        },
    ];
    let env = write_config(&sim, &providers, "");
    let (out, v) = doctor(&env.config, Some(CANARY_KEY), &[]);
    assert_eq!(out.status.code(), Some(1), "{v:#}");
    let by_name = |n: &str| {
        v["providers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .unwrap()
            .clone()
    };
    let ugen = by_name("ugen");
    assert_eq!(ugen["probe"]["outcome"], "unexpected");
    assert_eq!(ugen["probe"]["request"], "GET /no-such-list?page_size=1");
    assert_eq!(ugen["probe"]["http_status"], 404);
    let excerpt = ugen["probe"]["excerpt"].as_str().unwrap();
    assert!(excerpt.contains("No such endpoint"), "{excerpt}");
    assert_eq!(ugen["paths"]["overridden"], true);
    // The override naming the default path is fine.
    assert_eq!(by_name("ulazai")["probe"]["outcome"], "ok");

    // A template without {id} where one is needed is a config error at its line.
    let bad = env.dir.path().join("bad.toml");
    let text = std::fs::read_to_string(&env.config).unwrap().replace(
        "paths = { list = \"/no-such-list\" }",
        "paths = { status = \"/jobs\" }",
    );
    std::fs::write(&bad, &text).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("status = \"/jobs\""))
        .unwrap()
        + 1;
    let check = Command::new(BIN).arg("check").arg(&bad).output().unwrap();
    assert_eq!(check.status.code(), Some(2));
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(
        err.contains(&format!("bad.toml:{line}:"))
            && err.contains("providers.ugen.paths.status")
            && err.contains("{id}"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_a_stopped_provider_as_unreachable() {
    let sim = sim("").await;
    let env = write_config(&sim, &all_providers(""), "");
    sim.shutdown().await;
    let (out, v) = doctor(&env.config, Some(CANARY_KEY), &[]);
    assert_eq!(out.status.code(), Some(1), "{v:#}");
    for (name, outcome) in outcomes(&v) {
        assert_eq!(outcome, "unreachable", "{name}: {v:#}");
    }
}

/// A daemon with stderr captured to a file, killed if the test fails.
fn daemon(config: &Path, log: &Path) -> Guard {
    let child = Command::new(BIN)
        .args(["daemon", "--config"])
        .arg(config)
        .env("E2E_KEY", CANARY_KEY)
        .env("E2E_HOOK", CANARY_HOOK)
        .env("SWITCHYARD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Guard(Some(child))
}

fn submit(url: &str, batch: &Path) {
    let out = common::cli(url, &["submit", batch.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn states(jobs: &[switchyard_core::Job]) -> BTreeMap<String, JobState> {
    jobs.iter().map(|j| (j.key.clone(), j.state)).collect()
}

const FAST_POLL: &str = "poll = { schedule = [\"200ms\", \"300ms\"], max = \"500ms\", timeout = \"2m\" }\nwebhook_secret_env = \"E2E_HOOK\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_has_no_secret_and_replays_to_the_same_outcome() {
    let batch = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/examples/batch.toml");
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sim/scenarios/demo.toml");
    let sim = SimServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Scenario::from_file(&scenario).unwrap(),
    )
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let record_dir = tmp.path().join("rec");
    let env = write_config(
        &sim,
        &all_providers(FAST_POLL),
        &format!("record_dir = \"{}\"", record_dir.display()),
    );
    let mut d = daemon(&env.config, &tmp.path().join("record.log"));
    wait_listening(&env.url);
    submit(&env.url, &batch);
    let recorded = states(&wait_settled(&env.url, 8, Duration::from_secs(90)).await);
    assert_eq!(recorded["sneaker-dance-broken-image"], JobState::Failed);
    assert_eq!(
        recorded
            .values()
            .filter(|s| **s == JobState::Completed)
            .count(),
        7
    );
    common::sigterm(d.child());
    sim.shutdown().await;

    // Every file of the recording, searched for the secrets.
    let file = record_dir.join(switchyard_provider::record::CURRENT_FILE);
    let mut text = String::new();
    for entry in std::fs::read_dir(&record_dir).unwrap() {
        text.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    assert!(
        !text.contains(CANARY_KEY),
        "the API key leaked into the recording"
    );
    assert!(
        !text.contains(CANARY_HOOK),
        "the webhook secret leaked into the recording"
    );
    assert!(
        text.contains("[redacted]"),
        "credential headers are shown as redacted"
    );
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let creates = lines
        .iter()
        .filter(|l| {
            l["method"] == "POST" && l["response"]["status"].as_u64().is_some_and(|s| s < 300)
        })
        .count();
    assert_eq!(creates, 8, "one recorded create per job");
    assert!(lines
        .iter()
        .all(|l| l["provider"].is_string() && l["ts"].is_string()));

    // The recording, played back by `sim --replay`, leads a fresh daemon to
    // the same final state for every job.
    let port = free_port();
    let replay = Command::new(BIN)
        .args(["sim", "--listen", &format!("127.0.0.1:{port}"), "--replay"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _replay = Guard(Some(replay));
    wait_listening(&format!("http://127.0.0.1:{port}"));
    let env2 = replay_config(tmp.path(), port);
    let mut d2 = daemon(&env2.0, &tmp.path().join("replay.log"));
    wait_listening(&env2.1);
    submit(&env2.1, &batch);
    let replayed = states(&wait_settled(&env2.1, 8, Duration::from_secs(90)).await);
    assert_eq!(replayed, recorded);
    common::sigterm(d2.child());
}

/// A config like `write_config`'s, pointed at a replay server.
fn replay_config(dir: &Path, port: u16) -> (std::path::PathBuf, String) {
    let listen = free_port();
    let mut text = format!(
        "[daemon]\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{listen}\"\nshutdown_grace = \"5s\"\n",
        dir.join("data2").display()
    );
    for kind in ALL {
        text.push_str(&format!(
            "\n[providers.{kind}]\nkind = \"{kind}\"\nbase_url = \"http://127.0.0.1:{port}{}\"\napi_key_env = \"E2E_KEY\"\n{FAST_POLL}\n",
            kind.sim_prefix()
        ));
    }
    let path = dir.join("replay.toml");
    std::fs::write(&path, text).unwrap();
    (path, format!("http://127.0.0.1:{listen}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_status_word_leaves_the_job_live_and_counted_until_it_goes_away() {
    // Every job takes 6 s; from 1 s to 3.5 s of its life each provider
    // answers a status word no document shows.
    let scenario: String = ALL
        .iter()
        .map(|k| {
            format!(
                "[providers.{k}]\nduration = {{ fixed = \"6s\" }}\nunknown_status = {{ word = \"RENDERING_HOLD\", from = \"1s\", until = \"3500ms\" }}\n"
            )
        })
        .collect();
    let sim = sim(&scenario).await;
    let env = write_config(&sim, &all_providers(FAST_POLL), "");
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("daemon.log");
    let mut d = daemon(&env.config, &log);
    wait_listening(&env.url);
    let jobs: Vec<(String, String, String)> = ALL
        .iter()
        .enumerate()
        .map(|(i, &k)| (format!("odd-{k}"), k.to_string(), common::params(k, i)))
        .collect();
    let batch = common::batch_file(tmp.path(), "odd.toml", &jobs);
    submit(&env.url, &batch);

    // Inside the window: still live, never failed, and counted.
    let submitted = Instant::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mid = common::jobs(&env.url).await;
    assert!(
        submitted.elapsed() < Duration::from_secs(6),
        "the test ran too slowly to see the window"
    );
    assert_eq!(mid.len(), 4);
    for j in &mid {
        assert!(j.state.is_live(), "{}: {}", j.key, j.state);
    }
    let providers = common::providers(&env.url).await;
    for p in providers.as_array().unwrap() {
        assert!(
            p["unexpected_answers"].as_u64().unwrap() >= 1,
            "{}: {p:#}",
            p["name"]
        );
    }
    let metrics = reqwest::get(format!("{}/metrics", env.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for kind in ALL {
        let series = format!(
            "switchyard_unexpected_answers_total{{provider=\"{kind}\",kind=\"status_word\"}} "
        );
        let n: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .unwrap_or_else(|| panic!("no {series} in /metrics"))
            .trim()
            .parse()
            .unwrap();
        assert!(n >= 1, "{kind}: {n}");
    }

    // Once the word goes away, every job completes.
    let done = wait_settled(&env.url, 4, Duration::from_secs(30)).await;
    for j in &done {
        assert_eq!(j.state, JobState::Completed, "{}: {:?}", j.key, j.error);
    }
    // `doctor` shows the running daemon's counts beside its own probes.
    let (out, v) = doctor(&env.config, Some(CANARY_KEY), &["--daemon-url", &env.url]);
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    assert_eq!(v["daemon"]["running"], true);
    for p in v["providers"].as_array().unwrap() {
        assert!(p["unexpected_answers"].as_u64().unwrap() >= 1, "{p:#}");
    }
    common::sigterm(d.child());
    // Logged once per provider and word, not at every poll.
    let text = std::fs::read_to_string(&log).unwrap();
    let logged = text
        .lines()
        .filter(|l| l.contains("RENDERING_HOLD"))
        .count();
    assert_eq!(logged, 4, "{text}");
    assert!(!text.contains(CANARY_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_create_answer_makes_the_job_uncertain_and_keeps_its_reservation() {
    // U-Gen takes every create (and deduplicates by key), then answers it
    // with a truncated body.
    let sim = sim("[providers.ugen]\nfaults = { malformed_json = 1.0 }\n").await;
    let providers = [P {
        name: "ugen",
        kind: ProviderKind::Ugen,
        extra: "max_attempts = 2\nbudget = { credits = 1000, period = \"total\" }",
    }];
    let env = write_config(&sim, &providers, "");
    let tmp = tempfile::tempdir().unwrap();
    let mut d = daemon(&env.config, &tmp.path().join("daemon.log"));
    wait_listening(&env.url);
    let batch = common::batch_file(
        tmp.path(),
        "one.toml",
        &[(
            "garbled-create".into(),
            "ugen".into(),
            common::params(ProviderKind::Ugen, 1),
        )],
    );
    submit(&env.url, &batch);
    let jobs = wait_settled(&env.url, 1, Duration::from_secs(30)).await;
    let job = &jobs[0];
    assert_eq!(job.state, JobState::Uncertain, "{:?}", job.error);
    assert_eq!(job.error.as_ref().unwrap().code, "uncertain");
    // The job does exist at the provider: releasing its credits would
    // have let the budget be spent twice.
    assert_eq!(sim.stats().provider(ProviderKind::Ugen).creates, 1);
    let view = &common::providers(&env.url).await[0];
    assert_eq!(view["budget_reserved"], job.credits_reserved);
    assert!(job.credits_reserved > 0);
    assert!(view["unexpected_answers"].as_u64().unwrap() >= 1);
    common::sigterm(d.child());
}
