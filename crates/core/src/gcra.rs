//! The rate gate's arithmetic (generic cell rate algorithm), shared by every
//! store backend so that one daemon and a fleet count permits alike.
//!
//! State is one number per provider, the theoretical arrival time (`tat`):
//! a permit is granted at `now` when `tat - tolerance <= now`, and moves
//! `tat` to `max(tat, now) + interval`. Times are microseconds on whatever
//! clock the backend trusts (the database's for a fleet).

use std::time::Duration;

/// One permit per `interval`, up to `burst` back to back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Gate {
    pub interval: Duration,
    pub burst: u32,
}

impl Gate {
    /// The interval in microseconds (at least one). Public, with
    /// [`Gate::tolerance_us`], for a backend that runs [`Gate::take`]'s
    /// inequality inside its database, on the database's clock.
    pub fn interval_us(&self) -> u64 {
        (self.interval.as_micros() as u64).max(1)
    }

    /// How far `tat` may run ahead of `now` and still grant a permit.
    pub fn tolerance_us(&self) -> u64 {
        self.interval_us()
            .saturating_mul(u64::from(self.burst.max(1)) - 1)
    }

    /// Tries to take one permit at `now`: the new `tat`, or how long until
    /// a permit would be granted.
    pub fn take(&self, tat: u64, now: u64) -> Result<u64, Duration> {
        let allowed_at = tat.saturating_sub(self.tolerance_us());
        if allowed_at > now {
            return Err(Duration::from_micros(allowed_at - now));
        }
        Ok(tat.max(now).saturating_add(self.interval_us()))
    }

    /// The state of a gate whose history is unknown (a process that just
    /// started, when another one may have spent the burst a moment ago):
    /// as if a whole burst had been used at `now`. Whatever the previous
    /// holder sent, the two together conform to the gate.
    pub fn unknown_past(&self, now: u64) -> u64 {
        now.saturating_add(
            self.interval_us()
                .saturating_mul(u64::from(self.burst.max(1))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(per_second: u64, burst: u32) -> Gate {
        Gate {
            interval: Duration::from_micros(1_000_000 / per_second),
            burst,
        }
    }

    /// Counts what the gate grants when asked every millisecond for
    /// `seconds`, starting from `tat`.
    fn granted_per_second(g: &Gate, mut tat: u64, start: u64, seconds: u64) -> Vec<u32> {
        let mut per = vec![0u32; seconds as usize];
        for ms in 0..seconds * 1000 {
            let now = start + ms * 1000;
            if let Ok(next) = g.take(tat, now) {
                tat = next;
                per[(ms / 1000) as usize] += 1;
            }
        }
        per
    }

    #[test]
    fn grants_the_rate_and_no_more() {
        let g = gate(3, 1);
        let per = granted_per_second(&g, 0, 0, 10);
        assert!(per.iter().all(|&n| n == 3), "{per:?}");
    }

    #[test]
    fn a_burst_is_granted_once_then_the_rate() {
        let g = gate(4, 3);
        let per = granted_per_second(&g, 0, 0, 5);
        assert_eq!(per[0], 3 + 4 - 1, "{per:?}");
        assert!(per[1..].iter().all(|&n| n == 4), "{per:?}");
    }

    #[test]
    fn a_refusal_says_how_long_to_wait() {
        let g = gate(2, 1);
        let tat = g.take(0, 0).expect("first permit");
        assert_eq!(g.take(tat, 100_000), Err(Duration::from_micros(400_000)));
        assert!(g.take(tat, 500_000).is_ok());
    }

    #[test]
    fn an_unknown_past_never_lets_two_processes_exceed_the_rate() {
        // The first process spends its whole budget up to the instant it
        // dies; the second starts right then from an unknown past.
        let g = gate(3, 2);
        let mut sent = Vec::new();
        let mut tat = 0;
        for ms in 0..1500u64 {
            if let Ok(n) = g.take(tat, ms * 1000) {
                tat = n;
                sent.push(ms);
            }
        }
        let mut tat = g.unknown_past(1_500_000);
        for ms in 1500..4000u64 {
            if let Ok(n) = g.take(tat, ms * 1000) {
                tat = n;
                sent.push(ms);
            }
        }
        // In any one-second window: at most the rate plus the burst's
        // extra, as for one process that never stopped.
        for w in 0..3000u64 {
            let n = sent.iter().filter(|&&t| t >= w && t < w + 1000).count();
            assert!(
                n <= 3 + 1,
                "{n} permits in the second from {w} ms: {sent:?}"
            );
        }
    }
}
