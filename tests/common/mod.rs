//! The test kit (`switchyard-testkit`) with this package's binary bound:
//! a library cannot name `CARGO_BIN_EXE_switchyard`, so the few helpers
//! that run the binary are bound to it here; everything else is the kit's.

#![allow(dead_code, unused_imports)]

use std::process::{Child, Output};
pub use switchyard_testkit::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

pub fn start_daemon(env: &Env) -> Child {
    switchyard_testkit::start_daemon(BIN, env)
}

/// A daemon with its log in a file (see the kit's `spawn`).
pub fn spawn(env: &Env, vars: &[(&str, &str)]) -> Daemon {
    switchyard_testkit::spawn(BIN, env, vars)
}

pub fn cli(url: &str, args: &[&str]) -> Output {
    switchyard_testkit::cli(BIN, url, args)
}

pub fn cli_env(url: &str, args: &[&str], vars: &[(&str, &str)]) -> Output {
    switchyard_testkit::cli_env(BIN, url, args, vars)
}

/// The CLI against the daemon at `url`, off the async workers.
pub async fn cli_async(url: &str, args: &[&str]) -> Output {
    let (url, args) = (
        url.to_string(),
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    );
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&url, &args)
    })
    .await
    .expect("the CLI's task")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A `--json` command that must succeed, and the one document it prints.
pub async fn cli_json(url: &str, args: &[&str]) -> serde_json::Value {
    let out = cli_async(url, args).await;
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints one JSON document")
}

/// Job `key` once `done` holds for it, within `limit`.
pub async fn wait_job(
    url: &str,
    key: &str,
    done: impl Fn(&switchyard_core::Job) -> bool,
    limit: std::time::Duration,
) -> switchyard_core::Job {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let job = jobs(url).await.into_iter().find(|j| j.key == key);
        if let Some(j) = job.as_ref().filter(|j| done(j)) {
            return j.clone();
        }
        assert!(std::time::Instant::now() < deadline, "{key}: {job:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
