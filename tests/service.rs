//! Running it like a real service: the `switchyard` binary as a child
//! process with real files: the CLI against a running daemon (exit codes,
//! `--json`), config checking with file and line, SIGHUP reload, SIGTERM
//! drain, the inbox directory, downloads that are cut and resumed, and the
//! bearer token. Every daemon is held by a `Guard`, so a failing test kills it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use common::{sim, spawn, Daemon, Env, BIN, P};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_core::{Job, JobState, ProviderKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FAST_POLL: &str =
    "poll = { schedule = [\"200ms\", \"300ms\"], max = \"500ms\", timeout = \"5m\" }";

/// Every provider finishes in a simulated 2 s (0.2 s real).
const QUICK: &str = "seed = 1\nspeedup = 10.0\n[providers.ugen]\nduration = { fixed = \"2s\" }\nfailure_rate = 0.0\n[providers.viggle]\nduration = { fixed = \"2s\" }\nfailure_rate = 0.0\n[providers.ugclab]\nduration = { fixed = \"2s\" }\nfailure_rate = 0.0\n";

/// Runs the CLI off the async workers (the simulator shares them).
async fn cli(url: &str, args: &[&str]) -> Output {
    cli_env(url, args, &[]).await
}

async fn cli_env(url: &str, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let (url, args) = (
        url.to_string(),
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    );
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        common::cli_env(&url, &args, &vars)
    })
    .await
    .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}",
        out.status.code(),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn json(out: &Output, what: &str) -> serde_json::Value {
    let s = ok(out, what);
    serde_json::from_str(&s)
        .unwrap_or_else(|e| panic!("{what}: stdout is not one JSON document ({e}): {s:?}"))
}

async fn wait_until<F: FnMut() -> bool>(what: &str, limit: Duration, mut f: F) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn job(url: &str, key: &str) -> Option<Job> {
    common::jobs(url).await.into_iter().find(|j| j.key == key)
}

async fn wait_state(url: &str, key: &str, want: JobState, limit: Duration) -> Job {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(j) = job(url, key).await {
            if j.state == want {
                return j;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{key} did not reach {want}: {:?}",
            job(url, key).await.map(|j| j.state)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sigterm(d: &mut Daemon) -> (std::process::ExitStatus, Duration) {
    let mut child = d.guard.0.take().unwrap();
    tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        common::signal(&child, "-TERM");
        let st = common::wait_exit(&mut child, Duration::from_secs(30));
        (st, t.elapsed())
    })
    .await
    .unwrap()
}

/// The CLI against a running daemon: submit (TOML and JSON Lines), jobs,
/// show, cancel, retry, providers, watch, with `--json` parsed and exit
/// codes 0, 1 and 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_against_a_running_daemon() {
    let sim = sim(QUICK).await;
    // UGC Lab reserves 125 credits a job: a budget of 100 holds its jobs queued.
    let ugclab = "budget = { credits = 100, period = \"total\" }";
    let env = common::write_config(
        &sim,
        &[
            P {
                name: "ugen",
                kind: ProviderKind::Ugen,
                extra: FAST_POLL,
            },
            P {
                name: "viggle",
                kind: ProviderKind::Viggle,
                extra: FAST_POLL,
            },
            P {
                name: "ugclab",
                kind: ProviderKind::Ugclab,
                extra: ugclab,
            },
        ],
        "",
    );
    let mut d = spawn(&env, &[]);
    let url = env.url.clone();
    let dir = env.dir.path();

    let toml = common::batch_file(
        dir,
        "a.toml",
        &[
            ("v-1".into(), "viggle".into(), "{ image_url = \"https://example.com/1.png\", x_sim_duration = \"15s\" }".into()),
            ("held-1".into(), "ugclab".into(), common::params(ProviderKind::Ugclab, 1)),
            ("fail-1".into(), "ugen".into(), "{ product_name = \"P\", product_image_url = \"https://example.com/p.jpg\", segment_count = 1, x_sim_outcome = \"failed\" }".into()),
        ],
    );
    let out = cli(&url, &["submit", toml.to_str().unwrap()]).await;
    assert!(ok(&out, "submit toml").contains("3 jobs: 3 accepted, 0 already known"));

    let jsonl = dir.join("b.jsonl");
    std::fs::write(
        &jsonl,
        "{\"key\": \"v-2\", \"provider\": \"viggle\", \"params\": {\"image_url\": \"https://example.com/2.png\", \"x_sim_duration\": \"20s\"}}\n\
         {\"key\": \"v-3\", \"provider\": \"viggle\", \"priority\": 5, \"params\": {\"image_url\": \"https://example.com/3.png\", \"x_sim_duration\": \"20s\"}}\n",
    )
    .unwrap();
    let v = json(
        &cli(&url, &["submit", jsonl.to_str().unwrap(), "--json"]).await,
        "submit jsonl --json",
    );
    assert_eq!(v[0]["accepted"], 2, "{v}");
    // Same batch again: nothing new.
    let v = json(
        &cli(&url, &["submit", jsonl.to_str().unwrap(), "--json"]).await,
        "resubmit",
    );
    assert_eq!(
        (v[0]["accepted"].as_u64(), v[0]["already_known"].as_u64()),
        (Some(0), Some(2)),
        "{v}"
    );

    // `watch` follows the live jobs to the end (plain lines: not a terminal).
    // The budget-held job never ends, so cancel it first.
    let out = cli(&url, &["cancel", "held-1", "--json"]).await;
    let c = json(&out, "cancel --json");
    assert_eq!(c["state"], "cancelled", "{c}");
    let out = cli(&url, &["watch"]).await;
    let w = ok(&out, "watch");
    assert!(
        w.contains("finished") && w.contains("KEY"),
        "watch output: {w}"
    );

    let jobs = json(&cli(&url, &["jobs", "--json"]).await, "jobs --json");
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), 5);
    for j in jobs {
        for field in [
            "key",
            "provider",
            "state",
            "held_by",
            "provider_job_id",
            "progress",
            "stage",
            "output_urls",
            "credits_reserved",
            "credits_charged",
            "attempts",
            "error",
            "created_at",
            "updated_at",
        ] {
            assert!(j.get(field).is_some(), "job JSON lacks {field}: {j}");
        }
    }
    let state = |k: &str| {
        jobs.iter().find(|j| j["key"] == k).unwrap()["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(state("v-1"), "completed");
    assert_eq!(state("v-3"), "completed");
    assert_eq!(state("fail-1"), "failed");
    let filtered = json(
        &cli(&url, &["jobs", "--state", "failed", "--json"]).await,
        "jobs --state failed",
    );
    assert_eq!(filtered.as_array().unwrap().len(), 1);

    let show = json(&cli(&url, &["show", "v-1", "--json"]).await, "show --json");
    let history = show["history"].as_array().expect("show --json has history");
    assert!(history.len() >= 3, "history: {history:?}");
    assert_eq!(history.last().unwrap()["to"], "completed");
    let human = ok(&cli(&url, &["show", "v-1"]).await, "show");
    assert!(human.contains("history:"), "{human}");

    // Retry of a failed job puts it back in the queue.
    let out = cli(&url, &["retry", "fail-1"]).await;
    assert!(ok(&out, "retry").contains("fail-1: queued"));
    wait_state(&url, "fail-1", JobState::Failed, Duration::from_secs(20)).await;
    // Retrying a completed job is refused (operational: exit 1, a 409).
    let out = cli(&url, &["retry", "v-1"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));

    let providers = json(
        &cli(&url, &["providers", "--json"]).await,
        "providers --json",
    );
    let ug = providers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "ugclab")
        .unwrap();
    assert_eq!(ug["budget_credits"], 100);
    assert_eq!(ug["budget_reserved"], 0);
    assert!(
        ug["health"].is_string() && ug["in_flight"].is_u64() && ug.get("cooldown_ms").is_some(),
        "{ug}"
    );
    let table = ok(&cli(&url, &["providers"]).await, "providers");
    assert!(
        table.contains("ugclab") && table.contains("BUDGET"),
        "{table}"
    );

    // Exit 2: the caller's mistake.
    let bad = dir.join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"key\": \"x\", \"provider\": \"viggle\", \"params\": {}}\nnot json\n",
    )
    .unwrap();
    for args in [
        vec!["show", "no-such-job"],
        vec!["jobs", "--state", "bogus"],
        vec!["submit", bad.to_str().unwrap()],
        vec!["jobs", "--no-such-flag"],
        vec!["completions", "tcsh"],
    ] {
        let out = cli(&url, &args).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
    }
    let out = cli(&url, &["submit", bad.to_str().unwrap()]).await;
    assert!(
        text(&out.stderr).contains("bad.jsonl:2:"),
        "{}",
        text(&out.stderr)
    );
    let out = cli_env("not a url", &["jobs"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    // Exit 1: the daemon cannot be reached.
    let closed = format!("http://127.0.0.1:{}", common::free_port());
    let out = cli(&closed, &["jobs", "--json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("cannot reach the daemon"),
        "{}",
        text(&out.stderr)
    );

    // Help for every command, and completion scripts.
    for cmd in [
        "demo",
        "daemon",
        "submit",
        "jobs",
        "show",
        "cancel",
        "retry",
        "job-pause",
        "job-resume",
        "providers",
        "watch",
        "check",
        "sim",
        "completions",
        "pause",
        "resume",
        "plan",
        "adopt",
    ] {
        let out = cli(&url, &[cmd, "--help"]).await;
        assert!(ok(&out, cmd).contains("Usage: switchyard"), "{cmd} --help");
    }
    assert!(ok(&cli(&url, &["--help"]).await, "--help").contains("Exit codes"));
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef switchyard"),
        ("fish", "complete -c switchyard"),
    ] {
        let out = cli(&url, &["completions", shell]).await;
        let s = ok(&out, shell);
        assert!(
            s.contains(marker)
                && s.contains("providers")
                && s.contains("job-pause")
                && s.contains("adopt"),
            "{shell} completions"
        );
    }

    let (st, _) = sigterm(&mut d).await;
    assert!(st.success());
    sim.shutdown().await;
}

/// `switchyard check` and the daemon's own config loading: every problem,
/// each with file and line (or the environment variable), exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_every_problem_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        path.to_str().unwrap().to_string()
    };
    // check tries what the daemon's start would: the key must be there and
    // the data dir creatable (E2E_KEY is set for every check below).
    let data_dir = dir.path().join("data");
    let good = p(
        "good.toml",
        &format!("[daemon]\nlisten = \"127.0.0.1:7790\"\ndata_dir = \"{}\"\n\n[providers.viggle]\nkind = \"viggle\"\napi_key_env = \"E2E_KEY\"\nrate_limit = {{ per_second = 1, burst = 2 }}\n", data_dir.display()),
    );
    // The shipped config reads its keys from $CREDENTIALS_DIRECTORY.
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    for k in ["ugen", "viggle", "ugclab", "ulazai"] {
        std::fs::write(creds.join(format!("{k}.key")), "test-key").unwrap();
    }
    let data_dir: &'static str = Box::leak(data_dir.to_str().unwrap().to_string().into_boxed_str());
    let typo = p(
        "typo.toml",
        "[daemon]\nlisten = \"127.0.0.1:7790\"\nlistn = \"127.0.0.1:1\"\n",
    );
    let types = p(
        "types.toml",
        "[providers.ugen]\nkind = \"ugen\"\nmax_in_flight = \"ten\"\n",
    );
    let semantic = p(
        "semantic.toml",
        "[providers.ugen]\nkind = \"ugen\"\nmax_in_flight = 0\nrate_limit = { per_second = 1, per_minute = 60 }\n\n[providers.viggle]\nkind = \"viggle\"\npoll = { schedule = [] }\n",
    );
    let batch = p(
        "batch.toml",
        "[[jobs]]\nkey = \"a\"\nprovider = \"viggle\"\nparams = { image_url = \"https://example.com/a.png\" }\n\n[[jobs]]\nkey = \"b\"\nprovider = \"viggle\"\nparams = { }\n\n[[jobs]]\nkey = \"c\"\nprovider = \"nobody\"\n",
    );
    let broken_batch = p("broken.toml", "[[jobs]]\nkey = \"a\"\nprovider = \n");
    let check = |args: Vec<String>, vars: Vec<(&'static str, &'static str)>| {
        let mut cmd = Command::new(BIN);
        cmd.arg("check")
            .args(&args)
            .env_remove("SWITCHYARD_CONFIG")
            .env("E2E_KEY", "test-key")
            .env("CREDENTIALS_DIRECTORY", &creds);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };

    let (code, out, err) = check(vec![good.clone()], vec![]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("config ok"), "{out}");
    // The shipped, documented config is valid.
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/switchyard.toml");
    let (code, _, err) = check(
        vec![shipped.into()],
        vec![("SWITCHYARD_DAEMON__DATA_DIR", data_dir)],
    );
    assert_eq!(code, Some(0), "config/switchyard.toml: {err}");

    let (code, _, err) = check(vec![typo.clone()], vec![]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("typo.toml:3:1: unknown field `listn`"),
        "{err}"
    );

    let (code, _, err) = check(vec![types], vec![]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("types.toml:3:") && err.contains("invalid type"),
        "{err}"
    );

    let (code, _, err) = check(vec![semantic], vec![]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("semantic.toml:3:1: providers.ugen.max_in_flight: must be at least 1"),
        "{err}"
    );
    assert!(
        err.contains("semantic.toml:4:1: providers.ugen.rate_limit: set per_second or per_minute"),
        "{err}"
    );
    assert!(
        err.contains("semantic.toml:8:")
            && err.contains("providers.viggle.poll.schedule: needs at least one interval"),
        "{err}"
    );

    // An unknown SWITCHYARD_ variable is an error naming the variable.
    let (code, _, err) = check(
        vec![good.clone()],
        vec![("SWITCHYARD_DAEMON__LISTN", "127.0.0.1:1")],
    );
    assert_eq!(code, Some(2));
    assert!(
        err.contains("SWITCHYARD_DAEMON__LISTN") && err.contains("listn"),
        "{err}"
    );
    let (code, _, err) = check(
        vec![good.clone()],
        vec![("SWITCHYARD_PROVIDERS__VIGGLE__MAX_IN_FLIGHT", "many")],
    );
    assert_eq!(code, Some(2));
    assert!(
        err.contains("SWITCHYARD_PROVIDERS__VIGGLE__MAX_IN_FLIGHT"),
        "{err}"
    );
    // A valid one applies.
    let (code, _, err) = check(
        vec![good.clone()],
        vec![("SWITCHYARD_PROVIDERS__VIGGLE__MAX_IN_FLIGHT", "3")],
    );
    assert_eq!(code, Some(0), "{err}");

    // A batch, checked against the config's providers: every problem, located.
    let (code, _, err) = check(vec!["--config".into(), good.clone(), batch.clone()], vec![]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("batch.toml:6: job \"b\": params.image_url"),
        "{err}"
    );
    assert!(
        err.contains("batch.toml:11: job \"c\": provider \"nobody\" is not configured"),
        "{err}"
    );
    let (code, _, err) = check(vec![broken_batch], vec![]);
    assert_eq!(code, Some(2));
    assert!(err.contains("broken.toml:3"), "{err}");
    // Several files: every file's problems.
    let (code, _, err) = check(vec![typo.clone(), batch], vec![]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("typo.toml:3:1") && err.contains("batch.toml:6"),
        "{err}"
    );

    // The daemon refuses to start on a bad config, with the same message.
    let out = Command::new(BIN)
        .args(["daemon", "--config", &typo])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("typo.toml:3:1"),
        "{}",
        text(&out.stderr)
    );
}

/// SIGHUP: a new budget and rate limit show in `providers --json` without
/// a restart; a broken config is refused with a clear log line, the old one
/// stays, and the daemon keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_limits_and_keeps_the_old_config_when_the_new_one_is_bad() {
    let sim = sim(QUICK).await;
    let extra = |credits: u32, rate: u32| {
        format!("budget = {{ credits = {credits}, period = \"month\" }}\nrate_limit = {{ per_second = {rate}, burst = 2 }}\n{FAST_POLL}")
    };
    let env = common::write_config(
        &sim,
        &[P {
            name: "viggle",
            kind: ProviderKind::Viggle,
            extra: &extra(1000, 5),
        }],
        "",
    );
    let original = std::fs::read_to_string(&env.config).unwrap();
    let mut d = spawn(&env, &[]);
    let url = env.url.clone();

    let providers = json(&cli(&url, &["providers", "--json"]).await, "providers");
    assert_eq!(providers[0]["budget_credits"], 1000);
    assert_eq!(providers[0]["rate_limit"]["per_second"], 5);

    // A job in flight across the reloads must not be dropped.
    let path = common::batch_file(
        env.dir.path(),
        "one.toml",
        &[(
            "before".into(),
            "viggle".into(),
            "{ image_url = \"https://example.com/b.png\", x_sim_duration = \"20s\" }".into(),
        )],
    );
    ok(
        &cli(&url, &["submit", path.to_str().unwrap()]).await,
        "submit",
    );

    std::fs::write(
        &env.config,
        original.replace(&extra(1000, 5), &extra(2000, 7)),
    )
    .unwrap();
    common::signal(d.guard.child(), "-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = common::providers(&url).await;
        // The log line follows the new limits by a moment.
        if p[0]["budget_credits"] == 2000
            && p[0]["rate_limit"]["per_second"] == 7
            && d.log().contains("configuration reloaded")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reload not applied: {p}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A broken config: refused, the running one kept.
    std::fs::write(
        &env.config,
        original
            .replace("max_in_flight", "max_in_fligth")
            .replace("[providers.viggle]", "[providers.viggle]\nbudgte = 5"),
    )
    .unwrap();
    common::signal(d.guard.child(), "-HUP");
    wait_until("the refusal in the log", Duration::from_secs(10), || {
        d.log().contains("reload refused")
    })
    .await;
    let log = d.log();
    let line = log.lines().find(|l| l.contains("reload refused")).unwrap();
    assert!(
        line.contains("keeping the running configuration") && line.contains("switchyard.toml:"),
        "{line}"
    );
    let p = common::providers(&url).await;
    assert_eq!(p[0]["budget_credits"], 2000, "{p}");
    assert_eq!(p[0]["rate_limit"]["per_second"], 7, "{p}");
    assert!(
        d.guard.child().try_wait().unwrap().is_none(),
        "the daemon died on a bad reload"
    );

    // Still working: the job from before the reloads and a new one finish.
    let path = common::batch_file(
        env.dir.path(),
        "two.toml",
        &[(
            "after".into(),
            "viggle".into(),
            common::params(ProviderKind::Viggle, 9),
        )],
    );
    ok(
        &cli(&url, &["submit", path.to_str().unwrap()]).await,
        "submit after reload",
    );
    let jobs = common::wait_settled(&url, 2, Duration::from_secs(30)).await;
    assert!(
        jobs.iter().all(|j| j.state == JobState::Completed),
        "{:?}",
        jobs.iter().map(|j| (&j.key, j.state)).collect::<Vec<_>>()
    );

    let (st, _) = sigterm(&mut d).await;
    assert!(st.success());
    sim.shutdown().await;
}

/// SIGTERM while create calls are in flight (each takes 1 s at the
/// simulator): the daemon waits for their answers, records them, exits 0
/// well within the grace period, and the restart finishes the batch without
/// sending any create twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_the_restart_continues() {
    let sim = sim("seed = 2\nspeedup = 10.0\n[providers.ugen]\nduration = { fixed = \"3s\" }\nfailure_rate = 0.0\nfaults = { slow = 1.0, slow_delay = \"1s\" }\n").await;
    let extra =
        format!("rate_limit = {{ per_second = 50, burst = 10 }}\nmax_in_flight = 4\n{FAST_POLL}");
    let env = common::write_config(
        &sim,
        &[P {
            name: "ugen",
            kind: ProviderKind::Ugen,
            extra: &extra,
        }],
        "",
    );
    let mut d = spawn(&env, &[]);
    let url = env.url.clone();
    let n = 10;
    let jobs: Vec<_> = (0..n)
        .map(|i| {
            (
                format!("d-{i:02}"),
                "ugen".to_string(),
                common::params(ProviderKind::Ugen, i),
            )
        })
        .collect();
    let path = common::batch_file(env.dir.path(), "batch.toml", &jobs);
    ok(
        &cli(&url, &["submit", path.to_str().unwrap()]).await,
        "submit",
    );

    // Stop while creates are on the wire.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let js = common::jobs(&url).await;
        if js
            .iter()
            .filter(|j| j.state == JobState::Submitting)
            .count()
            >= 2
        {
            break;
        }
        assert!(Instant::now() < deadline, "no create in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (st, took) = sigterm(&mut d).await;
    assert!(st.success(), "SIGTERM must exit 0: {st:?}\n{}", d.log());
    assert!(
        took < Duration::from_secs(4),
        "the drain took {took:?} (grace 5 s, requests 1 s)"
    );
    assert!(d.log().contains("draining"), "{}", d.log());

    let mut d = spawn(&env, &[]);
    let done = common::wait_settled(&url, n, Duration::from_secs(60)).await;
    assert!(
        done.iter().all(|j| j.state == JobState::Completed),
        "{:?}",
        done.iter().map(|j| (&j.key, j.state)).collect::<Vec<_>>()
    );
    let stats = sim.stats();
    let ugen = stats.provider(ProviderKind::Ugen);
    assert_eq!(ugen.creates_by_key.len(), n);
    assert!(
        ugen.creates_by_key.values().all(|c| *c == 1),
        "a drained create was sent again: {:?}",
        ugen.creates_by_key
    );
    let (st, _) = sigterm(&mut d).await;
    assert!(st.success());
    sim.shutdown().await;
}

/// A request that hangs longer than the grace period does not hold the
/// exit: SIGTERM still ends in exit 0 shortly after `shutdown_grace` (here
/// 1 s, set through the environment).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_within_the_grace_period_when_a_request_hangs() {
    let sim =
        sim("seed = 3\n[providers.ugen]\nfaults = { slow = 1.0, slow_delay = \"60s\" }\n").await;
    let env = common::write_config(
        &sim,
        &[P {
            name: "ugen",
            kind: ProviderKind::Ugen,
            extra: "",
        }],
        "",
    );
    let mut d = spawn(&env, &[("SWITCHYARD_DAEMON__SHUTDOWN_GRACE", "1s")]);
    let url = env.url.clone();
    let path = common::batch_file(
        env.dir.path(),
        "b.toml",
        &[(
            "hang".into(),
            "ugen".into(),
            common::params(ProviderKind::Ugen, 1),
        )],
    );
    ok(
        &cli(&url, &["submit", path.to_str().unwrap()]).await,
        "submit",
    );
    wait_state(&url, "hang", JobState::Submitting, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (st, took) = sigterm(&mut d).await;
    assert!(st.success(), "{st:?}\n{}", d.log());
    assert!(
        took < Duration::from_secs(4),
        "exit took {took:?} with a 1 s grace"
    );
    assert!(
        d.log().contains("did not finish within the grace period"),
        "{}",
        d.log()
    );
    sim.shutdown().await;
}

/// The inbox: a good file is ingested and moved to done/, a bad one to
/// rejected/ beside an .error.txt naming file and line, and a file written
/// in two parts is not read before it is complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_ingests_rejects_and_waits_for_slow_writers() {
    let sim = sim(QUICK).await;
    let inbox_dir = tempfile::tempdir().unwrap();
    let inbox = inbox_dir.path().to_path_buf();
    let daemon_extra = format!("inbox_dir = \"{}\"\ninbox_settle = \"3s\"", inbox.display());
    let env = common::write_config(
        &sim,
        &[P {
            name: "viggle",
            kind: ProviderKind::Viggle,
            extra: FAST_POLL,
        }],
        &daemon_extra,
    );
    let mut d = spawn(&env, &[]);
    let url = env.url.clone();

    let job = |key: &str, i: usize| {
        format!(
            "[[jobs]]\nkey = \"{key}\"\nprovider = \"viggle\"\nparams = {}\n\n",
            common::params(ProviderKind::Viggle, i)
        )
    };
    // Written elsewhere, then moved in: the safe way.
    let staged = env.dir.path().join("good.toml");
    std::fs::write(&staged, format!("{}{}", job("in-1", 1), job("in-2", 2))).unwrap();
    std::fs::rename(&staged, inbox.join("good.toml")).unwrap();
    std::fs::write(inbox.join("lines.jsonl"), "{\"key\": \"in-3\", \"provider\": \"viggle\", \"params\": {\"image_url\": \"https://example.com/3.png\"}}\n").unwrap();
    std::fs::write(
        inbox.join("bad.toml"),
        format!(
            "{}[[jobs]]\nkey = \"in-bad\"\nprovider = \"viggle\"\nparams = {{ }}\n",
            job("in-4", 4)
        ),
    )
    .unwrap();
    // A slow writer: half a job, a pause shorter than inbox_settle, the rest.
    let slow_path = inbox.join("slow.toml");
    let mut slow = std::fs::File::create(&slow_path).unwrap();
    let full = format!("{}{}", job("slow-1", 5), job("slow-2", 6));
    let (a, b) = full.split_at(full.len() / 2 + 3);
    slow.write_all(a.as_bytes()).unwrap();
    slow.flush().unwrap();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(slow_path.exists(), "the half-written file was moved");
    assert!(
        job_keys(&url).await.iter().all(|k| !k.starts_with("slow")),
        "the half-written file was read"
    );
    slow.write_all(b.as_bytes()).unwrap();
    drop(slow);

    let done = inbox.join("done");
    let rejected = inbox.join("rejected");
    wait_until(
        "inbox files to be processed",
        Duration::from_secs(20),
        || {
            done.join("good.toml").exists()
                && done.join("lines.jsonl").exists()
                && done.join("slow.toml").exists()
                && rejected.join("bad.toml.error.txt").exists()
        },
    )
    .await;
    assert!(rejected.join("bad.toml").exists());
    let report = std::fs::read_to_string(rejected.join("bad.toml.error.txt")).unwrap();
    assert!(
        report.contains("bad.toml:6: job \"in-bad\": params.image_url"),
        "{report}"
    );
    let keys = job_keys(&url).await;
    for k in ["in-1", "in-2", "in-3", "slow-1", "slow-2"] {
        assert!(keys.contains(&k.to_string()), "{k} not queued: {keys:?}");
    }
    assert!(
        !keys.iter().any(|k| k == "in-4" || k == "in-bad"),
        "a rejected batch was partly queued: {keys:?}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&inbox)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .collect();
    assert!(leftovers.is_empty(), "left in the inbox: {leftovers:?}");

    let (st, _) = sigterm(&mut d).await;
    assert!(st.success());
    sim.shutdown().await;
}

async fn job_keys(url: &str) -> Vec<String> {
    common::jobs(url).await.into_iter().map(|j| j.key).collect()
}

/// The bytes of a fake video: deterministic, 200 KiB.
fn media_bytes(name: &str) -> Vec<u8> {
    (0..200 * 1024u32)
        .map(|i| (i.wrapping_mul(31) ^ name.len() as u32) as u8)
        .collect()
}

/// A fake Viggle on loopback (raw HTTP/1.1, one request per connection):
/// create and status as Viggle answers them, and media whose first download
/// is cut after a few KiB under a full Content-Length, then served by Range.
struct FakeViggle {
    addr: std::net::SocketAddr,
    cut: Arc<AtomicUsize>,
    ranges: Arc<AtomicUsize>,
}

async fn fake_viggle() -> FakeViggle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = Arc::new(AtomicUsize::new(0));
    let ranges = Arc::new(AtomicUsize::new(0));
    let served: Arc<std::sync::Mutex<std::collections::HashSet<String>>> = Default::default();
    let (c2, r2) = (cut.clone(), ranges.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (cut, ranges, served) = (c2.clone(), r2.clone(), served.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let mut lines = head.lines();
                let request = lines.next().unwrap_or_default().to_string();
                let header = |name: &str| {
                    head.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim()
                            .eq_ignore_ascii_case(name)
                            .then(|| v.trim().to_string())
                    })
                };
                let len: usize = header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let mut parts = request.split_whitespace();
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let json_reply = |status: &str, body: String| {
                    format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).into_bytes()
                };
                let media = |f: &str| format!("http://{addr}/media/{f}");
                let reply: Vec<u8> = match (method, path) {
                    ("POST", "/api/render") => json_reply("200 OK", r#"{"job_id": "r-1", "status": "queued"}"#.into()),
                    ("GET", "/api/render/r-1") => json_reply(
                        "200 OK",
                        serde_json::json!({"job_id": "r-1", "status": "completed", "progress_pct": 100,
                            "cdn_url": media("r-1.mp4"), "mask_cdn_url": media("r-1_mask.mp4")})
                        .to_string(),
                    ),
                    ("GET", p) if p.starts_with("/media/") => {
                        let name = p.trim_start_matches("/media/").to_string();
                        let body = media_bytes(&name);
                        let total = body.len();
                        let first = served.lock().unwrap().insert(name.clone());
                        let range = header("range").and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse::<usize>().ok());
                        match range {
                            _ if first => {
                                // Full length promised, 5000 bytes sent, connection closed.
                                cut.fetch_add(1, Ordering::Relaxed);
                                let head = format!("HTTP/1.1 200 OK\r\ncontent-type: video/mp4\r\ncontent-length: {total}\r\nconnection: close\r\n\r\n");
                                let _ = sock.write_all(head.as_bytes()).await;
                                let _ = sock.write_all(&body[..5000]).await;
                                let _ = sock.flush().await;
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                return;
                            }
                            Some(from) if from < total => {
                                ranges.fetch_add(1, Ordering::Relaxed);
                                let mut r = format!(
                                    "HTTP/1.1 206 Partial Content\r\ncontent-type: video/mp4\r\ncontent-range: bytes {from}-{}/{total}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                                    total - 1,
                                    total - from
                                )
                                .into_bytes();
                                r.extend_from_slice(&body[from..]);
                                r
                            }
                            _ => {
                                let mut r = format!("HTTP/1.1 200 OK\r\ncontent-type: video/mp4\r\ncontent-length: {total}\r\nconnection: close\r\n\r\n").into_bytes();
                                r.extend_from_slice(&body);
                                r
                            }
                        }
                    }
                    _ => json_reply("404 Not Found", r#"{"error_code": "NOT_FOUND", "error_message": "no such route"}"#.into()),
                };
                let _ = sock.write_all(&reply).await;
                let _ = sock.flush().await;
            });
        }
    });
    FakeViggle { addr, cut, ranges }
}

/// Results: a finished render's video and mask are downloaded into
/// output_dir although each first download is cut; the files are complete,
/// recorded on the job, and listed in manifest.jsonl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_cut_short_is_resumed_and_recorded() {
    let fake = fake_viggle().await;
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let out_dir = dir.path().join("out");
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{port}\"\noutput_dir = \"{}\"\n\n[providers.viggle]\nkind = \"viggle\"\nbase_url = \"http://{}/api\"\napi_key_env = \"E2E_KEY\"\npoll = {{ schedule = [\"200ms\"], max = \"500ms\", timeout = \"5m\" }}\n",
            dir.path().join("data").display(),
            out_dir.display(),
            fake.addr
        ),
    )
    .unwrap();
    let env = Env {
        dir,
        config,
        url: format!("http://127.0.0.1:{port}"),
    };
    let mut d = spawn(&env, &[]);
    let url = env.url.clone();
    let batch = common::batch_file(
        env.dir.path(),
        "b.toml",
        &[(
            "render-1".into(),
            "viggle".into(),
            common::params(ProviderKind::Viggle, 1),
        )],
    );
    ok(
        &cli(&url, &["submit", batch.to_str().unwrap()]).await,
        "submit",
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let j = loop {
        let j = job(&url, "render-1").await;
        // The manifest line follows the durable record of the files.
        let listed = std::fs::read_to_string(out_dir.join("manifest.jsonl"))
            .is_ok_and(|m| m.contains("\"render-1\""));
        if let Some(j) = j.filter(|j| j.output_files.len() == 2 && listed) {
            break j;
        }
        assert!(
            Instant::now() < deadline,
            "downloads not recorded:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(j.state, JobState::Completed);
    assert_eq!(
        fake.cut.load(Ordering::Relaxed),
        2,
        "each first download is cut"
    );
    assert!(
        fake.ranges.load(Ordering::Relaxed) >= 2,
        "the downloads were not resumed with Range"
    );
    for (file, name) in j.output_files.iter().zip(["r-1.mp4", "r-1_mask.mp4"]) {
        let got = std::fs::read(file).unwrap();
        assert!(
            got == media_bytes(name),
            "{file}: {} bytes, not the served content",
            got.len()
        );
    }
    assert!(
        Path::new(&j.output_files[0]).ends_with("render-1.mp4"),
        "{:?}",
        j.output_files
    );
    let names: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.ends_with(".part")),
        "temp files left: {names:?}"
    );
    let manifest = std::fs::read_to_string(out_dir.join("manifest.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = manifest
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let line = lines
        .iter()
        .find(|l| l["key"] == "render-1")
        .expect("manifest line for render-1");
    assert_eq!(line["files"].as_array().unwrap().len(), 2, "{line}");
    assert_eq!(line["complete"], true);
    assert_eq!(line["provider_job_id"], "r-1");

    let (st, _) = sigterm(&mut d).await;
    assert!(st.success());
}

/// The bearer token: 401 with the contract's error body without it, 200
/// with it, /healthz and webhooks open; the CLI reads it from --token-file
/// or SWITCHYARD_TOKEN_FILE; it never appears in the (JSON) log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_token_guards_the_control_api() {
    let sim = sim(QUICK).await;
    let token = "s3cret-token-for-tests-0123456789";
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("api.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let daemon_extra = format!("auth_token_file = \"{}\"", token_file.display());
    let env = common::write_config(
        &sim,
        &[P {
            name: "viggle",
            kind: ProviderKind::Viggle,
            extra: FAST_POLL,
        }],
        &daemon_extra,
    );
    let mut d = spawn(
        &env,
        &[
            ("SWITCHYARD_LOG_FORMAT", "json"),
            ("SWITCHYARD_LOG", "debug,sled=warn,hyper=warn,h2=warn"),
        ],
    );
    let url = env.url.clone();
    let http = reqwest::Client::new();

    let resp = http.get(format!("{url}/v1/jobs")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    assert!(body["error"]["message"].is_string());
    let resp = http
        .get(format!("{url}/v1/jobs"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http
        .post(format!("{url}/v1/jobs"))
        .body("{\"jobs\": []}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http.get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 401);

    let resp = http
        .get(format!("{url}/v1/jobs"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let metrics = http
        .get(format!("{url}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for m in [
        "switchyard_jobs{provider=\"viggle\",state=\"queued\"} 0",
        "switchyard_requests_total",
        "switchyard_rate_limited_total",
        "switchyard_retries_total",
        "switchyard_credits",
        "switchyard_poll_delay_seconds_bucket{le=\"+Inf\"}",
    ] {
        assert!(metrics.contains(m), "/metrics lacks {m}:\n{metrics}");
    }
    // Unknown routes get the contract's error body too.
    let resp = http
        .get(format!("{url}/v1/nothing"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");

    let resp = http.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http
        .post(format!("{url}/webhooks/viggle"))
        .body("{\"job_id\": \"unknown\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "webhooks need no token");

    // The CLI: without a token exit 2 and a hint; with --token-file or the env var it works.
    let out = cli(&url, &["jobs", "--json"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--token-file"),
        "{}",
        text(&out.stderr)
    );
    let tf = token_file.to_str().unwrap();
    let batch = common::batch_file(
        env.dir.path(),
        "b.toml",
        &[(
            "t-1".into(),
            "viggle".into(),
            common::params(ProviderKind::Viggle, 1),
        )],
    );
    ok(
        &cli(
            &url,
            &["submit", batch.to_str().unwrap(), "--token-file", tf],
        )
        .await,
        "submit --token-file",
    );
    let jobs = json(
        &cli_env(&url, &["jobs", "--json"], &[("SWITCHYARD_TOKEN_FILE", tf)]).await,
        "jobs with SWITCHYARD_TOKEN_FILE",
    );
    assert_eq!(jobs.as_array().unwrap().len(), 1);

    let (st, _) = sigterm(&mut d).await;
    assert!(st.success());
    let log = d.log();
    assert!(!log.is_empty());
    assert!(!log.contains(token), "the token appears in the log");
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| {
            panic!("SWITCHYARD_LOG_FORMAT=json: not a JSON line ({e}): {line}")
        });
    }
    sim.shutdown().await;
}
