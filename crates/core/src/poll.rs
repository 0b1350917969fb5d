//! When to poll a live job next: a pure, clock-free policy, so the daemon's
//! timer queue only stores the instant it returns and a test or benchmark can
//! replay it in virtual time. Given the same rng it returns the same delays.
//!
//! Without progress (UlazAI, or before a provider's progress starts rising)
//! the configured schedule is followed (default 3 s, 5 s, 8 s, 10 s), then
//! each delay grows by half up to `max`: polls per job grow with the
//! logarithm of its duration until `max` is reached.
//!
//! With progress the plan predicts the finish. Reported percentages are
//! rounded, so each observation `(t, p)` says the true position was within
//! `p ± 0.5` (a provider's "99 until done" cap means `[98.5, 100)`). The
//! first observation above zero is the anchor (progress sitting at 0 while
//! pending says nothing about the rate, so it is not used); each later
//! observation `c` bounds the rate to `[(Δp - 1) / Δt, (Δp + 1) / Δt]` and so
//! the finish to a window `[early_c, late_c]`. The plan takes the earliest
//! `late_c` (optimistic: providers whose progress lags, jumps or plateaus,
//! like U-Gen's per-segment steps, only ever make a late bound later) and,
//! for its start, the latest `early_c` not after it. Then:
//!
//! - window narrow (at most `precision`): poll at the late end, where a job
//!   moving linearly is certainly done: one poll, delay at most the window;
//! - window wide: poll at the early end (the job cannot be done yet, and the
//!   longer baseline narrows the window), or half-way to the late end when
//!   that is later, so the next answer aims precisely;
//! - every bound already passed by a live job (the provider slowed down, or
//!   is not linear at all): short steps from `floor`, growing by half.
//!
//! Every delay is at least `floor` and at most `max`, jittered by
//! `±jitter` (a poll aimed at a predicted finish is only ever jittered later:
//! polling just before the finish would cost a poll and add a step).

use rand::Rng;
use std::time::Duration;

/// Growth of each delay past the schedule, and of the short steps after a
/// predicted finish has passed.
const GROWTH: f64 = 1.5;
/// Observations kept after the anchor (the most recent ones).
const KEEP: usize = 16;

/// A provider's polling settings (from its `[providers.X.poll]` config).
#[derive(Debug, Clone, PartialEq)]
pub struct PollPolicy {
    /// Delays after create and after each poll while nothing better is known.
    pub schedule: Vec<Duration>,
    /// No delay is longer.
    pub max: Duration,
    /// No delay is shorter (steps near and after a predicted finish).
    pub floor: Duration,
    /// A predicted finish known within this is polled at once, not refined.
    pub precision: Duration,
    /// Fraction, e.g. 0.1 for ±10 %.
    pub jitter: f64,
}

impl Default for PollPolicy {
    fn default() -> Self {
        PollPolicy::new(
            [3, 5, 8, 10].map(Duration::from_secs).to_vec(),
            Duration::from_secs(60),
        )
    }
}

impl PollPolicy {
    /// A policy from the configured schedule and cap, with the default floor
    /// (1 s), precision (3 s) and jitter (±10 %).
    pub fn new(schedule: Vec<Duration>, max: Duration) -> Self {
        PollPolicy {
            schedule,
            max,
            floor: Duration::from_secs(1),
            precision: Duration::from_secs(3),
            jitter: 0.1,
        }
    }

    fn max_s(&self) -> f64 {
        self.max.as_secs_f64().max(self.floor_s())
    }

    fn floor_s(&self) -> f64 {
        self.floor.as_secs_f64().max(0.001)
    }

    fn jitter(&self) -> f64 {
        if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 0.9)
        } else {
            0.0
        }
    }

    /// The schedule's delay after `n` polls: its steps, then growing by half.
    fn step(&self, n: u32) -> f64 {
        let n = n as usize;
        let last = self.schedule.last().map_or(10.0, Duration::as_secs_f64);
        match self.schedule.get(n) {
            Some(d) => d.as_secs_f64(),
            None => {
                let extra = (n + 1 - self.schedule.len()).min(64) as i32;
                last * GROWTH.powi(extra)
            }
        }
    }

    /// Final delay: jittered `±jitter`, or only later when `aimed`, then
    /// held within `[floor, max]`.
    fn finish(&self, secs: f64, aimed: bool, rng: &mut impl Rng) -> Duration {
        let j = self.jitter();
        let secs = if !secs.is_finite() {
            self.max_s()
        } else {
            secs.max(self.floor_s())
        };
        let secs = if j == 0.0 {
            secs
        } else if aimed {
            secs + rng.gen_range(0.0..=j) * self.floor_s()
        } else {
            secs * (1.0 + rng.gen_range(-j..=j))
        };
        Duration::from_secs_f64(secs.clamp(self.floor_s(), self.max_s()))
    }
}

/// One status answer: seconds since submission, reported percent.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Obs {
    t: f64,
    p: f64,
}

/// Why [`PollPlan::next`] chose its delay (for logs, tests and benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollMode {
    /// Following the configured schedule (no usable progress yet).
    Schedule,
    /// Narrowing the window around the predicted finish.
    Refine,
    /// Aimed at the predicted finish.
    Aim,
    /// Past every predicted finish: short growing steps.
    Overdue,
}

/// One job's polling state: polls so far and recent progress observations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PollPlan {
    polls: u32,
    overdue: u32,
    anchor: Option<Obs>,
    seen: Vec<Obs>,
    last: Option<f64>,
    zero: f64,
    restarted: bool,
    min_rate: f64,
    mode: Option<PollMode>,
    predicted: Option<(f64, f64)>,
}

impl PollPlan {
    pub fn new() -> Self {
        PollPlan::default()
    }

    /// Delay before the first poll after create.
    pub fn first(policy: &PollPolicy, rng: &mut impl Rng) -> Duration {
        policy.finish(policy.step(0), false, rng)
    }

    /// Polls recorded so far.
    pub fn polls(&self) -> u32 {
        self.polls
    }

    /// How the last delay was chosen.
    pub fn mode(&self) -> Option<PollMode> {
        self.mode
    }

    /// The window the finish was predicted in (times since submission,
    /// earliest and latest) when the last delay was chosen; the plan aims
    /// at the latest.
    pub fn predicted_finish(&self) -> Option<(Duration, Duration)> {
        self.predicted
            .map(|(e, l)| (Duration::from_secs_f64(e), Duration::from_secs_f64(l)))
    }

    /// Called after each poll of a still-live job with the time since the
    /// job was submitted and the progress the provider reported (None if it
    /// reports none). Returns the delay until the next poll.
    pub fn next(
        &mut self,
        policy: &PollPolicy,
        elapsed: Duration,
        progress: Option<u8>,
        rng: &mut impl Rng,
    ) -> Duration {
        let now = elapsed.as_secs_f64();
        self.polls = self.polls.saturating_add(1);
        if let Some(p) = progress {
            self.observe(now, f64::from(p.min(100)));
        }
        let floor = policy.floor_s();
        let (mode, secs) = match self.estimate(now) {
            Estimate::Window { late, early, n } => {
                self.overdue = 0;
                self.predicted = Some((early, late));
                let reach: f64 = std::env::var("POLL_REACH").ok().and_then(|v| v.parse().ok()).unwrap_or(1e9);
                let prec: f64 = std::env::var("POLL_PREC").ok().and_then(|v| v.parse().ok()).unwrap_or(policy.precision.as_secs_f64());
                let env = |k: &str, d: f64| -> f64 { std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d) };
                let f = env("POLL_F", 1.0);
                let a = env("POLL_A", 1e9);
                let (m, d) = if late - early <= prec && late - now <= (a * late).max(prec) {
                    (PollMode::Aim, late - now)
                } else if late - early <= prec {
                    (PollMode::Refine, f * (late - now))
                } else {
                    let half = now + 0.5 * (late - now);
                    (PollMode::Refine, f * (early.max(half) - now))
                };
                let slack: f64 = std::env::var("POLL_SLACK").ok().and_then(|v| v.parse().ok()).unwrap_or(0.0);
                let reach = if n < 2 { env("POLL_REACH1", reach) } else { reach };
                if d > reach * now + slack { (PollMode::Refine, reach * now) } else { (m, d) }
            }
            Estimate::Passed => {
                let k = self.overdue.min(64) as i32;
                self.overdue = self.overdue.saturating_add(1);
                (PollMode::Overdue, floor * GROWTH.powi(k))
            }
            Estimate::Unknown => {
                self.overdue = 0;
                self.predicted = None;
                (PollMode::Schedule, policy.step(self.polls))
            }
        };
        self.mode = Some(mode);
        let aimed = mode == PollMode::Aim && secs <= policy.max_s();
        policy.finish(secs, aimed, rng)
    }

    fn observe(&mut self, t: f64, p: f64) {
        let prev = self.last.replace(p);
        if prev.is_some_and(|l| p < l - 1.0) {
            // Progress went back (a retry, a new attempt): start over.
            self.anchor = None;
            self.seen.clear();
            self.restarted = true;
            self.min_rate = 0.0;
        }
        match self.anchor {
            // Zero says the work has not started, not how fast it goes.
            None if p <= 0.0 => {
                self.zero = t;
                self.restarted = false;
            }
            None => {
                self.anchor = Some(Obs { t, p });
                if !self.restarted && t > self.zero && std::env::var("POLL_NOZERO").is_err() {
                    self.min_rate = (p - 0.5) / (t - self.zero);
                }
            }
            // Still at the anchor's value before any rise: the later
            // observation is just as true, and closer to the rise.
            Some(a) if self.seen.is_empty() && p <= a.p => self.anchor = Some(Obs { t, p: a.p }),
            // The same value again: for a job moving steadily the first
            // sighting says as much, and a stall must not look like a
            // finish always a step away (a "99 until done" cap).
            Some(_) if prev == Some(p) => {}
            Some(_) => {
                if self.seen.len() == KEEP {
                    self.seen.remove(0);
                }
                self.seen.push(Obs { t, p });
            }
        }
    }

    fn estimate(&self, now: f64) -> Estimate {
        let Some(a) = self.anchor else {
            return Estimate::Unknown;
        };
        if self.last.is_some_and(|l| l >= 100.0) {
            // Done by its own account but not by its status: finishing now.
            return Estimate::Passed;
        }
        let mut late = f64::INFINITY;
        let mut windows = Vec::with_capacity(self.seen.len());
        let mut any = false;
        let mut windows_n = 0usize;
        for c in &self.seen {
            let (dt, dp) = (c.t - a.t, c.p - a.p);
            if dt <= 0.0 || dp < 2.0 {
                continue;
            }
            any = true;
            windows_n += 1;
            let (r_low, r_up) = (((dp - 1.0) / dt).max(self.min_rate), (dp + 1.0) / dt);
            let hi = if c.p >= 99.0 { 100.0 } else { c.p + 0.5 };
            let late_c = c.t + (100.5 - c.p) / r_low;
            let early_c = c.t + (100.0 - hi) / r_up;
            // A live job past a bound disproves it.
            if late_c > now {
                late = late.min(late_c);
                if r_up >= self.min_rate {
                    windows.push(early_c);
                }
            }
        }
        if !late.is_finite() {
            return if any {
                Estimate::Passed
            } else {
                Estimate::Unknown
            };
        }
        let early = if std::env::var("POLL_EARLY").is_ok() { windows
            .into_iter()
            .filter(|e| *e > now)
            .fold(late, f64::min)
            .max(now) } else {
            windows.into_iter().filter(|e| *e <= late).fold(now, f64::max) };
        Estimate::Window { late, early, n: windows_n }
    }
}

enum Estimate {
    Unknown,
    Window { late: f64, early: f64, n: usize },
    Passed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn secs(d: Duration) -> f64 {
        d.as_secs_f64()
    }

    /// Polls a job of `dur` seconds whose progress at `t` is `curve(t)`;
    /// returns (polls, delay between the finish and the poll that saw it).
    fn run(
        policy: &PollPolicy,
        dur: f64,
        seed: u64,
        curve: impl Fn(f64) -> Option<u8>,
    ) -> (u32, f64) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut plan = PollPlan::new();
        let mut t = secs(PollPlan::first(policy, &mut rng));
        let mut polls = 1;
        while t < dur {
            let d = plan.next(policy, Duration::from_secs_f64(t), curve(t), &mut rng);
            assert!(d <= policy.max && d >= policy.floor, "delay {d:?} at {t}");
            t += secs(d);
            polls += 1;
            assert!(polls < 100_000);
        }
        (polls, t - dur)
    }

    /// The simulator's linear curve: 0 for the first tenth, then rising, 99
    /// at most until done.
    fn linear(dur: f64) -> impl Fn(f64) -> Option<u8> {
        move |t| {
            let x = ((t / dur - 0.1) / 0.9).clamp(0.0, 1.0);
            Some(((x * 100.0).round() as u8).min(99))
        }
    }

    #[test]
    fn without_progress_the_schedule_is_followed_then_grows_to_max() {
        let policy = PollPolicy {
            jitter: 0.0,
            ..PollPolicy::default()
        };
        let mut rng = SmallRng::seed_from_u64(1);
        let mut plan = PollPlan::new();
        let mut t = PollPlan::first(&policy, &mut rng);
        let mut got = vec![secs(t)];
        for _ in 0..12 {
            let d = plan.next(&policy, t, None, &mut rng);
            got.push(secs(d));
            t += d;
        }
        let want = [
            3.0, 5.0, 8.0, 10.0, 15.0, 22.5, 33.75, 50.625, 60.0, 60.0, 60.0, 60.0, 60.0,
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
        assert_eq!(plan.mode(), Some(PollMode::Schedule));
        // Progress stuck at 0 (pending) is no progress either.
        let mut plan = PollPlan::new();
        let d: Vec<f64> = (0..4)
            .map(|i| secs(plan.next(&policy, Duration::from_secs(i * 5), Some(0), &mut rng)))
            .collect();
        assert_eq!(d, vec![5.0, 8.0, 10.0, 15.0]);
    }

    #[test]
    fn jitter_stays_within_its_fraction_and_max() {
        let policy = PollPolicy::default();
        let mut rng = SmallRng::seed_from_u64(7);
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..200 {
            let mut plan = PollPlan::new();
            let first = secs(PollPlan::first(&policy, &mut rng));
            assert!((2.7..=3.3).contains(&first), "{first}");
            for (i, want) in [5.0, 8.0, 10.0, 15.0, 22.5, 33.75, 50.625, 60.0, 60.0]
                .iter()
                .enumerate()
            {
                let d = secs(plan.next(&policy, Duration::from_secs(i as u64), None, &mut rng));
                assert!(
                    d >= want * 0.9 - 1e-9 && d <= (want * 1.1).min(60.0) + 1e-9,
                    "{d} vs {want}"
                );
                seen_low |= d < want * 0.97;
                seen_high |= d > want * 1.03 && *want < 60.0;
            }
        }
        assert!(seen_low && seen_high, "jitter is applied both ways");
    }

    #[test]
    fn linear_progress_hits_the_predicted_finish() {
        let policy = PollPolicy::default();
        for dur in [20.0, 45.0, 90.0, 180.0, 400.0, 900.0] {
            for seed in 0..20 {
                let (polls, delay) = run(&policy, dur, seed, linear(dur));
                // Seen within a few percent of the duration (or the floor).
                assert!(
                    delay <= (0.03 * dur).max(2.0),
                    "dur {dur}: delay {delay}, {polls} polls"
                );
                let fixed5 = (dur / 5.0).ceil() as u32;
                if dur >= 90.0 {
                    assert!(polls * 3 <= fixed5, "dur {dur}: {polls} polls vs {fixed5}");
                }
            }
        }
    }

    #[test]
    fn the_prediction_is_the_finish() {
        // The predicted window holds the real finish, and narrows to within
        // a few percent of it as the baseline grows.
        let policy = PollPolicy::default();
        let dur = 200.0;
        let curve = linear(dur);
        let mut rng = SmallRng::seed_from_u64(3);
        let mut plan = PollPlan::new();
        for t in [3.0, 8.0, 16.0, 26.0, 41.0, 60.0, 100.0, 150.0] {
            plan.next(&policy, Duration::from_secs_f64(t), curve(t), &mut rng);
            if let Some((early, late)) = plan.predicted_finish() {
                assert!(
                    secs(early) <= dur && dur <= secs(late),
                    "{t}: {early:?}..{late:?}"
                );
            }
        }
        let (early, late) = plan.predicted_finish().unwrap_or_default();
        assert!(
            secs(late) - secs(early) <= 0.03 * dur,
            "{early:?}..{late:?}"
        );
        assert!(secs(late) - dur <= 0.02 * dur, "{late:?}");
    }

    #[test]
    fn polls_grow_sub_linearly_with_duration() {
        let policy = PollPolicy::default();
        let mean = |dur: f64, curve: &dyn Fn(f64) -> Option<u8>| {
            (0..20)
                .map(|s| run(&policy, dur, s, curve).0 as f64)
                .sum::<f64>()
                / 20.0
        };
        let short = mean(60.0, &linear(60.0));
        let long = mean(600.0, &linear(600.0));
        // Ten times the duration, well under ten times the polls.
        assert!(long < 2.5 * short, "60 s: {short} polls, 600 s: {long}");
        let short = mean(60.0, &|_| None);
        let long = mean(600.0, &|_| None);
        assert!(
            long < 3.0 * short,
            "no progress: 60 s: {short} polls, 600 s: {long}"
        );
    }

    #[test]
    fn stepped_and_stalled_progress_is_still_caught() {
        let policy = PollPolicy::default();
        for dur in [60.0, 90.0, 240.0] {
            // U-Gen's one-segment curve: stuck at 30 for 45 % of the run.
            let stepped = move |t: f64| {
                let x = ((t / dur - 0.1) / 0.9).clamp(0.0, 1.0);
                let x = if (0.3..0.75).contains(&x) { 0.3 } else { x };
                Some(((x * 100.0).round() as u8).min(99))
            };
            for seed in 0..20 {
                let (polls, delay) = run(&policy, dur, seed, stepped);
                assert!(
                    delay <= 0.1 * dur,
                    "dur {dur}: delay {delay}, {polls} polls"
                );
            }
            // Progress that stalls at 60 and only then finishes much later.
            let stall = move |t: f64| Some(((t / dur * 100.0).round() as u8).min(60));
            for seed in 0..20 {
                let (polls, _) = run(&policy, 3.0 * dur, seed, stall);
                assert!(polls < 40, "stalled {dur}: {polls} polls");
            }
        }
    }

    #[test]
    fn past_the_prediction_steps_are_short_then_grow() {
        let policy = PollPolicy {
            jitter: 0.0,
            ..PollPolicy::default()
        };
        let mut rng = SmallRng::seed_from_u64(1);
        let mut plan = PollPlan::new();
        let mut t = 0.0;
        for p in [10u8, 20, 30, 40, 50, 60, 70, 80, 90, 99] {
            t += 5.0;
            plan.next(&policy, Duration::from_secs_f64(t), Some(p), &mut rng);
        }
        // Predicted finish just after 50 s; the job sits at 99 well past it.
        let mut steps = Vec::new();
        for _ in 0..12 {
            t += 20.0;
            steps.push(secs(plan.next(
                &policy,
                Duration::from_secs_f64(t),
                Some(99),
                &mut rng,
            )));
            assert_eq!(plan.mode(), Some(PollMode::Overdue));
        }
        assert!((steps[0] - 1.0).abs() < 1e-9, "{steps:?}");
        assert!(
            steps.windows(2).all(|w| w[1] > w[0] || w[1] == 60.0),
            "{steps:?}"
        );
        assert!((steps[11] - 60.0).abs() < 1e-9, "{steps:?}");
    }

    #[test]
    fn delays_stay_within_floor_and_max_for_any_answers() {
        let policy = PollPolicy {
            max: Duration::from_secs(30),
            ..PollPolicy::default()
        };
        let mut rng = SmallRng::seed_from_u64(11);
        for _ in 0..500 {
            let mut plan = PollPlan::new();
            let mut t = 0.0;
            let mut p: i32 = 0;
            for _ in 0..60 {
                p = match rng.gen_range(0..6) {
                    0 => rng.gen_range(0..=100),
                    1 => p - rng.gen_range(0..30),
                    _ => p + rng.gen_range(0..10),
                }
                .clamp(0, 100);
                let progress = if rng.gen_bool(0.1) {
                    None
                } else {
                    Some(p as u8)
                };
                let d = plan.next(&policy, Duration::from_secs_f64(t), progress, &mut rng);
                assert!(d <= policy.max && d >= policy.floor, "{d:?}");
                t += secs(d) * rng.gen_range(0.5..1.5);
            }
        }
    }

    #[test]
    fn same_rng_same_delays() {
        let policy = PollPolicy::default();
        let delays = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut plan = PollPlan::new();
            (1..30u64)
                .map(|i| {
                    plan.next(
                        &policy,
                        Duration::from_secs(i * 7),
                        Some((i * 3) as u8),
                        &mut rng,
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(delays(5), delays(5));
        assert_ne!(delays(5), delays(6));
    }
}
