//! `switchyard bench scale`: how the daemon scales with the number of
//! jobs, each figure beside the ceiling measured in the same run on the
//! same machine:
//!
//! - **throughput** (`throughput.rs`): the simulator with zero job duration
//!   and no rate limit, the daemon with its durable store; one batch of N
//!   jobs is submitted and timed until every job is completed. The ceiling
//!   (`ceiling.rs`) is the lower of the requests per second the simulator
//!   serves to a plain keep-alive load generator divided by the requests a
//!   job needs, and the durable transitions per second the store sustains
//!   with group commit (`crate::store`) divided by the
//!   transitions a job needs. Both per-job counts are counted (simulator
//!   stats, history entries), not assumed.
//! - **memory** (`memory.rs`): N jobs live at once (simulated duration 1 h):
//!   the daemon's resident memory above its idle baseline, per live job.
//! - **idle** (`memory.rs`): with the same N jobs live and a poll due every
//!   `poll_every` (60 s) per job, the daemon's CPU time over a window of
//!   wall time.
//! - **restart** (`restart.rs`): a store holding N jobs, nearly all
//!   finished, plus a few queued ones (built by `sled_store.rs`): time from
//!   spawning the daemon to the first create request arriving at the
//!   simulator.
//!
//! The daemon always runs as a child process (`current_exe() daemon
//! --config`, through `daemon.rs` and the test kit), the simulator and the
//! load generator in this process. A child is the binary and config path
//! users run, with its own runtime and allocator; it lets resident memory
//! and CPU time be read for the daemon alone from `/proc/PID`; and it keeps
//! the simulator's handlers off the daemon's worker threads, so every part
//! uses one harness. The cost is that progress is watched over the control
//! API; the throughput's end is taken from the jobs' own `updated_at`, so
//! the watching interval does not blur it. `report.rs` prints the table,
//! the details and the goals, as text and as Markdown.

mod ceiling;
pub(crate) mod daemon;
mod memory;
mod report;
mod restart;
mod sled_store;
mod throughput;

use anyhow::{bail, Context};
use ceiling::{ceilings, Ceiling};
use memory::{memory_idle, Memory};
use report::Report;
pub(crate) use report::{command_line, Machine};
use restart::{restart, Restart};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use switchyard_core::{JobSpec, ProviderKind};
use switchyard_testkit::procfs::clk_tck;
use throughput::{throughput, Throughput};

/// Provider used throughout: Viggle's create answers `queued` and its
/// status call needs no key, so a job costs one create and one status call
/// when it is finished by its first poll.
pub(crate) const KIND: ProviderKind = ProviderKind::Viggle;
pub(crate) const PROVIDER: &str = "viggle";
/// Queued jobs in a restart store (the rest are finished).
const RESTART_QUEUED: usize = 10;

/// Zero-duration, unlimited simulator.
pub(crate) const ZERO_SCENARIO: &str =
    "seed = 1\n[providers.viggle]\nduration = { fixed = \"0s\" }\nfailure_rate = 0.0\n";

/// Jobs that stay live for an hour.
const LONG_SCENARIO: &str =
    "seed = 1\n[providers.viggle]\nduration = { fixed = \"1h\" }\nfailure_rate = 0.0\n";

/// Which parts `bench scale` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Part {
    All,
    Throughput,
    /// Memory and idle CPU share one daemon run per size.
    Memory,
    Idle,
    Restart,
}

/// Options of `switchyard bench scale`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScaleOpts {
    /// Parts to run (comma-separated): throughput, memory, idle, restart, or all.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub parts: Vec<Part>,
    /// Job counts, one table row each.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    pub sizes: Vec<usize>,
    /// Idle part: seconds of wall time over which the daemon's CPU time is read.
    #[arg(long, default_value_t = 60)]
    pub idle_secs: u64,
    /// Idle and memory parts: poll interval of every live job (schedule and max).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub poll_every: Duration,
    /// Restart part: an extra row with a store of this many jobs (0: none).
    #[arg(long, default_value_t = 1_000_000)]
    pub restart_jobs: usize,
    /// Simulator ceiling: keep-alive connections of the load generator.
    #[arg(long, default_value_t = 32)]
    pub load_conns: usize,
    /// Simulator ceiling: requests sent in all (GET status of one job).
    #[arg(long, default_value_t = 200_000)]
    pub load_requests: usize,
    /// Store ceiling: jobs taken in before the transitions (`bench store --jobs`).
    #[arg(long, default_value_t = 100_000)]
    pub store_jobs: usize,
    /// Store ceiling: concurrent writers (`bench store --writers`).
    #[arg(long, default_value_t = 256)]
    pub store_writers: usize,
    /// Store ceiling: transitions per writer (`bench store --per-writer`).
    #[arg(long, default_value_t = 400)]
    pub store_per_writer: usize,
    /// Memory and idle parts: jobs per `POST /v1/jobs` (one batch file's worth).
    #[arg(long, default_value_t = 1_000)]
    pub memory_batch: usize,
    /// Throughput part: the provider's max_in_flight (live jobs at once).
    #[arg(long, default_value_t = 1_000_000)]
    pub max_in_flight: u32,
    /// Also write the Markdown copy of the report to this file.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
}

impl Default for ScaleOpts {
    fn default() -> Self {
        ScaleOpts {
            parts: vec![Part::All],
            sizes: vec![1_000, 10_000, 100_000],
            idle_secs: 60,
            poll_every: Duration::from_secs(60),
            restart_jobs: 1_000_000,
            load_conns: 32,
            load_requests: 200_000,
            store_jobs: 100_000,
            store_writers: 256,
            store_per_writer: 400,
            memory_batch: 1_000,
            max_in_flight: 1_000_000,
            markdown: None,
        }
    }
}

impl ScaleOpts {
    fn wants(&self, p: Part) -> bool {
        self.parts.contains(&Part::All) || self.parts.contains(&p)
    }
}

/// One table row: the figures of one job count.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub n: usize,
    pub thr: Option<Throughput>,
    pub mem: Option<Memory>,
    pub restart: Option<Restart>,
}

pub async fn run(opts: ScaleOpts) -> anyhow::Result<()> {
    if opts.sizes.is_empty() && opts.restart_jobs == 0 {
        bail!("nothing to measure: give --sizes or --restart-jobs");
    }
    let started = Instant::now();
    let tck = clk_tck();
    let machine = Machine::read(tck);
    eprintln!("bench scale: {}", machine.line());
    let mut ceiling = None;
    let mut rows: Vec<Row> = opts
        .sizes
        .iter()
        .map(|&n| Row {
            n,
            ..Row::default()
        })
        .collect();

    if opts.wants(Part::Throughput) {
        ceiling = Some(ceilings(&opts).await.context("measuring the ceilings")?);
        for row in &mut rows {
            eprintln!("[throughput] {} jobs ...", row.n);
            let t = throughput(row.n, &opts, tck)
                .await
                .with_context(|| format!("throughput with {} jobs", row.n))?;
            eprintln!(
                "[throughput] {} jobs: {:.0} jobs/s ({} completed in {:.2} s)",
                row.n,
                t.jobs_per_s(),
                t.completed,
                t.secs
            );
            row.thr = Some(t);
        }
    }
    if opts.wants(Part::Memory) || opts.wants(Part::Idle) {
        for row in &mut rows {
            eprintln!("[memory+idle] {} live jobs ...", row.n);
            let m = memory_idle(row.n, &opts, tck)
                .await
                .with_context(|| format!("memory and idle with {} jobs", row.n))?;
            eprintln!(
                "[memory+idle] {} live jobs: {:.0} B/job above idle, {:.3} % of a core over {} s ({} polls)",
                row.n,
                m.bytes_per_job(),
                m.cpu_pct(),
                m.idle_secs,
                m.polls
            );
            row.mem = Some(m);
        }
    }
    if opts.wants(Part::Restart) {
        let mut sizes: Vec<usize> = rows.iter().map(|r| r.n).collect();
        if opts.restart_jobs > 0 && !sizes.contains(&opts.restart_jobs) {
            sizes.push(opts.restart_jobs);
            rows.push(Row {
                n: opts.restart_jobs,
                ..Row::default()
            });
        }
        for n in sizes {
            eprintln!("[restart] store of {n} jobs ...");
            let r = restart(n, tck)
                .await
                .with_context(|| format!("restart with {n} jobs"))?;
            eprintln!("[restart] store of {n} jobs: first create {:.0} ms after spawn (listening at {:.0} ms)", r.first_create_ms, r.listening_ms);
            if let Some(row) = rows.iter_mut().find(|r| r.n == n) {
                row.restart = Some(r);
            }
        }
    }
    rows.sort_by_key(|r| r.n);
    let report = Report {
        machine,
        command: command_line(),
        ceiling,
        rows,
        opts: opts.clone(),
        total: started.elapsed(),
    };
    print!("{}", report.text());
    let md = report.markdown();
    println!("\n---- Markdown copy (for docs/PERFORMANCE.md) ----\n{md}");
    if let Some(path) = &opts.markdown {
        std::fs::write(path, &md).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn spec(prefix: &str, i: usize) -> JobSpec {
    JobSpec {
        key: format!("{prefix}-{i:07}"),
        provider: PROVIDER.into(),
        priority: 0,
        params: serde_json::json!({ "image_url": format!("https://example.com/products/{i}.png") }),
        ..JobSpec::default()
    }
}

pub(crate) fn specs(prefix: &str, n: usize) -> Vec<JobSpec> {
    (0..n).map(|i| spec(prefix, i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_parse_with_zero_and_long_durations() {
        switchyard_testkit::scenario(ZERO_SCENARIO).unwrap();
        switchyard_testkit::scenario(LONG_SCENARIO).unwrap();
    }
}
