//! Checking jobs as they are read: one [`Checker`] of keys, repeats,
//! providers and params (a job's first choice and each of its fallbacks by
//! the same rule) for every way in: check, submit, `POST /v1/jobs`, the
//! inbox. What only the daemon knows (its providers) comes in through a
//! [`Validator`].

use super::{Batch, Problem, Sink, EMPTY};
use std::collections::{BTreeSet, HashMap};
use switchyard_core::JobSpec;

/// What intake needs to know to check a job: the providers by name, with
/// their adapters' validators.
pub trait Validator {
    /// `None` when no provider has that name.
    fn validate(&self, provider: &str, params: &serde_json::Value) -> Option<Vec<String>>;
    fn provider_names(&self) -> Vec<String>;
}

/// Checks jobs one at a time (so a batch need not be held whole): the key
/// rule, keys repeated within the batch, and, given a validator, the
/// provider and its params. [`Checker::finish`] adds the empty-batch rule.
pub struct Checker<'a> {
    v: Option<&'a dyn Validator>,
    names: BTreeSet<String>,
    seen: HashMap<String, usize>,
    problems: Vec<Problem>,
    count: usize,
}

impl<'a> Checker<'a> {
    pub fn new(v: Option<&'a dyn Validator>) -> Checker<'a> {
        Checker {
            names: v
                .map(|v| v.provider_names().into_iter().collect())
                .unwrap_or_default(),
            v,
            seen: HashMap::new(),
            problems: Vec::new(),
            count: 0,
        }
    }

    /// Jobs seen so far.
    pub fn count(&self) -> usize {
        self.count
    }

    pub fn check(&mut self, job: &JobSpec, line: Option<usize>) {
        self.check_at(job, line, &[]);
    }

    /// [`Checker::check`], with the line of each fallback where known.
    pub fn check_at(&mut self, job: &JobSpec, line: Option<usize>, fallback_lines: &[usize]) {
        let i = self.count;
        self.count += 1;
        let mut found = Vec::new();
        if let Err(e) = switchyard_core::check_key(&job.key) {
            found.push(e.to_string());
        }
        if let Some(first) = self.seen.get(job.key.as_str()) {
            found.push(format!("key repeats job #{} of this batch", first + 1));
        } else {
            self.seen.insert(job.key.clone(), i);
        }
        found.extend(self.provider_problems(&job.provider, &job.params));
        match &job.fallback_on {
            Some(on) if on.is_empty() => found.push(
                "fallback_on is empty: name when to move on (failed, budget, paused) or leave it out for [\"failed\"]".into(),
            ),
            Some(_) if job.fallback.is_empty() => found.push(
                "fallback_on is set but the job names no fallback ([[jobs.fallback]] with provider and params)".into(),
            ),
            _ => {}
        }
        let at = |message| Problem {
            index: Some(i),
            key: Some(job.key.clone()),
            line,
            message,
            ..Problem::batch("")
        };
        self.problems.extend(found.into_iter().map(at));
        for (n, alt) in job.fallback.iter().enumerate() {
            for message in self.provider_problems(&alt.provider, &alt.params) {
                self.problems.push(Problem {
                    line: fallback_lines.get(n).copied().or(line),
                    fallback: Some(n + 1),
                    ..at(format!(
                        "fallback #{} (provider {:?}): {message}",
                        n + 1,
                        alt.provider
                    ))
                });
            }
        }
    }

    /// What is wrong with sending `params` to `provider`, by the same rule
    /// for a job's first choice and for each of its fallbacks.
    fn provider_problems(&self, provider: &str, params: &serde_json::Value) -> Vec<String> {
        if !params.is_object() {
            return vec!["params must be a table (the provider's create body)".into()];
        }
        let Some(v) = self.v else {
            return Vec::new();
        };
        match v.validate(provider, params) {
            None => vec![format!(
                "provider {:?} is not configured (configured: {})",
                provider,
                if self.names.is_empty() {
                    "none".into()
                } else {
                    self.names.iter().cloned().collect::<Vec<_>>().join(", ")
                }
            )],
            Some(list) => list,
        }
    }

    /// Every problem found, plus one if the batch had no jobs at all.
    pub fn finish(mut self) -> Vec<Problem> {
        if self.count == 0 {
            self.problems.push(Problem::batch(EMPTY));
        }
        self.problems
    }
}

impl Sink for Checker<'_> {
    fn job(&mut self, job: JobSpec, line: usize, fallback_lines: Vec<usize>) {
        self.check_at(&job, Some(line), &fallback_lines);
    }
}

/// Checks every job; returns every problem, indexed by job.
pub fn check(jobs: &[JobSpec], v: &dyn Validator) -> Vec<Problem> {
    let mut c = Checker::new(Some(v));
    for job in jobs {
        c.check(job, None);
    }
    c.finish()
}

/// What can be checked without the daemon's providers (keys, repeats, an
/// empty batch), with the lines of a parsed file: run before anything is
/// sent, so that a bad file among several sends none.
pub fn check_local(batch: &Batch) -> Vec<Problem> {
    let mut c = Checker::new(None);
    for (i, (job, line)) in batch.jobs.iter().zip(&batch.lines).enumerate() {
        let at = batch.fallback_lines.get(i).map_or(&[][..], |l| &l[..]);
        c.check_at(job, *line, at);
    }
    c.finish()
}

/// Puts the file's line numbers on problems found by index (and, for a
/// fallback's, the line of that fallback).
pub fn locate(problems: &mut [Problem], batch: &Batch) {
    for p in problems {
        if p.line.is_none() {
            if let Some(i) = p.index {
                let fallback = p
                    .fallback
                    .and_then(|n| batch.fallback_lines.get(i)?.get(n.checked_sub(1)?).copied());
                p.line = fallback.or(batch.lines.get(i).copied().flatten());
            }
        }
    }
}
