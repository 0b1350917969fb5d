//! `switchyard bench fleet`: the daemon on its two stores and as a fleet,
//! each figure beside its baseline from the same run:
//!
//! - **throughput**: one batch of N jobs through the real daemon(s) and a
//!   simulator that finishes every job at once and limits nothing (as
//!   `bench scale`'s throughput), timed from the submit to the last job's
//!   own completion time: one daemon on sled (the baseline), one daemon on
//!   PostgreSQL, three daemons on one PostgreSQL database (the batch sent
//!   to one of them; all three claim from the one queue).
//! - **rate precision**: three daemons on one database against four
//!   providers whose quotas the batch saturates for about `--rate-secs`:
//!   the simulator's request counter, sampled every 100 ms, gives each
//!   provider's busiest 10 s, as a share of its quota (the goal: at least
//!   90 %, never above), with the simulator's own 1 s peak and its 429s.
//!   One daemon on sled in the same run is the baseline.
//!
//! PostgreSQL: `--database-url`, else `SWITCHYARD_BENCH_DATABASE_URL`, else
//! `SWITCHYARD_TEST_DATABASE_URL` (a server where the user may create
//! databases); each measurement gets a database of its own, dropped after.

use crate::scale::daemon::{Daemon, DaemonCfg};
use crate::scale::{command_line, specs, Machine, ZERO_SCENARIO};
use anyhow::{anyhow, bail, Context};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};
use switchyard_core::{JobSpec, JobState, ProviderKind};
use switchyard_sim::SimServer;
use switchyard_testkit::pg::TestDb;
use switchyard_testkit::procfs::{clk_tck, loadavg};
use switchyard_testkit::{start_sim, Env, P};

/// The variable each daemon reads its database URL from.
const URL_ENV: &str = "BENCH_FLEET_DATABASE_URL";

/// Which parts `bench fleet` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    All,
    Throughput,
    Rate,
}

#[derive(Debug, Clone, clap::Args)]
pub struct FleetOpts {
    /// Parts to run (comma-separated): throughput, rate, or all.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub parts: Vec<Part>,
    /// Jobs in each throughput batch.
    #[arg(long, default_value_t = 10_000)]
    pub jobs: usize,
    /// Rate precision: seconds the batch keeps every quota saturated.
    #[arg(long, default_value_t = 24)]
    pub rate_secs: u64,
    /// A PostgreSQL server (URL) where the user may create databases.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Also write the Markdown copy of the report to this file.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sled,
    Postgres,
}

struct Setup {
    backend: Backend,
    daemons: usize,
}

impl Setup {
    fn label(&self) -> String {
        let store = match self.backend {
            Backend::Sled => "sled",
            Backend::Postgres => "PostgreSQL",
        };
        match self.daemons {
            1 => format!("1 daemon, {store}"),
            n => format!("{n} daemons, one {store} database"),
        }
    }
}

/// Daemons running for one measurement, with their databases.
struct Running {
    daemons: Vec<Daemon>,
    _envs: Vec<Env>,
    db: Option<TestDb>,
}

impl Running {
    async fn start(
        setup: &Setup,
        admin: Option<&str>,
        test: &str,
        write: impl Fn(&Env, &str) -> anyhow::Result<()>,
    ) -> anyhow::Result<Running> {
        let db = match setup.backend {
            Backend::Sled => None,
            Backend::Postgres => {
                let admin = admin.ok_or_else(|| anyhow!("no PostgreSQL server"))?;
                Some(TestDb::create_on(admin, test).await?)
            }
        };
        let mut envs = Vec::new();
        for i in 0..setup.daemons {
            let env = Env::new()?;
            write(&env, &format!("name = \"bench-{i}\""))?;
            if db.is_some() {
                env.append(&format!(
                    "[store]\nbackend = \"postgres\"\nurl_env = \"{URL_ENV}\"\npool_size = 8\n"
                ))?;
            }
            envs.push(env);
        }
        let url = db.as_ref().map(|d| d.url.clone()).unwrap_or_default();
        let vars: Vec<(&str, &str)> = match &db {
            Some(_) => vec![(URL_ENV, url.as_str())],
            None => vec![],
        };
        let mut daemons = Vec::new();
        for env in &envs {
            match Daemon::spawn_written(env, &vars).await {
                Ok(d) => daemons.push(d),
                Err(e) => {
                    let mut r = Running {
                        daemons,
                        _envs: envs,
                        db,
                    };
                    r.stop().await;
                    return Err(e);
                }
            }
        }
        Ok(Running {
            daemons,
            _envs: envs,
            db,
        })
    }

    async fn stop(&mut self) {
        for d in &mut self.daemons {
            if let Err(e) = d.stop().await {
                eprintln!("  stopping a daemon: {e:#}");
            }
        }
        if let Some(db) = &self.db {
            db.drop_db().await;
        }
    }
}

/// One throughput measurement.
struct Throughput {
    setup: String,
    completed: usize,
    secs: f64,
    duplicates: usize,
    load: String,
}

impl Throughput {
    fn jobs_per_s(&self) -> f64 {
        self.completed as f64 / self.secs.max(1e-9)
    }
}

async fn throughput(n: usize, setup: &Setup, admin: Option<&str>) -> anyhow::Result<Throughput> {
    let load = loadavg();
    let sim = start_sim(ZERO_SCENARIO).await?;
    let cfg = DaemonCfg {
        rate_per_second: 1_000_000,
        max_in_flight: 1_000_000,
        poll: "\"5ms\"".into(),
        poll_max: "5ms".into(),
    };
    let mut run = match Running::start(setup, admin, "benchtp", |env, extra| {
        cfg.write_with(env, &sim, extra)
    })
    .await
    {
        Ok(r) => r,
        Err(e) => {
            sim.shutdown().await;
            return Err(e);
        }
    };
    let res = throughput_run(n, &run.daemons).await;
    run.stop().await;
    let duplicates = sim_duplicates(&sim);
    sim.shutdown().await;
    let (completed, secs) = res?;
    Ok(Throughput {
        setup: setup.label(),
        completed,
        secs,
        duplicates,
        load,
    })
}

fn sim_duplicates(sim: &SimServer) -> usize {
    sim.stats()
        .providers
        .values()
        .map(|p| p.duplicate_creates.len())
        .sum()
}

async fn throughput_run(n: usize, ds: &[Daemon]) -> anyhow::Result<(usize, f64)> {
    let first = ds.first().ok_or_else(|| anyhow!("no daemon"))?;
    let specs = specs("fl", n);
    let wall0 = SystemTime::now();
    let t0 = Instant::now();
    first.submit(&specs).await?;
    let limit = Duration::from_secs(60) + Duration::from_millis(5 * n as u64);
    let last_key = specs.last().map(|s| s.key.clone()).unwrap_or_default();
    // Any daemon answers for the whole store; the first is asked, cheaply
    // (see `bench scale`): the end time is the jobs' own `updated_at`.
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let tail = first.state_of(&last_key).await?;
        if tail.is_terminal() && first.none_live().await? {
            let (queued, in_flight) = first.queue().await?;
            if queued == 0 && in_flight == 0 {
                break;
            }
        }
        if t0.elapsed() > limit {
            let (queued, in_flight) = first.queue().await?;
            bail!(
                "{n} jobs did not finish within {} s ({queued} queued, {in_flight} in flight)",
                limit.as_secs()
            );
        }
    }
    let mut completed = 0;
    let mut end = wall0;
    for j in first.jobs(None).await? {
        if j.state == JobState::Completed {
            completed += 1;
            if let Ok(t) = humantime::parse_rfc3339(&j.updated_at) {
                end = end.max(t);
            }
        }
    }
    Ok((
        completed,
        end.duration_since(wall0).unwrap_or_default().as_secs_f64(),
    ))
}

/// The quotas of the rate part: (provider, per second). Burst 2 at the
/// simulator and in the config: the daemon keeps one slot as its margin,
/// so it sends at the sustained rate with no burst.
const QUOTAS: [(ProviderKind, u64); 4] = [
    (ProviderKind::Ugen, 4),
    (ProviderKind::Viggle, 8),
    (ProviderKind::Ugclab, 16),
    (ProviderKind::Ulazai, 32),
];
const RATE_BURST: u64 = 2;

struct Precision {
    setup: String,
    /// Per provider: (quota/s, busiest 10 s, 1 s peak, 429s).
    rows: Vec<(ProviderKind, u64, u64, u64, u64)>,
    load: String,
}

async fn precision(secs: u64, setup: &Setup, admin: Option<&str>) -> anyhow::Result<Precision> {
    let load = loadavg();
    let mut scenario = String::from("seed = 1\nspeedup = 1.0\n");
    for (k, rate) in QUOTAS {
        scenario.push_str(&format!(
            "[providers.{k}]\nduration = {{ fixed = \"0s\" }}\nfailure_rate = 0.0\nrate_limit = {{ per_second = {rate}, burst = {RATE_BURST} }}\n"
        ));
    }
    let sim = start_sim(&scenario).await?;
    let write = |env: &Env, extra: &str| {
        let tables: Vec<String> = QUOTAS
            .iter()
            .map(|(_, rate)| {
                format!("rate_limit = {{ per_second = {rate}, burst = {RATE_BURST} }}\nmax_in_flight = 1000\npoll = {{ schedule = [\"200ms\"], max = \"1s\", timeout = \"10m\" }}")
            })
            .collect();
        let ps: Vec<P> = QUOTAS
            .iter()
            .zip(&tables)
            .map(|((k, _), t)| P {
                name: k.as_str(),
                kind: *k,
                extra: t,
            })
            .collect();
        env.write(&sim, &ps, extra)
    };
    let mut run = match Running::start(setup, admin, "benchrate", write).await {
        Ok(r) => r,
        Err(e) => {
            sim.shutdown().await;
            return Err(e);
        }
    };
    let res = precision_run(secs, &sim, &run.daemons).await;
    run.stop().await;
    sim.shutdown().await;
    Ok(Precision {
        setup: setup.label(),
        rows: res?,
        load,
    })
}

async fn precision_run(
    secs: u64,
    sim: &SimServer,
    ds: &[Daemon],
) -> anyhow::Result<Vec<(ProviderKind, u64, u64, u64, u64)>> {
    let first = ds.first().ok_or_else(|| anyhow!("no daemon"))?;
    // Two requests a job (a create, one poll): a batch that keeps every
    // quota busy for `secs`.
    let mut batch: Vec<JobSpec> = Vec::new();
    for (k, rate) in QUOTAS {
        for i in 0..(rate * secs / 2) as usize {
            batch.push(JobSpec {
                key: format!("{k}-{i:05}"),
                provider: k.to_string(),
                priority: 0,
                params: serde_json::from_str(&toml_params_as_json(k, i))?,
                ..JobSpec::default()
            });
        }
    }
    let n = batch.len();
    first.submit(&batch).await?;
    let t0 = Instant::now();
    let mut samples: Vec<(Instant, Vec<u64>)> = Vec::new();
    let limit = Duration::from_secs(secs * 3 + 60);
    loop {
        let stats = sim.stats();
        samples.push((
            Instant::now(),
            QUOTAS
                .iter()
                .map(|(k, _)| stats.provider(*k).requests)
                .collect(),
        ));
        let created: u64 = QUOTAS.iter().map(|(k, _)| stats.provider(*k).creates).sum();
        // Every job created; then, now and then, whether every one ended.
        if created as usize >= n && samples.len() % 5 == 0 {
            let jobs = first.jobs(None).await?;
            if jobs.len() == n && jobs.iter().all(|j| j.state.is_terminal()) {
                break;
            }
        }
        if t0.elapsed() > limit {
            bail!("the batch did not finish within {} s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = sim.stats();
    let mut rows = Vec::new();
    for (i, (k, rate)) in QUOTAS.iter().enumerate() {
        let p = stats.provider(*k);
        rows.push((
            *k,
            *rate,
            busiest(&samples, i, Duration::from_secs(10)),
            p.peak_requests_in_window,
            p.rate_limited,
        ));
    }
    Ok(rows)
}

/// The most requests counted within any `window` of the samples (each
/// window from one sample to the last one at most `window` later).
fn busiest(samples: &[(Instant, Vec<u64>)], i: usize, window: Duration) -> u64 {
    let mut best = 0;
    let mut j = 0;
    for (a, (ta, ca)) in samples.iter().enumerate() {
        j = j.max(a);
        while j + 1 < samples.len() && samples[j + 1].0 - *ta <= window {
            j += 1;
        }
        let (Some(start), Some(end)) = (ca.get(i), samples[j].1.get(i)) else {
            continue;
        };
        best = best.max(end.saturating_sub(*start));
    }
    best
}

/// The test kit's params (TOML inline tables) as JSON.
fn toml_params_as_json(k: ProviderKind, i: usize) -> String {
    let t: toml::Value = toml::from_str(&format!("p = {}", switchyard_testkit::params(k, i)))
        .unwrap_or(toml::Value::Table(Default::default()));
    let v = t
        .get("p")
        .cloned()
        .unwrap_or(toml::Value::Table(Default::default()));
    serde_json::to_string(&v).unwrap_or_else(|_| "{}".into())
}

pub async fn run(opts: FleetOpts) -> anyhow::Result<()> {
    let admin = opts
        .database_url
        .clone()
        .or_else(|| std::env::var("SWITCHYARD_BENCH_DATABASE_URL").ok())
        .or_else(|| std::env::var(switchyard_testkit::pg::DATABASE_URL_VAR).ok())
        .ok_or_else(|| {
            anyhow!("bench fleet needs a PostgreSQL server: --database-url URL, or SWITCHYARD_BENCH_DATABASE_URL")
        })?;
    let started = Instant::now();
    let machine = Machine::read(clk_tck());
    eprintln!("bench fleet: {}", machine.line());
    let setups = [
        Setup {
            backend: Backend::Sled,
            daemons: 1,
        },
        Setup {
            backend: Backend::Postgres,
            daemons: 1,
        },
        Setup {
            backend: Backend::Postgres,
            daemons: 3,
        },
    ];
    let wants = |p: Part| opts.parts.contains(&Part::All) || opts.parts.contains(&p);
    let mut tps = Vec::new();
    for s in setups.iter().filter(|_| wants(Part::Throughput)) {
        eprintln!("[throughput] {}: {} jobs ...", s.label(), opts.jobs);
        let t = throughput(opts.jobs, s, Some(&admin))
            .await
            .with_context(|| format!("throughput, {}", s.label()))?;
        eprintln!(
            "[throughput] {}: {:.0} jobs/s ({} completed in {:.2} s)",
            s.label(),
            t.jobs_per_s(),
            t.completed,
            t.secs
        );
        tps.push(t);
    }
    let mut precs = Vec::new();
    for s in [&setups[0], &setups[2]]
        .into_iter()
        .filter(|_| wants(Part::Rate))
    {
        eprintln!(
            "[rate] {}: quotas saturated for {} s ...",
            s.label(),
            opts.rate_secs
        );
        let p = precision(opts.rate_secs, s, Some(&admin))
            .await
            .with_context(|| format!("rate precision, {}", s.label()))?;
        precs.push(p);
    }
    let md = markdown(&machine, &tps, &precs, &opts, started.elapsed());
    println!("{md}");
    if let Some(path) = &opts.markdown {
        std::fs::write(path, &md).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn markdown(
    m: &Machine,
    tps: &[Throughput],
    precs: &[Precision],
    opts: &FleetOpts,
    total: Duration,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Command: `{}`", command_line());
    let _ = writeln!(s, "Machine: {}", m.line());
    let _ = writeln!(s, "Total time: {:.0} s\n", total.as_secs_f64());
    let _ = writeln!(
        s,
        "| {} jobs, zero-duration simulator | load at start | completed | seconds | jobs/s | vs 1 daemon on sled | created twice |",
        opts.jobs
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|");
    let base = tps.first().map(Throughput::jobs_per_s).unwrap_or(1.0);
    for t in tps {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.2} | {:.0} | {:.2}x | {} |",
            t.setup,
            t.load,
            t.completed,
            t.secs,
            t.jobs_per_s(),
            t.jobs_per_s() / base.max(1e-9),
            t.duplicates
        );
    }
    let _ = writeln!(
        s,
        "\n| rate precision | load at start | provider | quota | busiest 10 s | share of quota | 1 s peak (quota admits) | 429s |"
    );
    let _ = writeln!(s, "|---|---|---|---:|---:|---:|---:|---:|");
    for p in precs {
        for (k, rate, best, peak, limited) in &p.rows {
            let _ = writeln!(
                s,
                "| {} | {} | {k} | {rate}/s burst {RATE_BURST} | {best} | {:.1} % | {peak} ({}) | {limited} |",
                p.setup,
                p.load,
                100.0 * *best as f64 / (10 * rate) as f64,
                rate + RATE_BURST - 1
            );
        }
    }
    let pg1 = tps.get(1).map(Throughput::jobs_per_s).unwrap_or(0.0);
    let _ = writeln!(
        s,
        "\nGoal: one daemon on PostgreSQL >= 1,500 jobs/s end to end: {:.0} ({}).",
        pg1,
        if pg1 >= 1500.0 { "met" } else { "not met" }
    );
    if let Some(fleet) = precs.last() {
        let worst = fleet
            .rows
            .iter()
            .map(|(_, rate, best, _, _)| *best as f64 / (10 * rate) as f64)
            .fold(f64::INFINITY, f64::min);
        let above = fleet.rows.iter().any(|(_, rate, best, peak, limited)| {
            *limited > 0 || *peak > rate + RATE_BURST - 1 || *best > 10 * rate + RATE_BURST - 1
        });
        let _ = writeln!(
            s,
            "Goal: across the fleet, the busiest 10 s uses >= 90 % of each quota, never above: lowest share {:.1} %, {} ({}).",
            100.0 * worst,
            if above { "above the quota somewhere" } else { "never above" },
            if worst >= 0.9 && !above { "met" } else { "not met" }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busiest_window_is_found() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let samples: Vec<(Instant, Vec<u64>)> = vec![
            (at(0), vec![0]),
            (at(5_000), vec![10]),
            (at(10_000), vec![50]),
            (at(15_000), vec![100]),
            (at(20_000), vec![105]),
        ];
        assert_eq!(busiest(&samples, 0, Duration::from_secs(10)), 90);
        assert_eq!(busiest(&samples, 1, Duration::from_secs(10)), 0);
    }

    #[test]
    fn params_become_json_objects() {
        let v: serde_json::Value =
            serde_json::from_str(&toml_params_as_json(ProviderKind::Viggle, 3)).unwrap_or_default();
        assert_eq!(v["image_url"], "https://example.com/3.png");
    }
}
