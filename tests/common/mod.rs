//! Shared by the end-to-end tests: a config written for a simulator, the
//! real `switchyard` binary as a child process, and ways to stop it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use switchyard_core::{Job, ProviderKind};
use switchyard_sim::SimServer;

pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A daemon's files: config, data dir, and the URL it listens on.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub url: String,
}

/// One `[providers.NAME]` table: kind and extra TOML lines.
pub struct P<'a> {
    pub name: &'a str,
    pub kind: ProviderKind,
    pub extra: &'a str,
}

pub fn write_config(sim: &SimServer, providers: &[P<'_>], daemon_extra: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("switchyard.toml");
    let mut text = format!(
        "[daemon]\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace = \"5s\"\n{daemon_extra}\n",
        dir.path().join("data").display()
    );
    for p in providers {
        text.push_str(&format!(
            "\n[providers.{}]\nkind = \"{}\"\nbase_url = \"{}\"\napi_key_env = \"E2E_KEY\"\n{}\n",
            p.name,
            p.kind,
            sim.base_url(p.kind),
            p.extra
        ));
    }
    std::fs::write(&config, text).unwrap();
    Env {
        url: format!("http://127.0.0.1:{port}"),
        dir,
        config,
    }
}

/// A daemon child process that is killed if the test ends early (panics):
/// a failing test must not leave daemons behind.
pub struct Guard(pub Option<Child>);

impl Guard {
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("daemon already taken")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn start_daemon(env: &Env) -> Child {
    let child = Command::new(BIN)
        .args(["daemon", "--config"])
        .arg(&env.config)
        .env("E2E_KEY", "test-key")
        .env(
            "SWITCHYARD_LOG",
            std::env::var("E2E_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_listening(&env.url);
    child
}

pub fn wait_listening(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "daemon did not start listening on {url}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn cli(url: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .args(["--daemon-url", url])
        .output()
        .unwrap()
}

/// `GET /v1/jobs` straight over HTTP (cheaper than a CLI process per poll).
pub async fn jobs(url: &str) -> Vec<Job> {
    let resp = reqwest::get(format!("{url}/v1/jobs")).await.unwrap();
    assert!(resp.status().is_success());
    resp.json().await.unwrap()
}

pub async fn providers(url: &str) -> serde_json::Value {
    reqwest::get(format!("{url}/v1/providers"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Sends SIGTERM and waits (bounded) for the exit status.
pub fn sigterm(child: &mut Child) -> std::process::ExitStatus {
    signal(child, "-TERM");
    wait_exit(child, Duration::from_secs(20))
}

pub fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "daemon did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILL: no drain, no flush beyond what was already durable.
pub fn kill9(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Writes a TOML batch file of `jobs` (key, provider, params as TOML inline table).
pub fn batch_file(dir: &Path, name: &str, jobs: &[(String, String, String)]) -> PathBuf {
    let mut text = String::new();
    for (key, provider, params) in jobs {
        text.push_str(&format!(
            "[[jobs]]\nkey = \"{key}\"\nprovider = \"{provider}\"\nparams = {params}\n\n"
        ));
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Valid params for a provider kind, unique per `i`.
pub fn params(kind: ProviderKind, i: usize) -> String {
    match kind {
        ProviderKind::Ugen => format!("{{ product_name = \"Product {i}\", product_image_url = \"https://example.com/{i}.jpg\", segment_count = 1 }}"),
        ProviderKind::Viggle => format!("{{ image_url = \"https://example.com/{i}.png\" }}"),
        ProviderKind::Ugclab => format!("{{ script = \"Script number {i}\" }}"),
        ProviderKind::Ulazai => format!("{{ model_slug = \"kling_3_0\", prompt = \"Prompt number {i}\", duration = 5 }}"),
    }
}

pub fn settled(j: &Job) -> bool {
    j.state.is_terminal() || j.state == switchyard_core::JobState::Uncertain
}

/// Polls the daemon until every one of `n` jobs is settled.
pub async fn wait_settled(url: &str, n: usize, limit: Duration) -> Vec<Job> {
    let deadline = Instant::now() + limit;
    loop {
        let js = jobs(url).await;
        if js.len() == n && js.iter().all(settled) {
            return js;
        }
        if Instant::now() > deadline {
            let mut counts = std::collections::BTreeMap::new();
            for j in &js {
                *counts.entry(j.state.to_string()).or_insert(0) += 1;
            }
            panic!("jobs did not settle within {limit:?}: {counts:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
