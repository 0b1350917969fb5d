//! The values `/metrics` shows, as plain data: the edge chooses the
//! exposition format. Counters are per provider; job counts come from the
//! store's live counts, so a scrape costs no scan.

use crate::{Engine, EngineError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use switchyard_api::ProviderView;
use switchyard_store::StateCount;

/// Upper bounds (seconds) of the poll delay histogram's buckets.
pub const POLL_DELAY_BUCKETS: [f64; 11] =
    [0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0];

#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) poll_delay: Histogram,
}

/// A fixed-bucket histogram. Observed by the scheduler (one thread) and
/// read by scrapes: a mutex that is never contended costs less than the
/// atomics of a lock-free one here.
#[derive(Default)]
pub(crate) struct Histogram {
    inner: Mutex<HistogramValues>,
}

/// A histogram's state: count per bucket (not cumulative; the last is
/// `+Inf`), sum and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramValues {
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let mut h = crate::limits::lock(&self.inner);
        if h.counts.is_empty() {
            h.bounds = POLL_DELAY_BUCKETS.to_vec();
            h.counts = vec![0; POLL_DELAY_BUCKETS.len() + 1];
        }
        let i = POLL_DELAY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(POLL_DELAY_BUCKETS.len());
        if let Some(c) = h.counts.get_mut(i) {
            *c += 1;
        }
        h.sum += secs;
        h.count += 1;
    }

    fn values(&self) -> HistogramValues {
        let mut h = crate::limits::lock(&self.inner).clone();
        if h.counts.is_empty() {
            h.bounds = POLL_DELAY_BUCKETS.to_vec();
            h.counts = vec![0; POLL_DELAY_BUCKETS.len() + 1];
        }
        h
    }
}

/// One provider's request counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderCounters {
    pub provider: String,
    pub requests: u64,
    pub creates: u64,
    pub polls: u64,
    pub rate_limited: u64,
    pub retries: u64,
    pub errors: u64,
    pub webhooks: u64,
    /// Answers no document shows, by kind (`status_word`, `missing_field`,
    /// `unparseable_body`).
    pub unexpected_answers: Vec<(String, u64)>,
}

/// Everything a scrape shows.
#[derive(Debug, Clone)]
pub struct MetricsSnapshot {
    pub jobs: Vec<StateCount>,
    pub counters: Vec<ProviderCounters>,
    pub providers: Vec<ProviderView>,
    pub poll_delay: HistogramValues,
}

impl Engine {
    pub async fn metrics(&self) -> Result<MetricsSnapshot, EngineError> {
        let s = &self.shared;
        let counters = s
            .providers
            .iter()
            .map(|(name, p)| {
                let c = &p.counters;
                let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
                ProviderCounters {
                    provider: name.clone(),
                    requests: get(&c.requests),
                    creates: get(&c.creates),
                    polls: get(&c.polls),
                    rate_limited: get(&c.rate_limited),
                    retries: get(&c.retries),
                    errors: get(&c.errors),
                    webhooks: get(&c.webhooks),
                    unexpected_answers: c
                        .unexpected
                        .counts()
                        .into_iter()
                        .map(|(k, n)| (k.to_string(), n))
                        .collect(),
                }
            })
            .collect();
        let jobs = s.store.counts().await?;
        Ok(MetricsSnapshot {
            providers: self.providers_with(&jobs).await?,
            jobs,
            counters,
            poll_delay: s.metrics.poll_delay.values(),
        })
    }
}
