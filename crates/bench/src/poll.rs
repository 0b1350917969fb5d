//! `switchyard bench poll`: how many polls a job costs and how late the
//! daemon learns that it finished, for the progressive, progress-aimed
//! [`PollPlan`] and for fixed-interval polling at 5 s (UGC Lab's example) and
//! 3 s (Viggle's), on the same jobs in the same run.
//!
//! Virtual time, no sleeping, no network: a poll is an instant, and a job is
//! known finished at the first poll at or after its finish. Durations are
//! log-normal, median 90 s, sigma 0.6 (so the mean is about 108 s and the
//! p95 about 240 s), clamped to [5 s, 30 min] like the simulator's default
//! distribution; every strategy and provider sees the same durations, and
//! all jobs complete (the simulator's default failure rate is 0).
//!
//! At each poll the "provider" answers with the progress the Switchyard
//! simulator reports at that elapsed time. The simulator's functions for it
//! are private (`switchyard_sim::state::Job::view` and the provider modules'
//! `render`), so the curve is reproduced here, and must follow them:
//!
//! - position `x`: 0 for the first tenth of the duration (pending,
//!   `state::PENDING_SHARE`), then rising linearly to 1 at the finish;
//! - UGC Lab `progress` and Viggle `progress_pct`: `round(100 x)`, at most 99
//!   until done;
//! - U-Gen `progress_percent`: the same, except during generation
//!   (`0.3 <= x < 0.75`), where it moves in steps per finished segment,
//!   `round(100 (0.3 + 0.45 k / n))` for `k` of `n` segments done (a
//!   one-segment job sits at 30 for 45 % of its run); `n` = 3 as in the
//!   example batch, and 1 as the worst case;
//! - UlazAI reports no progress.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;
use switchyard_core::poll::{PollPlan, PollPolicy};

/// Median job duration, seconds.
pub const MEDIAN_S: f64 = 90.0;
/// Log-normal sigma of job durations.
pub const SIGMA: f64 = 0.6;
/// The simulator's default duration clamps.
const MIN_S: f64 = 5.0;
const MAX_S: f64 = 1800.0;
/// Share of a job spent pending (progress 0), as in the simulator.
const PENDING_SHARE: f64 = 0.1;
/// U-Gen's generation stage, as positions (simulator `ugen::GEN_START/END`).
const GEN_START: f64 = 0.3;
const GEN_END: f64 = 0.75;
/// Polls after which a job is given up on (never reached: the longest job
/// is 30 min); keeps a regressed policy from looping.
const POLL_LIMIT: u32 = 100_000;

/// A provider's progress curve, as the simulator reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    Ugclab,
    Ugen { segments: u32 },
    Ulazai,
    Viggle,
}

impl Curve {
    pub fn name(self) -> String {
        match self {
            Curve::Ugclab => "ugclab (progress)".into(),
            Curve::Ugen { segments } => format!("ugen, {segments} segment(s) (progress_percent)"),
            Curve::Ulazai => "ulazai (no progress)".into(),
            Curve::Viggle => "viggle (progress_pct)".into(),
        }
    }

    pub fn reports_progress(self) -> bool {
        self != Curve::Ulazai
    }

    /// What a status call at `t` seconds reports for a job of `dur` seconds
    /// that is still live (`t < dur`).
    pub fn progress(self, t: f64, dur: f64) -> Option<u8> {
        let frac = t / dur.max(1e-9);
        let x = if frac < PENDING_SHARE {
            0.0
        } else {
            ((frac - PENDING_SHARE) / (1.0 - PENDING_SHARE)).min(1.0)
        };
        let pct = |x: f64| (x.clamp(0.0, 1.0) * 100.0).round() as u8;
        match self {
            Curve::Ulazai => None,
            Curve::Ugclab | Curve::Viggle => Some(pct(x).min(99)),
            Curve::Ugen { segments } => {
                let n = f64::from(segments.max(1));
                let shown = if (GEN_START..GEN_END).contains(&x) {
                    let k = (((x - GEN_START) / (GEN_END - GEN_START)) * n).floor();
                    GEN_START + (GEN_END - GEN_START) * k / n
                } else {
                    x
                };
                Some(pct(shown).min(99))
            }
        }
    }
}

/// How a job is followed.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    Fixed(Duration),
    Plan(PollPolicy),
}

impl Strategy {
    pub fn name(&self) -> String {
        match self {
            Strategy::Fixed(d) => format!("fixed {} s", d.as_secs_f64()),
            Strategy::Plan(_) => "switchyard PollPlan".into(),
        }
    }
}

/// One strategy on one provider's jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct StrategyFigures {
    pub strategy: String,
    pub polls_mean: f64,
    pub polls_p50: f64,
    /// Seconds between the finish and the poll that saw it.
    pub delay_p50: f64,
    pub delay_p95: f64,
    pub delay_max: f64,
    /// Mean polls per job over fixed 5 s's.
    pub polls_vs_fixed5: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProviderFigures {
    pub curve: Curve,
    /// Fixed 5 s, fixed 3 s, PollPlan, in that order.
    pub strategies: Vec<StrategyFigures>,
}

impl ProviderFigures {
    fn get(&self, i: usize) -> Option<&StrategyFigures> {
        self.strategies.get(i)
    }

    pub fn fixed5(&self) -> Option<&StrategyFigures> {
        self.get(0)
    }

    pub fn plan(&self) -> Option<&StrategyFigures> {
        self.get(2)
    }

    /// The goal: at most a third of fixed 5 s's polls per job, with a p95
    /// delay no worse than fixed 5 s's.
    pub fn goal_met(&self) -> bool {
        match (self.fixed5(), self.plan()) {
            (Some(f), Some(p)) => p.polls_mean * 3.0 <= f.polls_mean && p.delay_p95 <= f.delay_p95,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PollBenchReport {
    pub jobs: usize,
    pub seed: u64,
    pub duration_mean: f64,
    pub duration_p50: f64,
    pub duration_p95: f64,
    pub providers: Vec<ProviderFigures>,
}

/// A seeded generator for stream `stream`, item `i` (splitmix64 mixing), so
/// a job's jitter does not depend on which jobs ran before it.
pub(crate) fn rng_for(seed: u64, stream: u64, i: u64) -> SmallRng {
    let mut z =
        seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    SmallRng::seed_from_u64(z ^ (z >> 31))
}

/// Log-normal durations (Box-Muller, as the simulator draws them).
pub fn durations(jobs: usize, seed: u64) -> Vec<f64> {
    let mut rng = rng_for(seed, 0, 0);
    (0..jobs)
        .map(|_| {
            let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
            let u2: f64 = rng.gen();
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            (MEDIAN_S * (SIGMA * z).exp()).clamp(MIN_S, MAX_S)
        })
        .collect()
}

/// Follows one job of `dur` seconds: (polls, seconds from finish to known).
pub fn follow(strategy: &Strategy, curve: Curve, dur: f64, rng: &mut SmallRng) -> (u32, f64) {
    match strategy {
        Strategy::Fixed(every) => {
            let every = every.as_secs_f64().max(1e-3);
            let polls = (dur / every).ceil().max(1.0);
            (polls as u32, polls * every - dur)
        }
        Strategy::Plan(policy) => {
            let mut plan = PollPlan::new();
            let mut t = PollPlan::first(policy, rng).as_secs_f64();
            let mut polls = 1;
            while t < dur && polls < POLL_LIMIT {
                let d = plan.next(
                    policy,
                    Duration::from_secs_f64(t),
                    curve.progress(t, dur),
                    rng,
                );
                t += d.as_secs_f64();
                polls += 1;
            }
            (polls, t - dur)
        }
    }
}

/// Nearest-rank percentile of sorted values.
pub(crate) fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// The providers benchmarked: each progress curve the simulator has.
pub fn curves() -> [Curve; 5] {
    [
        Curve::Ugclab,
        Curve::Ugen { segments: 3 },
        Curve::Ugen { segments: 1 },
        Curve::Viggle,
        Curve::Ulazai,
    ]
}

pub fn run(jobs: usize, seed: u64) -> PollBenchReport {
    let durs = durations(jobs, seed);
    let strategies = [
        Strategy::Fixed(Duration::from_secs(5)),
        Strategy::Fixed(Duration::from_secs(3)),
        Strategy::Plan(PollPolicy::default()),
    ];
    let mut providers = Vec::new();
    for (ci, curve) in curves().into_iter().enumerate() {
        let mut figures: Vec<StrategyFigures> = Vec::new();
        for (si, strategy) in strategies.iter().enumerate() {
            let mut polls = Vec::with_capacity(jobs);
            let mut delays = Vec::with_capacity(jobs);
            for (i, dur) in durs.iter().enumerate() {
                let mut rng = rng_for(seed, 1 + (ci * strategies.len() + si) as u64, i as u64);
                let (n, delay) = follow(strategy, curve, *dur, &mut rng);
                polls.push(f64::from(n));
                delays.push(delay);
            }
            let polls_mean = polls.iter().sum::<f64>() / jobs.max(1) as f64;
            let (polls, delays) = (sorted(polls), sorted(delays));
            let fixed5 = figures.first().map_or(polls_mean, |f| f.polls_mean);
            figures.push(StrategyFigures {
                strategy: strategy.name(),
                polls_mean,
                polls_p50: pct(&polls, 0.5),
                delay_p50: pct(&delays, 0.5),
                delay_p95: pct(&delays, 0.95),
                delay_max: delays.last().copied().unwrap_or(0.0),
                polls_vs_fixed5: polls_mean / fixed5.max(1e-9),
            });
        }
        providers.push(ProviderFigures {
            curve,
            strategies: figures,
        });
    }
    let duration_mean = durs.iter().sum::<f64>() / jobs.max(1) as f64;
    let durs = sorted(durs);
    PollBenchReport {
        jobs,
        seed,
        duration_mean,
        duration_p50: pct(&durs, 0.5),
        duration_p95: pct(&durs, 0.95),
        providers,
    }
}

pub fn print(r: &PollBenchReport) {
    println!(
        "poll benchmark: {} jobs, seed {}, durations log-normal (median {MEDIAN_S} s, sigma {SIGMA}): mean {:.0} s, p50 {:.0} s, p95 {:.0} s; virtual time",
        r.jobs, r.seed, r.duration_mean, r.duration_p50, r.duration_p95
    );
    println!("goal: PollPlan polls per job <= 1/3 of fixed 5 s, p95 delay (finish -> known) <= fixed 5 s's");
    for p in &r.providers {
        println!();
        println!("  {}", p.curve.name());
        println!(
            "    {:<22} {:>11} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "strategy", "polls/job", "polls p50", "delay p50", "delay p95", "delay max", "vs 5 s"
        );
        for s in &p.strategies {
            println!(
                "    {:<22} {:>11.2} {:>10.0} {:>9.2}s {:>9.2}s {:>9.2}s {:>9.2}x",
                s.strategy,
                s.polls_mean,
                s.polls_p50,
                s.delay_p50,
                s.delay_p95,
                s.delay_max,
                s.polls_vs_fixed5
            );
        }
        let verdict = if p.goal_met() {
            "met"
        } else if p.curve.reports_progress() {
            "NOT met"
        } else {
            "not met (no progress to aim with; the goal is for providers that report it)"
        };
        println!("    goal: {verdict}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curves_follow_the_simulator() {
        let dur = 100.0;
        // Pending for the first tenth, then linear, capped at 99.
        assert_eq!(Curve::Viggle.progress(9.0, dur), Some(0));
        assert_eq!(Curve::Viggle.progress(55.0, dur), Some(50));
        assert_eq!(Curve::Ugclab.progress(99.95, dur), Some(99));
        assert_eq!(Curve::Ulazai.progress(50.0, dur), None);
        // U-Gen: steps of 15 during generation with three segments.
        let ugen = Curve::Ugen { segments: 3 };
        assert_eq!(ugen.progress(10.0 + 0.2 * 90.0, dur), Some(20));
        assert_eq!(ugen.progress(10.0 + 0.4 * 90.0, dur), Some(30));
        assert_eq!(ugen.progress(10.0 + 0.5 * 90.0, dur), Some(45));
        assert_eq!(ugen.progress(10.0 + 0.8 * 90.0, dur), Some(80));
        assert_eq!(
            Curve::Ugen { segments: 1 }.progress(10.0 + 0.7 * 90.0, dur),
            Some(30)
        );
    }

    #[test]
    fn fixed_polling_is_as_expected() {
        let mut rng = rng_for(1, 0, 0);
        let five = Strategy::Fixed(Duration::from_secs(5));
        assert_eq!(follow(&five, Curve::Viggle, 12.0, &mut rng), (3, 3.0));
        assert_eq!(follow(&five, Curve::Viggle, 15.0, &mut rng), (3, 0.0));
        let d = durations(10_000, 1);
        let median = sorted(d.clone())[5_000];
        assert!((median - MEDIAN_S).abs() < 5.0, "{median}");
    }

    /// The poll plan's goal for providers that report progress, on 1,000
    /// jobs: fails if the policy regresses.
    #[test]
    fn poll_plan_meets_the_goal_on_providers_with_progress() {
        let r = run(1_000, 1);
        print(&r);
        for p in &r.providers {
            let (Some(f5), Some(plan)) = (p.fixed5(), p.plan()) else {
                panic!("missing strategies for {:?}", p.curve);
            };
            // Sanity: fixed 5 s polling's delay is uniform over [0, 5).
            assert!((4.5..5.0).contains(&f5.delay_p95), "{f5:?}");
            assert!(plan.delay_max <= 60.0 + 1e-6, "{:?}: {plan:?}", p.curve);
            if p.curve.reports_progress() {
                assert!(p.goal_met(), "{:?}: {plan:?} vs {f5:?}", p.curve);
            } else {
                // Without progress, still far fewer polls than fixed 5 s.
                assert!(plan.polls_vs_fixed5 < 0.5, "{plan:?}");
            }
        }
        // Deterministic given the seed.
        assert_eq!(r, run(1_000, 1));
    }
}
