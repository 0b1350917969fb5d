//! What the scheduler has learned per provider and class of job: each
//! class's duration model and the plan it searched from it, kept once per
//! class (never per job: a job holds a class number).

use std::collections::HashMap;
use std::time::Duration;
use switchyard_core::learn::{DurationModel, LearnedPlan, REPLAN_EVERY};

/// The number of a job whose class is not learned (too many classes).
pub(crate) const UNLEARNED: u16 = u16::MAX;
/// A class's model is saved to the store after this many finishes, or
/// with the first finish this long after the last save: a restart loses
/// little, and a finish does not cost a write of its own.
const SAVE_EVERY: u32 = 10;
const SAVE_AFTER_MS: i64 = 60_000;
/// Between provider and class in a stats key (not in either).
const KEY_SEP: char = '\u{1f}';

pub(crate) struct Class {
    pub(crate) provider: u16,
    pub(crate) name: String,
    pub(crate) model: DurationModel,
    /// The plan and the target it was searched for.
    plan: Option<(Duration, LearnedPlan)>,
    /// Finishes since the plan was searched.
    stale: u64,
    /// Polls per completed job, decayed (recent jobs weigh more).
    polls: Option<f64>,
    /// Finishes since the last save, and when it was (scheduler ms).
    unsaved: u32,
    saved_ms: i64,
}

#[derive(Default)]
pub(crate) struct Classes {
    all: Vec<Class>,
    index: HashMap<(u16, String), u16>,
}

impl Classes {
    /// The number of `name` at `provider`, made on first sight.
    pub(crate) fn number(&mut self, provider: u16, name: &str) -> u16 {
        self.number_with(provider, name, DurationModel::new())
    }

    /// A class saved by [`Classes::save_due`], as the store gave it back;
    /// false if the record is not one.
    pub(crate) fn restore(
        &mut self,
        key: &str,
        bytes: &[u8],
        provider: impl Fn(&str) -> Option<u16>,
    ) -> bool {
        let Some((p, name)) = key.split_once(KEY_SEP) else {
            return false;
        };
        match (provider(p), DurationModel::from_bytes(bytes)) {
            (Some(p), Some(model)) => self.number_with(p, name, model) != UNLEARNED,
            _ => false,
        }
    }

    /// The record to save for class `n` (key, bytes) if one is due now.
    pub(crate) fn save_due(
        &mut self,
        n: u16,
        now_ms: i64,
        provider: &str,
    ) -> Option<(String, Vec<u8>)> {
        let c = self.all.get_mut(n as usize)?;
        if c.unsaved < SAVE_EVERY && now_ms.saturating_sub(c.saved_ms) < SAVE_AFTER_MS {
            return None;
        }
        c.unsaved = 0;
        c.saved_ms = now_ms;
        Some((format!("{provider}{KEY_SEP}{}", c.name), c.model.to_bytes()))
    }

    fn number_with(&mut self, provider: u16, name: &str, model: DurationModel) -> u16 {
        if let Some(n) = self.index.get(&(provider, name.to_string())) {
            return *n;
        }
        let Ok(n) = u16::try_from(self.all.len()) else {
            return UNLEARNED;
        };
        if n == UNLEARNED {
            return UNLEARNED;
        }
        self.all.push(Class {
            provider,
            name: name.to_string(),
            model,
            plan: None,
            stale: 0,
            polls: None,
            unsaved: 0,
            saved_ms: 0,
        });
        self.index.insert((provider, name.to_string()), n);
        n
    }

    /// The plan to poll a job of class `n` by, for `target`: None until
    /// the class is warm, or when it reports progress.
    pub(crate) fn plan(&mut self, n: u16, target: Duration) -> Option<&LearnedPlan> {
        let c = self.all.get_mut(n as usize)?;
        let fresh = c
            .plan
            .as_ref()
            .is_some_and(|(t, _)| *t == target && c.stale < REPLAN_EVERY);
        if !fresh {
            c.stale = 0;
            c.plan = c.model.steering(target).map(|p| (target, p));
        }
        c.plan.as_ref().map(|(_, p)| p)
    }

    /// A job of class `n` finished after `secs` (as estimated) and
    /// `polls` polls.
    pub(crate) fn finished(&mut self, n: u16, secs: f64, polls: u32) {
        if let Some(c) = self.all.get_mut(n as usize) {
            c.model.observe(secs);
            c.stale = c.stale.saturating_add(1);
            c.unsaved = c.unsaved.saturating_add(1);
            let p = f64::from(polls);
            c.polls = Some(c.polls.map_or(p, |m| m + (p - m) / 20.0));
        }
    }

    /// A poll of a job of class `n` reported progress.
    pub(crate) fn progress(&mut self, n: u16) {
        if let Some(c) = self.all.get_mut(n as usize) {
            if !c.model.reports_progress() {
                c.model.note_progress();
                c.plan = None;
            }
        }
    }

    /// Each class as users see it, with its provider's index.
    pub(crate) fn views(&self) -> Vec<(u16, switchyard_api::PollClassView)> {
        self.all
            .iter()
            .map(|c| {
                let plan = c.plan.as_ref().map(|(_, p)| p);
                (
                    c.provider,
                    switchyard_api::PollClassView {
                        class: c.name.clone(),
                        samples: c.model.seen(),
                        p50_s: c.model.quantile(0.5),
                        p90_s: c.model.quantile(0.9),
                        polls_per_job: c.polls,
                        // Warm and without progress: polled by a plan
                        // (searched when the next job of the class is).
                        learned: c.model.warm() && !c.model.reports_progress(),
                        p95_delay_s: plan.map(|p| p.p95_delay),
                    },
                )
            })
            .collect()
    }
}

/// A finished job's duration from what the scheduler saw: it was live at
/// the poll `gap_ms` before the one that saw it done at `known_ms` after
/// its acknowledgement, so it finished in between; the midpoint halves the
/// error of taking "known at" for "finished at" (up to a whole gap late).
pub(crate) fn estimated_secs(known_ms: i64, gap_ms: u32) -> Option<f64> {
    let known = known_ms as f64 / 1000.0;
    let secs = known - f64::from(gap_ms) / 2000.0;
    (known_ms > 0 && secs.is_finite()).then_some(secs.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_class_is_learned_once_and_planned_when_warm() {
        let mut c = Classes::default();
        let a = c.number(0, "model=x");
        assert_eq!(c.number(0, "model=x"), a);
        let b = c.number(1, "model=x");
        assert_ne!(a, b, "per provider");
        let target = Duration::from_secs(10);
        for i in 0..30 {
            assert_eq!(c.plan(a, target).is_some(), i >= 20, "{i}");
            c.finished(a, 60.0 + f64::from(i), 4);
        }
        assert!(c.plan(a, target).is_some());
        let views = c.views();
        assert_eq!(views[0].1.samples, 30);
        assert_eq!(views[0].1.polls_per_job, Some(4.0));
        assert!(views[0].1.learned && views[0].1.p95_delay_s.is_some_and(|d| d <= 10.0));
        assert!(!views[1].1.learned);
        c.progress(a);
        assert!(
            c.plan(a, target).is_none(),
            "progress keeps its own prediction"
        );
        assert!(c.plan(b, target).is_none());
    }

    #[test]
    fn a_saved_class_is_restored_and_saves_are_spaced() {
        let mut c = Classes::default();
        let a = c.number(3, "model=x");
        let mut saved = Vec::new();
        for i in 0..25 {
            c.finished(a, 50.0 + f64::from(i), 3);
            saved.extend(c.save_due(a, i64::from(i) * 100, "ulazai"));
        }
        // Every 10 finishes within a minute, not per finish.
        assert_eq!(
            saved.len(),
            2,
            "{:?}",
            saved.iter().map(|s| &s.0).collect::<Vec<_>>()
        );
        assert!(c.save_due(a, 120_000, "ulazai").is_some(), "a minute later");
        let (key, bytes) = c.save_due(a, 10_000_000, "ulazai").expect("due");
        let mut back = Classes::default();
        assert!(back.restore(&key, &bytes, |p| (p == "ulazai").then_some(3)));
        assert!(!back.restore(&key, &bytes, |_| None), "unknown provider");
        assert!(!back.restore("no separator", &bytes, |_| Some(0)));
        let n = back.number(3, "model=x");
        let target = Duration::from_secs(10);
        assert!(back.plan(n, target).is_some(), "warm after the restart");
        assert_eq!(back.plan(n, target), c.plan(a, target));
    }

    #[test]
    fn the_duration_is_between_the_last_two_polls() {
        assert_eq!(estimated_secs(100_000, 10_000), Some(95.0));
        assert_eq!(estimated_secs(-5, 10), None);
    }
}
