//! One dispatcher per provider: claims queued jobs whenever the provider's
//! limits allow (pause, cool-down, in-flight slots, rate permits, budget),
//! makes the claim durable, then starts their create calls.

use crate::limits::{read, ProviderRt};
use crate::Shared;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_core::HeldBy;
use switchyard_store::Claim;
use tokio::time::Instant;

pub(crate) async fn dispatch_loop(s: Arc<Shared>, p: Arc<ProviderRt>) {
    loop {
        if s.cancel.is_cancelled() {
            return;
        }
        let next = dispatch_once(&s, &p).await;
        let wait = match next {
            Dispatched::Some => continue,
            Dispatched::NoneUntil(d) => d.min(Duration::from_secs(1)),
            Dispatched::None => Duration::from_secs(1),
        };
        tokio::select! {
            _ = p.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = s.cancel.cancelled() => return,
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

/// Claims up to a group of queued jobs (in queue order, while limits
/// allow), flushes once, then starts their creates.
async fn dispatch_once(s: &Arc<Shared>, p: &Arc<ProviderRt>) -> Dispatched {
    if p.is_paused() {
        p.set_hold(Some(HeldBy::Paused));
        return Dispatched::None;
    }
    if let Some(wait) = p.cooldown_remaining() {
        p.set_hold(Some(HeldBy::Rate));
        return Dispatched::NoneUntil(wait);
    }
    let (max_in_flight, budget, limiter) = {
        let l = read(&p.limits);
        (
            l.max_in_flight as usize,
            l.budget.clone(),
            l.limiter.clone(),
        )
    };
    let free = max_in_flight.saturating_sub(p.in_flight.load(Ordering::Relaxed));
    if free == 0 {
        // Held by concurrency only if anything waits.
        let queued = s.queued(&p.name).await;
        p.set_hold((queued > 0).then_some(HeldBy::Concurrency));
        return Dispatched::None;
    }
    let period = budget
        .as_ref()
        .map(|b| b.current_period())
        .unwrap_or_else(|| "total".into());
    // When the rate limiter stopped the claim, how long until it has a
    // permit again.
    let until: Mutex<Option<Duration>> = Mutex::new(None);
    let permit_at = Instant::now();
    // A job becomes `submitting` only with its rate permit in hand: the
    // create goes out right after the group's flush (a lag of one fsync,
    // within the limiter's one-slot margin), and a crash finds few
    // `submitting` jobs whose create was never sent.
    let admit = |job: &switchyard_core::Job| {
        if let Err(not_until) = limiter.check() {
            use governor::clock::Clock;
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            *crate::limits::lock(&until) = Some(wait);
            return None;
        }
        p.counters.requests.fetch_add(1, Ordering::Relaxed);
        Some(p.adapter.estimate_credits(&job.params))
    };
    let claim = Claim {
        lease: &s.lease,
        provider: &p.name,
        limit: free.clamp(1, DISPATCH_GROUP),
        period: &period,
        budget: budget.as_ref().map(|b| b.credits),
        admit: &admit,
        note: "dispatched",
        gate: None,
        max_in_flight: None,
    };
    let claimed = match s.store.claim(claim).await {
        Ok(c) => c,
        Err(e) => {
            s.store_failed(&format!("claiming queued jobs of {}", p.name), &e);
            return Dispatched::None;
        }
    };
    let until = *crate::limits::lock(&until);
    let held = if claimed.over_budget {
        Some(HeldBy::Budget)
    } else if claimed.not_admitted {
        Some(HeldBy::Rate)
    } else {
        None
    };
    p.set_hold(held);
    if claimed.jobs.is_empty() {
        return match until {
            Some(d) => Dispatched::NoneUntil(d),
            None => Dispatched::None,
        };
    }
    // The create calls must never be sent before `submitting` is on disk.
    // If that fails, the claimed jobs stay `submitting` unsent, and the next
    // start reconciles them.
    if !s
        .durable("flushing claimed jobs before their creates")
        .await
    {
        return Dispatched::None;
    }
    p.in_flight.fetch_add(claimed.jobs.len(), Ordering::Relaxed);
    for job in claimed.jobs {
        let (s2, p2) = (s.clone(), p.clone());
        s.tracker
            .spawn(async move { s2.submit(p2, job, Some(permit_at)).await });
    }
    Dispatched::Some
}
