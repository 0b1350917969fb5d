//! Per-provider limits at run time: the rate gate (GCRA with a margin),
//! kept twice: governor in this process as the smoother, and the store's
//! gate shared by every daemon on the store (the fleet's quota, which a
//! restart does not reset); the throttle and cool-down after 429s, the
//! latter held in the store too; and why the queue head waits. Every
//! request to a provider passes [`ProviderRt::permit`] (creates take the
//! same two permits in the claim).

use crate::config::{ProviderLimits, ProviderSetup};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use switchyard_core::limits::{Budget, PollConfig, RateLimit};
use switchyard_core::{Gate, HeldBy};
use switchyard_provider::Provider;
use switchyard_store::{Permit, Store};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Limits that SIGHUP may change while jobs run.
#[derive(Debug)]
pub(crate) struct Limits {
    pub(crate) rate_limit: RateLimit,
    pub(crate) limiter: Arc<DefaultDirectRateLimiter>,
    /// The same quota as `limiter`, as the store's shared gate takes it.
    pub(crate) gate: Gate,
    pub(crate) max_in_flight: u32,
    pub(crate) budget: Option<Budget>,
    pub(crate) poll: PollConfig,
    pub(crate) max_attempts: u32,
}

impl Limits {
    pub(crate) fn from_config(cfg: &ProviderLimits) -> Limits {
        Limits {
            rate_limit: cfg.rate_limit,
            limiter: Arc::new(RateLimiter::direct(quota(&cfg.rate_limit, 1.0))),
            gate: gate(&cfg.rate_limit, 1.0),
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
pub(crate) fn quota(rl: &RateLimit, factor: f64) -> Quota {
    let (interval, kept) = shape(rl, factor);
    let nz = NonZeroU32::new(kept).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(interval)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(nz)
}

/// [`quota`] as the store's gate: one daemon and a fleet keep the same
/// margin and throttle.
pub(crate) fn gate(rl: &RateLimit, factor: f64) -> Gate {
    let (interval, burst) = shape(rl, factor);
    Gate { interval, burst }
}

/// The interval between permits and the burst kept, margin and throttle
/// included.
fn shape(rl: &RateLimit, factor: f64) -> (Duration, u32) {
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
    (interval.max(Duration::from_micros(1)), kept)
}

/// The interval between two requests at the configured rate (50/s when
/// none is configured).
pub(crate) fn configured_interval(rl: &RateLimit) -> Duration {
    match (rl.per_second, rl.per_minute) {
        (Some(s), _) => Duration::from_secs(1) / s.max(1),
        (None, Some(m)) => Duration::from_secs(60) / m.max(1),
        (None, None) => Duration::from_secs(1) / 50,
    }
}

/// The lowest share of the configured rate the daemon throttles down to.
const MIN_THROTTLE: f64 = 1.0 / 64.0;

/// How long a hold read from the store is trusted.
const HELD_FRESH: Duration = Duration::from_millis(250);

/// Counters shown by `providers` and `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) creates: AtomicU64,
    pub(crate) polls: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) webhooks: AtomicU64,
    pub(crate) unexpected: crate::anomaly::Anomalies,
    /// Requests sent in the last few seconds, for the rate in use.
    pub(crate) recent: Recent,
}

impl Counters {
    /// One request to the provider is about to go out.
    pub(crate) fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.recent.hit(Instant::now());
    }
}

/// Requests per whole second over the last [`Recent::SECONDS`]: what the
/// dashboard shows as the rate in use, beside the configured one.
#[derive(Debug)]
pub(crate) struct Recent {
    start: Instant,
    /// Per second since `start`, modulo the window: (that second, count).
    buckets: Mutex<[(u64, u32); Recent::SECONDS as usize]>,
}

impl Default for Recent {
    fn default() -> Self {
        Recent {
            start: Instant::now(),
            buckets: Mutex::new([(u64::MAX, 0); Recent::SECONDS as usize]),
        }
    }
}

impl Recent {
    pub(crate) const SECONDS: u64 = 10;

    fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_secs()
    }

    pub(crate) fn hit(&self, at: Instant) {
        let sec = self.second(at);
        let mut b = lock(&self.buckets);
        let slot = &mut b[(sec % Self::SECONDS) as usize];
        if slot.0 != sec {
            *slot = (sec, 0);
        }
        slot.1 = slot.1.saturating_add(1);
    }

    /// Requests per second over the last whole seconds before `at` (the
    /// second under way is not over yet); fewer seconds right after start.
    pub(crate) fn per_second(&self, at: Instant) -> f64 {
        let now = self.second(at);
        let window = Self::SECONDS.min(now).max(1);
        let from = now.saturating_sub(window);
        let sent: u64 = lock(&self.buckets)
            .iter()
            .filter(|(sec, _)| *sec != u64::MAX && *sec >= from && *sec < now)
            .map(|(_, n)| u64::from(*n))
            .sum();
        sent as f64 / window as f64
    }
}

/// One configured provider at run time.
pub(crate) struct ProviderRt {
    pub(crate) name: String,
    pub(crate) adapter: Arc<dyn Provider>,
    pub(crate) limits: RwLock<Limits>,
    /// The shared gate and holds live here.
    store: Arc<dyn Store>,
    cooldown_until: Mutex<Option<Instant>>,
    /// The store's hold as last read, and when it was read (views ask
    /// often; a hold changes rarely).
    held: Mutex<Option<(Instant, Option<Instant>)>>,
    consecutive_429: AtomicU32,
    /// Share of the configured rate in use: halved when the provider answers
    /// 429 (it is stricter than the config says), raised again by a fifth
    /// every 20 good answers. Additive-increase would be slower to recover;
    /// this keeps a storm short and throughput near the provider's limit.
    throttle: Mutex<Throttle>,
    /// Set by a 402; cleared by a config reload or a user's resume.
    pub(crate) paused: AtomicBool,
    /// A user's pause (`switchyard pause`), as the store keeps it: survives
    /// reloads and restarts, and is shared by every daemon on the store.
    pub(crate) user_paused: AtomicBool,
    pub(crate) wake: Notify,
    pub(crate) counters: Counters,
    /// Why the head of this provider's queue waits, if it does. Every queued
    /// job waits behind the head (priority, then FIFO), so this one value is
    /// what `held_by` shows for all of them: derived, never stored.
    hold: Mutex<Option<HeldBy>>,
    /// Status requests in flight at once (see [`POLLS_IN_FLIGHT`]).
    pub(crate) polls: tokio::sync::Semaphore,
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

#[derive(Debug)]
struct Throttle {
    factor: f64,
    good: u32,
    last_cut: Option<Instant>,
}

impl Throttle {
    fn full() -> Throttle {
        Throttle {
            factor: 1.0,
            good: 0,
            last_cut: None,
        }
    }
}

pub(crate) fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere while holding it; the
    // limits inside are plain values that are always consistent.
    l.read().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ProviderRt {
    pub(crate) fn new(setup: ProviderSetup, store: Arc<dyn Store>) -> ProviderRt {
        ProviderRt {
            name: setup.name,
            adapter: setup.adapter,
            limits: RwLock::new(Limits::from_config(&setup.limits)),
            store,
            cooldown_until: Mutex::new(None),
            held: Mutex::new(None),
            consecutive_429: AtomicU32::new(0),
            throttle: Mutex::new(Throttle::full()),
            paused: AtomicBool::new(false),
            user_paused: AtomicBool::new(false),
            wake: Notify::new(),
            counters: Counters::default(),
            hold: Mutex::new(None),
            polls: tokio::sync::Semaphore::new(POLLS_IN_FLIGHT),
        }
    }

    pub(crate) fn cooldown_remaining(&self) -> Option<Duration> {
        let until = (*lock(&self.cooldown_until))?;
        let now = Instant::now();
        (until > now).then(|| until - now)
    }

    /// What is left of the provider's cool-down, this daemon's or the
    /// fleet's (a 429 another daemon got, or one from before a restart).
    pub(crate) async fn held(&self) -> Option<Duration> {
        let now = Instant::now();
        let cached = *lock(&self.held);
        let until = match cached {
            Some((read_at, until)) if now - read_at < HELD_FRESH => until,
            _ => match self.store.held(&self.name).await {
                Ok(left) => {
                    let until = left.map(|d| now + d);
                    *lock(&self.held) = Some((now, until));
                    until
                }
                Err(e) => {
                    tracing::warn!(provider = %self.name, "reading the provider's cool-down from the store: {e}");
                    None
                }
            },
        };
        let shared = until.and_then(|u| u.checked_duration_since(now));
        shared.max(self.cooldown_remaining())
    }

    /// Rebuilds the limiter and the gate at `factor` of the configured rate.
    pub(crate) fn set_rate_factor(&self, factor: f64) {
        let mut l = self.limits.write().unwrap_or_else(|e| e.into_inner());
        l.limiter = Arc::new(RateLimiter::direct(quota(&l.rate_limit, factor)));
        l.gate = gate(&l.rate_limit, factor);
    }

    /// A 429: the provider cools down here at once; returns how long, for
    /// the store's hold (every daemon, and after a restart).
    pub(crate) fn cool_down(&self, retry_after: Option<Duration>) -> Duration {
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
        {
            let mut cd = lock(&self.cooldown_until);
            if cd.is_none_or(|t| t < until) {
                *cd = Some(until);
            }
        }
        // The hold about to be written supersedes what was read.
        *lock(&self.held) = None;
        tracing::warn!(provider = %self.name, wait_ms = wait.as_millis() as u64, "provider answered 429: cooling down");
        wait
    }

    /// Waits for the provider's cool-down and a rate permit: this
    /// process's limiter first (it smooths), then the store's gate (the
    /// quota every daemon on the store shares, which also keeps the holds
    /// after 429s). Every request to the provider but a create passes here
    /// (creates take both permits in the claim). False if `cancel` came
    /// first.
    pub(crate) async fn permit(&self, cancel: &CancellationToken) -> bool {
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
                break;
            }
        }
        loop {
            let gate = read(&self.limits).gate;
            let wait = match self.store.permit(&self.name, gate).await {
                Ok(Permit::Granted) => {
                    self.counters.request();
                    return true;
                }
                Ok(Permit::Wait(d)) => d,
                Err(e) => {
                    // Without the shared gate no request may go out: the
                    // fleet's quota is only kept there.
                    tracing::warn!(provider = %self.name, "taking a rate permit from the store: {e}");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => return false,
            }
        }
    }

    /// The interval between two permits at the rate now in use.
    pub(crate) fn slot(&self) -> Duration {
        let factor = lock(&self.throttle).factor;
        configured_interval(&read(&self.limits).rate_limit).div_f64(factor.clamp(MIN_THROTTLE, 1.0))
    }

    /// A job of this provider left the live states (or this daemon stopped
    /// following it): an in-flight slot may be free. Slots are the store's
    /// counts of live jobs, the whole fleet's, so nothing is counted here.
    pub(crate) fn release_slot(&self) {
        self.wake.notify_one();
    }

    /// Nothing new is dispatched: a user's pause or a 402.
    pub(crate) fn is_paused(&self) -> bool {
        self.paused_by().is_some()
    }

    /// Who paused dispatch: `"user"` before `"credits"` (a user's pause
    /// outlives a reload, so it is the one to tell).
    pub(crate) fn paused_by(&self) -> Option<&'static str> {
        if self.user_paused.load(Ordering::Relaxed) {
            Some("user")
        } else if self.paused.load(Ordering::Relaxed) {
            Some("credits")
        } else {
            None
        }
    }

    pub(crate) fn hold(&self) -> Option<HeldBy> {
        *lock(&self.hold)
    }

    pub(crate) fn set_hold(&self, why: Option<HeldBy>) {
        *lock(&self.hold) = why;
    }

    pub(crate) fn ok_answer(&self) {
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

impl ProviderRt {
    /// New limits from a reload. The limiter is kept (with its state and
    /// throttle) unless the configured rate changed; a 402 pause is lifted,
    /// since a reload is how a user says "credits were topped up".
    pub(crate) fn reload(&self, new: &ProviderLimits) {
        let mut l = self.limits.write().unwrap_or_else(|e| e.into_inner());
        let new = Limits::from_config(new);
        let (limiter, gate) = if new.rate_limit == l.rate_limit {
            (l.limiter.clone(), l.gate)
        } else {
            // A new configured rate starts again at full share.
            *lock(&self.throttle) = Throttle::full();
            (new.limiter.clone(), new.gate)
        };
        *l = Limits {
            limiter,
            gate,
            ..new
        };
        drop(l);
        self.paused.store(false, Ordering::Relaxed);
        self.wake.notify_one();
    }
}

pub(crate) fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return max;
    }
    Duration::from_millis(rand::thread_rng().gen_range(0..=max.as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_in_use_counts_the_last_whole_seconds() {
        let r = Recent::default();
        let t0 = r.start;
        let at = |ms: u64| r.per_second(t0 + Duration::from_millis(ms));
        // 3 requests a second for 20 s, then silence.
        for s in 0..20u64 {
            for i in 0..3u64 {
                r.hit(t0 + Duration::from_millis(s * 1000 + i * 300));
            }
            if s == 2 {
                // Right after the start the window is what has passed, and
                // the second under way does not count yet.
                assert_eq!(at(2_500), 3.0);
            }
        }
        assert_eq!(at(20_000), 3.0);
        // Five silent seconds of ten: half the rate.
        assert_eq!(at(25_000), 1.5);
        assert_eq!(at(40_000), 0.0);
    }
}
