//! `switchyard`: one binary for the daemon, its control CLI, the simulator
//! and the demo. `anyhow` lives only here, at the edge; exit codes are 0 for
//! success, 1 for an operational failure, 2 for bad usage or invalid input.

mod batch;
mod bench;
mod check;
mod client;
mod config;
mod demo;
mod http;
mod inbox;
mod results;
mod runtime;
mod serve;
mod watch;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Marks an error as the user's input being wrong (exit code 2).
#[derive(Debug)]
pub struct Invalid(pub anyhow::Error);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for Invalid {}

#[derive(Parser)]
#[command(name = "switchyard", version, about = "Runs batches of AI video-generation jobs against provider APIs: durable queue, rate limits, credit budgets, polling.")]
struct Cli {
    /// Config file (default: $SWITCHYARD_CONFIG, then /etc/switchyard/switchyard.toml, then built-in defaults).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// URL of the running daemon for client commands (default: from the config's daemon.listen).
    #[arg(long, global = true, env = "SWITCHYARD_DAEMON_URL", value_name = "URL")]
    daemon_url: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the built-in simulator and a daemon in-process, run the example batch, print a summary.
    Demo {
        /// A batch file to run instead of config/examples/batch.toml.
        #[arg(long)]
        batch: Option<PathBuf>,
        /// Give up after this long.
        #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Run the daemon in the foreground (systemd Type=notify). SIGTERM/SIGINT drain, SIGHUP reloads.
    Daemon,
    /// Send batch files (TOML or JSON Lines) to the running daemon.
    Submit {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Follow the jobs until each has ended.
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// List jobs.
    Jobs {
        /// Only jobs in this state (queued, submitting, pending, processing, completed, failed, cancelled, uncertain).
        #[arg(long)]
        state: Option<String>,
        /// Only jobs of this provider (a provider table name).
        #[arg(long)]
        provider: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one job with its history of transitions.
    Show {
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job (the provider's cancellation rules apply).
    Cancel { key: String },
    /// Put a failed or uncertain job back in the queue.
    Retry { key: String },
    /// Per provider: limits, in flight, budget used/reserved/left, health.
    Providers {
        #[arg(long)]
        json: bool,
    },
    /// Live progress until the queue is empty.
    Watch,
    /// Validate config or batch files without running anything.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Measure parts of the system against baselines measured in the same run.
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
    /// Run the provider simulator alone.
    Sim {
        #[arg(long, default_value = "127.0.0.1:7800")]
        listen: std::net::SocketAddr,
        /// Scenario file (TOML): durations, failures, rate limits, faults.
        #[arg(long)]
        scenario: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Intake and durable transitions of the sled store vs raw sled.
    Store {
        #[arg(long, default_value_t = 100_000)]
        jobs: usize,
        /// Concurrent writers for the transition benchmark.
        #[arg(long, default_value_t = 256)]
        writers: usize,
        /// Transitions per writer.
        #[arg(long, default_value_t = 400)]
        per_writer: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(inv) = e.downcast_ref::<Invalid>() {
                eprintln!("error: {inv}");
                ExitCode::from(2)
            } else {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SWITCHYARD_LOG").unwrap_or_else(|_| EnvFilter::new("info,sled=warn,hyper=warn"));
    let json = std::env::var("SWITCHYARD_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    }
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<(config::Config, Option<PathBuf>)> {
    let resolved = config::resolve_path(path);
    let cfg = config::Config::load(resolved.as_deref()).map_err(Invalid)?;
    Ok((cfg, resolved))
}

fn daemon_url(cli: &Cli) -> String {
    if let Some(u) = &cli.daemon_url {
        return u.clone();
    }
    let listen = config::resolve_path(cli.config.as_deref())
        .and_then(|p| config::Config::load(Some(&p)).ok())
        .map(|c| c.daemon.listen)
        .unwrap_or_else(|| config::DaemonConfig::default().listen);
    format!("http://{listen}")
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let url = daemon_url(&cli);
    let client = || client::Client::new(&url);
    match cli.cmd {
        Cmd::Demo { batch, timeout } => demo::run(batch, timeout).await,
        Cmd::Daemon => {
            let (cfg, path) = load_config(cli.config.as_deref())?;
            serve::run(cfg, path).await
        }
        Cmd::Submit { files, wait, json } => client::submit(&client()?, &files, wait, json).await,
        Cmd::Jobs { state, provider, json } => {
            if let Some(s) = &state {
                s.parse::<switchyard_core::JobState>().map_err(|m| Invalid(anyhow::anyhow!(m)))?;
            }
            let jobs = client()?.jobs(state.as_deref(), provider.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
            } else {
                client::print_table(&jobs);
            }
            Ok(())
        }
        Cmd::Show { key, json } => {
            let v = client()?.job(&key).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let job: switchyard_core::Job = serde_json::from_value(v.clone())?;
                client::print_table(std::slice::from_ref(&job));
                println!("\nhistory:");
                for h in v["history"].as_array().into_iter().flatten() {
                    println!(
                        "  {}  {:>10} -> {:<10} {}",
                        h["at"].as_str().unwrap_or(""),
                        h["from"].as_str().unwrap_or("-"),
                        h["to"].as_str().unwrap_or(""),
                        h["note"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(())
        }
        Cmd::Cancel { key } => {
            let v = client()?.cancel(&key).await?;
            println!("{key}: {}", v["state"].as_str().unwrap_or("?"));
            Ok(())
        }
        Cmd::Retry { key } => {
            let v = client()?.retry(&key).await?;
            println!("{key}: {}", v["state"].as_str().unwrap_or("?"));
            Ok(())
        }
        Cmd::Providers { json } => {
            let views = client()?.providers().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&views)?);
            } else {
                client::print_providers(&views);
            }
            Ok(())
        }
        Cmd::Watch => {
            let c = client()?;
            let jobs = c.jobs(None, None).await?;
            let keys: Vec<String> = jobs.iter().filter(|j| !client::settled(j.state)).map(|j| j.key.clone()).collect();
            if keys.is_empty() {
                println!("the queue is empty");
                return Ok(());
            }
            let done = client::wait_for(&c, &keys, true).await?;
            client::print_table(&done);
            Ok(())
        }
        Cmd::Check { files } => check::run(cli.config.as_deref(), &files).map_err(|e| Invalid(e).into()),
        Cmd::Bench { what: BenchCmd::Store { jobs, writers, per_writer } } => {
            let f = bench::store(jobs, writers, per_writer).await?;
            bench::print(&f);
            Ok(())
        }
        Cmd::Sim { listen, scenario } => {
            let sc = match scenario {
                Some(p) => switchyard_sim::Scenario::from_file(&p).map_err(|e| Invalid(anyhow::anyhow!("{e}")))?,
                None => switchyard_sim::Scenario::default(),
            };
            let cancel = tokio_util::sync::CancellationToken::new();
            let c2 = cancel.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                c2.cancel();
            });
            println!("simulator listening on http://{listen}");
            switchyard_sim::run(listen, sc, cancel).await.context("running the simulator")
        }
    }
}
