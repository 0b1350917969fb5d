//! The ceilings a throughput is measured against, from the same run: the
//! simulator's requests per second to a plain keep-alive load generator,
//! and the store's durable transitions per second with group commit.

use super::{ScaleOpts, KIND, ZERO_SCENARIO};
use anyhow::{anyhow, Context};
use std::time::{Duration, Instant};
use switchyard_testkit::procfs::loadavg;
use switchyard_testkit::start_sim;

#[derive(Debug, Clone, Default)]
pub struct Ceiling {
    pub sim_rps: f64,
    pub sim_errors: u64,
    pub sim_requests: u64,
    pub store_tps: f64,
    pub store_transitions: u64,
    pub store_flushes: u64,
    pub load: String,
}

pub async fn ceilings(opts: &ScaleOpts) -> anyhow::Result<Ceiling> {
    let load = loadavg();
    eprintln!(
        "[ceiling] simulator: {} keep-alive connections, {} GET status requests ...",
        opts.load_conns, opts.load_requests
    );
    let sim = start_sim(ZERO_SCENARIO).await?;
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
    let f = crate::store_sled::store(
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
