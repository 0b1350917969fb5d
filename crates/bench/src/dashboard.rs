//! `switchyard bench dashboard`: what the dashboard costs the daemon with a
//! large store, the real daemon as a child process:
//!
//! - **pages**: with N jobs in the store (built straight through
//!   `SledStore::import`, as `bench scale`'s restart store is), the time to
//!   the complete answer of the jobs table's fragment (`/ui/jobs`, 50 rows)
//!   for the default view, a state filter, a search and a sort, and of
//!   `GET /v1/jobs?limit=50`; the first call after the daemon listens
//!   (cold) and the median of the next ones. Baseline, in the same run:
//!   `GET /v1/jobs`, every job in one answer, which is what a page had to
//!   ask for before paging on the server.
//! - **idle stream**: the daemon's CPU time over a window of wall time with
//!   one event stream (`/v1/events`) open and nothing happening, beside the
//!   same window with no stream open, as a share of one core; and what the
//!   stream received meanwhile (keep-alive comments only).

use anyhow::{bail, Context};
use std::path::Path;
use std::time::{Duration, Instant};
use switchyard_core::{Job, JobError, JobSpec, JobState, ProviderKind};
use switchyard_store_sled::SledStore;
use switchyard_testkit::procfs::{clk_tck, cpu_ticks, loadavg};
use switchyard_testkit::{start_sim, Daemon, Env, P};

/// Options of `switchyard bench dashboard`.
#[derive(Debug, Clone, clap::Args)]
pub struct DashboardOpts {
    /// Jobs in the store.
    #[arg(long, default_value_t = 100_000)]
    pub jobs: usize,
    /// Seconds of wall time for each idle window (with and without a stream).
    #[arg(long, default_value_t = 30)]
    pub idle_secs: u64,
    /// Warm calls per page after the first.
    #[arg(long, default_value_t = 9)]
    pub calls: usize,
}

const PROVIDER: &str = "viggle";

/// Jobs per `SledStore::import` call.
const IMPORT_CHUNK: usize = 50_000;

/// A finished store: nearly all completed, one in 25 failed, one in 50
/// cancelled, one in 500 uncertain; nothing queued or live, so the daemon
/// stays idle.
fn job(i: usize, now: &str) -> Job {
    let spec = JobSpec {
        key: format!("batch-{:03}-item-{i:07}", i / 1000),
        provider: PROVIDER.into(),
        priority: (i % 3) as i32,
        params: serde_json::json!({ "image_url": format!("https://example.com/products/{i}.png") }),
    };
    let mut j = Job::from_spec(spec, i as u64, now);
    j.provider_job_id = Some(format!("vg_{i:012x}"));
    j.attempts = 1;
    j.budget_period = Some("total".into());
    if i % 500 == 7 {
        j.state = JobState::Uncertain;
    } else if i % 25 == 3 {
        j.state = JobState::Failed;
        j.error = Some(JobError::new("CS-UORC02-001", "Render worker failed"));
    } else if i % 50 == 11 {
        j.state = JobState::Cancelled;
    } else {
        j.state = JobState::Completed;
        j.progress = Some(100);
        j.provider_status = Some("completed".into());
        j.output_urls = vec![format!("https://cdn.example.com/viggle/vg_{i:012x}.mp4")];
        j.credits_charged = 10;
    }
    j
}

async fn build_store(db: &Path, n: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(db)?;
    let store = SledStore::open(db)?;
    let now = switchyard_core::model::now_rfc3339();
    let mut i = 0;
    while i < n {
        let end = (i + IMPORT_CHUNK).min(n);
        let jobs: Vec<Job> = (i..end).map(|k| job(k, &now)).collect();
        let st = store.clone();
        tokio::task::spawn_blocking(move || st.import(jobs))
            .await
            .context("import task")??;
        i = end;
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

/// One page's times, in milliseconds.
#[derive(Debug, Clone)]
pub struct PageTime {
    pub what: &'static str,
    pub path: String,
    pub first_ms: f64,
    pub median_ms: f64,
    pub bytes: usize,
}

#[derive(Debug, Clone)]
pub struct Figures {
    pub jobs: usize,
    pub pages: Vec<PageTime>,
    pub baseline: PageTime,
    pub idle_secs: f64,
    pub cpu_pct_stream: f64,
    pub cpu_pct_none: f64,
    pub stream_bytes: usize,
    pub stream_events: usize,
    pub stream_comments: usize,
    pub load: String,
}

async fn time_get(http: &reqwest::Client, url: &str) -> anyhow::Result<(f64, usize)> {
    let t = Instant::now();
    let r = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = r.status();
    let body = r.bytes().await?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if !status.is_success() {
        bail!("GET {url}: {status}");
    }
    Ok((ms, body.len()))
}

async fn page(
    http: &reqwest::Client,
    base: &str,
    what: &'static str,
    path: &str,
    calls: usize,
) -> anyhow::Result<PageTime> {
    let url = format!("{base}{path}");
    let (first_ms, bytes) = time_get(http, &url).await?;
    let mut warm = Vec::with_capacity(calls);
    for _ in 0..calls {
        warm.push(time_get(http, &url).await?.0);
    }
    warm.sort_by(f64::total_cmp);
    let median_ms = warm.get(warm.len() / 2).copied().unwrap_or(first_ms);
    Ok(PageTime {
        what,
        path: path.to_string(),
        first_ms,
        median_ms,
        bytes,
    })
}

/// The daemon's CPU share of one core over `secs` of wall time.
async fn cpu_share(pid: u32, secs: u64, tck: f64) -> anyhow::Result<f64> {
    let c0 = cpu_ticks(pid)?;
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let wall = t.elapsed().as_secs_f64();
    let cpu = cpu_ticks(pid)?.saturating_sub(c0) as f64 / tck;
    Ok(100.0 * cpu / wall)
}

pub async fn run(opts: DashboardOpts) -> anyhow::Result<Figures> {
    let tck = clk_tck();
    let env = Env::new()?;
    eprintln!("[dashboard] building a store of {} jobs ...", opts.jobs);
    build_store(&env.data_dir().join("db"), opts.jobs).await?;
    let sim = start_sim("seed = 1\n").await?;
    env.write(
        &sim,
        &[P {
            name: PROVIDER,
            kind: ProviderKind::Viggle,
            extra: "",
        }],
        "",
    )?;
    let exe = std::env::current_exe().context("finding this executable")?;
    let mut d = Daemon::command(exe, &env)
        .log_file(env.dir.path().join("daemon.log"))
        .spawn()?;
    tokio::task::block_in_place(|| d.wait_listening(Duration::from_secs(120)))?;
    let base = d.url().to_string();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;

    eprintln!("[dashboard] pages ...");
    let mut pages = Vec::new();
    for (what, path) in [
        ("table, default view", "/ui/jobs"),
        ("table, state failed", "/ui/jobs?state=failed"),
        ("table, search \"item-0099\"", "/ui/jobs?q=item-0099"),
        (
            "table, sorted by key, descending",
            "/ui/jobs?sort=key&dir=desc",
        ),
        ("table, page 1000", "/ui/jobs?offset=49950"),
        ("JSON, 50 rows", "/v1/jobs?limit=50"),
    ] {
        let p = page(&http, &base, what, path, opts.calls).await?;
        eprintln!(
            "[dashboard] {what}: first {:.0} ms, median {:.0} ms, {} bytes",
            p.first_ms, p.median_ms, p.bytes
        );
        pages.push(p);
    }
    let baseline = page(&http, &base, "every job (GET /v1/jobs)", "/v1/jobs", 2).await?;
    eprintln!(
        "[dashboard] baseline, every job: first {:.0} ms, median {:.0} ms, {} bytes",
        baseline.first_ms, baseline.median_ms, baseline.bytes
    );

    // Let the listings' memory go back and the daemon settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    eprintln!("[dashboard] idle, no stream, {} s ...", opts.idle_secs);
    let cpu_pct_none = cpu_share(d.pid(), opts.idle_secs, tck).await?;
    eprintln!(
        "[dashboard] idle, one event stream, {} s ...",
        opts.idle_secs
    );
    let mut stream = http
        .get(format!("{base}/v1/events"))
        .send()
        .await
        .context("opening /v1/events")?;
    if !stream.status().is_success() {
        bail!("GET /v1/events: {}", stream.status());
    }
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    let reader = tokio::spawn(async move {
        while let Ok(Some(chunk)) = stream.chunk().await {
            sink.lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(&chunk);
        }
    });
    let cpu_pct_stream = cpu_share(d.pid(), opts.idle_secs, tck).await?;
    reader.abort();
    let got = got.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let text = String::from_utf8_lossy(&got);
    let comments = text.lines().filter(|l| l.starts_with(':')).count();
    let stream_events = text.matches("event:").count();
    let load = loadavg();
    tokio::task::block_in_place(|| d.stop(Duration::from_secs(20)))?;
    Ok(Figures {
        jobs: opts.jobs,
        pages,
        baseline,
        idle_secs: opts.idle_secs as f64,
        cpu_pct_stream,
        cpu_pct_none,
        stream_bytes: got.len(),
        stream_events,
        stream_comments: comments,
        load,
    })
}

pub fn print(f: &Figures) {
    println!(
        "bench dashboard: {} jobs in the store (load average at the end: {})",
        f.jobs, f.load
    );
    println!(
        "{:<36} {:>10} {:>10} {:>10} {:>12}",
        "answer", "first ms", "median ms", "bytes", "vs all jobs"
    );
    for p in f.pages.iter().chain(std::iter::once(&f.baseline)) {
        println!(
            "{:<36} {:>10.0} {:>10.0} {:>10} {:>11.3}x",
            p.what,
            p.first_ms,
            p.median_ms,
            p.bytes,
            p.median_ms / f.baseline.median_ms.max(1e-9)
        );
    }
    let worst = f.pages.iter().map(|p| p.first_ms).fold(0.0, f64::max);
    println!(
        "goal: the jobs page's first answer under 1 s at {} jobs: slowest first answer {:.0} ms: {}",
        f.jobs,
        worst,
        if worst < 1000.0 { "met" } else { "NOT met" }
    );
    println!(
        "idle over {:.0} s: {:.3} % of a core with one event stream open, {:.3} % with none; the stream got {} bytes: {} keep-alive comments, {} events",
        f.idle_secs, f.cpu_pct_stream, f.cpu_pct_none, f.stream_bytes, f.stream_comments, f.stream_events
    );
    println!(
        "goal: under 1 % of a core with one stream open: {}",
        if f.cpu_pct_stream < 1.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}
