//! A provider's runtime state: its accounts (request ordinals, rate-limiter
//! state, credits committed and reserved, the settle queue, idempotency keys,
//! webhook target) behind one lock, and its jobs in sharded maps. Creating
//! jobs and settling the credits of attempts that ended happen here, because
//! both must see the accounts and the jobs together.

use super::{kind_index, lock, Counters, Job, Outcome, Phase, SimState};
use crate::scenario::ProviderScenario;
use crate::util::{self, STREAM_JOB};
use rand::rngs::SmallRng;
use serde_json::Value;
use std::cmp::Reverse;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_core::ProviderKind;

const SHARDS: usize = 16;

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
    pub(super) fn new(kind: ProviderKind, cfg: ProviderScenario) -> ProviderRt {
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
