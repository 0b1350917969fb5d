//! The poll plan's tests: schedules, progress prediction and bounds.

use super::*;
use rand::rngs::SmallRng;
use rand::SeedableRng;

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Polls a job of `dur` seconds whose progress at `t` is `curve(t)`;
/// returns (polls, delay between the finish and the poll that saw it).
fn run(policy: &PollPolicy, dur: f64, seed: u64, curve: impl Fn(f64) -> Option<u8>) -> (u32, f64) {
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
