//! The harness shared by the end-to-end tests (`tests/`) and the benchmarks
//! (`switchyard-bench`): a config written for a simulator, the real
//! `switchyard` binary as a child process and ways to stop it, the
//! simulator on a loopback port, batch files, the control API read over
//! HTTP, and what `/proc` says about a process.
//!
//! Nothing here names the binary: a library cannot see
//! `CARGO_BIN_EXE_switchyard`, so every helper that runs it takes its path
//! (tests pass that variable, the benchmark its own `current_exe()`).
//!
//! Two kinds of helper: the ones tests call by the names they always had
//! (`write_config`, `start_daemon`, `jobs`, ...) panic with a message, as a
//! failing test should; the ones a benchmark needs (`Env::in_dir`,
//! `Daemon::command`, `start_sim`, the `/proc` readers) return errors that
//! say what could not be done, so a run that goes wrong explains itself.

// Test code: a broken harness should stop the test at once; every such
// `unwrap`/`expect` either carries a message or sits on a step (a temp dir,
// a spawn) whose own error names what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod batch;
#[cfg(feature = "browser")]
pub mod browser;
mod config;
mod daemon;
pub mod pg;
pub mod procfs;
mod sim;

pub use api::{jobs, providers, settled, wait_settled};
pub use batch::{batch_file, params};
pub use config::{write_config, Env, KEY_ENV, P};
pub use daemon::{
    cli, cli_env, kill9, signal, sigterm, spawn, start_daemon, wait_exit, wait_listening, Daemon,
    DaemonCommand, Guard, Signal,
};
pub use sim::{scenario, sim, start_sim};

use std::net::{SocketAddr, TcpListener};

/// A loopback address no one listens on at the moment of asking: bound,
/// read, released. Another process may take it before the daemon does; on
/// a test machine that has not been seen.
pub fn free_addr() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// The port of [`free_addr`].
pub fn free_port() -> u16 {
    free_addr()
        .expect("binding a loopback port to find a free one")
        .port()
}
