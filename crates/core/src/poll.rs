//! When to poll a live job next: a pure, clock-free policy, so the daemon's
//! timer queue only stores the delay it returns, and a test or benchmark can
//! replay it in virtual time. Given the same rng it returns the same delays.
//!
//! Without progress (UlazAI, or before a provider's progress starts rising)
//! the configured schedule is followed (default 3 s, 5 s, 8 s, 10 s), then
//! each delay grows by half up to `max`: polls per job grow with the
//! logarithm of its duration until `max` is reached.
//!
//! With progress the plan predicts the finish, assuming only that progress
//! is reported in whole percent. A reading `(t, p)` puts the true position
//! within `p ± 0.5` (a "99 until done" cap: `[98.5, 100)`). Readings of 0
//! say the work has not started (pending), not how fast it goes, so the
//! first reading above 0 is the anchor, and each later new value `c` bounds
//! the rate to `[(Δp - 1) / Δt, (Δp + 1) / Δt]` and so the finish to a
//! window `[early_c, late_c]`. The last 0 read before the anchor adds a lower
//! bound on the rate that holds even when later readings lag.
//!
//! Providers whose progress lags, jumps or plateaus (U-Gen's moves one step
//! per finished segment) only ever make a late bound later, so the plan
//! takes the earliest `late_c` as the window's end and, as its start, the
//! latest `early_c` not after that end. Then:
//!
//! - window narrow (at most `precision`, or 1.5 % of the predicted
//!   duration, as whole percents allow no better) and the end close (within
//!   30 % of the predicted duration): poll at the end, where a job moving
//!   steadily is certainly done. One poll; the delay is at most the window.
//! - otherwise refine: go 80 % of the way to the window's start (the job
//!   cannot be done before it), or to half-way to its end when that is
//!   later, or to the end itself when the window is narrow but far. The next
//!   reading has a longer baseline, and the shortfall leaves room to catch a
//!   lagging reading's late prediction before the real finish.
//!
//! When a predicted end passes with the job still live, the readings since
//! the anchor are not describing it (it slowed down, or they lag): the plan
//! re-anchors on the reading before the latest, so the estimate follows the
//! recent pace. Until a new window stands, and whenever every end has
//! passed, it polls in short steps from `floor`, growing by half. If the
//! readings disagree with the window's end (no start is left), two polls
//! that halve the way to an end that does not move are enough: the next one
//! goes there.
//!
//! A reading repeated (a plateau, or a "99 until done" cap) adds nothing: a
//! stall must not look like a finish always a step away. Progress that goes
//! back (a retry) starts the estimate over.
//!
//! Every delay is at least `floor` and at most `max`, jittered by `±jitter`;
//! a poll aimed at a predicted finish is only jittered later (a poll just
//! before the finish costs a poll and adds a step).
//!
//! `elapsed` should count from the provider's acknowledgement and survive a
//! restart; if it does not, the estimate still works (it uses time
//! differences only) but the close and resolution thresholds are skewed.

use crate::learn::LearnedPlan;
use rand::Rng;
use std::time::Duration;

/// Growth of each delay past the schedule, and of the short steps after a
/// predicted finish has passed.
const GROWTH: f64 = 1.5;
/// Observations kept after the anchor (the most recent ones).
const KEEP: usize = 16;
/// A poll that refines the prediction goes this share of the way to its
/// target, so a reading that lags (and so predicts late) is still followed
/// by a poll before the real finish.
const APPROACH: f64 = 0.8;
/// A predicted finish is aimed at directly only from this close (a share of
/// the predicted duration): from further away a lagging reading would turn
/// into a late poll.
const CLOSE: f64 = 0.3;
/// Readings in whole percent place a finish no closer than about a percent
/// of the run: a window this narrow (a share of the predicted duration) is
/// as narrow as it gets, whatever `precision` says.
const RESOLUTION: f64 = 0.015;
/// When readings disagree with the predicted end (the job slowed down, or
/// they lag), the plan halves the way to it; after this many halvings that
/// did not move the end, it polls at the end (each halving costs a poll).
const HALVINGS: u32 = 2;

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
///
/// Stored as `f32` (a plan is kept per live job; 100,000 of them): a day
/// into a job that is still within 8 ms, and a percent is exact. The
/// arithmetic is done in `f64`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Obs {
    t: f32,
    p: f32,
}

impl Obs {
    fn new(t: f64, p: f64) -> Self {
        Obs {
            t: t as f32,
            p: p as f32,
        }
    }

    fn t(self) -> f64 {
        f64::from(self.t)
    }

    fn p(self) -> f64 {
        f64::from(self.p)
    }
}

/// Why [`PollPlan::next`] chose its delay (for logs, tests and benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollMode {
    /// Following the configured schedule (no usable progress yet).
    Schedule,
    /// Following the plan learned from finished jobs (no usable progress).
    Learned,
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
    /// The latest reading.
    last: Option<Obs>,
    /// A prediction failed and no new one stands yet.
    lost: bool,
    /// When progress last read 0 before the first rise.
    zero: Option<f32>,
    /// A lower bound on the rate (percent per second), from that zero.
    min_rate: f32,
    /// Refines in a row halving the way to an end that did not move.
    halvings: u32,
    mode: Option<PollMode>,
    predicted: Option<(f32, f32)>,
}

impl PollPlan {
    pub fn new() -> Self {
        PollPlan::default()
    }

    /// Delay before the first poll after create.
    pub fn first(policy: &PollPolicy, rng: &mut impl Rng) -> Duration {
        Self::first_with(policy, None, rng)
    }

    /// [`PollPlan::first`], from the class's learned plan when there is one.
    pub fn first_with(
        policy: &PollPolicy,
        learned: Option<&LearnedPlan>,
        rng: &mut impl Rng,
    ) -> Duration {
        match learned {
            Some(l) => policy.finish(l.first(), true, rng),
            None => policy.finish(policy.step(0), false, rng),
        }
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
        self.predicted.map(|(e, l)| {
            (
                Duration::from_secs_f64(f64::from(e)),
                Duration::from_secs_f64(f64::from(l)),
            )
        })
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
        self.next_with(policy, elapsed, progress, None, rng)
    }

    /// [`PollPlan::next`], following the class's learned plan instead of
    /// the configured schedule while progress predicts nothing.
    pub fn next_with(
        &mut self,
        policy: &PollPolicy,
        elapsed: Duration,
        progress: Option<u8>,
        learned: Option<&LearnedPlan>,
        rng: &mut impl Rng,
    ) -> Duration {
        let now = elapsed.as_secs_f64();
        self.polls = self.polls.saturating_add(1);
        let before = self.last;
        if let Some(p) = progress {
            let p = f64::from(p.min(100));
            self.observe(now, p);
            // The job is live past the end last predicted: its progress is
            // not moving as the readings since the anchor say (it slowed
            // down, or they lag). Start over from the reading before this
            // one, so the estimate follows the recent pace.
            if self.predicted.is_some_and(|(_, l)| f64::from(l) < now) {
                self.lost = true;
                if let Some(b) = before.filter(|b| b.p() > 0.0 && b.t() < now && p >= b.p()) {
                    self.anchor = Some(b);
                    self.seen.clear();
                    if p > b.p() {
                        self.seen.push(Obs::new(now, p));
                    }
                    self.zero = None;
                    self.min_rate = 0.0;
                }
            }
        }
        let floor = policy.floor_s();
        let estimate = match self.estimate(now) {
            Estimate::Unknown if self.lost => Estimate::Passed,
            e => e,
        };
        let (mode, secs) = match estimate {
            Estimate::Window { late, early } => {
                self.lost = false;
                let precision = policy.precision.as_secs_f64().max(RESOLUTION * late);
                let same_end = self.mode == Some(PollMode::Refine)
                    && self
                        .predicted
                        .is_some_and(|(_, l)| (f64::from(l) - late).abs() <= precision);
                self.halvings = if same_end && early <= now {
                    self.halvings + 1
                } else {
                    0
                };
                self.overdue = 0;
                self.predicted = Some((early as f32, late as f32));
                let narrow = late - early <= precision;
                let close = late - now <= (CLOSE * late).max(precision);
                if (narrow && close) || self.halvings >= HALVINGS {
                    (PollMode::Aim, late - now)
                } else {
                    // Not yet: most of the way to where the answer is due
                    // (the window's start, or half-way to its end when that
                    // is later), so the next answer has a long baseline and
                    // a lagging reading is caught before the finish.
                    let target = if narrow {
                        late
                    } else {
                        early.max(now + 0.5 * (late - now))
                    };
                    (PollMode::Refine, APPROACH * (target - now))
                }
            }
            Estimate::Passed => {
                let k = self.overdue.min(64) as i32;
                self.overdue = self.overdue.saturating_add(1);
                (PollMode::Overdue, floor * GROWTH.powi(k))
            }
            Estimate::Unknown => {
                self.overdue = 0;
                self.predicted = None;
                // Once progress is reported, its early readings are what
                // the prediction is built from: the schedule gets them.
                match learned.filter(|_| self.last.is_none()) {
                    Some(l) => (PollMode::Learned, l.next_delay(now, floor)),
                    None => (PollMode::Schedule, policy.step(self.polls)),
                }
            }
        };
        self.mode = Some(mode);
        // A learned time is aimed too: jittered earlier it would cost a poll.
        let aimed = matches!(mode, PollMode::Aim | PollMode::Learned) && secs <= policy.max_s();
        policy.finish(secs, aimed, rng)
    }

    fn observe(&mut self, t: f64, p: f64) {
        let prev = self.last.replace(Obs::new(t, p)).map(|o| o.p());
        if prev.is_some_and(|l| p < l - 1.0) {
            // Progress went back (a retry, a new attempt): start over.
            self.anchor = None;
            self.seen.clear();
            self.zero = None;
            self.min_rate = 0.0;
        }
        match self.anchor {
            // Zero says the work has not started, not how fast it goes.
            None if p <= 0.0 => self.zero = Some(t as f32),
            None => {
                self.anchor = Some(Obs::new(t, p));
                // Below 0.5 then, at least p - 0.5 now: whatever lags
                // later, the job moved at least this fast. Only from a zero
                // actually read, so the bound does not depend on where
                // `elapsed` starts counting.
                if let Some(z) = self.zero.map(f64::from).filter(|z| t > *z) {
                    self.min_rate = ((p - 1.0) / (t - z)) as f32;
                }
            }
            // Still at the anchor's value before any rise: the later
            // observation is just as true, and closer to the rise.
            Some(a) if self.seen.is_empty() && p <= a.p() => self.anchor = Some(Obs::new(t, a.p())),
            // The same value again: for a job moving steadily the first
            // sighting says as much, and a stall must not look like a
            // finish always a step away (a "99 until done" cap).
            Some(_) if prev == Some(p) => {}
            Some(_) => {
                if self.seen.len() == KEEP {
                    self.seen.remove(0);
                }
                self.seen.push(Obs::new(t, p));
            }
        }
    }

    fn estimate(&self, now: f64) -> Estimate {
        let Some(a) = self.anchor else {
            return Estimate::Unknown;
        };
        if self.last.is_some_and(|l| l.p() >= 100.0) {
            // Done by its own account but not by its status: finishing now.
            return Estimate::Passed;
        }
        let mut late = f64::INFINITY;
        let mut windows = Vec::with_capacity(self.seen.len());
        let mut any = false;
        for c in &self.seen {
            let (dt, dp) = (c.t() - a.t(), c.p() - a.p());
            if dt <= 0.0 || dp < 2.0 {
                continue;
            }
            any = true;
            let (r_low, r_up) = (
                ((dp - 1.0) / dt).max(f64::from(self.min_rate)),
                (dp + 1.0) / dt,
            );
            let hi = if c.p() >= 99.0 { 100.0 } else { c.p() + 0.5 };
            let late_c = c.t() + (100.5 - c.p()) / r_low;
            let early_c = c.t() + (100.0 - hi) / r_up;
            // A live job past a bound disproves it.
            if late_c > now {
                late = late.min(late_c);
                if r_up >= f64::from(self.min_rate) {
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
        // The window's start: the latest early bound not after its end (a
        // lagging reading's early bound can be, and is then ignored).
        let early = windows
            .into_iter()
            .filter(|e| *e <= late)
            .fold(now, f64::max);
        Estimate::Window { late, early }
    }
}

enum Estimate {
    Unknown,
    Window { late: f64, early: f64 },
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
        // With the cap out of the way, each doubling of the duration adds a
        // bounded number of polls: logarithmic, with or without progress.
        let uncapped = PollPolicy {
            max: Duration::from_secs(24 * 3600),
            ..PollPolicy::default()
        };
        let mean = |policy: &PollPolicy, dur: f64, progress: bool| {
            let curve = linear(dur);
            (0..20)
                .map(|s| run(policy, dur, s, |t| if progress { curve(t) } else { None }).0 as f64)
                .sum::<f64>()
                / 20.0
        };
        for progress in [true, false] {
            let polls: Vec<f64> = [30.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0]
                .iter()
                .map(|d| mean(&uncapped, *d, progress))
                .collect();
            assert!(
                polls.windows(2).all(|w| w[1] - w[0] <= 2.0),
                "progress {progress}: {polls:?}"
            );
        }
        // With the default cap of 60 s, still far below fixed 5 s polling.
        let policy = PollPolicy::default();
        for dur in [60.0, 120.0, 300.0, 600.0, 1200.0] {
            let fixed5 = (dur / 5.0f64).ceil();
            let with = mean(&policy, dur, true);
            let without = mean(&policy, dur, false);
            assert!(
                with * 3.0 <= fixed5 + 3.0,
                "{dur} s: {with} polls vs {fixed5}"
            );
            assert!(
                without * 2.0 <= fixed5 + 6.0,
                "{dur} s: {without} polls vs {fixed5}"
            );
        }
    }

    /// U-Gen's curve: linear, except that during generation (positions 0.3
    /// to 0.75) it moves in one step per finished segment, so it lags.
    fn stepped(dur: f64, segments: u32) -> impl Fn(f64) -> Option<u8> {
        move |t| {
            let x = ((t / dur - 0.1) / 0.9).clamp(0.0, 1.0);
            let n = f64::from(segments);
            let x = if (0.3..0.75).contains(&x) {
                0.3 + 0.45 * ((x - 0.3) / 0.45 * n).floor() / n
            } else {
                x
            };
            Some(((x * 100.0).round() as u8).min(99))
        }
    }

    #[test]
    fn lagging_progress_is_still_caught() {
        let policy = PollPolicy::default();
        for segments in [1, 3] {
            let mut delays = Vec::new();
            for dur in [25.0, 30.0, 35.0, 45.0, 60.0, 90.0, 150.0, 240.0] {
                for seed in 0..20 {
                    let (polls, delay) = run(&policy, dur, seed, stepped(dur, segments));
                    let most = (0.15 * dur).max(3.0);
                    assert!(
                        delay <= most,
                        "{segments}/{dur}/{seed}: delay {delay}, {polls} polls"
                    );
                    delays.push(delay);
                }
            }
            delays.sort_by(f64::total_cmp);
            let p90 = delays[delays.len() * 9 / 10];
            assert!(p90 <= 3.0, "{segments} segments: p90 delay {p90}");
        }
    }

    #[test]
    fn stalled_progress_costs_few_polls() {
        let policy = PollPolicy::default();
        for dur in [60.0, 90.0, 240.0] {
            // Progress that stalls at 60 and only finishes at three times
            // the pace it showed.
            let stall = move |t: f64| Some(((t / dur * 100.0).round() as u8).min(60));
            for seed in 0..20 {
                let (polls, _) = run(&policy, 3.0 * dur, seed, stall);
                assert!(polls < 40, "stalled {dur}: {polls} polls");
            }
        }
    }

    #[test]
    fn a_job_followed_from_the_middle_or_restarted_is_still_caught() {
        let policy = PollPolicy::default();
        for seed in 0..20 {
            // Picked up after a daemon restart: already at 50 %, elapsed
            // counting from the restart, finishing 100 s later.
            let (polls, delay) = run(&policy, 100.0, seed, |t| {
                Some(((50.0 + t / 2.0).round() as u8).min(99))
            });
            assert!(
                delay <= 3.5 && polls <= 7,
                "mid-job: {polls} polls, delay {delay}"
            );
            // A retry: rises to 90 by 60 s, falls back to 0, then runs a
            // fresh 100 s attempt.
            let (polls, delay) = run(&policy, 160.0, seed, |t| {
                let x = if t < 60.0 { t * 1.5 } else { t - 60.0 };
                Some((x.round() as u8).min(99))
            });
            assert!(
                delay <= 3.5 && polls <= 11,
                "retry: {polls} polls, delay {delay}"
            );
            // Slowing down: fast to 50 %, then at a third of the pace.
            let (polls, delay) = run(&policy, 160.0, seed, |t| {
                let x = if t < 40.0 {
                    t * 1.25
                } else {
                    50.0 + (t - 40.0) / 2.4
                };
                Some((x.round() as u8).min(99))
            });
            assert!(
                delay <= 4.0 && polls <= 11,
                "slowing: {polls} polls, delay {delay}"
            );
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
