//! The operator commands on the CLI side: `pause`, `resume`, `plan` and
//! `adopt`, each one call of the control API, printed as a table (or the
//! daemon's JSON with `--json`).

use crate::batch::{self, Problem};
use crate::client::{read_batches, Client};
use crate::Invalid;
use anyhow::{anyhow, Context};
use std::collections::HashSet;
use std::path::PathBuf;
use switchyard_api::{AdoptBody, BatchBody, PlanAnswer, ProviderView};

/// The operator commands, flattened into the CLI's subcommands.
#[derive(clap::Subcommand)]
pub enum OperatorCmd {
    /// Stop dispatching new jobs to a provider (live jobs are still followed) until `resume`.
    ///
    /// The pause is kept in the store: it survives restarts and reloads, and
    /// holds for every daemon of a shared store. Queued jobs of the provider show `held_by = "paused"`; `providers` shows
    /// "paused by user" (a pause after a 402 from the provider shows "paused (402)").
    Pause {
        /// The provider's table name in the config.
        provider: String,
        /// Print the provider as one JSON object and nothing else on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Dispatch to a provider again: ends a user's pause, and a pause after a 402 (as a reload does).
    Resume {
        /// The provider's table name in the config.
        provider: String,
        /// Print the provider as one JSON object and nothing else on stdout.
        #[arg(long)]
        json: bool,
    },
    /// What batch files would cost and how long they would take, per provider, without queueing anything.
    ///
    /// Per provider: new jobs, estimated credits (the adapter's estimate, or
    /// U-Gen's own POST /credits/estimate when it answers), budget left in the
    /// period and whether the jobs fit it in queue order (else which would wait),
    /// the time the rate limit and the in-flight cap take to get the queue
    /// through, durations seen so far per class of job, and keys already known.
    /// Files are checked as `submit` checks them: every problem by file and line
    /// (exit 2).
    Plan {
        /// Batch files: TOML (`[[jobs]]`) or JSON Lines.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print the plan as one JSON object and nothing else on stdout.
        #[arg(long)]
        json: bool,
        /// Exit 1 when any job would wait for credits.
        #[arg(long)]
        require_fit: bool,
    },
    /// Follow an uncertain job under the id you found for it at the provider (its create was sent but its answer lost).
    ///
    /// The provider is asked about the id first: an id it does not know is
    /// refused and nothing changes. Then the id is recorded, the job's estimate
    /// reserved in the budget, and the job polled to its end like any other.
    Adopt {
        /// The job's key.
        key: String,
        /// The provider's id for the job.
        provider_job_id: String,
        /// Print the job as one JSON object and nothing else on stdout.
        #[arg(long)]
        json: bool,
    },
}

impl OperatorCmd {
    pub async fn run(self, client: &Client) -> anyhow::Result<()> {
        match self {
            OperatorCmd::Pause { provider, json } => {
                set_paused(client, &provider, true, json).await
            }
            OperatorCmd::Resume { provider, json } => {
                set_paused(client, &provider, false, json).await
            }
            OperatorCmd::Plan {
                files,
                json,
                require_fit,
            } => plan(client, &files, json, require_fit).await,
            OperatorCmd::Adopt {
                key,
                provider_job_id,
                json,
            } => adopt(client, &key, &provider_job_id, json).await,
        }
    }
}

/// A provider name as one URL path segment: the config allows letters,
/// digits, `-` and `_`, so anything else names no provider.
fn provider_url(client: &Client, name: &str, tail: &str) -> anyhow::Result<String> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        return Err(Invalid(anyhow!(
            "{name:?} is not a provider name (letters, digits, '-' and '_')"
        ))
        .into());
    }
    Ok(format!("{}/v1/providers/{name}{tail}", client.base))
}

/// `switchyard pause NAME` / `resume NAME`.
pub async fn set_paused(
    client: &Client,
    name: &str,
    pause: bool,
    json: bool,
) -> anyhow::Result<()> {
    let tail = if pause { "/pause" } else { "/resume" };
    let v = client
        .send(
            client
                .http
                .post(provider_url(client, name, tail)?)
                .json(&serde_json::json!({})),
        )
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let view: ProviderView = serde_json::from_value(v).context("reading the daemon's answer")?;
    let what = match (pause, view.paused_by.as_deref()) {
        (true, _) => "paused: nothing new is dispatched; live jobs are still followed".to_string(),
        (false, None) => "resumed: dispatch goes on".to_string(),
        (false, Some(by)) => format!("resumed, but still paused ({by})"),
    };
    println!(
        "{}: {what} ({} queued, {} in flight)",
        view.name, view.queued, view.in_flight
    );
    Ok(())
}

/// `switchyard adopt KEY PROVIDER_JOB_ID`.
pub async fn adopt(client: &Client, key: &str, id: &str, json: bool) -> anyhow::Result<()> {
    if id.trim().is_empty() {
        return Err(Invalid(anyhow!("the provider job id is empty")).into());
    }
    let body = AdoptBody {
        provider_job_id: id.to_string(),
    };
    let v = client
        .send(client.http.post(client.job_url(key, "/adopt")?).json(&body))
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{key}: adopted as {} job {id}, now {}",
            v["provider"].as_str().unwrap_or("?"),
            v["state"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// `switchyard plan FILE... [--json] [--require-fit]`: the files are read
/// and checked as `submit` would (every problem by file and line, exit 2),
/// then planned together; nothing is queued. Exit 1 with `--require-fit`
/// when a job would wait for credits.
pub async fn plan(
    client: &Client,
    files: &[PathBuf],
    json: bool,
    require_fit: bool,
) -> anyhow::Result<()> {
    let batches = read_batches(files)?;
    // One body for all files, as `submit` would send them one after the
    // other: a key an earlier file has is "already known" by then.
    let mut seen = HashSet::new();
    let mut jobs = Vec::new();
    // For each job sent: its file and its index in that file.
    let mut origin = Vec::new();
    let mut repeats = 0;
    for (f, (_, b)) in batches.iter().enumerate() {
        for (i, j) in b.jobs.iter().enumerate() {
            if seen.insert(j.key.clone()) {
                jobs.push(j.clone());
                origin.push((f, i));
            } else {
                repeats += 1;
            }
        }
    }
    let (status, v) = client
        .call(
            client
                .http
                .post(format!("{}/v1/plan", client.base))
                .json(&BatchBody { jobs }),
        )
        .await?;
    if status.as_u16() == 422 {
        let problems: Vec<Problem> =
            serde_json::from_value(v["error"]["problems"].clone()).unwrap_or_default();
        let mut lines = Vec::new();
        for mut p in problems {
            match p.index.and_then(|i| origin.get(i)) {
                Some(&(f, i)) => {
                    let (name, b) = &batches[f];
                    p.index = Some(i);
                    batch::locate(std::slice::from_mut(&mut p), b);
                    lines.push(p.render(name));
                }
                None => lines.push(p.render("batch")),
            }
        }
        return Err(Invalid(anyhow!(
            "the batch cannot be planned ({} problem(s)):\n{}",
            lines.len(),
            lines.join("\n")
        ))
        .into());
    }
    let plan: PlanAnswer =
        serde_json::from_value(v.clone()).context("reading the daemon's plan")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_plan(&plan, repeats);
    }
    if require_fit && !plan.fits {
        let waiting: usize = plan.providers.iter().map(|p| p.waiting_jobs).sum();
        anyhow::bail!("the batch does not fit the budget: {waiting} job(s) would wait for credits");
    }
    Ok(())
}

fn secs(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.1}s")
    } else {
        humantime::format_duration(std::time::Duration::from_secs(s.round() as u64)).to_string()
    }
}

/// Up to a few keys, then how many more.
fn some_keys(keys: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut s = keys
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > SHOWN {
        s.push_str(&format!(" and {} more", keys.len() - SHOWN));
    }
    s
}

fn print_plan(plan: &PlanAnswer, repeats: usize) {
    println!(
        "{:<10} {:>5} {:>6} {:>16} {:>18} {:>5} {:>8} {:>12} {:>9} {:>16}",
        "PROVIDER",
        "JOBS",
        "KNOWN",
        "CREDITS (est.)",
        "BUDGET LEFT",
        "FITS",
        "WAITING",
        "DRAIN RATE",
        "IN FLIGHT",
        "DRAIN IN FLIGHT"
    );
    for p in &plan.providers {
        let credits = if p.provider_estimated_jobs > 0 {
            format!("{} (provider)", p.estimated_credits)
        } else {
            p.estimated_credits.to_string()
        };
        let left = match (p.budget_left, &p.budget_period) {
            (Some(l), Some(per)) => format!("{l} ({per})"),
            _ => "unlimited".into(),
        };
        println!(
            "{:<10} {:>5} {:>6} {:>16} {:>18} {:>5} {:>8} {:>12} {:>9} {:>16}",
            p.name,
            p.jobs,
            p.known_keys.len(),
            credits,
            left,
            if p.fits { "yes" } else { "NO" },
            p.waiting_jobs,
            secs(p.drain_by_rate_s),
            p.max_in_flight,
            p.drain_by_in_flight_s.map_or("-".into(), secs),
        );
    }
    for p in &plan.providers {
        if p.queued_jobs > 0 {
            println!(
                "{}: {} job(s) already queued ahead ({} credits)",
                p.name, p.queued_jobs, p.queued_credits
            );
        }
        if let Some(by) = &p.paused_by {
            println!(
                "{}: dispatch is paused ({by}): nothing runs until `switchyard resume {}`",
                p.name, p.name
            );
        }
        if !p.waiting_keys.is_empty() {
            println!(
                "{}: would wait for credits: {}",
                p.name,
                some_keys(&p.waiting_keys)
            );
        }
        if !p.known_keys.is_empty() {
            println!(
                "{}: already known (not counted): {}",
                p.name,
                some_keys(&p.known_keys)
            );
        }
        if let Some(e) = &p.provider_estimate_error {
            println!("{}: {e}", p.name);
        }
    }
    if repeats > 0 {
        println!("{repeats} job(s) repeat a key of an earlier file: submit would take them as already known");
    }
    let classes: Vec<_> = plan
        .providers
        .iter()
        .flat_map(|p| p.durations.iter().map(move |c| (&p.name, c)))
        .collect();
    if !classes.is_empty() {
        println!();
        println!(
            "{:<10} {:<32} {:>5} {:>7} {:>8} {:>8}",
            "PROVIDER", "CLASS", "JOBS", "SEEN", "P50", "P90"
        );
        let s = |x: Option<f64>| x.map_or("-".to_string(), secs);
        for (name, c) in classes {
            let class = if c.class.is_empty() {
                "(any)"
            } else {
                &c.class
            };
            println!(
                "{:<10} {:<32} {:>5} {:>7} {:>8} {:>8}",
                name,
                class,
                c.jobs,
                c.samples,
                s(c.p50_s),
                s(c.p90_s)
            );
        }
    }
    println!();
    println!(
        "{} job(s) planned, nothing queued: {}",
        plan.jobs,
        if plan.fits {
            "the batch fits"
        } else {
            "the batch does NOT fit the budget"
        }
    );
}
