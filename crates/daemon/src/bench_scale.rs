//! `switchyard bench scale`: issue 8's measurements. How the daemon scales
//! with the number of jobs, each figure beside the ceiling measured in the
//! same run on the same machine:
//!
//! - **throughput**: the simulator with zero job duration and no rate limit,
//!   the daemon with its durable store; one batch of N jobs is submitted and
//!   timed until every job is completed. The ceiling is the lower of the
//!   requests per second the simulator serves to a plain keep-alive load
//!   generator divided by the requests a job needs, and the durable
//!   transitions per second the store sustains with group commit
//!   ([`switchyard_store_sled::bench::store`]) divided by the transitions a job
//!   needs. Both per-job counts are counted (simulator stats, history
//!   entries), not assumed.
//! - **memory**: N jobs live at once (simulated duration 1 h): the daemon's
//!   resident memory above its idle baseline, per live job.
//! - **idle**: with the same N jobs live and a poll due every `poll_every`
//!   (60 s) per job, the daemon's CPU time over a window of wall time.
//! - **restart**: a store holding N jobs, nearly all finished, plus a few
//!   queued ones: time from spawning the daemon to the first create request
//!   arriving at the simulator.
//!
//! The daemon always runs as a child process (`current_exe() daemon
//! --config`), the simulator and the load generator in this process. A
//! child is the binary and config path users run, with its own runtime and
//! allocator; it lets resident memory and CPU time be read for the daemon
//! alone from `/proc/PID`; and it keeps the simulator's handlers off the
//! daemon's worker threads, so every part uses one harness. The cost is
//! that progress is watched over the control API; the throughput's end is
//! taken from the jobs' own `updated_at`, so the watching interval does not
//! blur it.

use anyhow::{anyhow, bail, Context};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};
use switchyard_core::{Job, JobError, JobSpec, JobState, ProviderKind};
use switchyard_sim::{Scenario, SimServer};
use switchyard_store_sled::SledStore;

/// Provider used throughout: Viggle's create answers `queued` and its
/// status call needs no key, so a job costs one create and one status call
/// when it is finished by its first poll.
const KIND: ProviderKind = ProviderKind::Viggle;
const PROVIDER: &str = "viggle";
/// Environment variable the child daemon reads its (simulated) API key from.
/// Not `SWITCHYARD_…`: those are config keys.
const KEY_ENV: &str = "BENCH_SCALE_API_KEY";
/// Jobs per `SledStore::import` call when building a restart store.
const IMPORT_CHUNK: usize = 50_000;
/// Queued jobs in a restart store (the rest are finished).
const RESTART_QUEUED: usize = 10;

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

// ---------------------------------------------------------------- figures

#[derive(Debug, Clone, Default)]
struct Ceiling {
    sim_rps: f64,
    sim_errors: u64,
    sim_requests: u64,
    store_tps: f64,
    store_transitions: u64,
    store_flushes: u64,
    load: String,
}

#[derive(Debug, Clone)]
struct Throughput {
    completed: usize,
    other: Vec<(String, usize)>,
    secs: f64,
    req_per_job: f64,
    creates_per_job: f64,
    trans_per_job: f64,
    duplicates: usize,
    daemon_cpu_s: f64,
    bench_cpu_s: f64,
    load: String,
}

impl Throughput {
    fn jobs_per_s(&self) -> f64 {
        self.completed as f64 / self.secs.max(1e-9)
    }

    /// The lower of the two ceilings, in jobs per second, and which it is.
    fn ceiling(&self, c: &Ceiling) -> (f64, &'static str) {
        let sim = c.sim_rps / self.req_per_job.max(1e-9);
        let store = c.store_tps / self.trans_per_job.max(1e-9);
        if sim <= store {
            (sim, "simulator")
        } else {
            (store, "store")
        }
    }
}

#[derive(Debug, Clone)]
struct Memory {
    live: usize,
    rss_idle_kib: u64,
    rss_live_kib: u64,
    rss_after_kib: u64,
    hwm_kib: u64,
    /// Open file descriptors (mostly sockets) and threads when live.
    fds: usize,
    threads: u64,
    idle_cpu_s: f64,
    idle_secs: f64,
    polls: u64,
    load: String,
}

impl Memory {
    fn bytes_per_job(&self) -> f64 {
        (self.rss_live_kib.saturating_sub(self.rss_idle_kib) * 1024) as f64
            / self.live.max(1) as f64
    }

    /// CPU time per wall time, in percent of one core.
    fn cpu_pct(&self) -> f64 {
        100.0 * self.idle_cpu_s / self.idle_secs.max(1e-9)
    }
}

#[derive(Debug, Clone)]
struct Restart {
    jobs: usize,
    build_s: f64,
    listening_ms: f64,
    first_create_ms: f64,
    /// The daemon's CPU time (all threads) from spawn to the first create.
    cpu_ms: f64,
    rss_kib: u64,
    load: String,
}

#[derive(Debug, Clone, Default)]
struct Row {
    n: usize,
    thr: Option<Throughput>,
    mem: Option<Memory>,
    restart: Option<Restart>,
}

// ------------------------------------------------------------------ entry

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

// -------------------------------------------------------------- ceilings

/// Zero-duration, unlimited simulator.
fn zero_scenario() -> anyhow::Result<Scenario> {
    Scenario::from_toml_str(
        "seed = 1\n[providers.viggle]\nduration = { fixed = \"0s\" }\nfailure_rate = 0.0\n",
    )
    .map_err(|e| anyhow!("zero-duration scenario: {e}"))
}

/// Jobs that stay live for an hour.
fn long_scenario() -> anyhow::Result<Scenario> {
    Scenario::from_toml_str(
        "seed = 1\n[providers.viggle]\nduration = { fixed = \"1h\" }\nfailure_rate = 0.0\n",
    )
    .map_err(|e| anyhow!("long scenario: {e}"))
}

async fn ceilings(opts: &ScaleOpts) -> anyhow::Result<Ceiling> {
    let load = loadavg();
    eprintln!(
        "[ceiling] simulator: {} keep-alive connections, {} GET status requests ...",
        opts.load_conns, opts.load_requests
    );
    let sim = SimServer::start("127.0.0.1:0".parse()?, zero_scenario()?)
        .await
        .context("starting the simulator")?;
    let base = sim.base_url(KIND);
    let created: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/render"))
        .bearer_auth("bench")
        .json(&serde_json::json!({"image_url": "https://example.com/ceiling.png"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = created["job_id"]
        .as_str()
        .ok_or_else(|| anyhow!("simulator create answered without job_id: {created}"))?;
    let url = format!("{base}/render/{id}");
    let conns = opts.load_conns.max(1);
    let per_conn = (opts.load_requests / conns).max(1);
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(conns + 1));
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(10))
            .build()?;
        let url = url.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            // Warm-up: the connection is open before the clock starts.
            let _ = get_bytes(&client, &url).await;
            barrier.wait().await;
            let (mut ok, mut err) = (0u64, 0u64);
            for _ in 0..per_conn {
                if get_bytes(&client, &url).await {
                    ok += 1;
                } else {
                    err += 1;
                }
            }
            (ok, err)
        }));
    }
    barrier.wait().await;
    let t = Instant::now();
    let (mut ok, mut err) = (0u64, 0u64);
    for task in tasks {
        let (o, e) = task.await.context("load generator task")?;
        ok += o;
        err += e;
    }
    let secs = t.elapsed().as_secs_f64();
    sim.shutdown().await;
    let sim_rps = ok as f64 / secs.max(1e-9);
    eprintln!("[ceiling] simulator: {sim_rps:.0} requests/s ({ok} ok, {err} errors, {secs:.2} s)");

    eprintln!(
        "[ceiling] store: bench store --jobs {} --writers {} --per-writer {} ...",
        opts.store_jobs, opts.store_writers, opts.store_per_writer
    );
    let tmp = tempfile::tempdir()?;
    let f = switchyard_store_sled::bench::store(
        tmp.path(),
        opts.store_jobs,
        opts.store_writers,
        opts.store_per_writer,
    )
    .await?;
    let store_tps = f.transitions as f64 / f.transitions_time.as_secs_f64().max(1e-9);
    eprintln!(
        "[ceiling] store: {store_tps:.0} durable transitions/s ({} in {:.2} s, {} flushes)",
        f.transitions,
        f.transitions_time.as_secs_f64(),
        f.flushes
    );
    Ok(Ceiling {
        sim_rps,
        sim_errors: err,
        sim_requests: ok,
        store_tps,
        store_transitions: f.transitions,
        store_flushes: f.flushes,
        load,
    })
}

async fn get_bytes(client: &reqwest::Client, url: &str) -> bool {
    match client.get(url).send().await {
        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
        _ => false,
    }
}

// ------------------------------------------------------------ throughput

async fn throughput(n: usize, opts: &ScaleOpts, tck: f64) -> anyhow::Result<Throughput> {
    let load = loadavg();
    let sim = SimServer::start("127.0.0.1:0".parse()?, zero_scenario()?)
        .await
        .context("starting the simulator")?;
    let dir = tempfile::tempdir()?;
    let cfg = DaemonCfg {
        rate_per_second: 1_000_000,
        max_in_flight: opts.max_in_flight,
        poll: "\"5ms\"".into(),
        poll_max: "5ms".into(),
    };
    let mut d = Daemon::spawn(dir.path(), &sim, &cfg).await?;
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
    let cpu0 = cpu_ticks(d.pid)?;
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
    let cpu1 = cpu_ticks(d.pid)?;
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

// ------------------------------------------------------- memory and idle

async fn memory_idle(n: usize, opts: &ScaleOpts, tck: f64) -> anyhow::Result<Memory> {
    let load = loadavg();
    let sim = SimServer::start("127.0.0.1:0".parse()?, long_scenario()?)
        .await
        .context("starting the simulator")?;
    let dir = tempfile::tempdir()?;
    let every = humantime::format_duration(opts.poll_every).to_string();
    let cfg = DaemonCfg {
        rate_per_second: 1_000_000,
        max_in_flight: u32::try_from(n).unwrap_or(u32::MAX).saturating_add(1_000),
        poll: format!("\"{every}\""),
        poll_max: every,
    };
    let mut d = Daemon::spawn(dir.path(), &sim, &cfg).await?;
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
    let (rss_idle_kib, _) = rss_kib(d.pid)?;
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
    let (rss_live_kib, _) = rss_kib(d.pid)?;
    let fds = std::fs::read_dir(format!("/proc/{}/fd", d.pid))
        .map(|r| r.count())
        .unwrap_or(0);
    let threads = proc_status_field(d.pid, "Threads:").unwrap_or(0);
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
    let cpu0 = cpu_ticks(d.pid)?;
    let w0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(opts.idle_secs)).await;
    let cpu1 = cpu_ticks(d.pid)?;
    let idle_secs = w0.elapsed().as_secs_f64();
    let polls1 = sim.stats().provider(KIND).status_requests;
    let (rss_after_kib, hwm_kib) = rss_kib(d.pid)?;
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
    })
}

// ---------------------------------------------------------------- restart

async fn restart(n: usize, tck: f64) -> anyhow::Result<Restart> {
    let load = loadavg();
    let dir = tempfile::tempdir()?;
    let t = Instant::now();
    build_store(&dir.path().join("data").join("db"), n).await?;
    let build_s = t.elapsed().as_secs_f64();
    eprintln!("  built the store in {build_s:.1} s");
    let sim = SimServer::start("127.0.0.1:0".parse()?, long_scenario()?)
        .await
        .context("starting the simulator")?;
    let cfg = DaemonCfg {
        rate_per_second: 1_000_000,
        max_in_flight: 1_000,
        poll: "\"60s\"".into(),
        poll_max: "60s".into(),
    };
    let config = write_config(dir.path(), &sim, &cfg)?;
    let spawned = Instant::now();
    let mut d = Daemon::start_child(dir.path(), config)?;
    let res = first_create(&sim, &mut d, spawned).await;
    let cpu_ms = cpu_ticks(d.pid)
        .map(|t| t as f64 * 1e3 / tck)
        .unwrap_or(f64::NAN);
    let rss = rss_kib(d.pid).map(|r| r.0).unwrap_or(0);
    let stop = d.stop().await;
    sim.shutdown().await;
    let (listening_ms, first_create_ms) = res?;
    stop?;
    Ok(Restart {
        jobs: n,
        build_s,
        listening_ms,
        first_create_ms,
        cpu_ms,
        rss_kib: rss,
        load,
    })
}

/// Waits (tight loop, bounded) for the daemon to listen and for the first
/// create to reach the simulator; both in ms since the spawn.
async fn first_create(
    sim: &SimServer,
    d: &mut Daemon,
    spawned: Instant,
) -> anyhow::Result<(f64, f64)> {
    let addr = d.addr;
    let mut listening = None;
    let limit = Duration::from_secs(120);
    loop {
        if listening.is_none() && tokio::net::TcpStream::connect(addr).await.is_ok() {
            listening = Some(spawned.elapsed());
        }
        if sim.stats().provider(KIND).create_requests > 0 {
            let first = spawned.elapsed();
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            return Ok((listening.map_or(f64::NAN, ms), ms(first)));
        }
        if let Ok(Some(st)) = d.child.try_wait() {
            bail!(
                "the daemon exited ({st}) before its first create:\n{}",
                d.log_tail()
            );
        }
        if spawned.elapsed() > limit {
            bail!(
                "no create reached the simulator within {} s of the spawn",
                limit.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A store of `n` jobs: the first ones finished (one in 50 failed, the rest
/// completed, as a long-running daemon's store looks), the last
/// [`RESTART_QUEUED`] queued.
async fn build_store(db: &Path, n: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(db)?;
    let store = SledStore::open(db)?;
    let now = switchyard_core::model::now_rfc3339();
    let queued_from = n.saturating_sub(RESTART_QUEUED);
    let mut i = 0;
    let mut last = Instant::now();
    while i < n {
        let end = (i + IMPORT_CHUNK).min(n);
        let jobs: Vec<Job> = (i..end)
            .map(|k| restart_job(k, k >= queued_from, &now))
            .collect();
        let st = store.clone();
        tokio::task::spawn_blocking(move || st.import(jobs))
            .await
            .context("import task")??;
        i = end;
        if last.elapsed() >= Duration::from_secs(5) {
            eprintln!("  imported {i} of {n} jobs");
            last = Instant::now();
        }
    }
    let st = store.clone();
    tokio::task::spawn_blocking(move || st.flush_now())
        .await
        .context("flush task")??;
    drop(store);
    // The flusher task may still hold a clone for a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

fn restart_job(i: usize, queued: bool, now: &str) -> Job {
    let mut j = Job::from_spec(spec("rs", i), 0, now);
    if queued {
        return j;
    }
    j.provider_job_id = Some(format!("vg_{i:012x}"));
    j.attempts = 1;
    j.budget_period = Some("total".into());
    if i % 50 == 49 {
        j.state = JobState::Failed;
        j.provider_status = Some("failed".into());
        j.progress = Some(45);
        j.error = Some(JobError::new("CS-UORC02-001", "Render worker failed"));
    } else {
        j.state = JobState::Completed;
        j.provider_status = Some("completed".into());
        j.progress = Some(100);
        j.output_urls = vec![format!("https://cdn.example.com/viggle/vg_{i:012x}.mp4")];
        j.credits_charged = 10;
    }
    j
}

// ------------------------------------------------------------ the daemon

struct DaemonCfg {
    rate_per_second: u32,
    max_in_flight: u32,
    /// TOML array items of `poll.schedule`.
    poll: String,
    poll_max: String,
}

fn write_config(
    dir: &Path,
    sim: &SimServer,
    c: &DaemonCfg,
) -> anyhow::Result<(PathBuf, std::net::SocketAddr)> {
    let addr = free_addr()?;
    let text = format!(
        "[daemon]\ndata_dir = \"{}\"\nlisten = \"{addr}\"\nshutdown_grace = \"5s\"\n\n\
         [providers.{PROVIDER}]\nkind = \"{KIND}\"\nbase_url = \"{}\"\napi_key_env = \"{KEY_ENV}\"\n\
         max_in_flight = {}\nrate_limit = {{ per_second = {}, burst = {} }}\n\
         poll = {{ schedule = [{}], max = \"{}\", timeout = \"2h\" }}\n",
        dir.join("data").display(),
        sim.base_url(KIND),
        c.max_in_flight,
        c.rate_per_second,
        c.rate_per_second,
        c.poll,
        c.poll_max,
    );
    let path = dir.join("switchyard.toml");
    std::fs::write(&path, text)?;
    Ok((path, addr))
}

fn free_addr() -> anyhow::Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// The real binary as a child process; killed if dropped while running.
struct Daemon {
    child: tokio::process::Child,
    pid: u32,
    addr: std::net::SocketAddr,
    url: String,
    log: PathBuf,
    http: reqwest::Client,
}

impl Daemon {
    async fn spawn(dir: &Path, sim: &SimServer, c: &DaemonCfg) -> anyhow::Result<Daemon> {
        let config = write_config(dir, sim, c)?;
        let mut d = Daemon::start_child(dir, config)?;
        if let Err(e) = d.wait_healthy(Duration::from_secs(30)).await {
            let _ = d.stop().await;
            return Err(e);
        }
        Ok(d)
    }

    fn start_child(
        dir: &Path,
        (config, addr): (PathBuf, std::net::SocketAddr),
    ) -> anyhow::Result<Daemon> {
        let exe = std::env::current_exe().context("finding this executable")?;
        let log = dir.join("daemon.log");
        let err = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new(exe)
            .args(["daemon", "--config"])
            .arg(&config)
            .env(KEY_ENV, "bench-key")
            .env("SWITCHYARD_LOG", "warn")
            .env_remove("SWITCHYARD_CONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .context("starting the daemon")?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the daemon exited at once"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()?;
        Ok(Daemon {
            child,
            pid,
            addr,
            url: format!("http://{addr}"),
            log,
            http,
        })
    }

    async fn wait_healthy(&mut self, limit: Duration) -> anyhow::Result<()> {
        let t = Instant::now();
        loop {
            if let Ok(r) = self.http.get(format!("{}/healthz", self.url)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                bail!(
                    "the daemon exited ({st}) before listening:\n{}",
                    self.log_tail()
                );
            }
            if t.elapsed() > limit {
                bail!(
                    "the daemon did not listen within {} s:\n{}",
                    limit.as_secs(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    async fn submit(&self, jobs: &[JobSpec]) -> anyhow::Result<()> {
        let r = self
            .http
            .post(format!("{}/v1/jobs", self.url))
            .json(&serde_json::json!({ "jobs": jobs }))
            .send()
            .await
            .context("POST /v1/jobs")?;
        let status = r.status();
        if !status.is_success() {
            let body = r.text().await.unwrap_or_default();
            bail!(
                "POST /v1/jobs: {status}: {}",
                body.chars().take(500).collect::<String>()
            );
        }
        let v: serde_json::Value = r.json().await?;
        let accepted = v["accepted"].as_u64().unwrap_or(0) as usize;
        if accepted != jobs.len() {
            bail!("POST /v1/jobs accepted {accepted} of {} jobs", jobs.len());
        }
        Ok(())
    }

    /// (queued, in flight) of the provider, from `GET /v1/providers`.
    async fn queue(&self) -> anyhow::Result<(u64, usize)> {
        let v: serde_json::Value = self
            .http
            .get(format!("{}/v1/providers", self.url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let p = v
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == PROVIDER))
            .ok_or_else(|| anyhow!("provider {PROVIDER} missing from /v1/providers"))?;
        Ok((
            p["queued"].as_u64().unwrap_or(0),
            p["in_flight"].as_u64().unwrap_or(0) as usize,
        ))
    }

    async fn jobs(&self, state: Option<JobState>) -> anyhow::Result<Vec<Job>> {
        let mut url = format!("{}/v1/jobs", self.url);
        if let Some(s) = state {
            url.push_str(&format!("?state={s}"));
        }
        Ok(self
            .http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    async fn state_of(&self, key: &str) -> anyhow::Result<JobState> {
        let v: serde_json::Value = self
            .http
            .get(format!("{}/v1/jobs/{key}", self.url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let s = v["state"].as_str().unwrap_or_default();
        s.parse::<JobState>()
            .map_err(|e| anyhow!("job {key}: state {s:?}: {e}"))
    }

    /// True when no job is submitting, pending or processing.
    async fn none_live(&self) -> anyhow::Result<bool> {
        for state in [
            JobState::Submitting,
            JobState::Pending,
            JobState::Processing,
        ] {
            if !self.jobs(Some(state)).await?.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Jobs of the provider in `state`, from `/metrics` (an index count:
    /// no job is read or rendered).
    async fn count(&self, state: JobState) -> anyhow::Result<usize> {
        let text = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let series = format!("switchyard_jobs{{provider=\"{PROVIDER}\",state=\"{state}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .ok_or_else(|| anyhow!("/metrics has no {series}"))
    }

    async fn history_len(&self, key: &str) -> anyhow::Result<usize> {
        let v: serde_json::Value = self
            .http
            .get(format!("{}/v1/jobs/{key}", self.url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(v["history"].as_array().map_or(0, Vec::len))
    }

    /// SIGTERM, then a bounded wait; SIGKILL if it does not exit.
    async fn stop(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(Ok(st)) if st.success() => Ok(()),
            Ok(Ok(st)) => bail!("the daemon exited with {st}:\n{}", self.log_tail()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                let _ = self.child.kill().await;
                bail!("the daemon did not exit within 30 s of SIGTERM")
            }
        }
    }
}

fn spec(prefix: &str, i: usize) -> JobSpec {
    JobSpec {
        key: format!("{prefix}-{i:07}"),
        provider: PROVIDER.into(),
        priority: 0,
        params: serde_json::json!({ "image_url": format!("https://example.com/products/{i}.png") }),
    }
}

fn specs(prefix: &str, n: usize) -> Vec<JobSpec> {
    (0..n).map(|i| spec(prefix, i)).collect()
}

// ------------------------------------------------------------ /proc, host

/// Clock ticks per second for /proc/PID/stat (`getconf CLK_TCK`; 100, the
/// Linux default, if that cannot be run).
fn clk_tck() -> f64 {
    let got = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|v| *v > 0.0);
    match got {
        Some(v) => v,
        None => {
            eprintln!("getconf CLK_TCK failed: assuming 100 clock ticks per second");
            100.0
        }
    }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    stat_ticks(&format!("/proc/{pid}/stat"))
}

fn cpu_ticks_self() -> anyhow::Result<u64> {
    stat_ticks("/proc/self/stat")
}

fn stat_ticks(path: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    // Fields after the command name (which may hold spaces and parentheses):
    // state is field 3, utime 14, stime 15.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("{path}: unexpected format"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| anyhow!("{path}: field {} missing", i + 3))
    };
    Ok(num(11)? + num(12)?)
}

/// (VmRSS, VmHWM) of a process, KiB.
fn rss_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    Ok((
        proc_status_field(pid, "VmRSS:")?,
        proc_status_field(pid, "VmHWM:")?,
    ))
}

/// A numeric field of /proc/PID/status (the first number after `name`).
fn proc_status_field(pid: u32, name: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| anyhow!("{path}: no {name}"))
}

/// The 1-, 5- and 15-minute load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

struct Machine {
    cores: usize,
    mem_mib: u64,
    cpu: String,
    kernel: String,
    tck: f64,
    load: String,
    date: String,
}

impl Machine {
    fn read(tck: f64) -> Machine {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_else(|| "?".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Machine {
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            mem_mib: mem_kib / 1024,
            cpu,
            kernel,
            tck,
            load: loadavg(),
            date: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        }
    }

    fn line(&self) -> String {
        format!(
            "{} cores ({}), {} MiB RAM, Linux {}, load {} at start, {}",
            self.cores, self.cpu, self.mem_mib, self.kernel, self.load, self.date
        )
    }
}

fn command_line() -> String {
    let mut args = std::env::args();
    let _ = args.next();
    let rest: Vec<String> = args.collect();
    format!("switchyard {}", rest.join(" "))
}

// ----------------------------------------------------------------- report

struct Report {
    machine: Machine,
    command: String,
    ceiling: Option<Ceiling>,
    rows: Vec<Row>,
    opts: ScaleOpts,
    total: Duration,
}

const HEADERS: [&str; 12] = [
    "jobs",
    "jobs/s",
    "ceiling jobs/s",
    "of ceiling",
    "req/job",
    "hist/job",
    "daemon CPU/job",
    "RSS idle -> live",
    "B/live job",
    "idle CPU",
    "polls in window",
    "restart: first create",
];

impl Report {
    fn cells(&self, r: &Row) -> Vec<String> {
        let dash = || "-".to_string();
        let mut c = vec![fmt_n(r.n)];
        match (&r.thr, &self.ceiling) {
            (Some(t), Some(ce)) => {
                let (ceil, which) = t.ceiling(ce);
                c.push(format!("{:.0}", t.jobs_per_s()));
                c.push(format!("{ceil:.0} ({which})"));
                c.push(format!("{:.0} %", 100.0 * t.jobs_per_s() / ceil.max(1e-9)));
                c.push(format!("{:.2}", t.req_per_job));
                c.push(format!("{:.2}", t.trans_per_job));
                c.push(format!(
                    "{:.0} us",
                    1e6 * t.daemon_cpu_s / t.completed.max(1) as f64
                ));
            }
            _ => c.extend((0..6).map(|_| dash())),
        }
        match &r.mem {
            Some(m) => {
                c.push(format!(
                    "{:.1} -> {:.1} MiB",
                    m.rss_idle_kib as f64 / 1024.0,
                    m.rss_live_kib as f64 / 1024.0
                ));
                c.push(format!("{:.0}", m.bytes_per_job()));
                c.push(format!(
                    "{:.2} % ({:.2} s/min)",
                    m.cpu_pct(),
                    m.idle_cpu_s * 60.0 / m.idle_secs.max(1e-9)
                ));
                c.push(format!(
                    "{} ({:.0} us/poll)",
                    m.polls,
                    1e6 * m.idle_cpu_s / m.polls.max(1) as f64
                ));
            }
            None => c.extend((0..4).map(|_| dash())),
        }
        match &r.restart {
            Some(rs) => c.push(format!("{:.0} ms", rs.first_create_ms)),
            None => c.push(dash()),
        }
        c
    }

    fn table(&self, markdown: bool) -> String {
        let rows: Vec<Vec<String>> = self.rows.iter().map(|r| self.cells(r)).collect();
        let mut w: Vec<usize> = HEADERS.iter().map(|h| h.len()).collect();
        for r in &rows {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:>width$}", width = w[i]))
                .collect();
            if markdown {
                format!("| {} |\n", padded.join(" | "))
            } else {
                format!("  {}\n", padded.join("  "))
            }
        };
        let mut out = line(&HEADERS.map(String::from));
        if markdown {
            out.push('|');
            for n in &w {
                out.push_str(&format!(" {}: |", "-".repeat(n.saturating_sub(1).max(2))));
            }
            out.push('\n');
        }
        for r in &rows {
            out.push_str(&line(r));
        }
        out
    }

    fn details(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(c) = &self.ceiling {
            out.push(format!(
                "ceiling (a), simulator: {:.0} requests/s served to {} keep-alive connections ({} GET status requests of one job, {} errors; load {})",
                c.sim_rps, self.opts.load_conns, c.sim_requests, c.sim_errors, c.load
            ));
            out.push(format!(
                "ceiling (b), store: {:.0} durable transitions/s with group commit ({} transitions, {} flushes, {:.1} per flush; bench store --jobs {} --writers {} --per-writer {})",
                c.store_tps,
                c.store_transitions,
                c.store_flushes,
                c.store_transitions as f64 / c.store_flushes.max(1) as f64,
                self.opts.store_jobs,
                self.opts.store_writers,
                self.opts.store_per_writer
            ));
        }
        for r in &self.rows {
            if let Some(t) = &r.thr {
                let others: Vec<String> = t.other.iter().map(|(s, n)| format!("{n} {s}")).collect();
                out.push(format!(
                    "throughput {}: {} completed{} in {:.2} s (submit to last completion); creates/job {:.2}, duplicate creates {}; CPU: daemon {:.1} s ({:.0} % of a core), bench process (simulator) {:.1} s; load {}",
                    fmt_n(r.n),
                    t.completed,
                    if others.is_empty() { String::new() } else { format!(" ({})", others.join(", ")) },
                    t.secs,
                    t.creates_per_job,
                    t.duplicates,
                    t.daemon_cpu_s,
                    100.0 * t.daemon_cpu_s / t.secs.max(1e-9),
                    t.bench_cpu_s,
                    t.load
                ));
            }
            if let Some(m) = &r.mem {
                out.push(format!(
                    "memory/idle {}: {} live (submitted in batches of {}); VmRSS idle {} KiB, live {} KiB, after the window {} KiB, peak (VmHWM) {} KiB; {} open fds, {} threads when live; CPU {:.2} s over {:.1} s with {} polls; load {}",
                    fmt_n(r.n),
                    m.live,
                    self.opts.memory_batch,
                    m.rss_idle_kib,
                    m.rss_live_kib,
                    m.rss_after_kib,
                    m.hwm_kib,
                    m.fds,
                    m.threads,
                    m.idle_cpu_s,
                    m.idle_secs,
                    m.polls,
                    m.load
                ));
            }
            if let Some(rs) = &r.restart {
                out.push(format!(
                    "restart {}: store of {} jobs ({} queued, 1 in 50 of the rest failed, others completed) built in {:.1} s; listening {:.0} ms, first create {:.0} ms after spawn, daemon CPU by then {:.0} ms; VmRSS then {} KiB; load {}",
                    fmt_n(r.n),
                    rs.jobs,
                    RESTART_QUEUED.min(rs.jobs),
                    rs.build_s,
                    rs.listening_ms,
                    rs.first_create_ms,
                    rs.cpu_ms,
                    rs.rss_kib,
                    rs.load
                ));
            }
        }
        out
    }

    fn goals(&self) -> Vec<String> {
        let mut out = Vec::new();
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        let largest = |f: &dyn Fn(&Row) -> bool| self.rows.iter().rev().find(|r| f(r));
        if let (Some(r), Some(c)) = (largest(&|r| r.thr.is_some()), &self.ceiling) {
            if let Some(t) = &r.thr {
                let (ceil, _) = t.ceiling(c);
                let ok = t.jobs_per_s() >= ceil / 2.0 && t.jobs_per_s() >= 5_000.0;
                out.push(format!(
                    "1. throughput at {} jobs: {:.0} jobs/s = {:.0} % of the ceiling {:.0} (goal >= 50 % and >= 5,000/s): {}",
                    fmt_n(r.n),
                    t.jobs_per_s(),
                    100.0 * t.jobs_per_s() / ceil.max(1e-9),
                    ceil,
                    verdict(ok)
                ));
            }
        }
        if let Some(m) = largest(&|r| r.mem.is_some()).and_then(|r| r.mem.as_ref()) {
            out.push(format!(
                "2. memory at {} live jobs: {:.0} bytes per live job above the idle baseline (goal < 1,024): {}",
                fmt_n(m.live),
                m.bytes_per_job(),
                verdict(m.bytes_per_job() < 1024.0)
            ));
        }
        let idle_row = self
            .rows
            .iter()
            .find(|r| r.n == 10_000 && r.mem.is_some())
            .or_else(|| largest(&|r| r.mem.is_some()));
        if let Some(m) = idle_row.and_then(|r| r.mem.as_ref()) {
            out.push(format!(
                "3. idle at {} live jobs, a poll per job every {}: {:.2} % of one core ({:.2} s CPU per minute, window {:.0} s) (goal < 1 %): {}",
                fmt_n(m.live),
                humantime::format_duration(self.opts.poll_every),
                m.cpu_pct(),
                m.idle_cpu_s * 60.0 / m.idle_secs.max(1e-9),
                m.idle_secs,
                if m.polls == 0 {
                    "no poll fell in the window (lengthen --idle-secs or shorten --poll-every): not measured"
                } else {
                    verdict(m.cpu_pct() < 1.0)
                }
            ));
        }
        if let Some(rs) = largest(&|r| r.restart.is_some()).and_then(|r| r.restart.as_ref()) {
            out.push(format!(
                "4. restart with {} jobs in the store: first create {:.0} ms after spawn (goal < 1,000 ms): {}",
                fmt_n(rs.jobs),
                rs.first_create_ms,
                verdict(rs.first_create_ms < 1000.0)
            ));
        }
        out
    }

    fn text(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "\nswitchyard bench scale: {}\n",
            self.machine.line()
        ));
        s.push_str(&format!("command: {}\n\n", self.command));
        s.push_str(&self.table(false));
        s.push('\n');
        for d in self.details() {
            s.push_str(&format!("  {d}\n"));
        }
        s.push_str("\ngoals:\n");
        for g in self.goals() {
            s.push_str(&format!("  {g}\n"));
        }
        s.push_str(&format!("\n(total {:.0} s)\n", self.total.as_secs_f64()));
        s
    }

    fn markdown(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "Machine: {}; CPU time from /proc/PID/stat at {} ticks/s.\n\n",
            self.machine.line(),
            self.machine.tck
        ));
        s.push_str(&format!("Command: `{}`\n\n", self.command));
        s.push_str(&self.table(true));
        s.push('\n');
        for d in self.details() {
            s.push_str(&format!("- {d}\n"));
        }
        s.push_str("\nGoals:\n\n");
        for g in self.goals() {
            s.push_str(&format!("{g}\n"));
        }
        s
    }
}

fn fmt_n(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_parse_with_zero_and_long_durations() {
        zero_scenario().unwrap();
        long_scenario().unwrap();
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(fmt_n(1_000_000), "1,000,000");
        assert_eq!(fmt_n(999), "999");
        assert_eq!(fmt_n(10_000), "10,000");
    }

    #[test]
    fn proc_stat_of_self_reads() {
        assert!(cpu_ticks_self().is_ok());
        assert!(rss_kib(std::process::id()).unwrap().0 > 0);
    }
}
