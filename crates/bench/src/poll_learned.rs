//! The learned part of `switchyard bench poll`: polls per job and p95
//! finish-to-known delay of the plan learned from finished jobs (target
//! 10 s) beside fixed 5 s, fixed 10 s and the seed's 3/5/8/10 s schedule,
//! on three workloads, with the limit of each workload computed in the run:
//! the fewest polls per job any "start, then a fixed gap" schedule needs on
//! the true durations to keep the p95 delay within the target.
//!
//! Jobs run one after another in virtual time, so each job is planned from
//! every job finished before it (in the daemon, jobs in flight together
//! are planned from what finished before they started: a lag of the
//! concurrency, not of the method). What a job teaches is what the daemon
//! sees: the midpoint between the last poll that saw it live and the one
//! that saw it done, not its true duration. Figures count jobs once warm
//! (after the first 50; after a shift, from the 50th job after it), the
//! same jobs for every strategy.

use crate::poll::{pct, rng_for, sorted, Curve};
use std::ops::Range;
use std::time::Duration;
use switchyard_core::learn::{DurationModel, LearnedPlan, REPLAN_EVERY};
use switchyard_core::poll::{PollPlan, PollPolicy};

/// The delay target the learned plan is benchmarked at, seconds.
pub const TARGET_S: f64 = 10.0;
/// Jobs finished before the figures count (a class is warm at 20).
const WARMUP: usize = 50;
/// The bound on polls per job without progress on the log-normal.
pub const POLLS_BOUND: f64 = 9.5;
/// Today's PollPlan with progress, on the log-normal: polls per job and p95.
pub const PROGRESS_BOUND: (f64, f64) = (6.4, 2.3);
const POLL_LIMIT: u32 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Median 90 s, sigma 0.6, one class.
    LogNormal,
    /// Two classes, half each: median 40 s and 200 s, sigma 0.3.
    Bimodal,
    /// Median 90 s, then 180 s from half-way, sigma 0.6, one class.
    Shift,
}

impl Workload {
    pub fn all() -> [Workload; 3] {
        [Workload::LogNormal, Workload::Bimodal, Workload::Shift]
    }

    pub fn name(self) -> &'static str {
        match self {
            Workload::LogNormal => "log-normal (median 90 s, sigma 0.6)",
            Workload::Bimodal => "bimodal (two classes: median 40 s and 200 s, sigma 0.3)",
            Workload::Shift => "shift (median 90 s, doubling to 180 s half-way)",
        }
    }

    /// (class, duration) of `n` jobs.
    pub fn jobs(self, n: usize, seed: u64) -> Vec<(usize, f64)> {
        let mut rng = rng_for(seed, 99, self as u64);
        (0..n)
            .map(|i| match self {
                Workload::LogNormal => (0, lognormal(&mut rng, 90.0, 0.6)),
                Workload::Bimodal => {
                    let class = usize::from(rand::Rng::gen_bool(&mut rng, 0.5));
                    let median = if class == 0 { 40.0 } else { 200.0 };
                    (class, lognormal(&mut rng, median, 0.3))
                }
                Workload::Shift => {
                    let median = if i < n / 2 { 90.0 } else { 180.0 };
                    (0, lognormal(&mut rng, median, 0.6))
                }
            })
            .collect()
    }

    /// The jobs the figures count.
    pub fn counted(self, n: usize) -> Range<usize> {
        match self {
            Workload::Shift => (n / 2 + WARMUP).min(n)..n,
            _ => WARMUP.min(n)..n,
        }
    }
}

fn lognormal(rng: &mut impl rand::Rng, median: f64, sigma: f64) -> f64 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    (median * (sigma * z).exp()).clamp(5.0, 1800.0)
}

#[derive(Debug, Clone, PartialEq)]
pub enum Strat {
    Fixed(f64),
    /// The configured schedule (the seed's 3/5/8/10 s by default), scaled.
    Seed(f64),
    Learned(f64),
}

impl Strat {
    pub fn name(&self) -> String {
        match self {
            Strat::Fixed(s) => format!("fixed {s} s"),
            Strat::Seed(f) if *f == 1.0 => "seed 3/5/8/10 s".into(),
            Strat::Seed(f) => format!("seed x{f}"),
            Strat::Learned(t) => format!("learned, target {t} s"),
        }
    }
}

fn seed_policy(scale: f64) -> PollPolicy {
    let d = PollPolicy::default();
    PollPolicy::new(
        d.schedule.iter().map(|s| s.mul_f64(scale)).collect(),
        d.max.mul_f64(scale.max(1.0)),
    )
}

/// Follows one job: (polls, last time seen live, time seen done, whether
/// a poll reported progress).
fn follow_plan(
    policy: &PollPolicy,
    learned: Option<&LearnedPlan>,
    curve: Curve,
    dur: f64,
    rng: &mut rand::rngs::SmallRng,
) -> (u32, f64, f64, bool) {
    let mut plan = PollPlan::new();
    let mut t = PollPlan::first_with(policy, learned, rng).as_secs_f64();
    let (mut polls, mut before, mut progress) = (1, 0.0, false);
    while t < dur && polls < POLL_LIMIT {
        let p = curve.progress(t, dur);
        progress |= p.is_some();
        let d = plan.next_with(policy, Duration::from_secs_f64(t), p, learned, rng);
        before = t;
        t += d.as_secs_f64();
        polls += 1;
    }
    (polls, before, t, progress)
}

/// (polls, delay) of every job, in order.
pub fn simulate(strat: &Strat, curve: Curve, jobs: &[(usize, f64)], seed: u64) -> Vec<(u32, f64)> {
    let mut models: Vec<DurationModel> = Vec::new();
    let mut plans: Vec<Option<LearnedPlan>> = Vec::new();
    let policy = match strat {
        Strat::Seed(f) => seed_policy(*f),
        _ => PollPolicy::default(),
    };
    jobs.iter()
        .enumerate()
        .map(|(i, (class, dur))| {
            let mut rng = rng_for(seed, 1000 + curve_id(curve), i as u64);
            match strat {
                Strat::Fixed(every) => {
                    let polls = (dur / every).ceil().max(1.0);
                    (polls as u32, polls * every - dur)
                }
                Strat::Seed(_) => {
                    let (n, _, t, _) = follow_plan(&policy, None, curve, *dur, &mut rng);
                    (n, t - dur)
                }
                Strat::Learned(target) => {
                    if models.len() <= *class {
                        models.resize_with(class + 1, DurationModel::new);
                        plans.resize(class + 1, None);
                    }
                    let learned = plans[*class].as_ref();
                    let (n, before, t, progress) =
                        follow_plan(&policy, learned, curve, *dur, &mut rng);
                    let m = &mut models[*class];
                    m.observe((before + t) / 2.0);
                    if progress {
                        m.note_progress();
                    }
                    if plans[*class].is_none() || m.seen() % REPLAN_EVERY == 0 {
                        plans[*class] = m.steering(Duration::from_secs_f64(*target));
                    }
                    (n, t - dur)
                }
            }
        })
        .collect()
}

fn curve_id(c: Curve) -> u64 {
    match c {
        Curve::Ugclab => 1,
        Curve::Ugen { segments } => 10 + u64::from(segments),
        Curve::Ulazai => 2,
        Curve::Viggle => 3,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub strategy: String,
    pub polls: f64,
    pub delay_p50: f64,
    pub delay_p95: f64,
    pub delay_max: f64,
}

fn figures(name: String, runs: &[(u32, f64)]) -> Figures {
    let n = runs.len().max(1) as f64;
    let polls = runs.iter().map(|(p, _)| f64::from(*p)).sum::<f64>() / n;
    let delays = sorted(runs.iter().map(|(_, d)| *d).collect());
    Figures {
        strategy: name,
        polls,
        delay_p50: pct(&delays, 0.5),
        delay_p95: pct(&delays, 0.95),
        delay_max: delays.last().copied().unwrap_or(0.0),
    }
}

/// The limit on `durs`: the fewest mean polls of a schedule "first poll at
/// `start`, then every `gap`" whose p95 delay is within `target`;
/// (polls, start, gap).
pub fn limit(durs: &[f64], target: f64) -> (f64, f64, f64) {
    let durs = sorted(durs.to_vec());
    let n = durs.len();
    if n == 0 {
        return (0.0, 0.0, target);
    }
    // Nearest-rank p95 within the target: at most this many over it.
    let allowed = n - (0.95 * n as f64).ceil() as usize;
    let top = pct(&durs, 0.2);
    let mut best = (f64::INFINITY, 0.0, target);
    let steps = (top / 0.5).ceil() as usize;
    for si in 0..=steps {
        let start = si as f64 * 0.5;
        for gi in 0..=40 {
            let gap = target * (1.0 + 0.01 * f64::from(gi));
            let (mut polls, mut over) = (0.0, 0);
            for d in &durs {
                let k = if *d <= start {
                    0.0
                } else {
                    ((d - start) / gap).ceil()
                };
                polls += k + 1.0;
                if start + k * gap - d > target {
                    over += 1;
                }
            }
            let polls = polls / n as f64;
            if over <= allowed && polls < best.0 {
                best = (polls, start, gap);
            }
        }
    }
    best
}

#[derive(Debug, Clone, PartialEq)]
pub struct CurveFigures {
    pub curve: Curve,
    /// Fixed 5 s, fixed 10 s, seed, learned, in that order.
    pub strategies: Vec<Figures>,
}

impl CurveFigures {
    pub fn fixed10(&self) -> Option<&Figures> {
        self.strategies.get(1)
    }
    pub fn learned(&self) -> Option<&Figures> {
        self.strategies.get(3)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadFigures {
    pub workload: Workload,
    pub counted: usize,
    /// Limit (polls, start, gap) on the counted jobs at the target.
    pub limit: (f64, f64, f64),
    pub curves: Vec<CurveFigures>,
    /// Shift only: the learned plan without progress on the 50 jobs right
    /// after the shift.
    pub after_shift: Option<Figures>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LearnedReport {
    pub jobs: usize,
    pub seed: u64,
    pub workloads: Vec<WorkloadFigures>,
}

fn strategies() -> [Strat; 4] {
    [
        Strat::Fixed(5.0),
        Strat::Fixed(10.0),
        Strat::Seed(1.0),
        Strat::Learned(TARGET_S),
    ]
}

/// The curves benchmarked: no progress first.
pub fn curves() -> [Curve; 3] {
    [Curve::Ulazai, Curve::Ugclab, Curve::Ugen { segments: 3 }]
}

pub fn run(jobs: usize, seed: u64) -> LearnedReport {
    let workloads = Workload::all()
        .into_iter()
        .map(|w| {
            let all = w.jobs(jobs, seed);
            let range = w.counted(jobs);
            let durs: Vec<f64> = all[range.clone()].iter().map(|(_, d)| *d).collect();
            let mut after_shift = None;
            let curves = curves()
                .into_iter()
                .map(|curve| CurveFigures {
                    curve,
                    strategies: strategies()
                        .iter()
                        .map(|s| {
                            let runs = simulate(s, curve, &all, seed);
                            if w == Workload::Shift
                                && curve == Curve::Ulazai
                                && matches!(s, Strat::Learned(_))
                            {
                                let first = jobs / 2..(jobs / 2 + WARMUP).min(jobs);
                                after_shift = Some(figures(s.name(), &runs[first]));
                            }
                            figures(s.name(), &runs[range.clone()])
                        })
                        .collect(),
                })
                .collect();
            WorkloadFigures {
                workload: w,
                counted: range.len(),
                limit: limit(&durs, TARGET_S),
                curves,
                after_shift,
            }
        })
        .collect();
    LearnedReport {
        jobs,
        seed,
        workloads,
    }
}

/// Learned polls per job over fixed 10 s's, without progress.
fn ratio(w: &WorkloadFigures) -> Option<f64> {
    let c = w.curves.first()?;
    Some(c.learned()?.polls / c.fixed10()?.polls.max(1e-9))
}

/// Each goal with whether it was met, on the report's own figures.
pub fn goals(r: &LearnedReport) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let get = |w: Workload| r.workloads.iter().find(|f| f.workload == w);
    let lognormal = get(Workload::LogNormal);
    let base = lognormal.and_then(ratio).unwrap_or(0.0);
    if let Some(l) = lognormal.and_then(|w| w.curves.first()?.learned()) {
        out.push((
            format!(
                "log-normal, no progress: p95 {:.2} s <= {TARGET_S} s with {:.2} <= {POLLS_BOUND} polls/job",
                l.delay_p95, l.polls
            ),
            l.delay_p95 <= TARGET_S && l.polls <= POLLS_BOUND,
        ));
    }
    if let Some(w) = get(Workload::Bimodal) {
        if let (Some(l), Some(q)) = (w.curves.first().and_then(|c| c.learned()), ratio(w)) {
            out.push((
                format!(
                    "bimodal, no progress: p95 {:.2} s <= {TARGET_S} s, polls vs fixed 10 s {q:.3} <= log-normal's {base:.3}",
                    l.delay_p95
                ),
                l.delay_p95 <= TARGET_S && q <= base,
            ));
        }
    }
    if let Some(w) = lognormal {
        for c in w.curves.iter().skip(1) {
            // No worse than today: the seed's PollPlan with progress, on
            // the same jobs in this run.
            if let (Some(l), Some(today)) = (c.learned(), c.strategies.get(2)) {
                out.push((
                    format!(
                        "log-normal, {}: {:.2} polls/job, p95 {:.2} s, no worse than today's {:.2} and {:.2} s (the goal quoted: {} and {} s)",
                        c.curve.name(),
                        l.polls,
                        l.delay_p95,
                        today.polls,
                        today.delay_p95,
                        PROGRESS_BOUND.0,
                        PROGRESS_BOUND.1
                    ),
                    l.polls <= today.polls + 1e-9 && l.delay_p95 <= today.delay_p95 + 1e-9,
                ));
            }
        }
    }
    if let Some(w) = get(Workload::Shift) {
        if let (Some(l), Some(q)) = (w.curves.first().and_then(|c| c.learned()), ratio(w)) {
            out.push((
                format!(
                    "shift, no progress, from the 50th job after it: p95 {:.2} s <= {TARGET_S} s, polls vs fixed 10 s {q:.3} <= {base:.3}",
                    l.delay_p95
                ),
                l.delay_p95 <= TARGET_S && q <= base,
            ));
        }
    }
    out
}

pub fn print(r: &LearnedReport) {
    println!();
    println!(
        "learned plan: {} jobs per workload, seed {}, target {TARGET_S} s; figures from the 50th job (after a shift, the 50th after it)",
        r.jobs, r.seed
    );
    for w in &r.workloads {
        println!();
        let (lp, ls, lg) = w.limit;
        println!(
            "  {} ({} jobs counted); limit: {lp:.2} polls/job (first poll at {ls:.1} s, then every {lg:.2} s)",
            w.workload.name(),
            w.counted
        );
        for c in &w.curves {
            println!("    {}", c.curve.name());
            println!(
                "      {:<24} {:>9} {:>10} {:>10} {:>10} {:>9}",
                "strategy", "polls/job", "delay p50", "delay p95", "delay max", "vs limit"
            );
            for s in &c.strategies {
                println!(
                    "      {:<24} {:>9.2} {:>9.2}s {:>9.2}s {:>9.2}s {:>8.2}x",
                    s.strategy,
                    s.polls,
                    s.delay_p50,
                    s.delay_p95,
                    s.delay_max,
                    s.polls / lp.max(1e-9)
                );
            }
        }
        if let Some(a) = &w.after_shift {
            println!(
                "    the first 50 jobs after the shift, no progress: {:.2} polls/job, p95 {:.2} s, max {:.2} s",
                a.polls, a.delay_p95, a.delay_max
            );
        }
    }
    println!();
    for (goal, met) in goals(r) {
        println!("  goal: {goal}: {}", if met { "met" } else { "NOT met" });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_the_fewest_polls_of_a_start_and_gap() {
        // Every job lasts 100 s: one poll at 100 s sees all of them at once.
        let (polls, start, _) = limit(&[100.0; 50], 10.0);
        assert!((polls - 1.0).abs() < 1e-9, "{polls} from {start}");
        // Uniform over 0..100: about 100 / gap polls, gap a little over the
        // target (5 % may be seen later than it).
        let durs: Vec<f64> = (0..1000).map(|i| f64::from(i) / 10.0).collect();
        let (polls, start, gap) = limit(&durs, 10.0);
        // (on average over the jobs: half-way is 5 gaps in). The 5 % seen
        // late are the earliest: starting later saves a poll for every job.
        assert!((4.0..6.0).contains(&polls), "{polls}");
        assert!(gap >= 10.0 && start > 10.0, "{start} {gap}");
    }

    /// The goals on 600 jobs per workload: fails if learning regresses.
    #[test]
    fn the_learned_plan_meets_its_goals() {
        let r = run(600, 1);
        print(&r);
        for (goal, met) in goals(&r) {
            assert!(met, "{goal}");
        }
        // One class: nothing beats the limit by much (it is a bound of
        // one shape; a plan of a mix of classes can, by knowing them).
        let w = &r.workloads[0];
        let l = w.curves[0].learned().expect("learned");
        assert!(l.polls >= 0.9 * w.limit.0, "{l:?} vs {:?}", w.limit);
    }
}
