//! What a hostile web page or a careless file could do to a running
//! daemon, tried from outside: the real `switchyard` binary as a child
//! process, the simulator over loopback, requests written byte for byte.
//! Each test is one hole: cross-site requests, a foreign `Host`, a provider
//! without its key, job keys a URL cannot carry, invalid UTF-8, empty
//! batches, unknown fields over HTTP, a data dir that cannot exist.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use common::{Env, Guard, BIN, P};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use switchyard_core::{JobState, ProviderKind};
use switchyard_sim::{Scenario, SimServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every provider finishes in a simulated 2 s (0.2 s real).
const QUICK: &str = "seed = 5\nspeedup = 10.0\n[providers.viggle]\nduration = { fixed = \"2s\" }\nfailure_rate = 0.0\n[providers.ugen]\nduration = { fixed = \"2s\" }\nfailure_rate = 0.0\n";
const FAST_POLL: &str =
    "poll = { schedule = [\"200ms\", \"300ms\"], max = \"500ms\", timeout = \"5m\" }";
/// A variable no test sets.
const UNSET: &str = "SECURITY_TEST_UNSET_API_KEY";

async fn sim() -> SimServer {
    SimServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Scenario::from_toml_str(QUICK).unwrap(),
    )
    .await
    .unwrap()
}

fn viggle_env(sim: &SimServer, daemon_extra: &str) -> Env {
    common::write_config(
        sim,
        &[P {
            name: "viggle",
            kind: ProviderKind::Viggle,
            extra: FAST_POLL,
        }],
        daemon_extra,
    )
}

/// A daemon child with its stderr in a file, killed if the test fails.
struct Daemon {
    guard: Guard,
    log: PathBuf,
}

impl Daemon {
    fn spawn(env: &Env) -> Daemon {
        let log = env.dir.path().join("daemon.log");
        let child = Command::new(BIN)
            .args(["daemon", "--config"])
            .arg(&env.config)
            .env("E2E_KEY", "test-key")
            .env("SWITCHYARD_LOG", "info,sled=warn,hyper=warn")
            .env_remove(UNSET)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let guard = Guard(Some(child));
        common::wait_listening(&env.url);
        Daemon { guard, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(mut self) {
        let st = common::sigterm(self.guard.child());
        assert!(st.success(), "{}", self.log());
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The CLI against the daemon at `url`, off the async workers.
async fn cli(url: &str, args: &[&str]) -> Output {
    let (url, args) = (
        url.to_string(),
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    );
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .args(["--daemon-url", &url])
            .env_remove("SWITCHYARD_TOKEN_FILE")
            .env_remove("SWITCHYARD_CONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// `switchyard check ARGS` with extra environment: (exit code, stdout, stderr).
fn check(args: &[&Path], vars: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("check")
        .args(args)
        .env_remove("SWITCHYARD_CONFIG")
        .env_remove(UNSET);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// Starts `daemon --config FILE` and expects it to refuse: (code, stderr).
fn daemon_refuses(config: &Path, vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let err = config.with_extension("refused.log");
    let mut cmd = Command::new(BIN);
    cmd.args(["daemon", "--config"])
        .arg(config)
        .env_remove(UNSET)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut g = Guard(Some(cmd.spawn().unwrap()));
    let st = common::wait_exit(g.child(), Duration::from_secs(15));
    (st.code(), std::fs::read_to_string(&err).unwrap())
}

/// One HTTP/1.1 request written byte for byte (every header as given,
/// `Host` too), answer read to the end: (status, body).
async fn raw(
    url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    let answer = text(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

fn error_code(body: &str) -> String {
    let v: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body:?}"));
    assert!(v["error"]["message"].is_string(), "{v}");
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

/// A one-job batch for POST /v1/jobs.
fn one_job(key: &str, i: usize) -> String {
    json!({"jobs": [{"key": key, "provider": "viggle", "params": {"image_url": format!("https://example.com/{i}.png")}}]}).to_string()
}

/// Percent-encodes every byte but the unreserved ones (a URL path segment).
fn enc(key: &str) -> String {
    key.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn wait_for<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> F,
) {
    let deadline = Instant::now() + limit;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn state_of(url: &str, key: &str) -> Option<JobState> {
    common::jobs(url)
        .await
        .into_iter()
        .find(|j| j.key == key)
        .map(|j| j.state)
}

/// A page on another site can send a POST with a "simple" content type
/// (text/plain, form-urlencoded, multipart, none) without asking, and any
/// request with its own Origin. None of them may queue, cancel or retry a
/// job; the daemon's own pages (same origin), the CLI, and providers'
/// webhooks still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_cannot_queue_cancel_or_retry_jobs() {
    let sim = sim().await;
    let env = viggle_env(&sim, "");
    let d = Daemon::spawn(&env);
    let url = env.url.clone();
    let own_origin = url.clone();
    let evil = ("Origin", "http://evil.example");
    let other_port = format!("{own_origin}1");

    let simple = [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ];
    for (i, ct) in simple.iter().enumerate() {
        for with_origin in [false, true] {
            let mut h = vec![];
            if let Some(ct) = ct {
                h.push(("Content-Type", *ct));
            }
            if with_origin {
                h.push(evil);
            }
            let (status, body) = raw(&url, "POST", "/v1/jobs", &h, &one_job("csrf", i)).await;
            assert_eq!(status, 403, "POST {ct:?} origin={with_origin}: {body}");
            error_code(&body);
        }
    }
    // JSON, but the browser says it comes from elsewhere.
    let json_ct = ("Content-Type", "application/json");
    for h in [
        vec![json_ct, evil],
        vec![json_ct, ("Origin", "null")],
        vec![json_ct, ("Origin", other_port.as_str())],
        vec![json_ct, ("Sec-Fetch-Site", "cross-site")],
        vec![json_ct, ("Sec-Fetch-Site", "same-site")],
    ] {
        let (status, body) = raw(&url, "POST", "/v1/jobs", &h, &one_job("csrf", 9)).await;
        assert_eq!(status, 403, "{h:?}: {body}");
        assert_eq!(error_code(&body), "cross_site", "{h:?}");
    }
    assert!(
        common::jobs(&url).await.is_empty(),
        "a forged POST queued a job"
    );
    assert_eq!(sim.stats().provider(ProviderKind::Viggle).creates, 0);

    // The daemon's own page: same origin, JSON.
    let (status, body) = raw(
        &url,
        "POST",
        "/v1/jobs",
        &[json_ct, ("Origin", &own_origin), ("Sec-Fetch-Site", "same-origin")],
        &json!({"jobs": [
            {"key": "long", "provider": "viggle", "params": {"image_url": "https://example.com/l.png", "x_sim_duration": "1h"}},
            {"key": "failing", "provider": "viggle", "params": {"image_url": "https://example.com/f.png", "x_sim_outcome": "failed"}},
        ]})
        .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_for(
        "the failing job to fail",
        Duration::from_secs(20),
        || async { state_of(&url, "failing").await == Some(JobState::Failed) },
    )
    .await;

    // Cancel (DELETE) and retry (POST) from another site: refused.
    for (method, path) in [
        ("DELETE", "/v1/jobs/long"),
        ("POST", "/v1/jobs/failing/retry"),
    ] {
        for h in [
            vec![evil],
            vec![json_ct, evil],
            vec![("Sec-Fetch-Site", "cross-site")],
            vec![("Content-Type", "text/plain")],
        ] {
            let (status, body) = raw(&url, method, path, &h, "").await;
            assert_eq!(status, 403, "{method} {path} {h:?}: {body}");
            error_code(&body);
        }
    }
    // A POST without a body is what a form can send: refused too.
    let (status, _) = raw(&url, "POST", "/v1/jobs/failing/retry", &[], "").await;
    assert_eq!(status, 403);
    assert_eq!(state_of(&url, "failing").await, Some(JobState::Failed));
    assert_ne!(state_of(&url, "long").await, Some(JobState::Cancelled));

    // Webhooks are for providers' servers: unchanged.
    let (status, body) = raw(
        &url,
        "POST",
        "/webhooks/viggle",
        &[("Content-Type", "text/plain"), evil],
        "{\"job_id\": \"unknown\"}",
    )
    .await;
    assert_eq!(status, 202, "{body}");

    // The CLI: retry sends JSON, cancel a DELETE without a body.
    let out = cli(&url, &["retry", "failing"]).await;
    assert!(out.status.success(), "retry: {}", text(&out.stderr));
    let out = cli(&url, &["cancel", "long"]).await;
    assert!(out.status.success(), "cancel: {}", text(&out.stderr));
    wait_for("the cancel", Duration::from_secs(10), || async {
        state_of(&url, "long").await == Some(JobState::Cancelled)
    })
    .await;
    d.stop();
    sim.shutdown().await;
}

/// DNS rebinding: a page on attacker.example makes its name resolve to
/// 127.0.0.1 and reads "its own" site; the request still names
/// attacker.example. Only IP literals, localhost and daemon.allowed_hosts
/// are answered; SIGHUP replaces the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_header_is_refused_with_421() {
    let sim = sim().await;
    let env = viggle_env(&sim, "");
    let d = Daemon::spawn(&env);
    let url = env.url.clone();
    let port = url.rsplit(':').next().unwrap().to_string();
    let json_ct = ("Content-Type", "application/json");

    let foreign = format!("attacker.example:{port}");
    for (method, path, body) in [
        ("GET", "/v1/jobs", String::new()),
        ("GET", "/v1/providers", String::new()),
        ("GET", "/metrics", String::new()),
        ("GET", "/v1/jobs/x", String::new()),
        ("POST", "/v1/jobs", one_job("rebound", 1)),
    ] {
        let (status, answer) = raw(&url, method, path, &[("Host", &foreign), json_ct], &body).await;
        assert_eq!(status, 421, "{method} {path}: {answer}");
        assert_eq!(error_code(&answer), "misdirected");
        assert!(!answer.contains("viggle"), "{answer}");
    }
    assert!(
        common::jobs(&url).await.is_empty(),
        "a rebound POST queued a job"
    );

    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "localhost".to_string(),
        format!("[::1]:{port}"),
    ] {
        let (status, answer) = raw(&url, "GET", "/v1/jobs", &[("Host", &host)], "").await;
        assert_eq!(status, 200, "Host {host}: {answer}");
    }
    // Open routes: probes and providers use whatever name they were given.
    let (status, _) = raw(&url, "GET", "/healthz", &[("Host", &foreign)], "").await;
    assert_eq!(status, 200);
    let (status, _) = raw(
        &url,
        "POST",
        "/webhooks/viggle",
        &[("Host", "hooks.example.com")],
        "{\"job_id\": \"unknown\"}",
    )
    .await;
    assert_eq!(status, 202);
    let out = cli(&url, &["jobs", "--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A name of one's own goes in daemon.allowed_hosts; SIGHUP applies a
    // new list at once.
    let named = format!("switchyard.test:{port}");
    assert_eq!(
        raw(&url, "GET", "/v1/jobs", &[("Host", &named)], "")
            .await
            .0,
        421
    );
    let cfg = std::fs::read_to_string(&env.config).unwrap();
    let listed = cfg.replace(
        "shutdown_grace = \"5s\"\n",
        "shutdown_grace = \"5s\"\nallowed_hosts = [\"switchyard.test\"]\n",
    );
    assert_ne!(cfg, listed);
    std::fs::write(&env.config, &listed).unwrap();
    common::signal(d.guard.0.as_ref().unwrap(), "-HUP");
    wait_for(
        "allowed_hosts to apply",
        Duration::from_secs(10),
        || async {
            raw(&url, "GET", "/v1/jobs", &[("Host", &named)], "")
                .await
                .0
                == 200
        },
    )
    .await;
    let (status, body) = raw(
        &url,
        "POST",
        "/v1/jobs",
        &[
            ("Host", "SWITCHYARD.TEST"),
            json_ct,
            ("Origin", "http://switchyard.test:8080"),
        ],
        &one_job("named", 2),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    std::fs::write(&env.config, listed.replace("switchyard.test", "other.test")).unwrap();
    common::signal(d.guard.0.as_ref().unwrap(), "-HUP");
    wait_for("the new allowed_hosts", Duration::from_secs(10), || async {
        raw(&url, "GET", "/v1/jobs", &[("Host", "other.test")], "")
            .await
            .0
            == 200
    })
    .await;
    let (status, _) = raw(&url, "GET", "/v1/jobs", &[("Host", "switchyard.test")], "").await;
    assert_eq!(status, 421);

    // A malformed entry is a config error with its line.
    let bad = env.dir.path().join("bad-hosts.toml");
    std::fs::write(&bad, "[daemon]\nallowed_hosts = [\"http://x.example/\"]\n").unwrap();
    let (code, _, err) = check(&[&bad], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("bad-hosts.toml:2:1: daemon.allowed_hosts"),
        "{err}"
    );
    d.stop();
    sim.shutdown().await;
}

/// A provider whose key variable is unset (or whose key file is missing
/// or empty) would fail every job with 401: check says so (exit 2, naming
/// the provider and the variable or file), the daemon does not start, and a
/// SIGHUP to such a config is refused. `api_key_required = false` opts out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_without_its_api_key_is_a_config_error() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, provider: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[daemon]\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{}\"\n\n[providers.ugen]\nkind = \"ugen\"\nbase_url = \"{}\"\n{provider}\n",
                dir.path().join("data").display(),
                common::free_port(),
                sim.base_url(ProviderKind::Ugen)
            ),
        )
        .unwrap();
        path
    };
    let unset = write("unset.toml", &format!("api_key_env = \"{UNSET}\""));
    let (code, out, err) = check(&[&unset], &[]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.contains("unset.toml:8:1: providers.ugen.api_key_env:") && err.contains(UNSET),
        "{err}"
    );
    let (code, err) = daemon_refuses(&unset, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("providers.ugen.api_key_env") && err.contains(UNSET),
        "{err}"
    );
    // With the variable set: fine.
    let (code, _, err) = check(&[&unset], &[(UNSET, "k")]);
    assert_eq!(code, Some(0), "{err}");

    let missing_file = dir.path().join("missing.key");
    let missing = write(
        "missing.toml",
        &format!("api_key_file = \"{}\"", missing_file.display()),
    );
    let (code, _, err) = check(&[&missing], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("providers.ugen.api_key_file")
            && err.contains(&missing_file.display().to_string()),
        "{err}"
    );
    let (code, err) = daemon_refuses(&missing, &[]);
    assert_eq!(code, Some(2), "{err}");
    std::fs::write(&missing_file, "\n").unwrap();
    let (code, _, err) = check(&[&missing], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("is empty"), "{err}");
    // A relative file looked for where systemd puts credentials.
    let relative = write("relative.toml", "api_key_file = \"ugen.key\"");
    let (code, _, err) = check(&[&relative], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("CREDENTIALS_DIRECTORY"), "{err}");
    std::fs::write(dir.path().join("ugen.key"), "k").unwrap();
    let creds = dir.path().to_str().unwrap();
    let (code, _, err) = check(&[&relative], &[("CREDENTIALS_DIRECTORY", creds)]);
    assert_eq!(code, Some(0), "{err}");

    let none = write("none.toml", "");
    let (code, _, err) = check(&[&none], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("providers.ugen") && err.contains("no API key"),
        "{err}"
    );
    let optional = write("optional.toml", "api_key_required = false");
    let (code, out, err) = check(&[&optional], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("config ok"), "{out}");

    // SIGHUP to a config whose key is missing: refused whole, the running
    // limits kept.
    let env = common::write_config(
        &sim,
        &[P {
            name: "ugen",
            kind: ProviderKind::Ugen,
            extra: "rate_limit = { per_second = 5, burst = 2 }",
        }],
        "",
    );
    let d = Daemon::spawn(&env);
    let cfg = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        cfg.replace("E2E_KEY", UNSET)
            .replace("per_second = 5", "per_second = 9"),
    )
    .unwrap();
    common::signal(d.guard.0.as_ref().unwrap(), "-HUP");
    wait_for(
        "the refusal in the log",
        Duration::from_secs(10),
        || async { d.log().contains("reload refused") },
    )
    .await;
    let log = d.log();
    let line = log.lines().find(|l| l.contains("reload refused")).unwrap();
    assert!(line.contains(UNSET), "{line}");
    let p = common::providers(&env.url).await;
    assert_eq!(p[0]["rate_limit"]["per_second"], 5, "{p}");
    d.stop();
    sim.shutdown().await;
}

/// Writes a JSON Lines batch of viggle jobs with these keys and params.
fn jsonl_batch(dir: &Path, name: &str, jobs: &[(&str, Value)]) -> PathBuf {
    let mut text = String::new();
    for (key, params) in jobs {
        text.push_str(&json!({"key": key, "provider": "viggle", "params": params}).to_string());
        text.push('\n');
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Waits until the inbox has moved `name` to rejected/ and returns the
/// report written beside it.
async fn inbox_rejection(inbox: &Path, name: &str) -> String {
    let report = inbox.join("rejected").join(format!("{name}.error.txt"));
    wait_for(
        &format!("{name} to be rejected"),
        Duration::from_secs(15),
        || {
            let r = report.clone();
            async move { r.exists() }
        },
    )
    .await;
    std::fs::read_to_string(report).unwrap()
}

/// `.` and `..` cannot travel as a URL path segment (URL parsers resolve
/// them, even percent-encoded), so no way in accepts them, and the CLI
/// says why instead of asking for another URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_keys_are_refused_at_every_way_in_and_by_the_cli() {
    let sim = sim().await;
    let inbox = tempfile::tempdir().unwrap();
    let env = viggle_env(
        &sim,
        &format!(
            "inbox_dir = \"{}\"\ninbox_settle = \"200ms\"",
            inbox.path().display()
        ),
    );
    let d = Daemon::spawn(&env);
    let url = env.url.clone();
    let params = json!({"image_url": "https://example.com/d.png"});
    let batch = jsonl_batch(
        env.dir.path(),
        "dots.jsonl",
        &[
            ("fine", params.clone()),
            (".", params.clone()),
            ("..", params.clone()),
        ],
    );

    let (code, _, err) = check(
        &[Path::new("--config"), &env.config, &batch],
        &[("E2E_KEY", "k")],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("dots.jsonl:2: job \".\": key must not be \".\" or \"..\""),
        "{err}"
    );
    assert!(err.contains("dots.jsonl:3: job \"..\""), "{err}");

    let out = cli(&url, &["submit", batch.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("dots.jsonl:3: job \"..\": key must not be"),
        "{}",
        text(&out.stderr)
    );

    for key in [".", ".."] {
        let (status, body) = raw(
            &url,
            "POST",
            "/v1/jobs",
            &[("Content-Type", "application/json")],
            &one_job(key, 1),
        )
        .await;
        assert_eq!(status, 422, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "invalid_batch");
        assert_eq!(v["error"]["problems"][0]["key"], key);
        assert!(
            v["error"]["problems"][0]["message"]
                .as_str()
                .unwrap()
                .contains("must not be"),
            "{v}"
        );
    }

    std::fs::copy(&batch, inbox.path().join("dots.jsonl")).unwrap();
    let report = inbox_rejection(inbox.path(), "dots.jsonl").await;
    assert!(
        report.contains("dots.jsonl:2: job \".\": key must not be"),
        "{report}"
    );
    assert!(
        common::jobs(&url).await.is_empty(),
        "a batch with dot keys was queued in part"
    );

    for cmd in ["show", "cancel", "retry"] {
        for key in [".", ".."] {
            let out = cli(&url, &[cmd, key]).await;
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd} {key}: {err}");
            assert!(
                err.contains("key must not be \".\" or \"..\""),
                "{cmd} {key}: {err}"
            );
        }
    }
    d.stop();
    sim.shutdown().await;
}

/// Every other key round-trips: spaces, `%`, `?`, `#`, backslashes,
/// non-ASCII, dots that are not a whole segment; through the CLI's show,
/// cancel and retry, and through raw HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_with_url_special_characters_round_trip_through_the_cli_and_http() {
    let sim = sim().await;
    let env = viggle_env(&sim, "");
    let d = Daemon::spawn(&env);
    let url = env.url.clone();
    let odd = [
        "with space",
        "100%",
        "%2e%2e",
        "what?x=1&y",
        "hash#tag",
        "back\\slash",
        "ünïcødé-😀",
        "...",
        ".hidden",
    ];
    // Each key twice: as written, a job that fails (for show and retry);
    // with a suffix, one that runs for an hour (for cancel).
    let long = |k: &str| format!("{k} (long)");
    let mut jobs = Vec::new();
    for (i, k) in odd.iter().enumerate() {
        jobs.push((
            k.to_string(),
            json!({"image_url": format!("https://example.com/{i}.png"), "x_sim_outcome": "failed"}),
        ));
        jobs.push((
            long(k),
            json!({"image_url": format!("https://example.com/{i}.png"), "x_sim_duration": "1h"}),
        ));
    }
    let refs: Vec<(&str, Value)> = jobs.iter().map(|(k, p)| (k.as_str(), p.clone())).collect();
    let batch = jsonl_batch(env.dir.path(), "odd.jsonl", &refs);
    let out = cli(&url, &["submit", batch.to_str().unwrap()]).await;
    assert!(out.status.success(), "submit: {}", text(&out.stderr));

    for k in odd {
        let c = long(k);
        wait_for(
            &format!("{k:?} to fail"),
            Duration::from_secs(20),
            || async { state_of(&url, k).await == Some(JobState::Failed) },
        )
        .await;
        let out = cli(&url, &["show", k, "--json"]).await;
        assert!(out.status.success(), "show {k:?}: {}", text(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["key"], k);
        assert!(
            v["history"].as_array().is_some_and(|h| !h.is_empty()),
            "{v}"
        );
        let out = cli(&url, &["retry", k, "--json"]).await;
        assert!(out.status.success(), "retry {k:?}: {}", text(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (v["key"].as_str(), v["state"].as_str()),
            (Some(k), Some("queued"))
        );
        let out = cli(&url, &["cancel", &c, "--json"]).await;
        assert!(out.status.success(), "cancel {c:?}: {}", text(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["key"], c.as_str());

        // Raw HTTP, the key as one percent-encoded segment.
        let (status, body) = raw(&url, "GET", &format!("/v1/jobs/{}", enc(&c)), &[], "").await;
        assert_eq!(status, 200, "GET {c:?}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["key"], c.as_str());
    }
    // Raw retry and cancel reach the job their key names.
    let k = "what?x=1&y";
    wait_for(
        "the retried job to fail again",
        Duration::from_secs(20),
        || async { state_of(&url, k).await == Some(JobState::Failed) },
    )
    .await;
    let (status, body) = raw(
        &url,
        "POST",
        &format!("/v1/jobs/{}/retry", enc(k)),
        &[("Content-Type", "application/json")],
        "{}",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["key"], k);
    let (status, body) = raw(&url, "DELETE", &format!("/v1/jobs/{}", enc(k)), &[], "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["key"], k);
    d.stop();
    sim.shutdown().await;
}

/// A stray byte that is not UTF-8 is reported at its line and column, in
/// batches (check, submit, inbox) and in the config (check, daemon).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_is_reported_with_its_line_and_column() {
    let sim = sim().await;
    let inbox = tempfile::tempdir().unwrap();
    let env = viggle_env(
        &sim,
        &format!(
            "inbox_dir = \"{}\"\ninbox_settle = \"200ms\"",
            inbox.path().display()
        ),
    );
    let d = Daemon::spawn(&env);
    let dir = env.dir.path();
    let toml = dir.join("latin1.toml");
    std::fs::write(
        &toml,
        b"[[jobs]]\nkey = \"caf\xc3\xa9\"\nprovider = \"viggle\"\nparams = { image_url = \"https://example.com/caf\xe9.png\" }\n",
    )
    .unwrap();
    let jsonl = dir.join("latin1.jsonl");
    std::fs::write(
        &jsonl,
        b"{\"key\": \"a\", \"provider\": \"viggle\", \"params\": {\"image_url\": \"https://example.com/a.png\"}}\n{\"key\": \"\xe9\"}\n",
    )
    .unwrap();
    let (code, _, err) = check(&[&toml, &jsonl], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("latin1.toml:4:48: invalid UTF-8"), "{err}");
    assert!(err.contains("latin1.jsonl:2:10: invalid UTF-8"), "{err}");

    let out = cli(&env.url, &["submit", toml.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("latin1.toml:4:48: invalid UTF-8"),
        "{}",
        text(&out.stderr)
    );

    std::fs::copy(&jsonl, inbox.path().join("latin1.jsonl")).unwrap();
    let report = inbox_rejection(inbox.path(), "latin1.jsonl").await;
    assert!(
        report.contains("latin1.jsonl:2:10: invalid UTF-8"),
        "{report}"
    );

    let cfg = dir.join("latin1-config.toml");
    std::fs::write(
        &cfg,
        b"[daemon]\n# Konfiguration f\xfcr den Dienst\nlisten = \"127.0.0.1:7799\"\n",
    )
    .unwrap();
    let (code, _, err) = check(&[&cfg], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("latin1-config.toml:2:18: invalid UTF-8"),
        "{err}"
    );
    let (code, err) = daemon_refuses(&cfg, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("latin1-config.toml:2:18: invalid UTF-8"),
        "{err}"
    );
    d.stop();
    sim.shutdown().await;
}

/// An empty batch is a mistake (a generator that wrote nothing, the wrong
/// file): refused with the same message by check, submit, POST and inbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_batch_is_refused_on_every_path() {
    let sim = sim().await;
    let inbox = tempfile::tempdir().unwrap();
    let env = viggle_env(
        &sim,
        &format!(
            "inbox_dir = \"{}\"\ninbox_settle = \"200ms\"",
            inbox.path().display()
        ),
    );
    let d = Daemon::spawn(&env);
    let dir = env.dir.path();
    let empties = [
        ("empty.jsonl", ""),
        ("blank.jsonl", "\n\n# nothing yet\n"),
        ("array.toml", "jobs = []\n"),
        ("comment.toml", "# the generator wrote nothing\n"),
    ];
    for (name, body) in empties {
        std::fs::write(dir.join(name), body).unwrap();
    }
    for (name, _) in empties {
        let path = dir.join(name);
        // check takes a TOML file with no `jobs` for a config.
        if name != "comment.toml" {
            let (code, out, err) = check(&[&path], &[]);
            assert_eq!(code, Some(2), "{name}: {out}");
            assert!(
                err.contains(&format!("{name}: no jobs in this batch")),
                "{name}: {err}"
            );
        }
        let out = cli(&env.url, &["submit", path.to_str().unwrap()]).await;
        assert_eq!(out.status.code(), Some(2), "submit {name}");
        assert!(
            text(&out.stderr).contains("no jobs in this batch"),
            "{}",
            text(&out.stderr)
        );
    }
    let (status, body) = raw(
        &env.url,
        "POST",
        "/v1/jobs",
        &[("Content-Type", "application/json")],
        "{\"jobs\": []}",
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "invalid_batch");
    assert_eq!(
        v["error"]["problems"][0]["message"],
        "no jobs in this batch"
    );

    std::fs::copy(dir.join("array.toml"), inbox.path().join("array.toml")).unwrap();
    let report = inbox_rejection(inbox.path(), "array.toml").await;
    assert!(
        report.contains("array.toml: no jobs in this batch"),
        "{report}"
    );
    d.stop();
    sim.shutdown().await;
}

/// A misspelt field is refused over HTTP as in a file: `"priorty": 5`
/// must not quietly mean priority 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_are_refused_over_http_as_in_files() {
    let sim = sim().await;
    let env = viggle_env(&sim, "");
    let d = Daemon::spawn(&env);
    let json_ct = ("Content-Type", "application/json");
    let job = json!({"key": "typo", "provider": "viggle", "priorty": 5, "params": {"image_url": "https://example.com/t.png"}});
    let good = json!({"key": "good", "provider": "viggle", "params": {"image_url": "https://example.com/g.png"}});

    let (status, body) = raw(
        &env.url,
        "POST",
        "/v1/jobs",
        &[json_ct],
        &json!({"jobs": [good, job]}).to_string(),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "invalid_batch");
    let p = &v["error"]["problems"][0];
    assert_eq!(
        (p["index"].clone(), p["key"].clone()),
        (json!(1), json!("typo")),
        "{v}"
    );
    assert!(
        p["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `priorty`"),
        "{v}"
    );

    let (status, body) = raw(
        &env.url,
        "POST",
        "/v1/jobs",
        &[json_ct],
        &json!({"jobs": [good], "dry_run": true}).to_string(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown field `dry_run`"), "{body}");
    assert!(
        common::jobs(&env.url).await.is_empty(),
        "part of a refused batch was queued"
    );

    // The same job in a file: the same rule.
    let path = jsonl_batch(env.dir.path(), "typo.jsonl", &[]);
    std::fs::write(&path, format!("{job}\n")).unwrap();
    let (code, _, err) = check(&[&path], &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("typo.jsonl:1:") && err.contains("unknown field `priorty`"),
        "{err}"
    );
    d.stop();
    sim.shutdown().await;
}

/// check tries what the daemon's start would: a data dir under a regular
/// file cannot be created, so check says so and the daemon refuses to
/// start; one that can be created passes, and check leaves nothing behind.
#[test]
fn check_finds_a_data_dir_that_cannot_exist() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let config = |name: &str, daemon: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!("[daemon]\nlisten = \"127.0.0.1:{}\"\n{daemon}\n\n[providers.viggle]\nkind = \"viggle\"\napi_key_env = \"E2E_KEY\"\n", common::free_port()),
        )
        .unwrap();
        path
    };
    let under_file = config(
        "under-file.toml",
        &format!("data_dir = \"{}\"", file.join("data").display()),
    );
    let (code, _, err) = check(&[&under_file], &[("E2E_KEY", "k")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("under-file.toml:3:1: daemon.data_dir: cannot be created:")
            && err.contains(&file.display().to_string()),
        "{err}"
    );
    let (code, err) = daemon_refuses(&under_file, &[("E2E_KEY", "k")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("daemon.data_dir"), "{err}");

    let is_file = config(
        "is-file.toml",
        &format!(
            "data_dir = \"{}\"\noutput_dir = \"{}\"",
            dir.path().join("data").display(),
            file.display()
        ),
    );
    let (code, _, err) = check(&[&is_file], &[("E2E_KEY", "k")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("daemon.output_dir") && err.contains("not a directory"),
        "{err}"
    );

    let fresh = dir.path().join("new");
    let creatable = config(
        "creatable.toml",
        &format!("data_dir = \"{}\"", fresh.join("deeper").display()),
    );
    let (code, out, err) = check(&[&creatable], &[("E2E_KEY", "k")]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("config ok"), "{out}");
    assert!(!fresh.exists(), "check left {} behind", fresh.display());
    let mut left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "a-file",
            "creatable.toml",
            "is-file.toml",
            "under-file.refused.log",
            "under-file.toml"
        ],
        "check left files behind"
    );

    // A listen address that does not parse is a config error at its line.
    let bad_listen = config("listen.toml", "");
    let t = std::fs::read_to_string(&bad_listen).unwrap();
    std::fs::write(
        &bad_listen,
        t.replace("listen = \"127.0.0.1:", "listen = \"localhost:"),
    )
    .unwrap();
    let (code, _, err) = check(&[&bad_listen], &[("E2E_KEY", "k")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("listen.toml:2:"), "{err}");
}
