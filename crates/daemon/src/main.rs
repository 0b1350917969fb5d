//! `switchyard`: one binary for the daemon, its control CLI, the simulator
//! and the demo. `anyhow` lives only here, at the edge; exit codes are 0 for
//! success, 1 for an operational failure, 2 for bad usage or invalid input.

mod check;
mod client;
mod config;
mod demo;
mod doctor;
mod http;
mod operator_cli;
mod output;
mod recording;
mod serve;
mod store_config;
mod watch;

/// The store's write path (sled copies a leaf per write, allocates a log
/// buffer per flush) is allocation-bound: under glibc's malloc a third of
/// the benchmark's CPU was malloc and free; mimalloc nearly halves that
/// (`switchyard bench store`: 11,500 -> 18,000 durable transitions/s).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The batch file format, shared with the engine and the server.
use switchyard_api::batch;

/// Marks an error as the user's input being wrong (exit code 2).
#[derive(Debug)]
pub struct Invalid(pub anyhow::Error);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for Invalid {}

const AFTER_HELP: &str = "\
Exit codes: 0 ok, 1 operational failure (e.g. the daemon cannot be reached), 2 bad usage or invalid input.

Environment:
  SWITCHYARD_CONFIG          config file (when --config is not given)
  SWITCHYARD_<SECTION>__<KEY> overrides a config key, e.g. SWITCHYARD_DAEMON__LISTEN=127.0.0.1:7701
  SWITCHYARD_DAEMON_URL      the daemon's URL for client commands
  SWITCHYARD_TOKEN_FILE      file holding the daemon's bearer token, for client commands
  SWITCHYARD_LOG             log filter (tracing EnvFilter syntax, default \"info\")
  SWITCHYARD_LOG_FORMAT=json JSON log lines instead of human-readable ones";

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Runs batches of AI video-generation jobs against provider APIs: durable queue, rate limits, credit budgets, polling.",
    after_help = AFTER_HELP
)]
struct Cli {
    /// Config file (default: $SWITCHYARD_CONFIG, then /etc/switchyard/switchyard.toml, then built-in defaults).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// URL of the running daemon for client commands (default: from the config's daemon.listen).
    #[arg(long, global = true, env = "SWITCHYARD_DAEMON_URL", value_name = "URL")]
    daemon_url: Option<String>,
    /// File holding the daemon's bearer token, for client commands (default: the config's daemon.auth_token_file, if readable).
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_TOKEN_FILE",
        value_name = "FILE"
    )]
    token_file: Option<PathBuf>,
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
    /// Send batch files (TOML or JSON Lines) to the running daemon; prints accepted and already-known counts.
    ///
    /// Each file is checked whole before anything is queued: a file with any
    /// invalid job is rejected, with every problem listed by file and line (exit 2).
    ///
    /// A job may name fallbacks, other providers tried in order: in TOML a
    /// `[[jobs.fallback]]` table (provider, params) after the job, in JSON Lines
    /// `"fallback": [{"provider", "params"}]`; `fallback_on` says when
    /// (`failed`, `budget`, `paused`; default `["failed"]`). Each fallback is
    /// checked like the first choice. A job never moves on after an uncertain
    /// outcome.
    Submit {
        /// Batch files: TOML (`[[jobs]]`) or JSON Lines (`.jsonl`, one job object a line).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Follow the jobs until each has ended (progress on stderr).
        #[arg(long)]
        wait: bool,
        /// Print JSON and nothing else on stdout: the counts per file, or with --wait the jobs.
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
        /// Print one JSON array of jobs and nothing else on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show one job: its providers (the first choice, fallbacks tried and left) and its history of transitions.
    Show {
        /// The job's key (from its batch file).
        key: String,
        /// Also ask the provider what it shows of the job: U-Gen's keyframes (QAI scores) and video segments, UGC Lab's processing steps.
        #[arg(long)]
        detail: bool,
        /// Print the job as one JSON object (with `history`, and `detail` if asked) and nothing else on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job: queued and uncertain ones at once, live ones at the provider (whose rules apply).
    Cancel {
        /// The job's key.
        key: String,
        /// Print the job as one JSON object and nothing else on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Put a failed or uncertain job back in the queue, or (--from-stage) re-run it at the provider.
    Retry {
        /// The job's key.
        key: String,
        /// U-Gen: re-run the provider's job from this pipeline stage (a failed or completed job; its credits are reserved again first).
        #[arg(long, value_name = "STAGE")]
        from_stage: Option<String>,
        /// Print the job as one JSON object and nothing else on stdout.
        #[arg(long)]
        json: bool,
    },
    /// U-Gen: pause one running job at the provider (it stops after its current stage; the poll timeout waits).
    JobPause {
        /// The job's key.
        key: String,
        /// Print the job as one JSON object and nothing else on stdout.
        #[arg(long)]
        json: bool,
    },
    /// U-Gen: resume one job paused at the provider.
    JobResume {
        /// The job's key.
        key: String,
        /// Print the job as one JSON object and nothing else on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Per provider: rate limit, in flight, queued, budget used/reserved/left, cool-down and health.
    Providers {
        /// Print one JSON array and nothing else on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Live progress bars per provider and per job until the queue is empty (plain lines when not on a terminal).
    Watch,
    #[command(flatten)]
    Operator(operator_cli::OperatorCmd),
    /// Validate config or batch files without running anything; every problem is listed with file and line (exit 2).
    ///
    /// A file with `[[jobs]]` (or a .jsonl file) is a batch, checked against the
    /// providers of --config (or, without one, a provider per kind named like it);
    /// anything else is a config, checked with the SWITCHYARD_* variables applied
    /// and as the daemon's start would: every provider's API key present (the
    /// variable set, the file readable; relative files in $CREDENTIALS_DIRECTORY),
    /// data_dir, output_dir and inbox_dir creatable by this user.
    Check {
        /// Config or batch files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Check a config against reality before a first paid batch: everything `check` does, credentials, directories, clock, and one free request per provider.
    ///
    /// Offline: the config, every API key and webhook secret present and
    /// readable, data_dir/output_dir/inbox_dir/record_dir writable (free space
    /// shown). Online: one authenticated request per provider that costs no
    /// credits (U-Gen GET /jobs?page_size=1, UlazAI GET /history/, UGC Lab and
    /// Viggle a status request for an id that cannot exist), classified as ok,
    /// key refused, rate-limited, unreachable or unexpected answer (with a
    /// redacted excerpt), and the provider's Date header compared with the local
    /// clock (U-Gen's webhooks allow ±300 s). Also shows the unexpected-answer
    /// counts of a running daemon. Exit 0 all good, 1 a provider problem, 2 bad
    /// config or setup.
    Doctor {
        /// Only this provider (a provider table name).
        #[arg(long)]
        provider: Option<String>,
        /// Print one JSON document and nothing else on stdout.
        #[arg(long)]
        json: bool,
        /// Skip the requests to providers and to the daemon.
        #[arg(long)]
        offline: bool,
    },
    /// Print a shell completion script: `switchyard completions bash > /etc/bash_completion.d/switchyard`.
    Completions {
        /// bash, zsh or fish (also elvish, powershell).
        shell: clap_complete::Shell,
    },
    /// Measure parts of the system against baselines measured in the same run.
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
    /// Run the provider simulator alone, or answer from a recording (--replay).
    Sim {
        #[arg(long, default_value = "127.0.0.1:7800")]
        listen: std::net::SocketAddr,
        /// Scenario file (TOML): durations, failures, rate limits, faults.
        #[arg(long, conflicts_with = "replay")]
        scenario: Option<PathBuf>,
        /// Answer from a recording (a daemon.record_dir exchanges file) instead of simulating:
        /// requests matched by method and path (+ query), answers in recorded order per request.
        #[arg(long, value_name = "FILE")]
        replay: Option<PathBuf>,
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
    /// Throughput, memory, idle CPU and restart time for 1k..100k jobs, beside ceilings from the same run.
    Scale(switchyard_bench::scale::ScaleOpts),
    /// Peak memory of `check` on a large batch file (JSON Lines and TOML), as a multiple of the file size.
    Batch(switchyard_bench::batch::BatchOpts),
    /// The dashboard with a large store: the jobs page's answer time beside listing every job, and idle CPU with an event stream open.
    Dashboard(switchyard_bench::dashboard::DashboardOpts),
    /// End-to-end jobs/s of one daemon on sled, one on PostgreSQL and three on one database; the fleet's use of each quota.
    Fleet(switchyard_bench::fleet::FleetOpts),
    /// Polls per job and finish-to-known delay: the progress-aware poll plan vs fixed 5 s and 3 s polling, in virtual time.
    Poll {
        #[arg(long, default_value_t = 1000)]
        jobs: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also draw polls per job against p95 delay, for every strategy
        /// over a range of targets with the limit, to this SVG file.
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<std::path::PathBuf>,
    },
}

/// mimalloc's option for how long freed memory stays resident before it is
/// given back, in ms; mimalloc reads it from the environment as the process
/// loads, before `main`.
const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// Starts this program again with freed memory given back to the OS at once
/// (unless the environment already says otherwise); returns only if that
/// could not be done, and the process then goes on with mimalloc's default.
///
/// Why: mimalloc's default (1 s, and only when the same thread allocates
/// again) left sled's freed nodes resident: a store-only fill of 100,000
/// jobs kept 636-714 B per job resident, 450 with purging at once; `bench
/// scale` at 100,000 live jobs: 1,277 -> 1,084 B per job. The durable
/// transition rate stays within its noise (`bench store`). The option can
/// only be set before the process loads (setting it later takes `unsafe`
/// FFI, which this workspace forbids), hence the `exec`: same process id,
/// so systemd's notify and PID tracking are unaffected.
fn reexec_with_prompt_purging() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(PURGE_DELAY_ENV).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut cmd = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        cmd.arg0(arg0);
    }
    let err = cmd.args(args).env(PURGE_DELAY_ENV, "0").exec();
    eprintln!("note: could not restart with {PURGE_DELAY_ENV}=0 ({err}); going on without it");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.cmd, Cmd::Daemon | Cmd::Bench { .. }) {
        reexec_with_prompt_purging();
    }
    init_tracing();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    // The daemon's thread count is configured, so its config is read
    // before the runtime exists.
    // A bad config is reported by `run` like any other error.
    let preloaded = matches!(cli.cmd, Cmd::Daemon).then(|| load_config(cli.config.as_deref()));
    if let Some(Ok((cfg, _))) = &preloaded {
        builder.worker_threads(cfg.daemon.worker_threads);
    }
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli, preloaded)) {
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
    let filter = EnvFilter::try_from_env("SWITCHYARD_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sled=warn,hyper=warn"));
    let json = std::env::var("SWITCHYARD_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

fn load_config(
    path: Option<&std::path::Path>,
) -> anyhow::Result<(config::Config, Option<PathBuf>)> {
    let resolved = config::resolve_path(path);
    let cfg = config::Config::load_for_start(resolved.as_deref()).map_err(Invalid)?;
    Ok((cfg, resolved))
}

fn print_state(key: &str, job: &serde_json::Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(job)?);
    } else {
        println!("{key}: {}", job["state"].as_str().unwrap_or("?"));
    }
    Ok(())
}

/// The bearer token for client commands: `--token-file` /
/// `$SWITCHYARD_TOKEN_FILE`, else the config's `daemon.auth_token_file` when
/// this user can read it, else none.
fn token(
    explicit: Option<&std::path::Path>,
    config: Option<&std::path::Path>,
) -> anyhow::Result<Option<switchyard_core::Secret>> {
    if let Some(path) = explicit {
        let t = std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?;
        let t = t.trim();
        if t.is_empty() {
            return Err(Invalid(anyhow::anyhow!(
                "the token file {} is empty",
                path.display()
            ))
            .into());
        }
        return Ok(Some(switchyard_core::Secret::new(t)));
    }
    let from_config = config::resolve_path(config)
        .and_then(|p| config::Config::load(Some(&p)).ok())
        .and_then(|c| c.daemon.auth_token().ok().flatten());
    Ok(from_config)
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

type Loaded = (config::Config, Option<PathBuf>);

async fn run(cli: Cli, preloaded: Option<anyhow::Result<Loaded>>) -> anyhow::Result<()> {
    if let Cmd::Completions { shell } = cli.cmd {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cmd, "switchyard", &mut script);
        return match std::io::Write::write_all(&mut std::io::stdout(), &script) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(e).context("writing the completion script")
            }
            _ => Ok(()),
        };
    }
    let url = daemon_url(&cli);
    let token_file = cli.token_file.clone();
    let cfg_path = cli.config.clone();
    let client =
        || client::Client::with_token(&url, token(token_file.as_deref(), cfg_path.as_deref())?);
    match cli.cmd {
        Cmd::Demo { batch, timeout } => demo::run(batch, timeout).await,
        Cmd::Daemon => {
            let (cfg, path) = match preloaded {
                Some(loaded) => loaded?,
                None => load_config(cli.config.as_deref())?,
            };
            serve::run(cfg, path).await
        }
        Cmd::Submit { files, wait, json } => client::submit(&client()?, &files, wait, json).await,
        Cmd::Jobs {
            state,
            provider,
            json,
        } => {
            if let Some(s) = &state {
                s.parse::<switchyard_core::JobState>()
                    .map_err(|m| Invalid(anyhow::anyhow!(m)))?;
            }
            let jobs = client()?
                .jobs(state.as_deref(), provider.as_deref())
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
            } else {
                output::print_table(&jobs);
            }
            Ok(())
        }
        Cmd::Show { key, detail, json } => {
            let c = client()?;
            let v = if detail {
                c.job_detail(&key).await?
            } else {
                c.job(&key).await?
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                output::print_job(&serde_json::from_value(v)?);
            }
            Ok(())
        }
        Cmd::Cancel { key, json } => {
            let v = client()?.cancel(&key).await?;
            print_state(&key, &v, json)
        }
        Cmd::Retry {
            key,
            from_stage,
            json,
        } => {
            let v = match from_stage {
                Some(stage) => client()?.retry_from(&key, &stage).await?,
                None => client()?.retry(&key).await?,
            };
            print_state(&key, &v, json)
        }
        Cmd::JobPause { key, json } => {
            let v = client()?.job_action(&key, "pause").await?;
            if !json {
                let state = v["state"].as_str().unwrap_or("?");
                println!("{key}: {state}, paused at the provider");
                return Ok(());
            }
            print_state(&key, &v, json)
        }
        Cmd::JobResume { key, json } => {
            let v = client()?.job_action(&key, "resume").await?;
            print_state(&key, &v, json)
        }
        Cmd::Providers { json } => {
            let c = client()?;
            let views = c.providers().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&views)?);
            } else {
                output::print_providers(&views);
                output::print_daemons(&c.daemons().await?);
            }
            Ok(())
        }
        Cmd::Watch => watch::run(&client()?).await,
        Cmd::Operator(cmd) => cmd.run(&client()?).await,
        Cmd::Completions { .. } => Ok(()), // handled above
        Cmd::Check { files } => {
            check::run(cli.config.as_deref(), &files).map_err(|e| Invalid(e).into())
        }
        Cmd::Bench {
            what:
                BenchCmd::Store {
                    jobs,
                    writers,
                    per_writer,
                },
        } => {
            let f = switchyard_bench::store::run(jobs, writers, per_writer).await?;
            switchyard_bench::store::print(&f);
            Ok(())
        }
        Cmd::Bench {
            what: BenchCmd::Scale(opts),
        } => switchyard_bench::scale::run(opts).await,
        Cmd::Bench {
            what: BenchCmd::Batch(opts),
        } => switchyard_bench::batch::run(opts),
        Cmd::Bench {
            what: BenchCmd::Fleet(opts),
        } => switchyard_bench::fleet::run(opts).await,
        Cmd::Bench {
            what: BenchCmd::Dashboard(opts),
        } => {
            switchyard_bench::dashboard::print(&switchyard_bench::dashboard::run(opts).await?);
            Ok(())
        }
        Cmd::Bench {
            what: BenchCmd::Poll { jobs, seed, plot },
        } => {
            switchyard_bench::poll::print(&switchyard_bench::poll::run(jobs, seed));
            switchyard_bench::poll_learned::print(&switchyard_bench::poll_learned::run(jobs, seed));
            if let Some(path) = plot {
                switchyard_bench::poll_plot::plot(&path, jobs, seed)?;
                eprintln!("plot written to {}", path.display());
            }
            Ok(())
        }
        Cmd::Doctor {
            provider,
            json,
            offline,
        } => {
            let opts = doctor::Options {
                provider,
                json,
                offline,
                daemon_url: url.clone(),
                token: token(token_file.as_deref(), cfg_path.as_deref())
                    .ok()
                    .flatten(),
            };
            doctor::run(cli.config.as_deref(), opts).await
        }
        Cmd::Sim {
            listen,
            replay: Some(file),
            ..
        } => {
            let replay = switchyard_sim::replay::Replay::from_file(&file)
                .map_err(|e| Invalid(anyhow::anyhow!("{e}")))?;
            let cancel = tokio_util::sync::CancellationToken::new();
            let c2 = cancel.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                c2.cancel();
            });
            println!(
                "replaying {} exchange(s) from {} on http://{listen}",
                replay.loaded,
                file.display()
            );
            switchyard_sim::replay::serve(listen, replay, cancel)
                .await
                .context("serving the recording")
        }
        Cmd::Sim {
            listen, scenario, ..
        } => {
            let sc = match scenario {
                Some(p) => switchyard_sim::Scenario::from_file(&p)
                    .map_err(|e| Invalid(anyhow::anyhow!("{e}")))?,
                None => switchyard_sim::Scenario::default(),
            };
            let cancel = tokio_util::sync::CancellationToken::new();
            let c2 = cancel.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                c2.cancel();
            });
            println!("simulator listening on http://{listen}");
            switchyard_sim::run(listen, sc, cancel)
                .await
                .context("running the simulator")
        }
    }
}
