//! When polls go out: each provider's poll policy (cached across polls,
//! rebuilt on reload) and the tick grid that sends polls due close together
//! at once.

use crate::limits::read;
use crate::Shared;
use std::time::Duration;
use switchyard_core::limits::PollConfig;
use switchyard_core::poll::PollPolicy;
use tokio::time::Instant;

/// The poll policy of a provider's config. Sub-second schedules (tests,
/// the demo) lower the floor and precision with them.
pub(crate) fn policy(poll: &PollConfig) -> PollPolicy {
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
pub(crate) struct Policies {
    names: Vec<String>,
    cached: Vec<Option<(PollConfig, PollPolicy)>>,
}

impl Policies {
    pub(crate) fn new(s: &Shared) -> Self {
        let names: Vec<String> = s.providers.keys().cloned().collect();
        Policies {
            cached: vec![None; names.len()],
            names,
        }
    }

    pub(crate) fn index(&self, name: &str) -> Option<u16> {
        self.names.iter().position(|n| n == name).map(|i| i as u16)
    }

    pub(crate) fn name(&self, provider: u16) -> Option<&str> {
        self.names.get(provider as usize).map(String::as_str)
    }

    /// The provider's `poll.target_delay`.
    pub(crate) fn target(&mut self, s: &Shared, provider: u16) -> Duration {
        let _ = self.get(s, provider);
        self.cached
            .get(provider as usize)
            .and_then(|c| c.as_ref())
            .map_or(PollConfig::default().target_delay, |(c, _)| c.target_delay)
    }

    pub(crate) fn get(&mut self, s: &Shared, provider: u16) -> Option<&PollPolicy> {
        let p = s.providers.get(self.name(provider)?)?;
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
pub(crate) fn coalesced(epoch: Instant, now: Instant, d: Duration) -> Instant {
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
}
