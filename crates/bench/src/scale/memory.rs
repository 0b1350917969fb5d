//! Memory and idle CPU, in one daemon run per size: N jobs live at once
//! (each lasts a simulated hour), the daemon's resident memory above its
//! idle baseline per live job, then its CPU time over a window in which
//! every job is polled every `poll_every`.

use super::daemon::{Daemon, DaemonCfg};
use super::{specs, ScaleOpts, KIND, LONG_SCENARIO};
use anyhow::bail;
use std::time::{Duration, Instant};
use switchyard_core::JobState;
use switchyard_sim::SimServer;
use switchyard_testkit::procfs::{cpu_ticks, loadavg, open_fds, proc_status_field, rss_kib};
use switchyard_testkit::{start_sim, Env};

#[derive(Debug, Clone)]
pub struct Memory {
    pub live: usize,
    pub rss_idle_kib: u64,
    pub rss_live_kib: u64,
    pub rss_after_kib: u64,
    pub hwm_kib: u64,
    /// Open file descriptors (mostly sockets) and threads when live.
    pub fds: usize,
    pub threads: u64,
    pub idle_cpu_s: f64,
    pub idle_secs: f64,
    pub polls: u64,
    pub load: String,
    /// What one `/metrics` scrape and one `/v1/providers` call cost with
    /// every job live: daemon CPU ms and wall ms per call.
    pub views: Vec<ViewCost>,
}

#[derive(Debug, Clone)]
pub struct ViewCost {
    pub path: &'static str,
    pub calls: u32,
    pub cpu_ms: f64,
    pub wall_ms: f64,
}

/// Calls per view: enough that the daemon's CPU time (read in clock
/// ticks, 10 ms each) is measured to a few hundredths of a millisecond per
/// call.
const VIEW_CALLS: u32 = 400;

async fn view_cost(d: &Daemon, path: &'static str, tck: f64) -> anyhow::Result<ViewCost> {
    let cpu0 = cpu_ticks(d.pid())?;
    let t = Instant::now();
    for _ in 0..VIEW_CALLS {
        d.fetch(path).await?;
    }
    let wall = t.elapsed().as_secs_f64();
    let cpu = cpu_ticks(d.pid())?.saturating_sub(cpu0) as f64 / tck;
    Ok(ViewCost {
        path,
        calls: VIEW_CALLS,
        cpu_ms: cpu * 1e3 / f64::from(VIEW_CALLS),
        wall_ms: wall * 1e3 / f64::from(VIEW_CALLS),
    })
}

impl Memory {
    pub fn bytes_per_job(&self) -> f64 {
        (self.rss_live_kib.saturating_sub(self.rss_idle_kib) * 1024) as f64
            / self.live.max(1) as f64
    }

    /// CPU time per wall time, in percent of one core.
    pub fn cpu_pct(&self) -> f64 {
        100.0 * self.idle_cpu_s / self.idle_secs.max(1e-9)
    }
}

pub async fn memory_idle(n: usize, opts: &ScaleOpts, tck: f64) -> anyhow::Result<Memory> {
    let load = loadavg();
    let sim = start_sim(LONG_SCENARIO).await?;
    let env = Env::new()?;
    let every = humantime::format_duration(opts.poll_every).to_string();
    let cfg = DaemonCfg {
        rate_per_second: 1_000_000,
        max_in_flight: u32::try_from(n).unwrap_or(u32::MAX).saturating_add(1_000),
        poll: format!("\"{every}\""),
        poll_max: every,
    };
    let mut d = Daemon::spawn(&env, &sim, &cfg).await?;
    let res = memory_idle_run(n, opts, &sim, &d, tck).await;
    let stop = d.stop().await;
    sim.shutdown().await;
    let m = res?;
    stop?;
    Ok(Memory { load, ..m })
}

async fn memory_idle_run(
    n: usize,
    opts: &ScaleOpts,
    sim: &SimServer,
    d: &Daemon,
    tck: f64,
) -> anyhow::Result<Memory> {
    // Idle baseline: started, listening, nothing in the store.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_idle_kib, _) = rss_kib(d.pid())?;
    let t0 = Instant::now();
    let all = specs("mem", n);
    for chunk in all.chunks(opts.memory_batch.max(1)) {
        d.submit(chunk).await?;
    }
    eprintln!(
        "  submitted {n} jobs in {:.2} s (batches of {})",
        t0.elapsed().as_secs_f64(),
        opts.memory_batch
    );
    let limit = Duration::from_secs(120) + Duration::from_millis(5 * n as u64);
    let mut last = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (queued, in_flight) = d.queue().await?;
        if queued == 0 && in_flight >= n && d.count(JobState::Submitting).await? == 0 {
            break;
        }
        if t0.elapsed() > limit {
            bail!("{n} jobs did not all become live within {} s ({queued} queued, {in_flight} in flight)", limit.as_secs());
        }
        if last.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "  {:.0} s: {queued} queued, {in_flight} in flight",
                t0.elapsed().as_secs_f64()
            );
            last = Instant::now();
        }
    }
    eprintln!(
        "  all live after {:.1} s; settling 2 s",
        t0.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Read before anything asks the daemon for more than counts: a job
    // listing would allocate its JSON, which the allocator then keeps.
    let (rss_live_kib, _) = rss_kib(d.pid())?;
    let fds = open_fds(d.pid());
    let threads = proc_status_field(d.pid(), "Threads:").unwrap_or(0);
    let live = d.count(JobState::Pending).await? + d.count(JobState::Processing).await?;

    // Steady state: the window opens once every job has had its first poll
    // (which records the provider's first progress figure, a write), so it
    // sees the polls a long-running queue makes, not the first round.
    let t1 = Instant::now();
    let first_round = opts.poll_every * 2 + Duration::from_secs(60);
    loop {
        let polled = sim.stats().provider(KIND).status_requests;
        if polled >= n as u64 {
            break;
        }
        if t1.elapsed() > first_round {
            bail!(
                "only {polled} of {n} jobs were polled within {} s",
                first_round.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    eprintln!(
        "  every job polled once after {:.0} s more",
        t1.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!(
        "  idle window: {} s, one poll per job every {} ...",
        opts.idle_secs,
        humantime::format_duration(opts.poll_every)
    );
    let polls0 = sim.stats().provider(KIND).status_requests;
    let cpu0 = cpu_ticks(d.pid())?;
    let w0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(opts.idle_secs)).await;
    let cpu1 = cpu_ticks(d.pid())?;
    let idle_secs = w0.elapsed().as_secs_f64();
    let polls1 = sim.stats().provider(KIND).status_requests;
    let (rss_after_kib, hwm_kib) = rss_kib(d.pid())?;
    // After the window: the calls allocate their answers.
    let mut views = Vec::new();
    for path in ["/metrics", "/v1/providers"] {
        views.push(view_cost(d, path, tck).await?);
    }
    Ok(Memory {
        live,
        rss_idle_kib,
        rss_live_kib,
        rss_after_kib,
        hwm_kib,
        fds,
        threads,
        idle_cpu_s: cpu1.saturating_sub(cpu0) as f64 / tck,
        idle_secs,
        polls: polls1.saturating_sub(polls0),
        load: String::new(),
        views,
    })
}
