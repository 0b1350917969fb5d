//! Per-provider limits at run time: the rate gate (GCRA with a margin),
//! the throttle and cool-down after 429s, the in-flight slots, and why the
//! queue head waits. Every request to a provider passes [`ProviderRt::permit`].

use crate::config::{ProviderLimits, ProviderSetup};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use switchyard_core::limits::{Budget, PollConfig, RateLimit};
use switchyard_core::HeldBy;
use switchyard_provider::Provider;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Limits that SIGHUP may change while jobs run.
#[derive(Debug)]
pub(crate) struct Limits {
    pub(crate) rate_limit: RateLimit,
    pub(crate) limiter: Arc<DefaultDirectRateLimiter>,
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
pub(crate) fn configured_interval(rl: &RateLimit) -> Duration {
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
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) creates: AtomicU64,
    pub(crate) polls: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) webhooks: AtomicU64,
    pub(crate) unexpected: crate::anomaly::Anomalies,
}

/// One configured provider at run time.
#[derive(Debug)]
pub(crate) struct ProviderRt {
    pub(crate) name: String,
    pub(crate) adapter: Arc<dyn Provider>,
    pub(crate) limits: RwLock<Limits>,
    cooldown_until: Mutex<Option<Instant>>,
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
    pub(crate) in_flight: AtomicUsize,
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
    pub(crate) fn new(setup: ProviderSetup) -> ProviderRt {
        ProviderRt {
            name: setup.name,
            adapter: setup.adapter,
            limits: RwLock::new(Limits::from_config(&setup.limits)),
            cooldown_until: Mutex::new(None),
            consecutive_429: AtomicU32::new(0),
            throttle: Mutex::new(Throttle::full()),
            paused: AtomicBool::new(false),
            user_paused: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
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

    /// Rebuilds the limiter at `factor` of the configured rate.
    pub(crate) fn set_rate_factor(&self, factor: f64) {
        let mut l = self.limits.write().unwrap_or_else(|e| e.into_inner());
        l.limiter = Arc::new(RateLimiter::direct(quota(&l.rate_limit, factor)));
    }

    pub(crate) fn cool_down(&self, retry_after: Option<Duration>) {
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
                self.counters.requests.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
    }

    /// The interval between two permits at the rate now in use.
    pub(crate) fn slot(&self) -> Duration {
        let factor = lock(&self.throttle).factor;
        configured_interval(&read(&self.limits).rate_limit).div_f64(factor.clamp(MIN_THROTTLE, 1.0))
    }

    /// Gives back an in-flight slot; never wraps below zero.
    pub(crate) fn release_slot(&self) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
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
        let limiter = if new.rate_limit == l.rate_limit {
            l.limiter.clone()
        } else {
            // A new configured rate starts again at full share.
            *lock(&self.throttle) = Throttle::full();
            new.limiter.clone()
        };
        *l = Limits { limiter, ..new };
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
