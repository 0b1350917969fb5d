//! The benchmarks `switchyard bench` runs, out of the binary's own code:
//! the binary keeps the command (`bench poll|scale|store`) and calls in here.
//!
//! - [`batch`]: peak memory of `check` on a large batch file, as a multiple
//!   of the file's size;
//! - [`dashboard`]: the jobs page's answer time with a large store, beside
//!   listing every job, and an idle daemon's CPU with an event stream open;
//! - [`fleet`]: end-to-end throughput of one daemon on sled, on PostgreSQL
//!   and of three daemons on one database, and the fleet's use of each
//!   provider's quota;
//! - [`poll`]: polls per job and finish-to-known delay of the poll plan vs
//!   fixed intervals, in virtual time (no daemon, no network);
//! - [`scale`]: throughput, memory, idle CPU and restart time of the real
//!   daemon as a child process, each beside a ceiling from the same run;
//! - [`store`]: the sled store's intake and durable transitions beside raw
//!   sled configured the same way, in the same run; with
//!   `SWITCHYARD_BENCH_DATABASE_URL` set, also the PostgreSQL store's job
//!   lifecycles and transitions beside sled's ([`store_pg`]).
//!
//! Processes, configs, the simulator and `/proc` readings come from
//! `switchyard-testkit`, the harness the end-to-end tests use.

pub mod batch;
pub mod dashboard;
pub mod fleet;
pub mod poll;
pub mod poll_learned;
pub mod poll_plot;
pub mod scale;
pub mod store;
pub mod store_pg;
mod store_sled;
