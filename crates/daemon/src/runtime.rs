//! The daemon's moving parts: one dispatcher per provider (so a provider held
//! by its rate, budget or a 402 never holds up the others), one poll
//! scheduler with a timer queue for every live job, and the submit and poll
//! tasks they start. Every state change goes through the store's checked
//! transitions; a transition that precedes a request to a provider is made
//! durable first, so a crash can never lose track of a sent create call.

use crate::config::{Budget, Config, PollConfig, ProviderConfig, RateLimit};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hashbrown::HashTable;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use switchyard_core::poll::{PollPlan, PollPolicy};
use switchyard_core::{
    Change, Filter, HeldBy, Job, JobError, JobState, LedgerOp, SledStore, Store, StoreError,
};
use switchyard_provider::{Lookup, Provider, ProviderError, RemoteState, RemoteStatus};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::time::{delay_queue, DelayQueue};

/// Limits that SIGHUP may change while jobs run.
#[derive(Debug)]
pub struct Limits {
    pub rate_limit: RateLimit,
    pub limiter: Arc<DefaultDirectRateLimiter>,
    pub max_in_flight: u32,
    pub budget: Option<Budget>,
    pub poll: PollConfig,
    pub max_attempts: u32,
}

impl Limits {
    pub fn from_config(cfg: &ProviderConfig) -> Limits {
        Limits {
            rate_limit: cfg.rate_limit,
            limiter: Arc::new(RateLimiter::direct(quota(&cfg.rate_limit, 1.0))),
            max_in_flight: cfg.max_in_flight,
            budget: cfg.budget.clone(),
            poll: cfg.poll.clone(),
            max_attempts: cfg.max_attempts,
        }
    }
}

/// GCRA quota from the config; no limit configured means a generous default
/// (50/s) rather than none, so a missing line cannot flood a provider.
///
/// The provider measures our requests on arrival, and arrivals can bunch up
/// relative to departures (scheduling, network). So the limiter keeps a
/// margin: with a burst of 2 or more, one burst slot stays in reserve (a
/// late request followed by an on-time one still fits the provider's
/// tolerance); with a burst of 1, the interval is stretched by 5 %.
pub fn quota(rl: &RateLimit, factor: f64) -> Quota {
    let factor = factor.clamp(MIN_THROTTLE, 1.0);
    // A provider that answered 429 has shown it is stricter than the config
    // says, burst included: while throttled, no bursts at all.
    let burst = if factor < 1.0 {
        1
    } else {
        rl.burst.unwrap_or(1).max(1)
    };
    let mut interval = configured_interval(rl).div_f64(factor);
    let kept = if burst >= 2 {
        burst - 1
    } else {
        interval = interval.mul_f64(1.05);
        1
    };
    let nz = NonZeroU32::new(kept).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(interval.max(Duration::from_micros(1)))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(nz)
}

/// The interval between two requests at the configured rate (50/s when
/// none is configured).
fn configured_interval(rl: &RateLimit) -> Duration {
    match (rl.per_second, rl.per_minute) {
        (Some(s), _) => Duration::from_secs(1) / s.max(1),
        (None, Some(m)) => Duration::from_secs(60) / m.max(1),
        (None, None) => Duration::from_secs(1) / 50,
    }
}

/// The lowest share of the configured rate the daemon throttles down to.
const MIN_THROTTLE: f64 = 1.0 / 64.0;

/// Counters shown by `providers` and `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub creates: AtomicU64,
    pub polls: AtomicU64,
    pub rate_limited: AtomicU64,
    pub retries: AtomicU64,
    pub errors: AtomicU64,
    pub webhooks: AtomicU64,
}

/// One configured provider at run time.
#[derive(Debug)]
pub struct ProviderRt {
    pub name: String,
    pub adapter: Arc<dyn Provider>,
    pub limits: RwLock<Limits>,
    cooldown_until: Mutex<Option<Instant>>,
    consecutive_429: AtomcU32,
    /// Share of the configured rate in use: halved when the provider answers
    /// 429 (it is stricter than the config says), raised again by a fifth
    /// every 20 good answers. Additive-increase would be slower to recover;
    /// this keeps a storm short and throughput near the provider's limit.
    throttle: Mutex<Throttle>,
    /// Set by a 402; cleared by a config reload.
    pub paused: AtomicBool,
    pub in_flight: AtomicUsize,
    pub wake: Notify,
    pub counters: Counters,
    /// Why the head of this provider's queue waits, if it does. Every queued
    /// job waits behind the head (priority, then FIFO), so this one value is
    /// what `held_by` shows for all of them: derived, never stored.
    hold: Mutex<Option<HeldBy>>,
    /// Status requests in flight at once (see [`POLLS_IN_FLIGHT`]).
    polls: tokio::sync::Semaphore,
}

/// At most this many status requests to one provider at once; more wait
/// their turn (before the rate limiter, so a waiting poll holds no
/// connection).
///
/// Why: polls due within one tick go out together. With 100,000 jobs on a
/// 60 s cycle that was 2,000 requests at once, each on its own keep-alive
/// connection with its buffers (resident memory +38 MB after the first
/// round of polls). 128 at once still serves 7,680 polls a minute to a
/// provider that takes a second to answer.
const POLLS_IN_FLIGHT: usize = 128;

type AtomcU32 = std::sync::atomic::AtomicU32;

#[derive(Debug)]
struct Throttle {
    factor: f64,
    good: u32,
    last_cut: Option<Instant>,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere while holding it; the
    // limits inside are plain values that are always consistent.
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ProviderRt {
    pub fn cooldown_remaining(&self) -> Option<Duration> {
        let until = (*lock(&self.cooldown_until))?;
        let now = Instant::now();
        (until > now).then(|| until - now)
    }

    /// Rebuilds the limiter at `factor` of the configured rate.
    fn set_rate_factor(&self, factor: f64) {
        let mut l = self.limits.write().unwrap_or_else(|e| e.into_inner());
        l.limiter = Arc::new(RateLimiter::direct(quota(&l.rate_limit, factor)));
    }

    fn cool_down(&self, retry_after: Option<Duration>) {
        {
            // The requests already in flight when the first 429 arrives get
            // 429s too; they are one signal, not several.
            let mut t = lock(&self.throttle);
            t.good = 0;
            let recent = t
                .last_cut
                .is_some_and(|c| c.elapsed() < Duration::from_secs(1));
            if !recent && t.factor > MIN_THROTTLE {
                t.factor = (t.factor / 2.0).max(MIN_THROTTLE);
                t.last_cut = Some(Instant::now());
                let f = t.factor;
                drop(t);
                self.set_rate_factor(f);
                tracing::info!(provider = %self.name, share = f, "provider is stricter than the configured rate: throttling down");
            }
        }
        let n = self.consecutive_429.fetch_add(1, Ordering::Relaxed).min(6);
        let wait = retry_after.unwrap_or_else(|| {
            let base = Duration::from_secs(1u64 << n);
            base + jitter(base / 4)
        });
        let until = Instant::now() + wait;
        let mut cd = lock(&self.cooldown_until);
        if cd.is_none_or(|t| t < until) {
            *cd = Some(until);
        }
        tracing::warn!(provider = %self.name, wait_ms = wait.as_millis() as u64, "provider answered 429: cooling down");
    }

    /// Waits for the provider's cool-down and a rate permit. Every request
    /// to the provider passes here. False if shutdown came first.
    pub async fn permit(&self, cancel: &CancellationToken) -> bool {
        loop {
            if let Some(wait) = self.cooldown_remaining() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cancel.cancelled() => return false,
                }
                continue;
            }
            let limiter = read(&self.limits).limiter.clone();
            tokio::select! {
                _ = limiter.until_ready() => {}
                _ = cancel.cancelled() => return false,
            }
            // A 429 while we waited replaced the limiter with a slower one:
            // a permit from the old one does not count.
            let current = Arc::ptr_eq(&limiter, &read(&self.limits).limiter);
            if current && self.cooldown_remaining().is_none() {
                self.counters.requests.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
    }

    /// The interval between two permits at the rate now in use.
    fn slot(&self) -> Duration {
        let factor = lock(&self.throttle).factor;
        configured_interval(&read(&self.limits).rate_limit).div_f64(factor.clamp(MIN_THROTTLE, 1.0))
    }

    /// Gives back an in-flight slot; never wraps below zero.
    fn release_slot(&self) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
    }

    pub fn hold(&self) -> Option<HeldBy> {
        *lock(&self.hold)
    }

    fn set_hold(&self, why: Option<HeldBy>) {
        *lock(&self.hold) = why;
    }

    fn ok_answer(&self) {
        self.consecutive_429.store(0, Ordering::Relaxed);
        let mut t = lock(&self.throttle);
        if t.factor < 1.0 {
            t.good += 1;
            if t.good >= 20 {
                t.good = 0;
                t.factor = (t.factor * 1.2).min(1.0);
                let f = t.factor;
                drop(t);
                self.set_rate_factor(f);
            }
        }
    }
}

fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return max;
    }
    Duration::from_millis(rand::thread_rng().gen_range(0..=max.as_millis() as u64))
}

/// Messages to the poll scheduler.
#[derive(Debug)]
enum Sched {
    /// `elapsed`: time since the provider acknowledged the create.
    Track {
        key: String,
        provider: String,
        provider_job_id: String,
        state: JobState,
        elapsed: Duration,
    },
    /// A webhook named this job: poll it now (`verified`) or soon.
    Due {
        provider: String,
        provider_job_id: String,
        verified: bool,
    },
    Polled {
        key: String,
        done: bool,
        progress: Option<u8>,
        /// The job's state after the poll, where the store changed it.
        state: Option<JobState>,
        /// `Some(report)`: what the provider said, not written to the store;
        /// `Some(None)`: the store has the latest; `None`: nothing learned.
        live: Option<Option<LiveReport>>,
    },
    /// The live reports of these tracked jobs.
    Peek {
        keys: Vec<String>,
        reply: tokio::sync::oneshot::Sender<HashMap<String, LiveReport>>,
    },
    Untrack {
        key: String,
    },
}

/// What a poll learned that changed nothing but progress: kept with the
/// job's poll schedule, not in the store.
///
/// Why: a job in `processing` reports new progress at nearly every poll.
/// Writing each report durably cost a store write per poll and, worse,
/// sled's log cleaning after it (measured: two thirds of the daemon's CPU
/// with 10,000 jobs polled each minute). Progress is worth nothing after a
/// restart (the next poll reports it again), so it lives here and is merged
/// into the job as the API shows it; state changes, provider ids, outputs
/// and errors still go to the store before anything acts on them.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveReport {
    pub progress: Option<u8>,
    pub stage: Option<Arc<str>>,
    pub provider_status: Arc<str>,
}

impl LiveReport {
    /// Shows the report on `job` (a no-op for a job no longer live).
    pub fn apply_to(&self, job: &mut Job) {
        if !job.state.is_live() {
            return;
        }
        if self.progress.is_some() {
            job.progress = self.progress;
        }
        if let Some(stage) = &self.stage {
            job.stage = Some(stage.to_string());
        }
        job.provider_status = Some(self.provider_status.to_string());
    }
}

pub struct Runtime {
    pub store: SledStore,
    pub providers: BTreeMap<String, Arc<ProviderRt>>,
    /// Stops dispatch and polling (SIGTERM).
    pub cancel: CancellationToken,
    /// Submit and poll tasks, awaited (bounded) on shutdown.
    pub tracker: TaskTracker,
    sched: mpsc::UnboundedSender<Sched>,
    /// Present when `daemon.output_dir` is set.
    pub downloads: Option<Arc<crate::results::Downloader>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// Opens the store, builds the adapters and starts every task.
    pub fn start(cfg: &Config, cancel: CancellationToken) -> anyhow::Result<Arc<Runtime>> {
        use anyhow::Context;
        std::fs::create_dir_all(&cfg.daemon.data_dir)
            .with_context(|| format!("creating data_dir {}", cfg.daemon.data_dir.display()))?;
        let store = SledStore::open(&cfg.daemon.data_dir.join("db"))?;
        let client = switchyard_provider::default_client(cfg.daemon.request_timeout)?;
        let mut providers = BTreeMap::new();
        for (name, pc) in &cfg.providers {
            let settings = switchyard_provider::Settings {
                base_url: pc.base_url(),
                api_key: pc.api_key()?,
                webhook_secret: pc.webhook_secret()?,
            };
            if settings.api_key.is_none() {
                tracing::warn!(provider = %name, "no API key configured (api_key_env / api_key_file)");
            }
            let adapter = switchyard_provider::build(pc.kind, settings, client.clone());
            providers.insert(
                name.clone(),
                Arc::new(ProviderRt {
                    name: name.clone(),
                    adapter,
                    limits: RwLock::new(Limits::from_config(pc)),
                    cooldown_until: Mutex::new(None),
                    consecutive_429: AtomcU32::new(0),
                    throttle: Mutex::new(Throttle {
                        factor: 1.0,
                        good: 0,
                        last_cut: None,
                    }),
                    paused: AtomicBool::new(false),
                    in_flight: AtomicUsize::new(0),
                    wake: Notify::new(),
                    counters: Counters::default(),
                    hold: Mutex::new(None),
                    polls: tokio::sync::Semaphore::new(POLLS_IN_FLIGHT),
                }),
            );
        }
        let downloads = match &cfg.daemon.output_dir {
            Some(dir) => Some(Arc::new(crate::results::Downloader::new(dir.clone(), 4)?)),
            None => None,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let rt = Arc::new(Runtime {
            downloads,
            store,
            providers,
            cancel,
            tracker: TaskTracker::new(),
            sched: tx,
        });
        tokio::spawn(scheduler(rt.clone(), rx));
        rt.recover()?;
        for p in rt.providers.values() {
            tokio::spawn(dispatch_loop(rt.clone(), p.clone()));
        }
        Ok(rt)
    }

    /// After a restart: live jobs are polled again, jobs caught between
    /// sending a create and recording its answer are reconciled.
    fn recover(self: &Arc<Self>) -> Result<(), StoreError> {
        let live = [
            JobState::Submitting,
            JobState::Pending,
            JobState::Processing,
        ];
        for state in live {
            for job in self.store.list(&Filter {
                state: Some(state),
                provider: None,
            })? {
                let Some(p) = self.providers.get(&job.provider) else {
                    continue;
                };
                p.in_flight.fetch_add(1, Ordering::Relaxed);
                if state == JobState::Submitting {
                    let rt = self.clone();
                    let p = p.clone();
                    self.tracker
                        .spawn(async move { rt.reconcile(p, job).await });
                } else if let Some(id) = job.provider_job_id.clone() {
                    self.track(&job, &id);
                }
            }
        }
        // Downloads cut by the stop resume in the background: finding them
        // means reading every completed job, which must not delay dispatch.
        if self.downloads.is_some() {
            let rt = self.clone();
            tokio::spawn(async move {
                let done = rt.store.list(&Filter {
                    state: Some(JobState::Completed),
                    provider: None,
                });
                for job in done.into_iter().flatten() {
                    if job.output_files.is_empty() && !job.output_urls.is_empty() {
                        rt.download(&job);
                    }
                }
            });
        }
        Ok(())
    }

    async fn reconcile(self: Arc<Self>, p: Arc<ProviderRt>, job: Job) {
        if p.adapter.idempotent_create() {
            tracing::info!(key = %job.key, provider = %p.name, "resending create after restart (the provider deduplicates by key)");
            self.submit(p, job, None).await;
            return;
        }
        let found = if p.permit(&self.cancel).await {
            p.adapter.find_by_key(&job.key, &job.params).await
        } else {
            return;
        };
        match found {
            Ok(Lookup::Found(st)) => {
                tracing::info!(key = %job.key, id = %st.provider_job_id, "found the job at the provider after restart");
                self.record(&p, &job.key, JobState::Submitting, st).await;
            }
            Ok(Lookup::NotFound) => {
                tracing::info!(key = %job.key, "the provider never received the create: queued again");
                self.requeue(
                    &p,
                    &job.key,
                    "not found at the provider after restart",
                    None,
                )
                .await;
            }
            Ok(Lookup::Unsupported) | Err(_) => {
                let why = match found {
                    Err(e) => format!("could not ask the provider after a restart: {e}"),
                    _ => "the daemon stopped after sending the create call and the provider cannot be asked whether it arrived".into(),
                };
                let err = JobError::new("uncertain", why.clone());
                let edit = move |j: &mut Job| j.error = Some(err.clone());
                if let Err(e) = self.store.apply(
                    &job.key,
                    JobState::Submitting,
                    Change::to(JobState::Uncertain, why).edit(&edit),
                ) {
                    tracing::error!(key = %job.key, "marking uncertain: {e}");
                }
                let _ = self.store.sync().await;
                p.release_slot();
                p.wake.notify_one();
            }
        }
    }

    /// Starts the download of a completed job's outputs, if configured.
    fn download(&self, job: &Job) {
        if let Some(d) = self.downloads.clone() {
            let store = self.store.clone();
            let job = job.clone();
            self.tracker
                .spawn(async move { d.fetch_job(&store, &job).await });
        }
    }

    fn track(&self, job: &Job, provider_job_id: &str) {
        let _ = self.sched.send(Sched::Track {
            key: job.key.clone(),
            provider: job.provider.clone(),
            provider_job_id: provider_job_id.into(),
            state: job.state,
            elapsed: since_submitted(job),
        });
    }

    /// A webhook arrived for this job.
    pub fn due(&self, provider: &str, provider_job_id: &str, verified: bool) {
        let _ = self.sched.send(Sched::Due {
            provider: provider.into(),
            provider_job_id: provider_job_id.into(),
            verified,
        });
    }

    /// Shows on these jobs, as the API answers them, the progress reports
    /// kept with the poll schedule (see [`LiveReport`]); asks only for the
    /// live ones among them, not for every tracked job.
    pub async fn show_live(&self, jobs: &mut [Job]) {
        let keys: Vec<String> = jobs
            .iter()
            .filter(|j| j.state.is_live())
            .map(|j| j.key.clone())
            .collect();
        if keys.is_empty() {
            return;
        }
        let (reply, rx) = tokio::sync::oneshot::channel();
        if self.sched.send(Sched::Peek { keys, reply }).is_err() {
            return;
        }
        let live = rx.await.unwrap_or_default();
        for j in jobs {
            if let Some(r) = live.get(&j.key) {
                r.apply_to(j);
            }
        }
    }

    pub fn wake_all(&self) {
        for p in self.providers.values() {
            p.wake.notify_one();
        }
    }

    /// Sends the create call for a job already moved to `submitting` (and
    /// flushed), retrying transient failures within `max_attempts`.
    /// `permit_at`: when the dispatcher took this request's rate permit (it
    /// moves a job to `submitting` only with a permit in hand, so a crash
    /// finds few jobs there whose create was never sent). A permit older than
    /// half a rate slot (a slow flush) is dropped and a fresh one taken: the
    /// provider must see the spacing the limiter made.
    async fn submit(self: Arc<Self>, p: Arc<ProviderRt>, job: Job, permit_at: Option<Instant>) {
        let mut attempt = job.attempts.max(1);
        let mut have_permit = permit_at.is_some_and(|t| t.elapsed() <= p.slot() / 2);
        loop {
            if !have_permit && !p.permit(&self.cancel).await {
                return; // shutdown: the job stays `submitting`; restart reconciles it
            }
            have_permit = false;
            p.counters.creates.fetch_add(1, Ordering::Relaxed);
            let res = p.adapter.create(&job.key, &job.params).await;
            match res {
                Ok(st) => {
                    p.ok_answer();
                    self.record(&p, &job.key, JobState::Submitting, st).await;
                    return;
                }
                Err(ProviderError::RateLimited { retry_after }) => {
                    p.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                    p.cool_down(retry_after);
                    self.requeue(
                        &p,
                        &job.key,
                        "provider rate limit (429)",
                        Some(HeldBy::Rate),
                    )
                    .await;
                    return;
                }
                Err(ProviderError::InsufficientCredits(msg)) => {
                    p.paused.store(true, Ordering::Relaxed);
                    tracing::error!(provider = %p.name, "provider reports insufficient credits (402): dispatch paused until the config is reloaded: {msg}");
                    self.requeue(
                        &p,
                        &job.key,
                        "provider has no credits left (402)",
                        Some(HeldBy::Paused),
                    )
                    .await;
                    return;
                }
                Err(e @ (ProviderError::Transient(_) | ProviderError::Unavailable(_))) => {
                    p.counters.errors.fetch_add(1, Ordering::Relaxed);
                    let max = read(&p.limits).max_attempts;
                    // `Unavailable`: the provider certainly did not act on it.
                    let maybe_created = matches!(e, ProviderError::Transient(_));
                    let msg = e.to_string();
                    if maybe_created && !p.adapter.idempotent_create() {
                        // The create may have arrived: ask before sending again.
                        if !p.permit(&self.cancel).await {
                            return;
                        }
                        match p.adapter.find_by_key(&job.key, &job.params).await {
                            Ok(Lookup::Found(st)) => {
                                self.record(&p, &job.key, JobState::Submitting, st).await;
                                return;
                            }
                            Ok(Lookup::NotFound) => {}
                            _ => {
                                self.uncertain(&p, &job.key, &msg).await;
                                return;
                            }
                        }
                    }
                    if attempt >= max {
                        let err =
                            JobError::new("transient", format!("{msg} (after {attempt} attempts)"));
                        self.fail(&p, &job.key, JobState::Submitting, err).await;
                        return;
                    }
                    p.counters.retries.fetch_add(1, Ordering::Relaxed);
                    let backoff = backoff(attempt);
                    tracing::info!(key = %job.key, attempt, backoff_ms = backoff.as_millis() as u64, "transient error on create, retrying: {msg}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.cancel.cancelled() => return,
                    }
                    attempt += 1;
                    let edit = move |j: &mut Job| j.attempts = attempt;
                    let _ = self.store.apply(
                        &job.key,
                        JobState::Submitting,
                        Change::to(JobState::Submitting, "").edit(&edit),
                    );
                    if self.store.sync().await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    p.counters.errors.fetch_add(1, Ordering::Relaxed);
                    let err = error_of(&e);
                    self.fail(&p, &job.key, JobState::Submitting, err).await;
                    return;
                }
            }
        }
    }

    async fn uncertain(&self, p: &ProviderRt, key: &str, why: &str) {
        let err = JobError::new("uncertain", format!("create answered with a transient error ({why}) and the provider cannot be asked whether the job exists"));
        let edit = move |j: &mut Job| j.error = Some(err.clone());
        if let Err(e) = self.store.apply(
            key,
            JobState::Submitting,
            Change::to(JobState::Uncertain, why).edit(&edit),
        ) {
            tracing::error!(%key, "marking uncertain: {e}");
        }
        let _ = self.store.sync().await;
        p.release_slot();
        p.wake.notify_one();
    }

    /// Back to the queue: the provider did not keep the create.
    async fn requeue(&self, p: &ProviderRt, key: &str, why: &str, held: Option<HeldBy>) {
        if held.is_some() {
            p.set_hold(held);
        }
        let edit = move |j: &mut Job| j.attempts = j.attempts.saturating_sub(1);
        let change = Change::to(JobState::Queued, why)
            .ledger(LedgerOp::Release)
            .edit(&edit);
        if let Err(e) = self.store.apply(key, JobState::Submitting, change) {
            tracing::error!(%key, "requeue: {e}");
        }
        let _ = self.store.sync().await;
        p.release_slot();
        p.wake.notify_one();
    }

    async fn fail(&self, p: &ProviderRt, key: &str, from: JobState, err: JobError) {
        tracing::warn!(%key, code = %err.code, "job failed: {}", err.message);
        let note = format!("{}: {}", err.code, err.message);
        let edit = move |j: &mut Job| j.error = Some(err.clone());
        let change = Change::to(JobState::Failed, note)
            .ledger(LedgerOp::Release)
            .edit(&edit);
        match self.store.apply(key, from, change) {
            Ok(_) => {
                p.release_slot();
            }
            Err(e) => tracing::error!(%key, "recording failure: {e}"),
        }
        let _ = self.store.sync().await;
        let _ = self.sched.send(Sched::Untrack { key: key.into() });
        p.wake.notify_one();
    }

    /// Records what the provider said about a job in state `from`. Returns
    /// the job's new state, or `None` if the store refused (e.g. the job was
    /// cancelled meanwhile).
    async fn record(
        &self,
        p: &ProviderRt,
        key: &str,
        from: JobState,
        st: RemoteStatus,
    ) -> Option<JobState> {
        let to: JobState = st.state.into();
        let ledger = if to.is_terminal() {
            let charged = st.credits_charged;
            let refunded = st.credits_refunded.unwrap_or(0);
            match (to, charged) {
                (JobState::Completed, c) => {
                    // Without a reported charge, the estimate is the best fact.
                    let c = c.unwrap_or(u64::MAX);
                    LedgerOp::Settle {
                        charged: c.saturating_sub(refunded),
                    }
                }
                (_, Some(c)) if c > refunded => LedgerOp::Settle {
                    charged: c - refunded,
                },
                _ => LedgerOp::Release,
            }
        } else {
            LedgerOp::None
        };
        let note = match &st.error {
            Some(e) => format!("{} ({}: {})", st.raw_status, e.code, e.message),
            None => st.raw_status.clone(),
        };
        let st2 = st.clone();
        let acknowledged = matches!(from, JobState::Submitting | JobState::Uncertain)
            .then(switchyard_core::model::now_rfc3339);
        let edit = move |j: &mut Job| {
            if acknowledged.is_some() {
                j.submitted_at.clone_from(&acknowledged);
            }
            j.provider_job_id = Some(st2.provider_job_id.clone());
            j.provider_status = Some(st2.raw_status.clone());
            if st2.progress.is_some() {
                j.progress = st2.progress;
            }
            if st2.state == RemoteState::Completed {
                j.progress = Some(100);
            }
            if st2.stage.is_some() {
                j.stage = st2.stage.clone();
            }
            if !st2.output_urls.is_empty() {
                j.output_urls = st2.output_urls.clone();
            }
            if st2.error.is_some() {
                j.error = st2.error.clone();
            }
        };
        // Settle with an unknown charge uses the reservation: resolve it here
        // where the job is known.
        let ledger = match ledger {
            LedgerOp::Settle { charged: u64::MAX } => match self.store.get(key) {
                Ok(Some(j)) => LedgerOp::Settle {
                    charged: j.credits_reserved,
                },
                _ => LedgerOp::Release,
            },
            other => other,
        };
        let change = Change::to(to, note).ledger(ledger).edit(&edit);
        match self.store.apply(key, from, change) {
            Ok(job) => {
                if from == JobState::Submitting || to != from {
                    let _ = self.store.sync().await;
                }
                if job.state.is_terminal() {
                    p.release_slot();
                    p.wake.notify_one();
                    tracing::info!(%key, state = %job.state, "job finished");
                    if job.state == JobState::Completed && !job.output_urls.is_empty() {
                        self.download(&job);
                    }
                } else if from == JobState::Submitting || from == JobState::Uncertain {
                    self.track(&job, &st.provider_job_id);
                }
                Some(job.state)
            }
            Err(StoreError::StateMismatch { .. }) => None,
            Err(e) => {
                tracing::error!(%key, "recording status: {e}");
                None
            }
        }
    }

    /// One poll of one job in `state`, acknowledged `elapsed` ago; reports
    /// back to the scheduler.
    async fn poll(
        self: Arc<Self>,
        key: String,
        provider: String,
        id: String,
        state: JobState,
        elapsed: Duration,
    ) {
        let Some(p) = self.providers.get(&provider).cloned() else {
            return;
        };
        let polled =
            |progress: Option<u8>, done: bool, state: Option<JobState>, live| Sched::Polled {
                key: key.clone(),
                done,
                progress,
                state,
                live,
            };
        let timeout = read(&p.limits).poll.timeout;
        if elapsed > timeout {
            // Rare: read the store rather than trust the schedule's copy.
            let job = match self.store.get(&key) {
                Ok(Some(j)) if j.state.is_live() => j,
                _ => {
                    let _ = self.sched.send(polled(None, true, None, None));
                    return;
                }
            };
            if p.permit(&self.cancel).await {
                let _ = p.adapter.cancel(&id).await;
            }
            let err = JobError::new(
                "timeout",
                format!(
                    "no result within the provider's poll timeout of {}",
                    humantime::format_duration(timeout)
                ),
            );
            self.fail(&p, &key, job.state, err).await;
            let _ = self.sched.send(polled(None, true, None, None));
            return;
        }
        let turn = tokio::select! {
            turn = p.polls.acquire() => turn,
            _ = self.cancel.cancelled() => return,
        };
        if !p.permit(&self.cancel).await {
            return;
        }
        p.counters.polls.fetch_add(1, Ordering::Relaxed);
        let answer = p.adapter.status(&id).await;
        drop(turn);
        match answer {
            Ok(st) => {
                p.ok_answer();
                let progress = st.progress;
                // Nothing the store keeps changed: remember the report with
                // the schedule instead of writing it.
                let to: JobState = st.state.into();
                if to == state
                    && matches!(to, JobState::Pending | JobState::Processing)
                    && st.error.is_none()
                    && st.output_urls.is_empty()
                    && st.provider_job_id == id
                {
                    let live = LiveReport {
                        progress: st.progress,
                        stage: st.stage.map(Arc::from),
                        provider_status: Arc::from(st.raw_status),
                    };
                    let _ = self
                        .sched
                        .send(polled(progress, false, None, Some(Some(live))));
                    return;
                }
                let new = self.record(&p, &key, state, st).await;
                let finished = new.is_none_or(|s| !s.is_live());
                let _ = self.sched.send(polled(progress, finished, new, Some(None)));
            }
            Err(ProviderError::RateLimited { retry_after }) => {
                p.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                p.cool_down(retry_after);
                let _ = self.sched.send(polled(None, false, None, None));
            }
            Err(e) => {
                p.counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%key, "poll failed: {e}");
                let _ = self.sched.send(polled(None, false, None, None));
            }
        }
    }

    /// User cancel: queued and uncertain jobs locally, live ones at the
    /// provider (whose rules apply).
    pub async fn cancel_job(&self, key: &str) -> Result<Job, ApiError> {
        let job = self
            .store
            .get(key)?
            .ok_or_else(|| ApiError::not_found(key))?;
        let p = self.providers.get(&job.provider).cloned();
        match job.state {
            JobState::Queued | JobState::Uncertain => {
                let j = self.store.apply(
                    key,
                    job.state,
                    Change::to(JobState::Cancelled, "cancelled by user").ledger(LedgerOp::Release),
                )?;
                self.store.sync().await?;
                if job.state == JobState::Uncertain {
                    if let Some(p) = &p {
                        p.wake.notify_one();
                    }
                }
                Ok(j)
            }
            JobState::Pending | JobState::Processing => {
                let (Some(p), Some(id)) = (p, job.provider_job_id.clone()) else {
                    return Err(ApiError::conflict("job has no provider id to cancel"));
                };
                if !p.permit(&self.cancel).await {
                    return Err(ApiError::unavailable("shutting down"));
                }
                match p.adapter.cancel(&id).await {
                    Ok(mut st) => {
                        if st.state != RemoteState::Cancelled {
                            st.state = RemoteState::Cancelled;
                        }
                        self.record(&p, key, job.state, st).await;
                        let _ = self.sched.send(Sched::Untrack { key: key.into() });
                        Ok(self
                            .store
                            .get(key)?
                            .ok_or_else(|| ApiError::not_found(key))?)
                    }
                    Err(e @ (ProviderError::Conflict { .. } | ProviderError::Unsupported(_))) => {
                        Err(ApiError::conflict(&format!(
                            "the provider refused to cancel: {e}"
                        )))
                    }
                    Err(e) => Err(ApiError::bad_gateway(&e.to_string())),
                }
            }
            JobState::Submitting => Err(ApiError::conflict(
                "the job is being submitted; try again in a moment",
            )),
            s => Err(ApiError::conflict(&format!("the job is already {s}"))),
        }
    }

    /// User retry: failed and uncertain jobs go back to the queue.
    pub async fn retry_job(&self, key: &str) -> Result<Job, ApiError> {
        let job = self
            .store
            .get(key)?
            .ok_or_else(|| ApiError::not_found(key))?;
        if !matches!(job.state, JobState::Failed | JobState::Uncertain) {
            return Err(ApiError::conflict(&format!(
                "only failed or uncertain jobs can be retried; this one is {}",
                job.state
            )));
        }
        let edit = |j: &mut Job| {
            j.error = None;
            j.provider_job_id = None;
            j.provider_status = None;
            j.progress = None;
            j.stage = None;
            j.attempts = 0;
        };
        let j = self.store.apply(
            key,
            job.state,
            Change::to(JobState::Queued, "retried by user")
                .ledger(LedgerOp::Release)
                .edit(&edit),
        )?;
        self.store.sync().await?;
        // An uncertain job already gave back its in-flight slot.
        if let Some(p) = self.providers.get(&job.provider) {
            p.wake.notify_one();
        }
        Ok(j)
    }

    /// SIGHUP: new limits, budgets and polling settings for known providers.
    pub fn reload(&self, cfg: &Config) {
        for (name, pc) in &cfg.providers {
            match self.providers.get(name) {
                Some(p) => {
                    let mut l = p.limits.write().unwrap_or_else(|e| e.into_inner());
                    let new = Limits::from_config(pc);
                    let limiter = if new.rate_limit == l.rate_limit {
                        l.limiter.clone()
                    } else {
                        // A new configured rate starts again at full share.
                        *lock(&p.throttle) = Throttle {
                            factor: 1.0,
                            good: 0,
                            last_cut: None,
                        };
                        new.limiter.clone()
                    };
                    *l = Limits { limiter, ..new };
                    p.paused.store(false, Ordering::Relaxed);
                    p.wake.notify_one();
                }
                None => {
                    tracing::warn!(provider = %name, "new provider in the reloaded config: takes effect at the next restart")
                }
            }
        }
        tracing::info!("configuration reloaded: limits, budgets and polling settings updated");
    }
}

/// Time since the provider acknowledged the job (since intake for records
/// written before `submitted_at` existed).
fn since_submitted(job: &Job) -> Duration {
    humantime::parse_rfc3339(job.submitted_at.as_deref().unwrap_or(&job.created_at))
        .ok()
        .and_then(|t| t.elapsed().ok())
        .unwrap_or_default()
}

fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(500u64 << attempt.min(6));
    base + jitter(base / 2)
}

fn error_of(e: &ProviderError) -> JobError {
    match e {
        ProviderError::Permanent { code, message } | ProviderError::Conflict { code, message } => {
            JobError::new(code.clone(), message.clone())
        }
        ProviderError::NotFound(m) => JobError::new("not_found", m.clone()),
        other => JobError::new("provider_error", other.to_string()),
    }
}

/// Takes the next queued job of one provider whenever its limits allow.
async fn dispatch_loop(rt: Arc<Runtime>, p: Arc<ProviderRt>) {
    loop {
        if rt.cancel.is_cancelled() {
            return;
        }
        let next = dispatch_once(&rt, &p).await;
        let wait = match next {
            Dispatched::Some => continue,
            Dispatched::NoneUntil(d) => d.min(Duration::from_secs(1)),
            Dispatched::None => Duration::from_secs(1),
        };
        tokio::select! {
            _ = p.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = rt.cancel.cancelled() => return,
        }
    }
}

enum Dispatched {
    Some,
    None,
    /// Nothing now; the rate limiter has a permit again after this long.
    NoneUntil(Duration),
}

/// Most jobs moved to `submitting` per durable flush: one flush then covers
/// a whole group of creates instead of one each.
const DISPATCH_GROUP: usize = 64;

/// Moves up to a group of queued jobs to `submitting` (in queue order, while
/// limits allow), flushes once, then starts their creates. True if any was
/// dispatched.
async fn dispatch_once(rt: &Arc<Runtime>, p: &Arc<ProviderRt>) -> Dispatched {
    let hold = |why: HeldBy| {
        p.set_hold(Some(why));
    };
    if p.paused.load(Ordering::Relaxed) {
        hold(HeldBy::Paused);
        return Dispatched::None;
    }
    if let Some(wait) = p.cooldown_remaining() {
        hold(HeldBy::Rate);
        return Dispatched::NoneUntil(wait);
    }
    let (max_in_flight, budget) = {
        let l = read(&p.limits);
        (l.max_in_flight as usize, l.budget.clone())
    };
    let free = max_in_flight.saturating_sub(p.in_flight.load(Ordering::Relaxed));
    let queued = match rt.store.next_queued(&p.name, free.clamp(1, DISPATCH_GROUP)) {
        Ok(v) if v.is_empty() => {
            p.set_hold(None);
            return Dispatched::None;
        }
        Ok(v) => v,
        Err(e) => {
            tracing::error!(provider = %p.name, "reading the queue: {e}");
            return Dispatched::None;
        }
    };
    if free == 0 {
        hold(HeldBy::Concurrency);
        return Dispatched::None;
    }
    let period = budget
        .as_ref()
        .map(|b| b.current_period())
        .unwrap_or_else(|| "total".into());
    let mut moved = Vec::new();
    let mut held = None;
    let mut until = None;
    let limiter = read(&p.limits).limiter.clone();
    for job in queued {
        // A job becomes `submitting` only with its rate permit in hand: the
        // create goes out right after the group's flush (a lag of one fsync,
        // within the limiter's one-slot margin), and a crash finds few
        // `submitting` jobs whose create was never sent.
        if let Err(not_until) = limiter.check() {
            use governor::clock::Clock;
            held = Some(HeldBy::Rate);
            until = Some(not_until.wait_time_from(governor::clock::DefaultClock::default().now()));
            break;
        }
        p.counters.requests.fetch_add(1, Ordering::Relaxed);
        let permit_at = Instant::now();
        let estimate = p.adapter.estimate_credits(&job.params);
        let edit = |j: &mut Job| {
            j.attempts += 1;
            j.error = None;
        };
        // The reservation is checked against the budget inside the store,
        // atomically with the state change: never over budget, even racing.
        let change = Change::to(JobState::Submitting, "dispatched")
            .ledger(LedgerOp::Reserve {
                period: period.clone(),
                amount: estimate,
                limit: budget.as_ref().map(|b| b.credits),
            })
            .edit(&edit);
        match rt.store.apply(&job.key, JobState::Queued, change) {
            Ok(j) => moved.push((j, permit_at)),
            // Strict queue order: a job that does not fit holds those behind it.
            Err(StoreError::OverBudget { .. }) => {
                held = Some(HeldBy::Budget);
                break;
            }
            Err(StoreError::StateMismatch { .. }) => continue,
            Err(e) => {
                tracing::error!(key = %job.key, "dispatch: {e}");
                break;
            }
        }
    }
    p.set_hold(held);
    if moved.is_empty() {
        return match until {
            Some(d) => Dispatched::NoneUntil(d),
            None => Dispatched::None,
        };
    }
    // The create calls must never be sent before `submitting` is on disk.
    if let Err(e) = rt.store.sync().await {
        tracing::error!("flushing before submit: {e}");
        return Dispatched::None;
    }
    for (job, permit_at) in moved {
        p.in_flight.fetch_add(1, Ordering::Relaxed);
        let (rt2, p2) = (rt.clone(), p.clone());
        rt.tracker
            .spawn(async move { rt2.submit(p2, job, Some(permit_at)).await });
    }
    Dispatched::Some
}

/// A live job as the scheduler keeps it. One per live job (100,000 of them
/// is a use this is measured for), so kept small: the key and the
/// provider's id share one allocation, the provider is an index, times are
/// milliseconds from the scheduler's start, the live report's words are
/// numbers into [`Words`], and the delay queue points at the entry by slot.
struct Tracked {
    /// The job key followed by the provider's id; `split` is where the id
    /// starts.
    names: Box<str>,
    split: u32,
    dq: Option<delay_queue::Key>,
    plan: PollPlan,
    /// When the provider acknowledged the job (before a restart, too, so
    /// it may be negative).
    since_ms: i64,
    /// When the last poll went out; `i64::MIN`: not yet.
    last_poll_ms: i64,
    live: Option<Live>,
    provider: u16,
    /// The state the store last reported, so that a poll needs no store
    /// read (a stale one is caught by the compare-and-swap on write).
    state: JobState,
}

impl Tracked {
    fn new(key: &str, provider: u16, id: &str, state: JobState, since_ms: i64) -> Self {
        Tracked {
            names: format!("{key}{id}").into_boxed_str(),
            // Fewer than 4 GiB of key.
            split: key.len() as u32,
            dq: None,
            plan: PollPlan::new(),
            since_ms,
            last_poll_ms: i64::MIN,
            live: None,
            provider,
            state,
        }
    }

    fn key(&self) -> &str {
        self.names.get(..self.split as usize).unwrap_or_default()
    }

    fn id(&self) -> &str {
        self.names.get(self.split as usize..).unwrap_or_default()
    }
}

/// Milliseconds between the scheduler's start and `at` (negative before).
fn ms_from(epoch: Instant, at: Instant) -> i64 {
    if at >= epoch {
        i64::try_from((at - epoch).as_millis()).unwrap_or(i64::MAX)
    } else {
        i64::try_from((epoch - at).as_millis()).map_or(i64::MIN + 1, |ms| -ms)
    }
}

/// Time since `since_ms` (a [`ms_from`] stamp).
fn elapsed_since(epoch: Instant, since_ms: i64) -> Duration {
    let ms = ms_from(epoch, Instant::now()).saturating_sub(since_ms);
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A [`LiveReport`] as kept per job: its words by number.
#[derive(Debug, Clone, Copy)]
struct Live {
    progress: Option<u8>,
    stage: Option<u16>,
    status: u16,
}

/// The scheduler's jobs: a slab of entries, found by key or by provider id
/// through tables that hold only slot numbers and hash the strings stored
/// in the entry.
///
/// Why: with 100,000 live jobs, maps keyed by their own copies of the key
/// and the provider id were ~120 B per job on top of the entries.
#[derive(Default)]
struct Tracking {
    slots: Vec<Option<Tracked>>,
    free: Vec<u32>,
    by_key: HashTable<u32>,
    by_id: HashTable<u32>,
    hasher: std::hash::RandomState,
}

impl Tracking {
    fn key_hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    fn id_hash(&self, provider: u16, id: &str) -> u64 {
        self.hasher.hash_one((provider, id))
    }

    fn entry(slots: &[Option<Tracked>], slot: u32) -> Option<&Tracked> {
        slots.get(slot as usize)?.as_ref()
    }

    fn insert(&mut self, t: Tracked) -> u32 {
        let (kh, ih) = (self.key_hash(t.key()), self.id_hash(t.provider, t.id()));
        let slot = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(t);
                i
            }
            None => {
                self.slots.push(Some(t));
                // Fewer than 2^32 jobs are ever live at once.
                (self.slots.len() - 1) as u32
            }
        };
        let Tracking {
            slots,
            by_key,
            by_id,
            hasher,
            ..
        } = self;
        by_key.insert_unique(kh, slot, |s| {
            Self::entry(slots, *s).map_or(0, |t| hasher.hash_one(t.key()))
        });
        by_id.insert_unique(ih, slot, |s| {
            Self::entry(slots, *s).map_or(0, |t| hasher.hash_one((t.provider, t.id())))
        });
        slot
    }

    fn get_mut(&mut self, slot: u32) -> Option<&mut Tracked> {
        self.slots.get_mut(slot as usize)?.as_mut()
    }

    fn slot_of(&self, key: &str) -> Option<u32> {
        let slots = &self.slots;
        self.by_key
            .find(self.key_hash(key), |s| {
                Self::entry(slots, *s).is_some_and(|t| t.key() == key)
            })
            .copied()
    }

    fn slot_of_id(&self, provider: u16, id: &str) -> Option<u32> {
        let slots = &self.slots;
        self.by_id
            .find(self.id_hash(provider, id), |s| {
                Self::entry(slots, *s).is_some_and(|t| t.provider == provider && t.id() == id)
            })
            .copied()
    }

    fn remove(&mut self, slot: u32) -> Option<Tracked> {
        let t = self.slots.get_mut(slot as usize)?.take()?;
        let (kh, ih) = (self.key_hash(t.key()), self.id_hash(t.provider, t.id()));
        if let Ok(e) = self.by_key.find_entry(kh, |s| *s == slot) {
            e.remove();
        }
        if let Ok(e) = self.by_id.find_entry(ih, |s| *s == slot) {
            e.remove();
        }
        self.free.push(slot);
        Some(t)
    }
}

/// The words of live reports (a provider's status and stage names), each
/// kept once and referred to by number: 100,000 jobs in `processing` need
/// one copy of the word.
#[derive(Default)]
struct Words {
    words: Vec<Arc<str>>,
    index: HashMap<Arc<str>, u16>,
}

impl Words {
    /// The number of `w`; `None` once 65,536 different words were seen (a
    /// provider that sends free text): such a report is then not kept, and
    /// the job shows what the store last recorded.
    fn number(&mut self, w: &str) -> Option<u16> {
        if let Some(n) = self.index.get(w) {
            return Some(*n);
        }
        let n = u16::try_from(self.words.len()).ok()?;
        let w: Arc<str> = Arc::from(w);
        self.words.push(w.clone());
        self.index.insert(w, n);
        Some(n)
    }

    fn compact(&mut self, r: &LiveReport) -> Option<Live> {
        let stage = match &r.stage {
            Some(s) => Some(self.number(s)?),
            None => None,
        };
        Some(Live {
            progress: r.progress,
            stage,
            status: self.number(&r.provider_status)?,
        })
    }

    fn report(&self, l: Live) -> Option<LiveReport> {
        let word = |n: u16| self.words.get(n as usize).cloned();
        Some(LiveReport {
            progress: l.progress,
            stage: match l.stage {
                Some(n) => Some(word(n)?),
                None => None,
            },
            provider_status: word(l.status)?,
        })
    }
}

/// The poll policy of a provider's config. Sub-second schedules (tests,
/// the demo) lower the floor and precision with them.
fn policy(poll: &PollConfig) -> PollPolicy {
    let mut p = PollPolicy::new(poll.schedule.clone(), poll.max);
    if let Some(first) = poll.schedule.first().copied() {
        p.floor = p.floor.min(first);
        p.precision = p.precision.min(first * 3);
    }
    p
}

/// Each provider's poll policy by provider index, rebuilt only when a
/// reload changed its poll settings (building it per poll cost two
/// allocations a poll).
struct Policies {
    names: Vec<String>,
    cached: Vec<Option<(PollConfig, PollPolicy)>>,
}

impl Policies {
    fn new(rt: &Runtime) -> Self {
        let names: Vec<String> = rt.providers.keys().cloned().collect();
        Policies {
            cached: vec![None; names.len()],
            names,
        }
    }

    fn index(&self, name: &str) -> Option<u16> {
        self.names.iter().position(|n| n == name).map(|i| i as u16)
    }

    fn name(&self, provider: u16) -> Option<&str> {
        self.names.get(provider as usize).map(String::as_str)
    }

    fn get(&mut self, rt: &Runtime, provider: u16) -> Option<&PollPolicy> {
        let p = rt.providers.get(self.name(provider)?)?;
        let slot = self.cached.get_mut(provider as usize)?;
        let limits = read(&p.limits);
        if slot.as_ref().is_none_or(|(c, _)| *c != limits.poll) {
            *slot = Some((limits.poll.clone(), policy(&limits.poll)));
        }
        slot.as_ref().map(|(_, pol)| pol)
    }
}

/// When a poll `d` from `now` goes out: at the next tick of a grid that
/// starts at `epoch`, so polls that come due close together go out together.
///
/// Why: with 10,000 jobs on a 60 s cycle, polls due a millisecond apart each
/// woke the runtime's thread (a timer, then the answer); the thread's
/// sleeps and wake-ups cost as much as the requests. Sent together, one
/// wake-up serves a tick's polls and their answers arrive together. The
/// tick is at most 1/64 of the delay (a 60 s poll moves later by at most
/// 250 ms, within its ±10 % jitter); sub-second delays are not moved.
fn coalesced(epoch: Instant, now: Instant, d: Duration) -> Instant {
    const TICKS_MS: [u64; 3] = [250, 50, 10];
    let due = now + d;
    let Some(tick) = TICKS_MS
        .iter()
        .map(|ms| Duration::from_millis(*ms))
        .find(|t| d >= *t * 64)
    else {
        return due;
    };
    let since = due.saturating_duration_since(epoch).as_nanos();
    let tick = tick.as_nanos();
    let late = (tick - since % tick) % tick;
    // Less than one tick (at most 250 ms), so it fits in a u64.
    due + Duration::from_nanos(late as u64)
}

async fn scheduler(rt: Arc<Runtime>, mut rx: mpsc::UnboundedReceiver<Sched>) {
    use futures::StreamExt;
    let mut policies = Policies::new(&rt);
    let mut dq: DelayQueue<u32> = DelayQueue::new();
    let mut jobs = Tracking::default();
    let mut words = Words::default();
    let mut rng = rand::rngs::SmallRng::from_entropy();
    let epoch = Instant::now();
    loop {
        tokio::select! {
            _ = rt.cancel.cancelled() => return,
            msg = rx.recv() => {
                let Some(msg) = msg else { return };
                match msg {
                    Sched::Track { key, provider, provider_job_id, state, elapsed } => {
                        let Some(provider) = policies.index(&provider) else { continue };
                        if jobs.slot_of(&key).is_some() {
                            continue;
                        }
                        let Some(pol) = policies.get(&rt, provider) else { continue };
                        let first = PollPlan::first(pol, &mut rng);
                        crate::http::POLL_DELAY.observe(first);
                        let since_ms = ms_from(epoch, Instant::now())
                            .saturating_sub(i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX));
                        let slot = jobs.insert(Tracked::new(&key, provider, &provider_job_id, state, since_ms));
                        if let Some(t) = jobs.get_mut(slot) {
                            t.dq = Some(dq.insert_at(slot, coalesced(epoch, Instant::now(), first)));
                        }
                    }
                    Sched::Due { provider, provider_job_id, verified } => {
                        let Some(provider) = policies.index(&provider) else { continue };
                        let Some(slot) = jobs.slot_of_id(provider, &provider_job_id) else { continue };
                        let min_gap = policies.get(&rt, provider).and_then(|p| p.schedule.first().copied()).unwrap_or_default();
                        let Some(t) = jobs.get_mut(slot) else { continue };
                        let since_poll = ms_from(epoch, Instant::now()).saturating_sub(t.last_poll_ms);
                        let recent = u128::try_from(since_poll).is_ok_and(|ms| ms < min_gap.as_millis());
                        if let Some(k) = &t.dq {
                            if verified || !recent {
                                dq.reset(k, Duration::ZERO);
                            }
                        }
                    }
                    Sched::Peek { keys, reply } => {
                        let out = keys.into_iter().filter_map(|k| {
                            let slot = jobs.slot_of(&k)?;
                            let live = words.report(jobs.get_mut(slot)?.live?)?;
                            Some((k, live))
                        }).collect();
                        let _ = reply.send(out);
                    }
                    Sched::Polled { key, done, progress, state, live } => {
                        let Some(slot) = jobs.slot_of(&key) else { continue };
                        if done {
                            jobs.remove(slot);
                            continue;
                        }
                        let Some(t) = jobs.get_mut(slot) else { continue };
                        // A report that was written to the store supersedes
                        // the one kept here.
                        if let Some(live) = live {
                            t.live = live.and_then(|r| words.compact(&r));
                        }
                        if let Some(state) = state {
                            t.state = state;
                        }
                        let Some(pol) = policies.get(&rt, t.provider) else { continue };
                        let d = t.plan.next(pol, elapsed_since(epoch, t.since_ms), progress, &mut rng);
                        crate::http::POLL_DELAY.observe(d);
                        t.dq = Some(dq.insert_at(slot, coalesced(epoch, Instant::now(), d)));
                    }
                    Sched::Untrack { key } => {
                        if let Some(t) = jobs.slot_of(&key).and_then(|slot| jobs.remove(slot)) {
                            if let Some(k) = t.dq {
                                dq.try_remove(&k);
                            }
                        }
                    }
                }
            }
            Some(expired) = dq.next(), if !dq.is_empty() => {
                let slot = expired.into_inner();
                let Some(t) = jobs.get_mut(slot) else { continue };
                t.dq = None;
                t.last_poll_ms = ms_from(epoch, Instant::now());
                let Some(provider) = policies.name(t.provider).map(str::to_string) else { continue };
                let (key, id) = (t.key().to_string(), t.id().to_string());
                let (state, elapsed) = (t.state, elapsed_since(epoch, t.since_ms));
                let rt2 = rt.clone();
                rt.tracker.spawn(async move { rt2.poll(key, provider, id, state, elapsed).await });
            }
        }
    }
}

/// Errors of the control API, rendered as `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn not_found(key: &str) -> Self {
        ApiError {
            status: 404,
            code: "not_found",
            message: format!("no job with key {key:?}"),
        }
    }
    pub fn conflict(m: &str) -> Self {
        ApiError {
            status: 409,
            code: "conflict",
            message: m.into(),
        }
    }
    pub fn unavailable(m: &str) -> Self {
        ApiError {
            status: 503,
            code: "unavailable",
            message: m.into(),
        }
    }
    pub fn bad_gateway(m: &str) -> Self {
        ApiError {
            status: 502,
            code: "provider_error",
            message: m.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(k) => ApiError::not_found(&k),
            StoreError::StateMismatch { .. } | StoreError::Illegal(_) => {
                ApiError::conflict(&e.to_string())
            }
            other => ApiError {
                status: 500,
                code: "storage",
                message: other.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_due_close_together_go_out_together_and_never_early() {
        let epoch = Instant::now();
        let minute = Duration::from_secs(60);
        let mut outs = Vec::new();
        // 100 polls of a minute, asked for 1 ms apart.
        for i in 0..100u64 {
            let now = epoch + Duration::from_millis(i);
            let at = coalesced(epoch, now, minute);
            assert!(at >= now + minute, "never earlier than asked");
            assert!(
                at < now + minute + Duration::from_millis(250),
                "at most one tick later"
            );
            outs.push(at);
        }
        outs.dedup();
        assert!(
            outs.len() <= 2,
            "100 polls over 100 ms fall in at most two ticks: {}",
            outs.len()
        );
        // A second is moved by less than a 50 ms tick; sub-second delays not at all.
        let now = epoch + Duration::from_millis(7);
        let at = coalesced(epoch, now, Duration::from_secs(1));
        assert!(at >= now + Duration::from_secs(1) && at < now + Duration::from_millis(1010));
        let short = Duration::from_millis(300);
        assert_eq!(coalesced(epoch, now, short), now + short);
    }

    #[test]
    fn tracked_jobs_are_found_by_key_and_by_provider_id_until_removed() {
        let mut jobs = Tracking::default();
        let a = jobs.insert(Tracked::new("job-a", 0, "id-1", JobState::Pending, 0));
        // Same provider id at another provider, and a key that is the
        // other's key + id run together: still told apart.
        let b = jobs.insert(Tracked::new("job-b", 1, "id-1", JobState::Pending, 0));
        let c = jobs.insert(Tracked::new("job-aid", 0, "-1", JobState::Pending, 0));
        assert_eq!(jobs.slot_of("job-a"), Some(a));
        assert_eq!(jobs.slot_of("job-aid"), Some(c));
        assert_eq!(jobs.slot_of_id(0, "id-1"), Some(a));
        assert_eq!(jobs.slot_of_id(1, "id-1"), Some(b));
        assert_eq!(jobs.slot_of_id(0, "-1"), Some(c));
        let t = jobs
            .remove(a)
            .map(|t| (t.key().to_string(), t.id().to_string()));
        assert_eq!(t, Some(("job-a".into(), "id-1".into())));
        assert_eq!(jobs.slot_of("job-a"), None);
        assert_eq!(jobs.slot_of_id(0, "id-1"), None);
        assert_eq!(
            jobs.slot_of_id(1, "id-1"),
            Some(b),
            "the other provider's job stays"
        );
        // The freed slot is reused, and many inserts (table growth) keep
        // every job findable.
        let d = jobs.insert(Tracked::new("job-d", 0, "id-9", JobState::Processing, 0));
        assert_eq!(d, a);
        for i in 0..5_000 {
            jobs.insert(Tracked::new(
                &format!("k{i}"),
                2,
                &format!("p{i}"),
                JobState::Pending,
                0,
            ));
        }
        for i in (0..5_000).step_by(7) {
            let slot = jobs.slot_of(&format!("k{i}")).expect("found by key");
            assert_eq!(jobs.slot_of_id(2, &format!("p{i}")), Some(slot));
        }
        assert_eq!(jobs.slot_of("job-d"), Some(d));
    }

    #[test]
    fn live_reports_keep_their_words_and_jobs_share_them() {
        let mut words = Words::default();
        let report = |status: &str, stage: Option<&str>| LiveReport {
            progress: Some(40),
            stage: stage.map(Arc::from),
            provider_status: Arc::from(status),
        };
        let r1 = report("processing", Some("rendering"));
        let l1 = words.compact(&r1).expect("kept");
        let l2 = words.compact(&report("processing", None)).expect("kept");
        assert_eq!(words.report(l1), Some(r1));
        assert_eq!(l1.status, l2.status, "one number for one word");
        assert_eq!(words.words.len(), 2);
        // One entry per live job: this is what 100,000 of them cost.
        assert!(
            std::mem::size_of::<Tracked>() <= 176,
            "Tracked grew to {} bytes",
            std::mem::size_of::<Tracked>()
        );
    }
}
