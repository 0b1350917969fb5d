//! One dispatcher per provider: claims queued jobs whenever the provider's
//! limits allow (pause, cool-down, in-flight slots, rate permits, budget),
//! makes the claim durable, then starts their create calls.

use crate::limits::{read, ProviderRt};
use crate::Shared;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_core::{HeldBy, JobState};
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

/// Live jobs of one provider in the store (every daemon's), by state.
#[derive(Default)]
struct Live {
    queued: u64,
    submitting: u64,
    /// `pending` and `processing`.
    acknowledged: u64,
}

impl Shared {
    async fn live(&self, provider: &str) -> Result<Live, switchyard_store::StoreError> {
        let mut live = Live::default();
        for c in self.store.counts().await? {
            if c.provider != provider {
                continue;
            }
            match c.state {
                JobState::Queued => live.queued += c.jobs,
                JobState::Submitting => live.submitting += c.jobs,
                JobState::Pending | JobState::Processing => live.acknowledged += c.jobs,
                _ => {}
            }
        }
        Ok(live)
    }
}

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
    // A lease that may have run out (no renewal for most of its TTL) may
    // already be another daemon's: claim nothing under it.
    if !s.lease_fresh() {
        return Dispatched::NoneUntil(Duration::from_millis(100));
    }
    let gen = s.gen();
    let (max_in_flight, budget, limiter, gate) = {
        let l = read(&p.limits);
        (
            l.max_in_flight as u64,
            l.budget.clone(),
            l.limiter.clone(),
            l.gate,
        )
    };
    // In-flight slots are the store's live jobs of the provider, so that a
    // fleet shares one cap and nothing counted here can drift from it.
    let live = match s.live(&p.name).await {
        Ok(l) => l,
        Err(e) => {
            s.store_failed(&format!("counting live jobs of {}", p.name), &e);
            return Dispatched::None;
        }
    };
    let in_flight = live.submitting + live.acknowledged;
    let free = max_in_flight.saturating_sub(in_flight) as usize;
    if free == 0 {
        // Held by concurrency only if anything waits.
        p.set_hold((live.queued > 0).then_some(HeldBy::Concurrency));
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
    // A job becomes `submitting` only with its rate permits in hand (this
    // process's limiter here, the store's shared gate in the claim): the
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
        p.counters.request();
        Some(p.adapter.estimate_credits(&job.params))
    };
    let claim = Claim {
        lease: &gen.lease,
        provider: &p.name,
        limit: free.clamp(1, DISPATCH_GROUP),
        period: &period,
        budget: budget.as_ref().map(|b| b.credits),
        admit: &admit,
        note: "dispatched",
        gate: Some(gate),
        // The store counts `submitting` atomically with the claim; jobs
        // already acknowledged hold their slots too. Another daemon's job
        // acknowledged since the count above only lowers `submitting`.
        max_in_flight: Some(
            u32::try_from(max_in_flight.saturating_sub(live.acknowledged)).unwrap_or(u32::MAX),
        ),
    };
    let claimed = match s.store.claim(claim).await {
        Ok(c) => c,
        Err(e) => {
            s.store_failed(&format!("claiming queued jobs of {}", p.name), &e);
            return Dispatched::None;
        }
    };
    let until = (*crate::limits::lock(&until)).or(claimed.gate_wait);
    let held = if claimed.over_budget {
        Some(HeldBy::Budget)
    } else if claimed.not_admitted || claimed.gate_wait.is_some() {
        Some(HeldBy::Rate)
    } else if claimed.at_cap && claimed.jobs.is_empty() {
        Some(HeldBy::Concurrency)
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
    for job in claimed.jobs {
        let (s2, p2, g2) = (s.clone(), p.clone(), gen.clone());
        s.spawn_in(&gen, async move {
            s2.submit(p2, job, Some(permit_at), g2).await
        });
    }
    Dispatched::Some
}
