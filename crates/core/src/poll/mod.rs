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
mod tests;
