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
