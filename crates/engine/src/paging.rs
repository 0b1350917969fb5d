//! One page of jobs, filtered, searched and sorted here, so that a page
//! showing 50 rows of 100,000 jobs carries 50 rows and asks the poller for
//! the live progress of those 50 only.
//!
//! Built on [`Store::list`] (by state and provider, through the store's
//! index when a state is given) and [`Store::counts`]: no backend has to
//! learn searching or sorting. What that costs at 100,000 jobs is measured
//! by `switchyard bench dashboard` (docs/PERFORMANCE.md).
//!
//! [`Store::list`]: switchyard_store::Store::list
//! [`Store::counts`]: switchyard_store::Store::counts

use crate::{Engine, EngineError};
use std::str::FromStr;
use switchyard_core::{Job, JobState};
use switchyard_store::Filter;

/// The order a page is sorted in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortKey {
    /// Enqueue order (FIFO), the store's own.
    #[default]
    Seq,
    Key,
    State,
    Provider,
    Priority,
    /// Last change.
    Updated,
}

impl SortKey {
    pub const ALL: [SortKey; 6] = [
        SortKey::Seq,
        SortKey::Key,
        SortKey::State,
        SortKey::Provider,
        SortKey::Priority,
        SortKey::Updated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SortKey::Seq => "seq",
            SortKey::Key => "key",
            SortKey::State => "state",
            SortKey::Provider => "provider",
            SortKey::Priority => "priority",
            SortKey::Updated => "updated",
        }
    }
}

impl FromStr for SortKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SortKey::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown sort {s:?} (expected seq, key, state, provider, priority or updated)"
                )
            })
    }
}

/// Which jobs, in which order, and which slice of them.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    pub state: Option<JobState>,
    pub provider: Option<String>,
    /// A substring of the key (a batch's jobs share its prefix) or of the
    /// provider's job id; case does not matter.
    pub search: Option<String>,
    pub sort: SortKey,
    pub descending: bool,
    pub offset: usize,
    /// `None`: every matching job.
    pub limit: Option<usize>,
}

impl JobQuery {
    fn filter(&self) -> Filter {
        Filter {
            state: self.state,
            provider: self.provider.clone(),
        }
    }

    fn matches(&self, job: &Job, needle: &str) -> bool {
        needle.is_empty()
            || contains_folded(&job.key, needle)
            || job
                .provider_job_id
                .as_deref()
                .is_some_and(|id| contains_folded(id, needle))
    }
}

/// Case-insensitive substring test; `needle` is already lower-cased.
fn contains_folded(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        true
    } else if hay.is_ascii() && needle.is_ascii() {
        hay.as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
    } else {
        hay.to_lowercase().contains(needle)
    }
}

/// A page of jobs and how many matched in all.
#[derive(Debug, Clone)]
pub struct JobsPage {
    pub total: usize,
    pub jobs: Vec<Job>,
}

impl Engine {
    /// Every job `q` matches, sorted, without live progress or holds (for
    /// counting and bulk actions).
    pub(crate) async fn matching(&self, q: &JobQuery) -> Result<Vec<Job>, EngineError> {
        let mut jobs = self.shared.store.list(&q.filter()).await?;
        let needle = q.search.as_deref().unwrap_or("").trim().to_lowercase();
        if !needle.is_empty() {
            jobs.retain(|j| q.matches(j, &needle));
        }
        // The store lists in enqueue order; a stable sort keeps it as the
        // tie-break.
        match q.sort {
            SortKey::Seq => {}
            SortKey::Key => jobs.sort_by(|a, b| a.key.cmp(&b.key)),
            SortKey::State => jobs.sort_by_key(|j| j.state),
            SortKey::Provider => jobs.sort_by(|a, b| a.provider.cmp(&b.provider)),
            // Higher priority first, as dispatch takes them.
            SortKey::Priority => jobs.sort_by_key(|j| std::cmp::Reverse(j.priority)),
            SortKey::Updated => jobs.sort_by(|a, b| a.updated_at.cmp(&b.updated_at)),
        }
        if q.descending {
            jobs.reverse();
        }
        Ok(jobs)
    }

    /// Jobs per provider and state, as the store keeps them (no scan).
    pub async fn counts(&self) -> Result<Vec<switchyard_store::StateCount>, EngineError> {
        Ok(self.shared.store.counts().await?)
    }

    /// These jobs (the ones that exist), with live progress and holds: a
    /// page's rows refreshed in place, without a listing.
    pub async fn jobs_by_key(&self, keys: &[String]) -> Result<Vec<Job>, EngineError> {
        let mut jobs = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(j) = self.shared.store.get(k).await? {
                jobs.push(j);
            }
        }
        self.shared.show_live(&mut jobs).await;
        for j in &mut jobs {
            self.shared.show_hold(j);
        }
        Ok(jobs)
    }

    /// The page `q` asks for, with live progress and holds shown on it.
    pub async fn jobs_page(&self, q: &JobQuery) -> Result<JobsPage, EngineError> {
        let mut jobs = self.matching(q).await?;
        let total = jobs.len();
        let start = q.offset.min(total);
        let end = match q.limit {
            Some(l) => start.saturating_add(l).min(total),
            None => total,
        };
        jobs.truncate(end);
        let mut page = jobs.split_off(start);
        self.shared.show_live(&mut page).await;
        for j in &mut page {
            self.shared.show_hold(j);
        }
        Ok(JobsPage { total, jobs: page })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_ignores_case_and_finds_any_part() {
        assert!(contains_folded("Headphones-TikTok-01", "tiktok"));
        assert!(contains_folded("ünï-Batch", "batch"));
        assert!(contains_folded("ÜNÏ-batch", "ünï"));
        assert!(!contains_folded("abc", "abcd"));
        assert!(!contains_folded("headphones", "tok"));
    }
}
