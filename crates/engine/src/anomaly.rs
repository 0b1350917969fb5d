//! Answers no document shows (an unknown status word, a missing field, a
//! body that does not parse): counted per provider and kind for `/metrics`
//! and `providers`, and logged once per provider and word, because a
//! provider that starts answering a new word answers it on every poll of
//! every job, and one line says all there is to say.

use crate::limits::lock;
use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

/// Distinct (kind, word) pairs logged per provider; beyond this a provider
/// that invents words without end is no longer logged, only counted.
const MAX_LOGGED: usize = 256;

#[derive(Debug, Default)]
pub(crate) struct Anomalies {
    counts: Mutex<BTreeMap<&'static str, u64>>,
    logged: Mutex<HashSet<(&'static str, String)>>,
}

impl Anomalies {
    /// Counts one unexpected answer; logs it the first time this (kind,
    /// detail) is seen. `excerpt` is already redacted by the adapter.
    pub(crate) fn note(
        &self,
        provider: &str,
        key: &str,
        during: &str,
        kind: &'static str,
        detail: &str,
        excerpt: &str,
    ) {
        *lock(&self.counts).entry(kind).or_insert(0) += 1;
        let first = {
            let mut logged = lock(&self.logged);
            logged.len() < MAX_LOGGED && logged.insert((kind, detail.to_string()))
        };
        if first {
            tracing::warn!(
                %provider, %key, kind, detail, excerpt,
                "unexpected answer to a {during}; the job stays live (logged once per provider and {kind})"
            );
        }
    }

    /// Counts by kind.
    pub(crate) fn counts(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.counts).clone()
    }

    pub(crate) fn total(&self) -> u64 {
        lock(&self.counts).values().sum()
    }
}
