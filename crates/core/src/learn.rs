//! What finished jobs teach about when to poll: a duration model per class
//! of job, and the fewest polls that keep the delay from finish to known
//! within a target for that many of them. Pure: the engine feeds it
//! durations and asks it for delays; the benchmark replays it.
//!
//! The model is the last [`WINDOW`] durations of a class (a ring, oldest
//! overwritten). A window rather than all history, so that when a provider
//! gets slower (peak hours) the old durations are gone after `WINDOW`
//! finishes and the plan follows the new ones; 40 is enough for the early
//! quantile the plan starts from and forgets a shift within 50 finishes.
//!
//! The planner smooths the window (a kernel in log-duration, so 40 points
//! describe a continuous distribution and the plan does not fit their gaps),
//! then searches schedules of one shape: nothing until an early quantile
//! plus the target (a job finishing before that point is seen late, which
//! the search counts), then fixed gaps near the target while finishing is
//! likely, then gaps growing by half through the tail. It keeps the schedule
//! with the fewest expected polls whose share of jobs seen later than the
//! target is at most [`EXCEED`] (below the 5 % a p95 allows, for the error
//! of estimating from 40 jobs).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Durations kept per class.
pub const WINDOW: usize = 48;
/// Finished jobs a class needs before its plan replaces the configured
/// schedule.
pub const WARM: usize = 20;
/// Share of jobs the plan lets be seen later than the target.
pub const EXCEED: f64 = 0.03;
/// Finished jobs between two searches of a class's plan: a plan moves
/// little with one more duration in 40, and a search costs some 50 us.
pub const REPLAN_EVERY: u64 = 5;
/// Growth of the gaps through the tail and past the planned times.
const GROWTH: f64 = 1.5;
/// Planned times at most (a schedule longer than this is cut: past its end
/// the gaps keep growing).
const MAX_TIMES: usize = 256;
/// The kernel's points: standard normal quantiles at (k + 0.5) / 7.
const KERNEL: [f64; 7] = [
    -1.465_234, -0.791_639, -0.366_106, 0.0, 0.366_106, 0.791_639, 1.465_234,
];

/// The recent durations of one class of job, in seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DurationModel {
    recent: Vec<f32>,
    /// Where the next duration goes once the ring is full.
    next: u32,
    /// Durations seen in all (for views).
    seen: u64,
    /// Jobs of the class report progress: their own prediction is better
    /// than any plan from durations (a first poll late, at an early
    /// quantile, loses the readings it is built from).
    #[serde(default)]
    progress: bool,
}

impl DurationModel {
    pub fn new() -> Self {
        DurationModel::default()
    }

    /// Records a finished job's duration (seconds from acknowledgement to
    /// finish). Non-finite or negative values are ignored.
    pub fn observe(&mut self, secs: f64) {
        if !secs.is_finite() || secs < 0.0 {
            return;
        }
        let v = secs as f32;
        if self.recent.len() < WINDOW {
            self.recent.push(v);
        } else if let Some(slot) = self.recent.get_mut(self.next as usize % WINDOW) {
            *slot = v;
        }
        self.next = ((self.next as usize + 1) % WINDOW) as u32;
        self.seen = self.seen.saturating_add(1);
    }

    /// A poll of the class reported progress.
    pub fn note_progress(&mut self) {
        self.progress = true;
    }

    pub fn reports_progress(&self) -> bool {
        self.progress
    }

    /// The plan to poll by: for a warm class that reports no progress.
    pub fn steering(&self, target: Duration) -> Option<LearnedPlan> {
        if self.progress {
            return None;
        }
        self.plan(target)
    }

    /// Durations in the window.
    pub fn samples(&self) -> usize {
        self.recent.len()
    }

    /// Durations seen since the model started.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Enough durations for a plan.
    pub fn warm(&self) -> bool {
        self.recent.len() >= WARM
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.recent.iter().map(|x| f64::from(*x)).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The `q` quantile of the durations in the window (nearest rank).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let v = self.sorted();
        (!v.is_empty()).then(|| nearest(&v, q))
    }

    /// The plan for `target`, once warm.
    pub fn plan(&self, target: Duration) -> Option<LearnedPlan> {
        if !self.warm() {
            return None;
        }
        Some(LearnedPlan::search(&smooth(&self.sorted()), target))
    }

    /// The model as bytes, to keep in a store.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A model from [`DurationModel::to_bytes`]; None if unreadable.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let mut m: DurationModel = serde_json::from_slice(bytes).ok()?;
        m.recent.truncate(WINDOW);
        m.recent.retain(|x| x.is_finite() && *x >= 0.0);
        m.next %= WINDOW as u32;
        Some(m)
    }
}

fn nearest(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Each duration spread over [`KERNEL`]'s points in log space, bandwidth by
/// Silverman's rule; sorted.
fn smooth(sorted: &[f64]) -> Vec<f64> {
    let logs: Vec<f64> = sorted.iter().map(|x| x.max(0.05).ln()).collect();
    let n = logs.len().max(1) as f64;
    let mean = logs.iter().sum::<f64>() / n;
    let sd = (logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / n).sqrt();
    let iqr = if logs.is_empty() {
        0.0
    } else {
        nearest(&logs, 0.75) - nearest(&logs, 0.25)
    };
    let spread = if iqr > 0.0 { sd.min(iqr / 1.34) } else { sd };
    let h = 0.9 * spread * n.powf(-0.2);
    let mut out: Vec<f64> = logs
        .iter()
        .flat_map(|l| KERNEL.iter().map(move |z| (l + h * z).exp()))
        .collect();
    out.sort_by(f64::total_cmp);
    out
}

/// Poll times (seconds since acknowledgement) planned for a class.
#[derive(Debug, Clone, PartialEq)]
pub struct LearnedPlan {
    times: Vec<f32>,
    /// The last gap, which grows past the last time.
    last_gap: f32,
    /// Expected polls per job and p95 delay, on the learned distribution.
    pub polls_per_job: f64,
    pub p95_delay: f64,
}

impl LearnedPlan {
    /// The schedule with the fewest expected polls on `points` (sorted
    /// durations) whose share of delays over `target` is at most [`EXCEED`].
    pub fn search(points: &[f64], target: Duration) -> Self {
        let t = target.as_secs_f64().max(0.01);
        let mut best: Option<(f64, Vec<f64>)> = None;
        if points.is_empty() {
            return LearnedPlan::from_times(vec![t], t, 1.0, 0.0);
        }
        let end = points.last().copied().unwrap_or(t);
        for a in [0.0, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03] {
            let start = (nearest(points, a) + t).max(0.01);
            for f in [0.97, 0.98, 0.99, 1.0, 1.02, 1.05, 1.1] {
                let gap = t * f;
                for b in [0.0, 0.0025, 0.005] {
                    let tail = if b == 0.0 {
                        f64::INFINITY
                    } else {
                        nearest(points, 1.0 - b)
                    };
                    let times = schedule(start, gap, tail, end);
                    let (polls, exceed) = evaluate(&times, points, t, None);
                    if exceed <= EXCEED && best.as_ref().is_none_or(|(p, _)| polls < *p) {
                        best = Some((polls, times));
                    }
                }
            }
        }
        match best {
            Some((polls, times)) => {
                let mut delays = Vec::with_capacity(points.len());
                evaluate(&times, points, t, Some(&mut delays));
                delays.sort_by(f64::total_cmp);
                let p95 = nearest(&delays, 0.95);
                let last_gap = match times.as_slice() {
                    [.., a, b] => b - a,
                    _ => t,
                };
                LearnedPlan::from_times(times, last_gap, polls, p95)
            }
            // Unreachable: a = 0, b = 0 and gaps of the target see every
            // point within it. A plan of the target's gaps is still right.
            None => LearnedPlan::from_times(schedule(t, t, f64::INFINITY, end), t, 0.0, 0.0),
        }
    }

    fn from_times(times: Vec<f64>, last_gap: f64, polls: f64, p95: f64) -> Self {
        LearnedPlan {
            times: times.into_iter().map(|x| x as f32).collect(),
            last_gap: last_gap as f32,
            polls_per_job: polls,
            p95_delay: p95,
        }
    }

    /// Seconds since acknowledgement of the first planned poll.
    pub fn first(&self) -> f64 {
        self.times.first().map_or(1.0, |x| f64::from(*x))
    }

    /// Seconds from `now` (since acknowledgement) to the next planned poll,
    /// at least `floor`; past the planned times the gaps keep growing.
    pub fn next_delay(&self, now: f64, floor: f64) -> f64 {
        let i = self.times.partition_point(|x| f64::from(*x) < now + floor);
        match self.times.get(i) {
            Some(x) => f64::from(*x) - now,
            None => {
                let end = self.times.last().map_or(0.0, |x| f64::from(*x));
                let gap = f64::from(self.last_gap).max(floor);
                gap.max((now - end) * (GROWTH - 1.0))
            }
        }
    }
}

/// Poll times from `start`: gaps of `gap` until `tail`, then growing, until
/// past `end`.
fn schedule(start: f64, gap: f64, tail: f64, end: f64) -> Vec<f64> {
    let mut times = vec![start];
    let mut t = start;
    let mut g = gap;
    while t < end && times.len() < MAX_TIMES {
        if t >= tail {
            g *= GROWTH;
        }
        t += g;
        times.push(t);
    }
    times
}

/// (mean polls, share of delays over `target`) of `times` on sorted
/// `points`, each delay pushed to `delays` if given; a point past the last
/// time (the schedule runs past the largest point, so only in a cut
/// schedule) counts as one more poll, seen at once.
fn evaluate(
    times: &[f64],
    points: &[f64],
    target: f64,
    mut delays: Option<&mut Vec<f64>>,
) -> (f64, f64) {
    let mut i = 0;
    let mut polls = 0.0;
    let mut over = 0usize;
    for d in points {
        while i < times.len() && times[i] < *d {
            i += 1;
        }
        let (n, at) = match times.get(i) {
            Some(at) => (i + 1, *at),
            None => (times.len() + 1, *d),
        };
        polls += n as f64;
        let delay = at - d;
        if delay > target {
            over += 1;
        }
        if let Some(v) = delays.as_deref_mut() {
            v.push(delay);
        }
    }
    let n = points.len().max(1) as f64;
    (polls / n, over as f64 / n)
}

/// The create params that drive a job's duration across the providers
/// (model, segments, length, mode), in this order.
const CLASS_PARAMS: [&str; 10] = [
    "model",
    "video_model",
    "model_slug",
    "segment_count",
    "segments",
    "duration",
    "segment_duration",
    "mode",
    "qai_mode",
    "interaction_mode",
];

/// A job's class: the values of its duration-driving params, e.g.
/// `model=kling duration=10`; "" when it has none of them. Arrays count by
/// length (a list of segments lasts by how many there are).
pub fn job_class(params: &serde_json::Value) -> String {
    use serde_json::Value;
    let mut out = String::new();
    for name in CLASS_PARAMS {
        let Some(v) = params.get(name) else { continue };
        let v = match v {
            Value::String(s) => s.chars().take(40).collect(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Array(a) => a.len().to_string(),
            Value::Null | Value::Object(_) => continue,
        };
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(&v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn lognormal(rng: &mut SmallRng, median: f64, sigma: f64) -> f64 {
        let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
        let u2: f64 = rng.gen();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        median * (sigma * z).exp()
    }

    /// Follows a job of `dur` by `plan`: (polls, delay).
    fn follow(plan: &LearnedPlan, dur: f64) -> (u32, f64) {
        let mut t = plan.first();
        let mut polls = 1;
        while t < dur {
            t += plan.next_delay(t, 0.5);
            polls += 1;
            assert!(polls < 10_000);
        }
        (polls, t - dur)
    }

    fn measure(plan: &LearnedPlan, durs: &[f64]) -> (f64, f64) {
        let mut polls = 0.0;
        let mut delays: Vec<f64> = durs
            .iter()
            .map(|d| {
                let (n, delay) = follow(plan, *d);
                polls += f64::from(n);
                delay
            })
            .collect();
        delays.sort_by(f64::total_cmp);
        (polls / durs.len() as f64, nearest(&delays, 0.95))
    }

    #[test]
    fn a_class_is_the_params_that_drive_duration() {
        let p = serde_json::json!({
            "prompt": "a cat", "model": "kling", "segments": [{}, {}], "duration": 10,
        });
        assert_eq!(job_class(&p), "model=kling segments=2 duration=10");
        assert_eq!(job_class(&serde_json::json!({"prompt": "x"})), "");
    }

    #[test]
    fn the_window_keeps_the_latest_durations() {
        let mut m = DurationModel::new();
        assert!(m.plan(Duration::from_secs(10)).is_none());
        for i in 0..100 {
            m.observe(f64::from(i));
        }
        m.observe(f64::NAN);
        m.observe(-1.0);
        assert_eq!(m.samples(), WINDOW);
        assert_eq!(m.seen(), 100);
        assert_eq!(m.quantile(0.0), Some((100 - WINDOW) as f64));
        assert_eq!(m.quantile(1.0), Some(99.0));
        assert!(m.steering(Duration::from_secs(10)).is_some());
        m.note_progress();
        assert!(m.steering(Duration::from_secs(10)).is_none());
        let back = DurationModel::from_bytes(&m.to_bytes());
        assert_eq!(back.as_ref(), Some(&m));
        assert!(DurationModel::from_bytes(b"nonsense").is_none());
    }

    #[test]
    fn a_warm_plan_meets_the_target_with_fewer_polls_than_fixed_gaps() {
        let mut rng = SmallRng::seed_from_u64(3);
        let target = Duration::from_secs(10);
        let mut p95s = Vec::new();
        for seed in 0..10 {
            let mut m = DurationModel::new();
            for _ in 0..WINDOW {
                m.observe(lognormal(&mut rng, 90.0, 0.6));
            }
            let plan = m.plan(target).expect("warm");
            let durs: Vec<f64> = (0..4000).map(|_| lognormal(&mut rng, 90.0, 0.6)).collect();
            let (polls, p95) = measure(&plan, &durs);
            let fixed10 = durs.iter().map(|d| (d / 10.0).ceil()).sum::<f64>() / 4000.0;
            // Nothing early: the first poll is past the shortest jobs.
            assert!(plan.first() > 20.0, "{seed}: first at {}", plan.first());
            // One window of 48 can misjudge the early tail: bounded per
            // window, and within the target across windows.
            assert!(p95 <= 15.0, "{seed}: p95 {p95}, {polls} polls");
            assert!(polls <= 0.9 * fixed10, "{seed}: {polls} vs {fixed10}");
            p95s.push(p95);
        }
        p95s.sort_by(f64::total_cmp);
        assert!(p95s[p95s.len() / 2] <= 10.0, "{p95s:?}");
    }

    #[test]
    fn after_durations_double_the_plan_follows_within_the_window() {
        let mut rng = SmallRng::seed_from_u64(5);
        let target = Duration::from_secs(10);
        let mut m = DurationModel::new();
        for _ in 0..200 {
            m.observe(lognormal(&mut rng, 90.0, 0.6));
        }
        let before = m.plan(target).expect("warm");
        for _ in 0..WINDOW {
            m.observe(lognormal(&mut rng, 180.0, 0.6));
        }
        let after = m.plan(target).expect("warm");
        // The first poll is an early quantile plus the target: the quantile
        // has moved with the durations.
        let early = |p: &LearnedPlan| p.first() - 10.0;
        assert!(early(&after) > 1.4 * early(&before), "{before:?} {after:?}");
        let durs: Vec<f64> = (0..4000).map(|_| lognormal(&mut rng, 180.0, 0.6)).collect();
        let (polls, p95) = measure(&after, &durs);
        assert!(p95 <= 10.5, "p95 {p95}, {polls} polls");
        // The old plan on the new durations polls far more.
        let (old_polls, _) = measure(&before, &durs);
        assert!(polls < old_polls, "{polls} vs {old_polls}");
    }

    #[test]
    fn a_tight_target_costs_more_polls() {
        let mut rng = SmallRng::seed_from_u64(9);
        let mut m = DurationModel::new();
        for _ in 0..WINDOW {
            m.observe(lognormal(&mut rng, 90.0, 0.6));
        }
        let five = m.plan(Duration::from_secs(5)).expect("warm");
        let twenty = m.plan(Duration::from_secs(20)).expect("warm");
        assert!(five.polls_per_job > 1.5 * twenty.polls_per_job);
        assert!(five.p95_delay <= 5.0 && twenty.p95_delay <= 20.0);
        // Past the planned times, gaps grow and stay at least the floor.
        let end = f64::from(*five.times.last().expect("times"));
        let d1 = five.next_delay(end + 1.0, 1.0);
        let d2 = five.next_delay(end + 1000.0, 1.0);
        assert!(d1 >= 1.0 && d2 > d1, "{d1} {d2}");
    }
}
