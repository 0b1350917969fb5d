//! Shared simulator state. A job is not a running thing: it is a start time,
//! a duration and a scripted outcome, and every read computes where it is now.
//! That keeps 100,000 jobs cheap (no task or timer per job) and makes a job's
//! status a pure function of the clock, so a test can predict it.
//!
//! Lock order, everywhere: a provider's `inner` before any job shard. Status
//! reads take only one shard lock, which keeps the hot path short.

use crate::scenario::{DurationDist, ProviderScenario, Scenario};
use crate::util::{self, Clock, STREAM_JOB};
use rand::rngs::SmallRng;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::cmp::Reverse;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use switchyard_core::ProviderKind;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Share of a job's duration spent waiting before processing starts.
pub const PENDING_SHARE: f64 = 0.1;
const SHARDS: usize = 16;

/// Locks a mutex, recovering from poisoning: the simulator's state stays
/// usable (a panicking handler only loses its own request).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn kind_index(kind: ProviderKind) -> usize {
    match kind {
        ProviderKind::Ugclab => 0,
        ProviderKind::Ugen => 1,
        ProviderKind::Ulazai => 2,
        ProviderKind::Viggle => 3,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Completed,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Failed => "failed",
        }
    }
}

/// Where a job is, independent of provider vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Processing,
    Paused,
    Completed,
    Failed,
    Cancelled,
}

impl Phase {
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Completed | Phase::Failed | Phase::Cancelled)
    }
}

/// A job's state at one instant: its phase and its position in the pipeline
/// (0.0 = nothing done, 1.0 = all stages done).
#[derive(Debug, Clone, Copy)]
pub struct View {
    pub phase: Phase,
    pub p: f64,
    /// When the current phase began (Unix ms), for `updated_at`.
    pub since_ms: u64,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub id: Arc<str>,
    pub kind: ProviderKind,
    pub seq: u64,
    pub ordinal: u64,
    pub client_key: Option<String>,
    /// The create body (one job's object for UlazAI batches).
    pub params: Value,
    pub forced: Option<Outcome>,
    pub forced_duration: Option<Duration>,
    pub outcome: Outcome,
    /// Pipeline position where the current attempt ends (1.0 on success).
    pub span: f64,
    /// Picks the failure code/message and cosmetic values.
    pub salt: u64,
    pub cost: u64,
    pub created_ms: u64,
    pub attempt: u32,
    /// Start of the current attempt, shifted forward by time spent paused.
    pub t0_ms: u64,
    /// Real duration of the current attempt.
    pub dur_ms: u64,
    pub p_start: f64,
    pub paused_at: Option<u64>,
    pub cancelled: Option<(u64, f64)>,
    /// Credits of the current attempt have been charged or released.
    pub settled: bool,
    pub prior_charged: u64,
    pub prior_released: u64,
    pub webhook_fired: bool,
    /// Last explicit change (pause, resume, retry, cancel).
    pub touched_ms: u64,
}

impl Job {
    pub fn end_ms(&self) -> u64 {
        self.t0_ms + self.dur_ms
    }

    /// When the job will (or did) reach a terminal state, as far as known now.
    pub fn finishes_ms(&self, now: u64) -> u64 {
        if let Some((at, _)) = self.cancelled {
            return at;
        }
        match self.paused_at {
            Some(at) => self.end_ms() + now.saturating_sub(at),
            None => self.end_ms(),
        }
    }

    pub fn view(&self, now: u64) -> View {
        if let Some((at, p)) = self.cancelled {
            return View {
                phase: Phase::Cancelled,
                p,
                since_ms: at,
            };
        }
        let t = self.paused_at.unwrap_or(now);
        let elapsed = t.saturating_sub(self.t0_ms);
        if self.paused_at.is_none() && elapsed >= self.dur_ms {
            let phase = match self.outcome {
                Outcome::Completed => Phase::Completed,
                Outcome::Failed => Phase::Failed,
            };
            return View {
                phase,
                p: self.span,
                since_ms: self.end_ms(),
            };
        }
        let frac = elapsed as f64 / self.dur_ms.max(1) as f64;
        let pending_ms = (self.dur_ms as f64 * PENDING_SHARE) as u64;
        let p = if frac < PENDING_SHARE {
            self.p_start
        } else {
            self.p_start
                + (frac - PENDING_SHARE) / (1.0 - PENDING_SHARE) * (self.span - self.p_start)
        };
        if let Some(at) = self.paused_at {
            return View {
                phase: Phase::Paused,
                p,
                since_ms: at,
            };
        }
        if frac < PENDING_SHARE {
            View {
                phase: Phase::Pending,
                p,
                since_ms: self.t0_ms.max(self.touched_ms),
            }
        } else {
            View {
                phase: Phase::Processing,
                p,
                since_ms: (self.t0_ms + pending_ms).max(self.touched_ms),
            }
        }
    }

    /// Credits held for the current attempt right now.
    pub fn reserved_now(&self, phase: Phase) -> u64 {
        if phase.is_terminal() {
            0
        } else {
            self.cost
        }
    }

    /// Credits consumed so far (completed attempts).
    pub fn charged_now(&self, phase: Phase) -> u64 {
        self.prior_charged
            + if phase == Phase::Completed {
                self.cost
            } else {
                0
            }
    }

    /// Credits given back so far (failed or cancelled attempts).
    pub fn released_now(&self, phase: Phase) -> u64 {
        self.prior_released
            + if matches!(phase, Phase::Failed | Phase::Cancelled) {
                self.cost
            } else {
                0
            }
    }

    /// Starts an attempt: draws its outcome and duration from the job's own
    /// generator, so the result depends only on (seed, provider, ordinal).
    pub fn start_attempt(
        &mut self,
        rng: &mut SmallRng,
        cfg: &ProviderScenario,
        speedup: f64,
        now: u64,
        p_start: f64,
    ) {
        let roll: f64 = rng.gen();
        let fail_at: f64 = rng.gen_range(0.1..0.9);
        self.salt = rng.gen();
        let sim = draw_duration(&cfg.duration, rng);
        self.outcome = self.forced.unwrap_or(if roll < cfg.failure_rate {
            Outcome::Failed
        } else {
            Outcome::Completed
        });
        let sim = self.forced_duration.unwrap_or(sim);
        let remaining = (1.0 - p_start).clamp(0.05, 1.0);
        self.dur_ms = ((sim.as_secs_f64() * 1000.0 * remaining / speedup) as u64).max(1);
        self.t0_ms = now;
        self.p_start = p_start;
        self.span = match self.outcome {
            Outcome::Completed => 1.0,
            Outcome::Failed => p_start + (1.0 - p_start) * fail_at,
        };
        self.paused_at = None;
        self.cancelled = None;
        self.settled = false;
        self.webhook_fired = false;
        self.touched_ms = now;
    }
}

pub fn draw_duration(d: &DurationDist, rng: &mut SmallRng) -> Duration {
    match *d {
        DurationDist::Fixed(f) => f,
        DurationDist::LogNormal {
            median,
            sigma,
            min,
            max,
        } => {
            let z = util::normal(rng);
            let secs = median.as_secs_f64() * (sigma * z).exp();
            let secs = secs.clamp(min.as_secs_f64(), max.as_secs_f64());
            Duration::from_secs_f64(secs)
        }
    }
}

/// The status word a status answer shows: the documented one, or the
/// scenario's `unknown_status` word while a live job is in its window.
pub fn shown_status(sim: &SimState, job: &Job, v: View) -> String {
    let documented = raw_status(job.kind, v);
    let Some(u) = &sim.provider(job.kind).cfg.unknown_status else {
        return documented.to_string();
    };
    if v.phase.is_terminal() {
        return documented.to_string();
    }
    let age_ms = sim.now_ms().saturating_sub(job.created_ms) as f64 * sim.speedup;
    let window = u.from.0.as_secs_f64() * 1000.0..u.until.0.as_secs_f64() * 1000.0;
    if window.contains(&age_ms) {
        u.word.clone()
    } else {
        documented.to_string()
    }
}

/// The provider's own status word for a phase.
pub fn raw_status(kind: ProviderKind, v: View) -> &'static str {
    match kind {
        ProviderKind::Ugclab => match v.phase {
            Phase::Pending => "PENDING",
            Phase::Processing | Phase::Paused if v.p >= crate::ugclab::SAVING_AT => "SAVING",
            Phase::Processing | Phase::Paused => "PROCESSING",
            Phase::Completed => "COMPLETED",
            Phase::Failed => "FAILED",
            Phase::Cancelled => "CANCELLED",
        },
        ProviderKind::Ugen => match v.phase {
            Phase::Pending => "pending",
            Phase::Processing => "processing",
            Phase::Paused => "paused",
            Phase::Completed => "completed",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
        },
        ProviderKind::Ulazai => match v.phase {
            Phase::Pending => "pending",
            Phase::Processing | Phase::Paused => "processing",
            Phase::Completed => "completed",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
        },
        ProviderKind::Viggle => match v.phase {
            Phase::Pending => "queued",
            Phase::Processing | Phase::Paused => "processing",
            Phase::Completed => "complete",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
        },
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounts {
    pub error_5xx: u64,
    pub malformed_json: u64,
    pub slow: u64,
    pub drop: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub requests: u64,
    pub create_requests: u64,
    pub creates: u64,
    pub status_requests: u64,
    pub cancels: u64,
    pub rate_limited: u64,
    pub auth_failures: u64,
    pub faults: FaultCounts,
    pub credits_charged: u64,
    pub credits_refunded: u64,
    pub webhooks_sent: u64,
    pub webhooks_failed: u64,
    pub peak_all: u64,
    pub peak_admitted: u64,
}

/// Where the provider sends webhooks (U-Gen's tenant setting, UGC Lab's URL).
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    pub url: String,
    pub secret: Option<String>,
}

pub struct Inner {
    pub req_ordinal: u64,
    pub job_ordinal: u64,
    /// GCRA theoretical arrival time, ns on the monotonic clock.
    pub tat_ns: u64,
    pub win_all: VecDeque<u64>,
    pub win_admitted: VecDeque<u64>,
    pub counters: Counters,
    /// Credits reserved or spent and not given back (the balance check).
    pub committed: u64,
    /// Credits held by active attempts (U-Gen's reservations).
    pub reserved: u64,
    /// (end ms, job id, attempt) of attempts not yet settled.
    pub settle_queue: BinaryHeap<Reverse<(u64, Arc<str>, u32)>>,
    /// Job ids in creation order.
    pub order: Vec<Arc<str>>,
    /// U-Gen idempotency keys -> job id.
    pub idem: HashMap<String, Arc<str>>,
    pub creates_by_key: HashMap<String, u64>,
    pub webhook: Option<WebhookTarget>,
}

type Shard = Mutex<HashMap<Arc<str>, Job>>;

pub struct ProviderRt {
    pub kind: ProviderKind,
    pub cfg: ProviderScenario,
    pub inner: Mutex<Inner>,
    shards: Vec<Shard>,
}

/// One job to create.
pub struct NewJob {
    pub params: Value,
    pub client_key: Option<String>,
    pub cost: u64,
    pub forced: Option<Outcome>,
    pub forced_duration: Option<Duration>,
    /// U-Gen: the body's idempotency key, and the params it is bound to.
    pub idem_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    New(Arc<str>),
    Existing(Arc<str>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateFail {
    InsufficientCredits { needed: u64, available: u64 },
    IdempotencyConflict { job_id: Arc<str> },
}

impl ProviderRt {
    fn new(kind: ProviderKind, cfg: ProviderScenario) -> ProviderRt {
        let webhook = cfg.webhook_url.clone().map(|url| WebhookTarget {
            url,
            secret: cfg.webhook_secret.clone(),
        });
        ProviderRt {
            kind,
            cfg,
            inner: Mutex::new(Inner {
                req_ordinal: 0,
                job_ordinal: 0,
                tat_ns: 0,
                win_all: VecDeque::new(),
                win_admitted: VecDeque::new(),
                counters: Counters::default(),
                committed: 0,
                reserved: 0,
                settle_queue: BinaryHeap::new(),
                order: Vec::new(),
                idem: HashMap::new(),
                creates_by_key: HashMap::new(),
                webhook,
            }),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, id: &str) -> &Shard {
        let mut h = DefaultHasher::new();
        id.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    /// Window over which the peak request count is measured.
    pub fn window(&self) -> Duration {
        self.cfg
            .rate_limit
            .map(|r| r.period())
            .unwrap_or(Duration::from_secs(1))
    }

    /// Reads one job (status hot path: one shard lock).
    pub fn read<R>(&self, id: &str, f: impl FnOnce(&Job) -> R) -> Option<R> {
        let shard = lock(self.shard(id));
        shard.get(id).map(f)
    }

    /// Changes one job without touching accounts (webhook bookkeeping).
    pub fn read_mut<R>(&self, id: &str, f: impl FnOnce(&mut Job) -> R) -> Option<R> {
        let mut shard = lock(self.shard(id));
        shard.get_mut(id).map(f)
    }

    /// Changes one job together with the provider's accounts, after settling
    /// everything that finished, so credit checks see the current balance.
    pub fn mutate<R>(
        &self,
        now: u64,
        id: &str,
        f: impl FnOnce(&mut Job, &mut Inner) -> R,
    ) -> Option<R> {
        let mut inner = lock(&self.inner);
        self.settle(&mut inner, now);
        let mut shard = lock(self.shard(id));
        shard.get_mut(id).map(|job| f(job, &mut inner))
    }

    /// Visits jobs newest first, with the accounts settled.
    pub fn for_each_newest(&self, now: u64, mut f: impl FnMut(&Job) -> bool) {
        let mut inner = lock(&self.inner);
        self.settle(&mut inner, now);
        for id in inner.order.iter().rev() {
            let shard = lock(self.shard(id));
            if let Some(job) = shard.get(id) {
                if !f(job) {
                    break;
                }
            }
        }
    }

    pub fn all_jobs(&self, mut f: impl FnMut(&Job)) {
        for shard in &self.shards {
            for job in lock(shard).values() {
                f(job);
            }
        }
    }

    pub fn available(&self, inner: &Inner) -> Option<u64> {
        self.cfg.credits.map(|c| c.saturating_sub(inner.committed))
    }

    /// Charges or releases the credits of every attempt that has ended.
    /// Lazy: runs whenever balances are read or changed, never per status poll.
    pub fn settle(&self, inner: &mut Inner, now: u64) {
        while let Some(Reverse((end, _, _))) = inner.settle_queue.peek() {
            if *end > now {
                break;
            }
            let Some(Reverse((_, id, attempt))) = inner.settle_queue.pop() else {
                break;
            };
            let mut shard = lock(self.shard(&id));
            let Some(job) = shard.get_mut(&id) else {
                continue;
            };
            if job.settled || job.attempt != attempt {
                continue;
            }
            let v = job.view(now);
            match v.phase {
                Phase::Completed => {
                    job.settled = true;
                    if self.kind == ProviderKind::Ugen {
                        inner.reserved = inner.reserved.saturating_sub(job.cost);
                        inner.counters.credits_charged += job.cost;
                    }
                }
                Phase::Failed => {
                    job.settled = true;
                    release(self.kind, inner, job.cost);
                }
                // Cancel settles at once; a paused job is re-queued on resume.
                Phase::Cancelled | Phase::Paused => {}
                Phase::Pending | Phase::Processing => {
                    let end = job.end_ms();
                    drop(shard);
                    inner.settle_queue.push(Reverse((end, id, attempt)));
                }
            }
        }
    }

    /// Creates jobs all-or-nothing (credits are checked for the whole batch).
    pub fn create(
        &self,
        sim: &SimState,
        now: u64,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<Created>, CreateFail> {
        let mut inner = lock(&self.inner);
        self.settle(&mut inner, now);
        let mut out = Vec::with_capacity(jobs.len());
        let mut fresh = Vec::with_capacity(jobs.len());
        for nj in jobs {
            if let Some(key) = &nj.idem_key {
                if let Some(id) = inner.idem.get(key).cloned() {
                    let same = self.read(&id, |j| j.params == nj.params).unwrap_or(false);
                    if same {
                        out.push(Created::Existing(id));
                        continue;
                    }
                    return Err(CreateFail::IdempotencyConflict { job_id: id });
                }
            }
            out.push(Created::New(Arc::from("")));
            fresh.push(nj);
        }
        let needed: u64 = fresh.iter().map(|j| j.cost).sum();
        if let Some(avail) = self.available(&inner) {
            if needed > avail {
                return Err(CreateFail::InsufficientCredits {
                    needed,
                    available: avail,
                });
            }
        }
        let mut fresh = fresh.into_iter();
        for slot in out.iter_mut() {
            if !matches!(slot, Created::New(_)) {
                continue;
            }
            let Some(nj) = fresh.next() else { break };
            let ordinal = inner.job_ordinal;
            inner.job_ordinal += 1;
            let mut rng = util::rng_for(
                sim.seed,
                kind_index(self.kind) as u64,
                STREAM_JOB,
                ordinal,
                0,
            );
            let id: Arc<str> = Arc::from(new_id(self.kind, &mut rng));
            let mut job = Job {
                id: id.clone(),
                kind: self.kind,
                seq: sim.seq.fetch_add(1, Ordering::Relaxed),
                ordinal,
                client_key: nj.client_key,
                params: nj.params,
                forced: nj.forced,
                forced_duration: nj.forced_duration,
                outcome: Outcome::Completed,
                span: 1.0,
                salt: 0,
                cost: nj.cost,
                created_ms: now,
                attempt: 0,
                t0_ms: now,
                dur_ms: 1,
                p_start: 0.0,
                paused_at: None,
                cancelled: None,
                settled: false,
                prior_charged: 0,
                prior_released: 0,
                webhook_fired: false,
                touched_ms: now,
            };
            job.start_attempt(&mut rng, &self.cfg, sim.speedup, now, 0.0);
            inner.committed += job.cost;
            if self.kind == ProviderKind::Ugen {
                inner.reserved += job.cost;
            } else {
                inner.counters.credits_charged += job.cost;
            }
            inner.counters.creates += 1;
            if let Some(k) = &job.client_key {
                *inner.creates_by_key.entry(k.clone()).or_insert(0) += 1;
            }
            if let Some(k) = nj.idem_key {
                inner.idem.insert(k, id.clone());
            }
            inner
                .settle_queue
                .push(Reverse((job.end_ms(), id.clone(), 0)));
            inner.order.push(id.clone());
            sim.schedule_webhook(&inner, &job);
            lock(self.shard(&id)).insert(id.clone(), job);
            *slot = Created::New(id);
        }
        Ok(out)
    }
}

/// Gives back the credits of an attempt that failed or was cancelled.
pub fn release(kind: ProviderKind, inner: &mut Inner, cost: u64) {
    inner.committed = inner.committed.saturating_sub(cost);
    if kind == ProviderKind::Ugen {
        inner.reserved = inner.reserved.saturating_sub(cost);
    }
    inner.counters.credits_refunded += cost;
}

fn new_id(kind: ProviderKind, rng: &mut SmallRng) -> String {
    match kind {
        ProviderKind::Ugclab => format!("cl{}", util::alnum(rng, 23)),
        ProviderKind::Ugen | ProviderKind::Ulazai => util::uuid(rng),
        ProviderKind::Viggle => format!("job_{}", util::alnum(rng, 12)),
    }
}

/// A webhook that may be due when an attempt ends.
#[derive(Debug, Clone)]
pub struct WebhookDue {
    pub kind: ProviderKind,
    pub job_id: Arc<str>,
    pub attempt: u32,
    pub due_ms: u64,
}

pub struct SimState {
    pub clock: Clock,
    pub seed: u64,
    pub speedup: f64,
    /// `http://host:port`, for output URLs that the simulator itself serves.
    pub public_base: String,
    pub providers: [ProviderRt; 4],
    pub seq: AtomicU64,
    pub request_ids: AtomicU64,
    pub webhooks: mpsc::UnboundedSender<WebhookDue>,
    pub shutdown: CancellationToken,
}

impl SimState {
    pub fn new(
        scenario: &Scenario,
        public_base: String,
        webhooks: mpsc::UnboundedSender<WebhookDue>,
        shutdown: CancellationToken,
    ) -> SimState {
        let p = |k| ProviderRt::new(k, scenario.provider(k));
        SimState {
            clock: Clock::new(),
            seed: scenario.seed,
            speedup: scenario.speedup,
            public_base,
            providers: [
                p(ProviderKind::Ugclab),
                p(ProviderKind::Ugen),
                p(ProviderKind::Ulazai),
                p(ProviderKind::Viggle),
            ],
            seq: AtomicU64::new(0),
            request_ids: AtomicU64::new(0),
            webhooks,
            shutdown,
        }
    }

    pub fn provider(&self, kind: ProviderKind) -> &ProviderRt {
        &self.providers[kind_index(kind)]
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Queues a webhook check at `due_ms` when the provider has somewhere to
    /// send it (U-Gen: the job's own `webhook_url` counts too). Takes the
    /// already-locked `inner`, as every caller holds it.
    pub fn schedule_webhook(&self, inner: &Inner, job: &Job) {
        let wanted = match job.kind {
            ProviderKind::Ugen => {
                inner.webhook.is_some()
                    || job.params.get("webhook_url").is_some_and(Value::is_string)
            }
            ProviderKind::Ugclab => inner.webhook.is_some(),
            _ => false,
        };
        if wanted {
            let _ = self.webhooks.send(WebhookDue {
                kind: job.kind,
                job_id: job.id.clone(),
                attempt: job.attempt,
                due_ms: job.end_ms(),
            });
        }
    }

    /// `req_` + 12 hex digits, unique per request.
    pub fn request_id(&self) -> String {
        let n = self.request_ids.fetch_add(1, Ordering::Relaxed);
        format!("req_{:012x}", util::mix64(self.seed ^ n) & 0xffff_ffff_ffff)
    }

    /// A URL the simulator serves itself, so downloads work offline.
    pub fn media_url(&self, kind: ProviderKind, file: &str) -> String {
        format!("{}/_sim/media/{}/{}", self.public_base, kind.as_str(), file)
    }

    pub fn stats(&self) -> Stats {
        let now = self.now_ms();
        let mut providers = BTreeMap::new();
        let mut jobs = 0;
        for prov in &self.providers {
            let mut inner = lock(&prov.inner);
            prov.settle(&mut inner, now);
            jobs += inner.order.len() as u64;
            let c = &inner.counters;
            let mut creates_by_key: BTreeMap<String, u64> = BTreeMap::new();
            for (k, v) in &inner.creates_by_key {
                creates_by_key.insert(k.clone(), *v);
            }
            let duplicate_creates = creates_by_key
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|(k, _)| k.clone())
                .collect();
            providers.insert(
                prov.kind,
                ProviderStats {
                    requests: c.requests,
                    create_requests: c.create_requests,
                    creates: c.creates,
                    status_requests: c.status_requests,
                    cancels: c.cancels,
                    rate_limited: c.rate_limited,
                    auth_failures: c.auth_failures,
                    faults: c.faults,
                    credits_charged: c.credits_charged,
                    credits_refunded: c.credits_refunded,
                    credits_reserved: inner.reserved,
                    credits_balance: prov.cfg.credits,
                    credits_available: prov.available(&inner),
                    webhooks_sent: c.webhooks_sent,
                    webhooks_failed: c.webhooks_failed,
                    quota: prov.cfg.rate_limit.map(|r| Quota {
                        per_second: r.per_second,
                        per_minute: r.per_minute,
                        burst: r.burst,
                    }),
                    window_ms: prov.window().as_millis() as u64,
                    peak_requests_in_window: c.peak_all,
                    peak_admitted_in_window: c.peak_admitted,
                    creates_by_key,
                    duplicate_creates,
                },
            );
        }
        Stats {
            uptime_ms: self.clock.uptime_ms(),
            speedup: self.speedup,
            seed: self.seed,
            jobs,
            providers,
        }
    }

    pub fn jobs(&self, only: Option<ProviderKind>) -> Vec<SimJob> {
        let now = self.now_ms();
        let mut out = Vec::new();
        for prov in &self.providers {
            if only.is_some_and(|k| k != prov.kind) {
                continue;
            }
            prov.all_jobs(|j| {
                let v = j.view(now);
                out.push((
                    j.seq,
                    SimJob {
                        provider: j.kind,
                        job_id: j.id.to_string(),
                        client_key: j.client_key.clone(),
                        outcome: j.outcome,
                        scripted: j.forced.is_some(),
                        status: raw_status(j.kind, v).to_string(),
                        attempt: j.attempt,
                        cost: j.cost,
                        created_ms: j.created_ms,
                        finishes_ms: j.finishes_ms(now),
                    },
                ));
            });
        }
        out.sort_by_key(|(seq, _)| *seq);
        out.into_iter().map(|(_, j)| j).collect()
    }

    /// Clears counters, peaks and per-key create counts; jobs, balances and
    /// rate-limiter state are kept (they are the providers' state, not stats).
    pub fn reset_stats(&self) {
        for prov in &self.providers {
            let mut inner = lock(&prov.inner);
            inner.counters = Counters::default();
            inner.win_all.clear();
            inner.win_admitted.clear();
            inner.creates_by_key.clear();
        }
    }
}

/// The configured quota, as shown in stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<u32>,
    pub burst: u32,
}

/// What the simulator has seen, per provider (`GET /_sim/stats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub uptime_ms: u64,
    pub speedup: f64,
    pub seed: u64,
    /// Jobs created across all providers.
    pub jobs: u64,
    pub providers: BTreeMap<ProviderKind, ProviderStats>,
}

impl Stats {
    /// The stats of one provider (all zero if absent).
    pub fn provider(&self, kind: ProviderKind) -> ProviderStats {
        self.providers.get(&kind).cloned().unwrap_or_default()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProviderStats {
    /// API requests received (including rate-limited and faulted ones).
    pub requests: u64,
    pub create_requests: u64,
    /// Jobs actually created (an idempotent replay is not a create).
    pub creates: u64,
    pub status_requests: u64,
    pub cancels: u64,
    /// 429s served.
    pub rate_limited: u64,
    pub auth_failures: u64,
    pub faults: FaultCounts,
    /// U-Gen: consumed on completion; others: charged at create.
    pub credits_charged: u64,
    /// Refunds (failed/cancelled); for U-Gen, released reservations.
    pub credits_refunded: u64,
    /// U-Gen: held by active jobs now.
    pub credits_reserved: u64,
    /// The configured balance (None = unlimited).
    pub credits_balance: Option<u64>,
    pub credits_available: Option<u64>,
    /// Webhooks delivered (2xx) / given up after retries.
    pub webhooks_sent: u64,
    pub webhooks_failed: u64,
    pub quota: Option<Quota>,
    /// Sliding window of the peak counts: the quota period, or 1 s.
    pub window_ms: u64,
    /// Most requests received in any window (real clock), 429s included.
    pub peak_requests_in_window: u64,
    /// Most requests admitted (not 429) in any window.
    pub peak_admitted_in_window: u64,
    /// Client key (`Idempotency-Key` header, or U-Gen's body key) -> jobs created.
    pub creates_by_key: BTreeMap<String, u64>,
    /// Keys with more than one job created.
    pub duplicate_creates: Vec<String>,
}

/// One job as the simulator scripted it (`GET /_sim/jobs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimJob {
    pub provider: ProviderKind,
    pub job_id: String,
    pub client_key: Option<String>,
    /// Scripted outcome of the current attempt.
    pub outcome: Outcome,
    /// True when `x_sim_outcome` forced the outcome.
    pub scripted: bool,
    /// The provider's raw status word now.
    pub status: String,
    pub attempt: u32,
    pub cost: u64,
    pub created_ms: u64,
    pub finishes_ms: u64,
}
