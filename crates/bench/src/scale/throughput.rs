//! Throughput: one batch of N jobs through a daemon whose simulator
//! finishes every job at once and sets no rate limit, timed from the
//! submit to the last job's own completion time.

use super::daemon::{Daemon, DaemonCfg};
use super::{specs, Ceiling, ScaleOpts, KIND, ZERO_SCENARIO};
use anyhow::bail;
use std::time::{Duration, Instant, SystemTime};
use switchyard_core::JobState;
use switchyard_sim::SimServer;
use switchyard_testkit::procfs::{cpu_ticks, cpu_ticks_self, loadavg};
use switchyard_testkit::{start_sim, Env};

#[derive(Debug, Clone)]
pub struct Throughput {
    pub completed: usize,
    pub other: Vec<(String, usize)>,
    pub secs: f64,
    pub req_per_job: f64,
    pub creates_per_job: f64,
    pub trans_per_job: f64,
    pub duplicates: usize,
    pub daemon_cpu_s: f64,
    pub bench_cpu_s: f64,
    pub load: String,
}

impl Throughput {
    pub fn jobs_per_s(&self) -> f64 {
        self.completed as f64 / self.secs.max(1e-9)
    }

    /// The lower of the two ceilings, in jobs per second, and which it is.
    pub fn ceiling(&self, c: &Ceiling) -> (f64, &'static str) {
        let sim = c.sim_rps / self.req_per_job.max(1e-9);
        let store = c.store_tps / self.trans_per_job.max(1e-9);
        if sim <= store {
            (sim, "simulator")
        } else {
            (store, "store")
        }
    }
}

pub async fn throughput(n: usize, opts: &ScaleOpts, tck: f64) -> anyhow::Result<Throughput> {
    let load = loadavg();
    let sim = start_sim(ZERO_SCENARIO).await?;
    let env = Env::new()?;
    let cfg = DaemonCfg {
        rate_per_second: 1_000_000,
        max_in_flight: opts.max_in_flight,
        poll: "\"5ms\"".into(),
        poll_max: "5ms".into(),
    };
    let mut d = Daemon::spawn(&env, &sim, &cfg).await?;
    let res = throughput_run(n, &sim, &d, tck).await;
    let stop = d.stop().await;
    sim.shutdown().await;
    let t = res?;
    stop?;
    Ok(Throughput { load, ..t })
}

async fn throughput_run(
    n: usize,
    sim: &SimServer,
    d: &Daemon,
    tck: f64,
) -> anyhow::Result<Throughput> {
    let specs = specs("tp", n);
    let cpu0 = cpu_ticks(d.pid())?;
    let self0 = cpu_ticks_self()?;
    let wall0 = SystemTime::now();
    let t0 = Instant::now();
    d.submit(&specs).await?;
    eprintln!(
        "  submitted {n} jobs in {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    let limit = Duration::from_secs(60) + Duration::from_millis(3 * n as u64);
    // Watched cheaply, so that watching does not slow what is measured:
    // the queue is FIFO, so once the batch's last job is completed and no
    // job is submitting, pending or processing (index scans over those
    // states only), every job has ended. Counting all jobs
    // (`/v1/providers`, O(jobs): ~0.2 s of daemon CPU a call at 100k) or
    // the simulator's stats (which lock its request path) happens only at
    // the end. The end time is the jobs' own `updated_at`, not this loop's.
    let last_key = specs.last().map(|s| s.key.clone()).unwrap_or_default();
    let mut last = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let tail = d.state_of(&last_key).await?;
        if tail.is_terminal() && d.none_live().await? {
            let (queued, in_flight) = d.queue().await?;
            if queued == 0 && in_flight == 0 {
                break;
            }
        }
        if t0.elapsed() > limit {
            let (queued, in_flight) = d.queue().await?;
            bail!(
                "{n} jobs did not finish within {} s ({queued} queued, {in_flight} in flight)",
                limit.as_secs()
            );
        }
        if last.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "  {:.0} s: last job of the batch {tail}",
                t0.elapsed().as_secs_f64()
            );
            last = Instant::now();
        }
    }
    let cpu1 = cpu_ticks(d.pid())?;
    let self1 = cpu_ticks_self()?;
    let jobs = d.jobs(None).await?;
    let mut completed = 0;
    let mut other: std::collections::BTreeMap<String, usize> = Default::default();
    let mut end = wall0;
    for j in &jobs {
        if j.state == JobState::Completed {
            completed += 1;
            if let Ok(t) = humantime::parse_rfc3339(&j.updated_at) {
                end = end.max(t);
            }
        } else {
            *other.entry(j.state.to_string()).or_default() += 1;
        }
    }
    let secs = end.duration_since(wall0).unwrap_or_default().as_secs_f64();
    // Transitions per job: history entries of a sample of jobs.
    let step = (jobs.len() / 50).max(1);
    let (mut hist, mut sampled) = (0usize, 0usize);
    for j in jobs.iter().step_by(step).take(50) {
        hist += d.history_len(&j.key).await?;
        sampled += 1;
    }
    let stats = sim.stats().provider(KIND);
    Ok(Throughput {
        completed,
        other: other.into_iter().collect(),
        secs,
        req_per_job: stats.requests as f64 / n.max(1) as f64,
        creates_per_job: stats.create_requests as f64 / n.max(1) as f64,
        trans_per_job: hist as f64 / sampled.max(1) as f64,
        duplicates: stats.duplicate_creates.len(),
        daemon_cpu_s: cpu1.saturating_sub(cpu0) as f64 / tck,
        bench_cpu_s: self1.saturating_sub(self0) as f64 / tck,
        load: String::new(),
    })
}
