//! Restart: a store of N jobs, nearly all finished, and the time from
//! spawning the daemon on it to the first create request arriving at the
//! simulator (the queued jobs' turn).

use super::daemon::{Daemon, DaemonCfg};
use super::sled_store::build_store;
use super::{KIND, LONG_SCENARIO};
use anyhow::bail;
use std::time::{Duration, Instant};
use switchyard_sim::SimServer;
use switchyard_testkit::procfs::{cpu_ticks, loadavg, rss_kib};
use switchyard_testkit::{start_sim, Env};

#[derive(Debug, Clone)]
pub struct Restart {
    pub jobs: usize,
    pub build_s: f64,
    pub listening_ms: f64,
    pub first_create_ms: f64,
    /// The daemon's CPU time (all threads) from spawn to the first create.
    pub cpu_ms: f64,
    pub rss_kib: u64,
    pub load: String,
}

pub async fn restart(n: usize, tck: f64) -> anyhow::Result<Restart> {
    let load = loadavg();
    let env = Env::new()?;
    let t = Instant::now();
    build_store(&env.data_dir().join("db"), n).await?;
    let build_s = t.elapsed().as_secs_f64();
    eprintln!("  built the store in {build_s:.1} s");
    let sim = start_sim(LONG_SCENARIO).await?;
    let cfg = DaemonCfg {
        rate_per_second: 1_000_000,
        max_in_flight: 1_000,
        poll: "\"60s\"".into(),
        poll_max: "60s".into(),
    };
    cfg.write(&env, &sim)?;
    let spawned = Instant::now();
    let mut d = Daemon::start_child(&env)?;
    let res = first_create(&sim, &mut d, spawned).await;
    let cpu_ms = cpu_ticks(d.pid())
        .map(|t| t as f64 * 1e3 / tck)
        .unwrap_or(f64::NAN);
    let rss = rss_kib(d.pid()).map(|r| r.0).unwrap_or(0);
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
    let addr = d.addr();
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
        if let Ok(Some(st)) = d.try_wait() {
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
