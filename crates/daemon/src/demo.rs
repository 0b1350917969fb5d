//! `switchyard demo`: the whole product in one command, with no config and no
//! network. It runs the real daemon code (store, dispatchers, poller, HTTP
//! surface) against the built-in simulator on loopback, then checks every job
//! against what the simulator scripted for it.

use crate::client::Client;
use crate::config::{Config, PollConfig, ProviderConfig, RateLimit};
use crate::serve::Daemon;
use anyhow::{anyhow, bail, Context};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use switchyard_core::{JobState, ProviderKind};
use switchyard_sim::{Scenario, SimServer};

/// The example batch, compiled in so the demo works from any directory.
const EXAMPLE_BATCH: &str = include_str!("../../../config/examples/batch.toml");

/// Simulated durations are scaled so the whole demo takes seconds.
const DEMO_SCENARIO: &str = r#"
seed = 7
speedup = 20.0

[providers.ugen]
duration = { median = "60s", sigma = 0.3, min = "30s", max = "120s" }
failure_rate = 0.0

[providers.viggle]
duration = { median = "40s", sigma = 0.3, min = "20s", max = "90s" }
failure_rate = 0.0

[providers.ugclab]
duration = { median = "60s", sigma = 0.3, min = "30s", max = "120s" }
failure_rate = 0.0

[providers.ulazai]
duration = { median = "50s", sigma = 0.3, min = "20s", max = "120s" }
failure_rate = 0.0
"#;

pub async fn run(batch_file: Option<PathBuf>, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let tmp = tempfile::tempdir().context("creating a temporary data dir")?;
    let scenario =
        Scenario::from_toml_str(DEMO_SCENARIO).map_err(|e| anyhow!("demo scenario: {e}"))?;
    let sim = SimServer::start("127.0.0.1:0".parse()?, scenario)
        .await
        .context("starting the simulator")?;
    println!("simulator listening on http://{}", sim.addr());

    let cfg = demo_config(tmp.path(), &sim)?;
    let daemon = Daemon::start(&cfg).await?;
    let base = format!("http://{}", daemon.addr);
    println!(
        "daemon listening on {base} (data in {})",
        tmp.path().display()
    );
    let secret = std::fs::read_to_string(tmp.path().join("ugen.webhook"))?;
    register_ugen_webhook(&sim, &format!("{base}/webhooks/ugen"), secret.trim()).await?;

    let (name, text) = match &batch_file {
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        ),
        None => (
            "config/examples/batch.toml".to_string(),
            EXAMPLE_BATCH.to_string(),
        ),
    };
    let batch = crate::batch::parse(&name, &text).map_err(|p| {
        anyhow!(p
            .iter()
            .map(|p| p.render(&name))
            .collect::<Vec<_>>()
            .join("\n"))
    })?;
    let client = Client::new(&base)?;
    let keys: Vec<String> = batch.jobs.iter().map(|j| j.key.clone()).collect();
    match client.submit(batch.jobs.clone()).await? {
        Ok(a) => println!(
            "submitted {name}: {} jobs accepted, {} already known",
            a.accepted, a.already_known
        ),
        Err(mut problems) => {
            crate::batch::locate(&mut problems, &batch);
            bail!(
                "{}",
                problems
                    .iter()
                    .map(|p| p.render(&name))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        }
    }

    let jobs = tokio::time::timeout(timeout, follow(&client, &keys))
        .await
        .map_err(|_| {
            anyhow!(
                "jobs did not finish within {}",
                humantime::format_duration(timeout)
            )
        })??;
    println!();
    crate::output::print_table(&jobs);

    // Compare with what the simulator scripted for each job.
    let scripted: HashMap<String, String> = sim
        .jobs()
        .into_iter()
        .map(|j| {
            let outcome = serde_json::to_value(j.outcome)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            (j.job_id, outcome)
        })
        .collect();
    let stats = sim.stats();
    let mut mismatches = Vec::new();
    for j in &jobs {
        let expected: Option<String> = j
            .provider_job_id
            .as_ref()
            .and_then(|id| scripted.get(id.as_str()))
            .cloned();
        match expected {
            Some(e) if e == j.state.as_str() => {}
            Some(e) => mismatches.push(format!(
                "{}: simulator scripted {e}, daemon saw {}",
                j.key, j.state
            )),
            None => mismatches.push(format!(
                "{}: unknown to the simulator (state {})",
                j.key, j.state
            )),
        }
    }
    let duplicates: usize = stats
        .providers
        .values()
        .map(|p| p.duplicate_creates.len())
        .sum();
    let completed = jobs
        .iter()
        .filter(|j| j.state == JobState::Completed)
        .count();
    let failed = jobs.iter().filter(|j| j.state == JobState::Failed).count();
    let credits: u64 = jobs.iter().map(|j| j.credits_charged).sum();
    println!(
        "\n{} jobs: {completed} completed, {failed} failed (as scripted: {}), {credits} credits charged, {} duplicate creates, {:.1}s",
        jobs.len(),
        jobs.len() - mismatches.len(),
        duplicates,
        started.elapsed().as_secs_f64()
    );
    daemon.stop().await?;
    sim.shutdown().await;
    if duplicates > 0 {
        mismatches.push(format!(
            "{duplicates} job(s) were created twice at the simulator"
        ));
    }
    if !mismatches.is_empty() {
        bail!(
            "the demo did not end as scripted:\n{}",
            mismatches.join("\n")
        );
    }
    println!("demo ok: every job ended as the simulator scripted it");
    Ok(())
}

async fn follow(client: &Client, keys: &[String]) -> anyhow::Result<Vec<switchyard_core::Job>> {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bar = crate::output::bar(keys.len() as u64);
    let mut last_print = Instant::now() - Duration::from_secs(10);
    loop {
        let jobs = client.jobs(None, None).await?;
        let done = jobs
            .iter()
            .filter(|j| crate::output::settled(j.state))
            .count();
        let summary = crate::output::summary(&jobs);
        bar.set_position(done as u64);
        bar.set_message(summary.clone());
        if !tty && last_print.elapsed() >= Duration::from_secs(2) {
            println!("[{done}/{}] {summary}", keys.len());
            last_print = Instant::now();
        }
        if done == keys.len() && jobs.len() >= keys.len() {
            bar.finish_and_clear();
            return Ok(jobs);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn demo_config(dir: &Path, sim: &SimServer) -> anyhow::Result<Config> {
    let mut cfg = Config::default();
    cfg.daemon.data_dir = dir.join("data");
    cfg.daemon.listen = "127.0.0.1:0".parse()?;
    cfg.daemon.shutdown_grace = Duration::from_secs(5);
    let mut providers = BTreeMap::new();
    for kind in ProviderKind::ALL {
        let key_file = dir.join(format!("{kind}.key"));
        std::fs::write(&key_file, format!("demo-{kind}-key"))?;
        let secret_file = dir.join(format!("{kind}.webhook"));
        std::fs::write(&secret_file, format!("demo-{kind}-webhook-secret"))?;
        providers.insert(
            kind.to_string(),
            ProviderConfig {
                kind,
                base_url: Some(sim.base_url(kind)),
                api_key_env: None,
                api_key_file: Some(key_file),
                api_key_required: true,
                rate_limit: RateLimit {
                    per_second: Some(5),
                    per_minute: None,
                    burst: Some(5),
                },
                max_in_flight: 4,
                budget: None,
                poll: PollConfig {
                    schedule: ["300ms", "500ms", "800ms", "1s"]
                        .iter()
                        .filter_map(|s| humantime::parse_duration(s).ok())
                        .collect(),
                    max: Duration::from_secs(2),
                    timeout: Duration::from_secs(120),
                    ..PollConfig::default()
                },
                webhook_secret_env: None,
                webhook_secret_file: (kind == ProviderKind::Ugen).then_some(secret_file),
                webhook_public_url: None,
                max_attempts: 5,
                paths: Default::default(),
            },
        );
    }
    cfg.providers = providers;
    Ok(cfg)
}

/// U-Gen's documented way to set the webhook: `PUT /tenants/me/webhook`.
async fn register_ugen_webhook(sim: &SimServer, url: &str, secret: &str) -> anyhow::Result<()> {
    let resp = reqwest::Client::new()
        .put(format!(
            "{}/tenants/me/webhook",
            sim.base_url(ProviderKind::Ugen)
        ))
        .header("X-API-Key", "demo-ugen-key")
        .json(&serde_json::json!({"webhook_url": url, "webhook_secret": secret}))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!(
            "registering the U-Gen webhook at the simulator: {}",
            resp.status()
        );
    }
    Ok(())
}
