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
//! - **busy page**: a batch of M jobs (zero duration at the simulator) run
//!   to the end on that store twice: once with no client, once with a
//!   client doing what an open page does (the event stream; the changed
//!   rows on screen through `/ui/rows`; the table and the overview again
//!   no sooner than eight times the table's last cost, at least 400 ms).
//!   The daemon's CPU time for each batch, and their ratio.

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
    /// Jobs in each batch of the busy part (0: skip it).
    #[arg(long, default_value_t = 5_000)]
    pub busy_jobs: usize,
    /// The busy part's page: the jobs table's query string (the watched
    /// batch's jobs are named `watched-N`).
    #[arg(long, default_value = "q=watched")]
    pub busy_view: String,
}

const PROVIDER: &str = "viggle";

/// Jobs finish at once at the simulator: a busy batch is bound by the rate.
const SCENARIO: &str =
    "seed = 1\n[providers.viggle]\nduration = { fixed = \"0s\" }\nfailure_rate = 0.0\n";

/// Fast enough that a batch of thousands runs in seconds.
const PROVIDER_EXTRA: &str = "rate_limit = { per_second = 400, burst = 40 }\nmax_in_flight = 400\npoll = { schedule = [\"200ms\"], max = \"1s\", timeout = \"10m\" }";

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
        ..JobSpec::default()
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
    pub busy: Option<Busy>,
    pub load: String,
}

/// The busy part's two batches.
#[derive(Debug, Clone)]
pub struct Busy {
    pub jobs: usize,
    pub view: String,
    pub alone_cpu_s: f64,
    pub alone_wall_s: f64,
    pub watched_cpu_s: f64,
    pub watched_wall_s: f64,
    pub page: PageStats,
}

/// What the page-like client did during the watched batch.
#[derive(Debug, Clone, Default)]
pub struct PageStats {
    pub events: usize,
    pub row_fetches: usize,
    pub table_fetches: usize,
    pub table_ms_max: f64,
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
    let sim = start_sim(SCENARIO).await?;
    env.write(
        &sim,
        &[P {
            name: PROVIDER,
            kind: ProviderKind::Viggle,
            extra: PROVIDER_EXTRA,
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
    let busy = if opts.busy_jobs > 0 {
        Some(busy(&http, &base, d.pid(), opts.busy_jobs, &opts.busy_view, tck).await?)
    } else {
        None
    };
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
        busy,
        load,
    })
}

/// Submits `n` jobs named `prefix-N`, in batches of 1,000.
async fn submit(http: &reqwest::Client, base: &str, prefix: &str, n: usize) -> anyhow::Result<()> {
    let mut i = 0;
    while i < n {
        let end = (i + 1000).min(n);
        let jobs: Vec<JobSpec> = (i..end)
            .map(|k| JobSpec {
                key: format!("{prefix}-{k:06}"),
                provider: PROVIDER.into(),
                priority: 0,
                params: serde_json::json!({ "image_url": format!("https://example.com/{k}.png") }),
                ..JobSpec::default()
            })
            .collect();
        let r = http
            .post(format!("{base}/v1/jobs"))
            .json(&serde_json::json!({ "jobs": jobs }))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("POST /v1/jobs: {}", r.status());
        }
        i = end;
    }
    Ok(())
}

/// Waits until nothing is queued or in flight (the providers view reads
/// the store's counts: no listing, so the wait costs the daemon little).
async fn drained(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let v: serde_json::Value = http
            .get(format!("{base}/v1/providers"))
            .send()
            .await?
            .json()
            .await?;
        let busy = v.as_array().into_iter().flatten().any(|p| {
            p["queued"].as_u64().unwrap_or(0) > 0 || p["in_flight"].as_u64().unwrap_or(0) > 0
        });
        if !busy {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the batch did not finish within 600 s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One batch to the end: the daemon's CPU seconds and the wall seconds.
async fn batch(
    http: &reqwest::Client,
    base: &str,
    pid: u32,
    prefix: &str,
    n: usize,
    tck: f64,
) -> anyhow::Result<(f64, f64)> {
    let c0 = cpu_ticks(pid)?;
    let t = Instant::now();
    submit(http, base, prefix, n).await?;
    drained(http, base).await?;
    let wall = t.elapsed().as_secs_f64();
    let cpu = cpu_ticks(pid)?.saturating_sub(c0) as f64 / tck;
    Ok((cpu, wall))
}

/// The keys of the rows a table fragment shows.
fn row_keys(html: &str) -> Vec<String> {
    html.split("<tr data-key=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|k| {
            k.replace("&amp;", "&")
                .replace("&quot;", "\"")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
        })
        .collect()
}

/// Does what an open page does (see the module docs) until `stop` fires.
async fn page_client(
    http: reqwest::Client,
    base: String,
    view: String,
    stop: stop::Stop,
) -> anyhow::Result<PageStats> {
    let mut st = PageStats::default();
    let mut stream = http.get(format!("{base}/v1/events")).send().await?;
    let mut buf = String::new();
    let mut shown: Vec<String> = Vec::new();
    let mut took_ms = 0.0f64;
    let mut last = Instant::now() - Duration::from_secs(60);
    let mut dirty = true;
    loop {
        let gap = Duration::from_secs_f64((8.0 * took_ms).max(400.0) / 1e3);
        let due = last + gap;
        tokio::select! {
            _ = stop.wait() => return Ok(st),
            chunk = stream.chunk() => {
                let Some(chunk) = chunk? else { return Ok(st) };
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let ev: String = buf.drain(..end + 2).collect();
                    if !ev.contains("event: jobs") && !ev.contains("event: resync") {
                        continue;
                    }
                    st.events += 1;
                    dirty = true;
                    let keys: Vec<String> = ev
                        .lines()
                        .find_map(|l| l.strip_prefix("data: "))
                        .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
                        .and_then(|v| serde_json::from_value(v["keys"].clone()).ok())
                        .unwrap_or_default();
                    let on_screen: Vec<&String> = keys.iter().filter(|k| shown.contains(k)).collect();
                    if !on_screen.is_empty() {
                        let q = serde_json::to_string(&on_screen)?;
                        let url = reqwest::Url::parse_with_params(&format!("{base}/ui/rows"), &[("keys", q)])?;
                        http.get(url).send().await?.bytes().await?;
                        st.row_fetches += 1;
                    }
                }
            }
            _ = tokio::time::sleep_until(due.into()), if dirty => {
                let t = Instant::now();
                let html = http.get(format!("{base}/ui/jobs?{view}")).send().await?.text().await?;
                took_ms = t.elapsed().as_secs_f64() * 1e3;
                st.table_ms_max = st.table_ms_max.max(took_ms);
                http.get(format!("{base}/ui/overview")).send().await?.bytes().await?;
                shown = row_keys(&html);
                st.table_fetches += 1;
                last = Instant::now();
                dirty = false;
            }
        }
    }
}

async fn busy(
    http: &reqwest::Client,
    base: &str,
    pid: u32,
    n: usize,
    view: &str,
    tck: f64,
) -> anyhow::Result<Busy> {
    eprintln!("[dashboard] busy: {n} jobs with no client ...");
    let (alone_cpu_s, alone_wall_s) = batch(http, base, pid, "alone", n, tck).await?;
    eprintln!("[dashboard] busy: {n} jobs with a page open ...");
    let stop = stop::Stop::default();
    let client = tokio::spawn(page_client(
        http.clone(),
        base.to_string(),
        view.to_string(),
        stop.clone(),
    ));
    // The page's first look, before the batch, as when a user opens it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (watched_cpu_s, watched_wall_s) = batch(http, base, pid, "watched", n, tck).await?;
    stop.fire();
    let page = client.await.context("page client task")??;
    Ok(Busy {
        jobs: n,
        view: view.to_string(),
        alone_cpu_s,
        alone_wall_s,
        watched_cpu_s,
        watched_wall_s,
        page,
    })
}

/// A one-shot stop signal for the page client.
mod stop {
    use std::sync::Arc;
    use tokio::sync::Notify;

    #[derive(Clone, Default)]
    pub struct Stop(Arc<(Notify, std::sync::atomic::AtomicBool)>);

    impl Stop {
        pub fn fire(&self) {
            self.0 .1.store(true, std::sync::atomic::Ordering::SeqCst);
            self.0 .0.notify_waiters();
        }
        pub async fn wait(&self) {
            loop {
                let n = self.0 .0.notified();
                if self.0 .1.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                n.await;
            }
        }
    }
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
    if let Some(b) = &f.busy {
        println!(
            "busy: {} jobs with no client: daemon CPU {:.2} s over {:.1} s; with a page open (/ui/jobs?{}): {:.2} s over {:.1} s ({:.2}x the CPU); the page got {} events, fetched changed rows {} times and the table (and overview) {} times, the slowest table {:.0} ms",
            b.jobs,
            b.alone_cpu_s,
            b.alone_wall_s,
            b.view,
            b.watched_cpu_s,
            b.watched_wall_s,
            b.watched_cpu_s / b.alone_cpu_s.max(1e-9),
            b.page.events,
            b.page.row_fetches,
            b.page.table_fetches,
            b.page.table_ms_max
        );
    }
}
