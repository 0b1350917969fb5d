//! The PostgreSQL store beside the sled store, in the same run and on the
//! same work: whole job lifecycles as the engine drives them (intake in
//! batches; claims of up to 64; each job acknowledged to `pending`, then
//! finished to `completed` with its charge settled; every step made
//! durable before the next, as dispatch and recording do), plain durable
//! transitions (the sled benchmark's shape), and what one permit of the
//! shared rate gate costs.
//!
//! Runs when `SWITCHYARD_BENCH_DATABASE_URL` names a server where the user
//! may create a database: the benchmark makes its own and drops it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_core::{Change, Gate, Job, JobSpec, JobState, LedgerOp, Patch};
use switchyard_store::{Claim, Lease, Owner, Permit, Store, StoreError};
use switchyard_store_postgres::{PgOptions, PgStore};
use switchyard_store_sled::SledStore;

pub const URL_VAR: &str = "SWITCHYARD_BENCH_DATABASE_URL";

/// Jobs per intake batch.
const BATCH: usize = 1000;
/// What a dispatcher claims at most at once (the engine's figure).
const CLAIM: usize = 64;
const PROVIDERS: [&str; 2] = ["ugen", "viggle"];

#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub jobs: usize,
    pub elapsed: Duration,
    /// Claims that moved at least one job.
    pub claims: u64,
}

impl Run {
    pub fn per_s(&self, n: usize) -> f64 {
        n as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Debug, Clone)]
pub struct PgFigures {
    pub workers: usize,
    pub pool: usize,
    pub sled_lifecycles: Run,
    pub pg_lifecycles: Run,
    pub sled_transitions: Run,
    pub pg_transitions: Run,
    /// Median and 99th percentile of one granted permit, and of one
    /// refused (a second statement reads how long to wait).
    pub permit_granted: (Duration, Duration),
    pub permit_refused: (Duration, Duration),
    /// Jobs in the database when counts were read, and the median of one
    /// `counts()` (folded totals plus deltas) beside the median of the
    /// `GROUP BY` over the jobs it saves.
    pub counts_jobs: usize,
    pub counts_store: Duration,
    pub counts_group_by: Duration,
}

fn spec(i: usize) -> JobSpec {
    JobSpec {
        key: format!("life-{i:07}"),
        provider: PROVIDERS[i % 2].into(),
        priority: (i % 3) as i32,
        params: serde_json::json!({"product_name": "Premium Wireless Headphones", "product_image_url": format!("https://example.com/{i}.jpg"), "segment_count": 3}),
        ..JobSpec::default()
    }
}

async fn ack_and_finish(store: &dyn Store, lease: &Lease, job: &Job) -> Result<(), StoreError> {
    let created = Change::to(JobState::Pending, "created").patch(Patch {
        provider_job_id: Some(Some(format!("prov-{}", job.key))),
        submitted_at: Some(Some("2026-12-01T00:00:00.000Z".into())),
        ..Patch::default()
    });
    store
        .apply_owned(lease, &job.key, JobState::Submitting, created)
        .await?;
    store.sync().await?;
    let done = Change::to(JobState::Completed, "completed")
        .ledger(LedgerOp::Settle { charged: 4 })
        .patch(Patch {
            output_urls: Some(vec![format!("https://cdn.example.com/{}.mp4", job.key)]),
            progress: Some(Some(100)),
            ..Patch::default()
        });
    store
        .apply_owned(lease, &job.key, JobState::Pending, done)
        .await?;
    store.sync().await
}

/// `jobs` whole lifecycles: one task takes batches in while `workers`
/// dispatchers claim and drive every claimed job through to the end,
/// each job of a claim in its own task, as the engine spawns its creates.
pub async fn lifecycles(
    store: Arc<dyn Store>,
    jobs: usize,
    workers: usize,
) -> Result<Run, StoreError> {
    let lease = store
        .renew(&Owner("bench".into()), Duration::from_secs(600))
        .await?;
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let intake = {
        let store = store.clone();
        tokio::spawn(async move {
            for first in (0..jobs).step_by(BATCH) {
                let batch = (first..(first + BATCH).min(jobs)).map(spec).collect();
                store.intake(batch).await?;
                store.sync().await?;
            }
            Ok::<_, StoreError>(())
        })
    };
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (store, lease, done) = (store.clone(), lease.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut claims = 0u64;
            let mut turn = w;
            while done.load(Ordering::Relaxed) < jobs {
                turn += 1;
                let provider = PROVIDERS[turn % PROVIDERS.len()];
                let c = store
                    .claim(Claim {
                        lease: &lease,
                        provider,
                        limit: CLAIM,
                        period: "total",
                        budget: Some(u64::MAX / 4),
                        admit: &|_: &Job| Some(5),
                        note: "claimed",
                        gate: None,
                        max_in_flight: None,
                    })
                    .await?;
                if c.jobs.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                claims += 1;
                store.sync().await?;
                let mut each = Vec::with_capacity(c.jobs.len());
                for job in c.jobs {
                    let (store, lease, done) = (store.clone(), lease.clone(), done.clone());
                    each.push(tokio::spawn(async move {
                        ack_and_finish(&*store, &lease, &job).await?;
                        done.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, StoreError>(())
                    }));
                }
                for t in each {
                    t.await
                        .map_err(|e| StoreError::Storage(format!("job task: {e}")))??;
                }
            }
            Ok::<_, StoreError>(claims)
        }));
    }
    intake
        .await
        .map_err(|e| StoreError::Storage(format!("intake task: {e}")))??;
    let mut claims = 0;
    for t in tasks {
        claims += t
            .await
            .map_err(|e| StoreError::Storage(format!("worker task: {e}")))??;
    }
    Ok(Run {
        jobs,
        elapsed: start.elapsed(),
        claims,
    })
}

/// The sled benchmark's shape: `writers` tasks, each moving its own jobs
/// one step at a time (read, change, sync).
pub async fn transitions(
    store: Arc<dyn Store>,
    jobs: usize,
    writers: usize,
    per_writer: usize,
) -> Result<Run, StoreError> {
    let specs: Vec<JobSpec> = (0..jobs)
        .map(|i| {
            let mut s = spec(i);
            s.key = format!("tr-{i:07}");
            s
        })
        .collect();
    for chunk in specs.chunks(10_000) {
        store.intake(chunk.to_vec()).await?;
    }
    store.sync().await?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            for i in 0..per_writer {
                let key = format!("tr-{:07}", (w + i * writers) % jobs);
                let Some(job) = store.get(&key).await? else {
                    continue;
                };
                let next = match job.state {
                    JobState::Queued => JobState::Submitting,
                    JobState::Submitting => JobState::Pending,
                    JobState::Pending => JobState::Processing,
                    JobState::Processing => JobState::Completed,
                    _ => continue,
                };
                store
                    .apply(&key, job.state, Change::to(next, "bench"))
                    .await?;
                store.sync().await?;
                n += 1;
            }
            Ok::<_, StoreError>(n)
        }));
    }
    let mut n = 0;
    for t in tasks {
        n += t
            .await
            .map_err(|e| StoreError::Storage(format!("writer task: {e}")))??;
    }
    Ok(Run {
        jobs: n,
        elapsed: start.elapsed(),
        claims: 0,
    })
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
    if v.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    (at(0.5), at(0.99))
}

async fn permits(
    store: &PgStore,
) -> Result<((Duration, Duration), (Duration, Duration)), StoreError> {
    let open = Gate {
        interval: Duration::from_micros(1),
        burst: 1_000_000,
    };
    let shut = Gate {
        interval: Duration::from_secs(3600),
        burst: 1,
    };
    let mut granted = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..500 {
        let t = Instant::now();
        if store.permit("bench-open", open).await? == Permit::Granted {
            granted.push(t.elapsed());
        }
        let t = Instant::now();
        if let Permit::Wait(_) = store.permit("bench-shut", shut).await? {
            refused.push(t.elapsed());
        }
    }
    Ok((percentiles(granted), percentiles(refused)))
}

/// `counts()` beside a `GROUP BY` over every job, with `more` queued jobs
/// added to what the store holds.
async fn counts_cost(
    store: &PgStore,
    url: &str,
    held: usize,
    more: usize,
) -> anyhow::Result<(usize, Duration, Duration)> {
    for first in (0..more).step_by(10_000) {
        let batch = (first..(first + 10_000).min(more))
            .map(|i| {
                let mut s = spec(i);
                s.key = format!("cnt-{i:07}");
                s
            })
            .collect();
        store.intake(batch).await?;
    }
    store.fold_counts().await?;
    let raw = admin(url).await?;
    let group_by = raw
        .prepare("SELECT provider, state, count(*) FROM jobs GROUP BY provider, state")
        .await?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..30 {
        let t = Instant::now();
        store.counts().await?;
        ours.push(t.elapsed());
        let t = Instant::now();
        raw.query(&group_by, &[]).await?;
        theirs.push(t.elapsed());
    }
    Ok((held + more, percentiles(ours).0, percentiles(theirs).0))
}

/// A scratch database on the server `admin_url` names, dropped on
/// `drop_db`.
struct Scratch {
    admin_url: String,
    name: String,
}

async fn admin(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to {URL_VAR}'s server: {e}"))?;
    tokio::spawn(conn);
    Ok(c)
}

impl Scratch {
    async fn create(admin_url: &str, tag: &str) -> anyhow::Result<Scratch> {
        let name = format!("switchyard_bench_{tag}_{}", std::process::id());
        let c = admin(admin_url).await?;
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
        c.batch_execute(&format!("CREATE DATABASE {name}")).await?;
        Ok(Scratch {
            admin_url: admin_url.to_string(),
            name,
        })
    }

    /// The URL with the scratch database in place of the admin one (URL
    /// form only).
    fn url(&self) -> String {
        let (base, query) = match self.admin_url.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (self.admin_url.as_str(), String::new()),
        };
        let after = base.find("://").map_or(0, |i| i + 3);
        let end = base[after..].find('/').map_or(base.len(), |i| after + i);
        format!("{}/{}{query}", &base[..end], self.name)
    }

    async fn drop_db(self) -> anyhow::Result<()> {
        admin(&self.admin_url)
            .await?
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await?;
        Ok(())
    }
}

/// Both stores on the same work, one after the other, each on fresh data.
pub async fn run(admin_url: &str, jobs: usize, workers: usize) -> anyhow::Result<PgFigures> {
    let pool = 24;
    let opts = PgOptions {
        pool_size: pool,
        application_name: "switchyard-bench".into(),
    };
    let (writers, per_writer) = (64, 200);

    let tmp = tempfile::tempdir()?;
    let sled: Arc<dyn Store> = Arc::new(SledStore::open(&tmp.path().join("life"))?);
    let sled_lifecycles = lifecycles(sled, jobs, workers).await?;
    let sled: Arc<dyn Store> = Arc::new(SledStore::open(&tmp.path().join("tr"))?);
    let sled_transitions = transitions(sled, 10_000, writers, per_writer).await?;

    let db = Scratch::create(admin_url, "life").await?;
    let pg = PgStore::connect(&db.url(), opts.clone()).await?;
    let pg_lifecycles = lifecycles(Arc::new(pg.clone()), jobs, workers).await?;
    let (permit_granted, permit_refused) = permits(&pg).await?;
    let (counts_jobs, counts_store, counts_group_by) =
        counts_cost(&pg, &db.url(), jobs, 100_000usize.saturating_sub(jobs)).await?;
    drop(pg);
    db.drop_db().await?;
    let db = Scratch::create(admin_url, "tr").await?;
    let pg = PgStore::connect(&db.url(), opts).await?;
    let pg_transitions = transitions(Arc::new(pg.clone()), 10_000, writers, per_writer).await?;
    drop(pg);
    db.drop_db().await?;
    Ok(PgFigures {
        workers,
        pool,
        sled_lifecycles,
        pg_lifecycles,
        sled_transitions,
        pg_transitions,
        permit_granted,
        permit_refused,
        counts_jobs,
        counts_store,
        counts_group_by,
    })
}

pub fn print(f: &PgFigures) {
    let ratio = |pg: &Run, sled: &Run| pg.per_s(pg.jobs) / sled.per_s(sled.jobs).max(1e-9);
    println!(
        "PostgreSQL store beside sled (this machine, same run; {} dispatchers, pool of {})",
        f.workers, f.pool
    );
    println!(
        "  job lifecycles (intake, claim <= {CLAIM}, pending, completed + settle; durable each step): postgres {:>7.0} /s ({} in {:.2} s, {} claims) | sled {:>7.0} /s | ratio {:.2}x (goal >= 4000/s)",
        f.pg_lifecycles.per_s(f.pg_lifecycles.jobs),
        f.pg_lifecycles.jobs,
        f.pg_lifecycles.elapsed.as_secs_f64(),
        f.pg_lifecycles.claims,
        f.sled_lifecycles.per_s(f.sled_lifecycles.jobs),
        ratio(&f.pg_lifecycles, &f.sled_lifecycles),
    );
    println!(
        "  state changes in those lifecycles: postgres {:>7.0} /s | sled {:>7.0} /s",
        f.pg_lifecycles.per_s(3 * f.pg_lifecycles.jobs),
        f.sled_lifecycles.per_s(3 * f.sled_lifecycles.jobs),
    );
    println!(
        "  durable transitions (64 writers, read + change + sync): postgres {:>7.0} /s | sled {:>7.0} /s | ratio {:.2}x",
        f.pg_transitions.per_s(f.pg_transitions.jobs),
        f.sled_transitions.per_s(f.sled_transitions.jobs),
        ratio(&f.pg_transitions, &f.sled_transitions),
    );
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "  one permit of the shared gate: granted p50 {:.0} us, p99 {:.0} us (one statement); refused p50 {:.0} us, p99 {:.0} us (two)",
        us(f.permit_granted.0),
        us(f.permit_granted.1),
        us(f.permit_refused.0),
        us(f.permit_refused.1),
    );
    println!(
        "  counts() at {} jobs: {:.0} us (totals + unfolded changes) | GROUP BY over the jobs: {:.0} us | ratio {:.2}x",
        f.counts_jobs,
        us(f.counts_store),
        us(f.counts_group_by),
        us(f.counts_store) / us(f.counts_group_by).max(1e-9),
    );
}
