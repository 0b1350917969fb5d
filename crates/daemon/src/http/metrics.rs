//! `/metrics`: the engine's values in OpenMetrics text, written by
//! prometheus-client. Built per scrape from one snapshot (a few dozen
//! series), so every series of one scrape is from the same instant.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use switchyard_core::JobState;
use switchyard_engine::{HistogramValues, MetricsSnapshot, ProviderCounters};
use switchyard_provider::answer_kind;

type Labels = Vec<(&'static str, String)>;

/// The poll delay histogram as the engine counted it.
#[derive(Debug)]
struct Buckets(HistogramValues);

impl EncodeMetric for Buckets {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = &self.0;
        let buckets: Vec<(f64, u64)> = h
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(h.counts.iter().copied())
            .collect();
        encoder.encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn provider(name: &str) -> Labels {
    vec![("provider", name.to_string())]
}

/// The scrape's text. `providers`: every configured provider, so that a
/// series never vanishes when its count drops to zero.
pub fn render(snap: MetricsSnapshot, providers: &[String]) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::default();

    let jobs = Family::<Labels, Gauge>::default();
    for name in providers {
        for state in JobState::ALL {
            let n = snap
                .jobs
                .iter()
                .find(|c| c.provider == *name && c.state == state)
                .map_or(0, |c| c.jobs);
            let labels = vec![("provider", name.clone()), ("state", state.to_string())];
            jobs.get_or_create(&labels).set(n as i64);
        }
    }
    reg.register("switchyard_jobs", "Jobs by provider and state.", jobs);

    type Read = fn(&ProviderCounters) -> u64;
    let counters: [(&str, &str, Read); 7] = [
        (
            "switchyard_requests",
            "Requests sent to the provider.",
            |c| c.requests,
        ),
        ("switchyard_creates", "Create calls sent.", |c| c.creates),
        ("switchyard_polls", "Status polls sent.", |c| c.polls),
        ("switchyard_rate_limited", "429 answers received.", |c| {
            c.rate_limited
        }),
        (
            "switchyard_retries",
            "Create retries after transient errors.",
            |c| c.retries,
        ),
        ("switchyard_errors", "Error answers received.", |c| c.errors),
        ("switchyard_webhooks", "Webhooks accepted.", |c| c.webhooks),
    ];
    for (name, help, read) in counters {
        let family = Family::<Labels, Counter<u64, AtomicU64>>::default();
        for c in &snap.counters {
            family.get_or_create(&provider(&c.provider)).inc_by(read(c));
        }
        // prometheus-client adds the `_total` suffix of a counter.
        reg.register(name, help, family);
    }

    // Every kind of every provider from the start (at 0), so that an alert
    // on a rise has a series to compare with.
    let unexpected = Family::<Labels, Counter<u64, AtomicU64>>::default();
    for c in &snap.counters {
        for kind in [
            answer_kind::STATUS_WORD,
            answer_kind::MISSING_FIELD,
            answer_kind::UNPARSEABLE_BODY,
        ] {
            let n = c
                .unexpected_answers
                .iter()
                .find(|(k, _)| k == kind)
                .map_or(0, |(_, n)| *n);
            let labels = vec![("provider", c.provider.clone()), ("kind", kind.to_string())];
            unexpected.get_or_create(&labels).inc_by(n);
        }
    }
    reg.register(
        "switchyard_unexpected_answers",
        "Provider answers in a shape no document shows, by kind; the job stays live.",
        unexpected,
    );

    let credits = Family::<Labels, Gauge>::default();
    for v in &snap.providers {
        let set = |kind: &str, n: u64| {
            let labels = vec![("provider", v.name.clone()), ("kind", kind.to_string())];
            credits.get_or_create(&labels).set(n as i64);
        };
        set("charged", v.budget_used);
        set("reserved", v.budget_reserved);
        if let Some(left) = v.budget_left {
            set("left", left);
        }
    }
    reg.register(
        "switchyard_credits",
        "Credits in the current budget period.",
        credits,
    );

    type View = fn(&switchyard_api::ProviderView) -> f64;
    let gauges: [(&str, &str, View); 4] = [
        (
            "switchyard_in_flight",
            "Jobs submitted and not finished.",
            |v| v.in_flight as f64,
        ),
        (
            "switchyard_max_in_flight",
            "Configured max_in_flight.",
            |v| f64::from(v.max_in_flight),
        ),
        (
            "switchyard_paused",
            "1 while dispatch is paused (by a user, or after a 402).",
            |v| f64::from(u8::from(v.paused)),
        ),
        (
            "switchyard_cooldown_seconds",
            "Time left in a 429 cool-down.",
            |v| v.cooldown_ms.unwrap_or(0) as f64 / 1000.0,
        ),
    ];
    for (name, help, read) in gauges {
        let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        for v in &snap.providers {
            family.get_or_create(&provider(&v.name)).set(read(v));
        }
        reg.register(name, help, family);
    }

    reg.register(
        "switchyard_poll_delay_seconds",
        "Delay between a job's scheduled status polls (recorded by the poll scheduler).",
        Buckets(snap.poll_delay),
    );

    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg)?;
    Ok(out)
}
