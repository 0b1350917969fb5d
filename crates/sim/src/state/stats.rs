//! What the simulator keeps score of: the raw per-provider counters updated
//! on every request, and the stats and scripted-job views built from them for
//! `GET /_sim/stats` and `GET /_sim/jobs`. Resetting clears only the score,
//! never the providers' own state.

use super::{lock, raw_status, Outcome, SimState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use switchyard_core::ProviderKind;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounts {
    pub error_5xx: u64,
    pub malformed_json: u64,
    pub slow: u64,
    pub drop: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub requests: u64,
    pub create_requests: u64,
    pub creates: u64,
    pub status_requests: u64,
    pub cancels: u64,
    pub rate_limited: u64,
    pub auth_failures: u64,
    pub faults: FaultCounts,
    pub credits_charged: u64,
    pub credits_refunded: u64,
    pub webhooks_sent: u64,
    pub webhooks_failed: u64,
    /// `PUT /tenants/me/webhook` calls that changed the target.
    pub webhook_registrations: u64,
    pub peak_all: u64,
    pub peak_admitted: u64,
    pub pauses: u64,
    pub resumes: u64,
    pub retries: u64,
    pub retry_stages: BTreeMap<String, u64>,
}

impl SimState {
    pub fn stats(&self) -> Stats {
        let now = self.now_ms();
        let mut providers = BTreeMap::new();
        let mut jobs = 0;
        for prov in &self.providers {
            let mut inner = lock(&prov.inner);
            prov.settle(&mut inner, now);
            jobs += inner.order.len() as u64;
            let c = &inner.counters;
            let mut creates_by_key: BTreeMap<String, u64> = BTreeMap::new();
            for (k, v) in &inner.creates_by_key {
                creates_by_key.insert(k.clone(), *v);
            }
            let duplicate_creates = creates_by_key
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|(k, _)| k.clone())
                .collect();
            providers.insert(
                prov.kind,
                ProviderStats {
                    requests: c.requests,
                    create_requests: c.create_requests,
                    creates: c.creates,
                    status_requests: c.status_requests,
                    cancels: c.cancels,
                    rate_limited: c.rate_limited,
                    auth_failures: c.auth_failures,
                    faults: c.faults,
                    credits_charged: c.credits_charged,
                    credits_refunded: c.credits_refunded,
                    credits_reserved: inner.reserved,
                    credits_balance: prov.cfg.credits,
                    credits_available: prov.available(&inner),
                    webhooks_sent: c.webhooks_sent,
                    webhooks_failed: c.webhooks_failed,
                    webhook_registrations: c.webhook_registrations,
                    webhook_url: inner.webhook.as_ref().map(|w| w.url.clone()),
                    webhook_secret_set: inner.webhook.as_ref().is_some_and(|w| w.secret.is_some()),
                    quota: prov.cfg.rate_limit.map(|r| Quota {
                        per_second: r.per_second,
                        per_minute: r.per_minute,
                        burst: r.burst,
                    }),
                    window_ms: prov.window().as_millis() as u64,
                    peak_requests_in_window: c.peak_all,
                    peak_admitted_in_window: c.peak_admitted,
                    creates_by_key,
                    duplicate_creates,
                    pauses: c.pauses,
                    resumes: c.resumes,
                    retries: c.retries,
                    retries_from_stage: c.retry_stages.clone(),
                },
            );
        }
        Stats {
            uptime_ms: self.clock.uptime_ms(),
            speedup: self.speedup,
            seed: self.seed,
            jobs,
            providers,
        }
    }

    pub fn jobs(&self, only: Option<ProviderKind>) -> Vec<SimJob> {
        let now = self.now_ms();
        let mut out = Vec::new();
        for prov in &self.providers {
            if only.is_some_and(|k| k != prov.kind) {
                continue;
            }
            prov.all_jobs(|j| {
                let v = j.view(now);
                out.push((
                    j.seq,
                    SimJob {
                        provider: j.kind,
                        job_id: j.id.to_string(),
                        client_key: j.client_key.clone(),
                        outcome: j.outcome,
                        scripted: j.forced.is_some(),
                        status: raw_status(j.kind, v).to_string(),
                        attempt: j.attempt,
                        cost: j.cost,
                        created_ms: j.created_ms,
                        finishes_ms: j.finishes_ms(now),
                    },
                ));
            });
        }
        out.sort_by_key(|(seq, _)| *seq);
        out.into_iter().map(|(_, j)| j).collect()
    }

    /// Clears counters, peaks and per-key create counts; jobs, balances and
    /// rate-limiter state are kept (they are the providers' state, not stats).
    pub fn reset_stats(&self) {
        for prov in &self.providers {
            let mut inner = lock(&prov.inner);
            inner.counters = Counters::default();
            inner.win_all.clear();
            inner.win_admitted.clear();
            inner.creates_by_key.clear();
        }
    }
}

/// The configured quota, as shown in stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<u32>,
    pub burst: u32,
}

/// What the simulator has seen, per provider (`GET /_sim/stats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub uptime_ms: u64,
    pub speedup: f64,
    pub seed: u64,
    /// Jobs created across all providers.
    pub jobs: u64,
    pub providers: BTreeMap<ProviderKind, ProviderStats>,
}

impl Stats {
    /// The stats of one provider (all zero if absent).
    pub fn provider(&self, kind: ProviderKind) -> ProviderStats {
        self.providers.get(&kind).cloned().unwrap_or_default()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProviderStats {
    /// API requests received (including rate-limited and faulted ones).
    pub requests: u64,
    pub create_requests: u64,
    /// Jobs actually created (an idempotent replay is not a create).
    pub creates: u64,
    pub status_requests: u64,
    pub cancels: u64,
    /// 429s served.
    pub rate_limited: u64,
    pub auth_failures: u64,
    pub faults: FaultCounts,
    /// U-Gen: consumed on completion; others: charged at create.
    pub credits_charged: u64,
    /// Refunds (failed/cancelled); for U-Gen, released reservations.
    pub credits_refunded: u64,
    /// U-Gen: held by active jobs now.
    pub credits_reserved: u64,
    /// The configured balance (None = unlimited).
    pub credits_balance: Option<u64>,
    pub credits_available: Option<u64>,
    /// Webhooks delivered (2xx) / given up after retries.
    pub webhooks_sent: u64,
    pub webhooks_failed: u64,
    /// Webhook registrations received (U-Gen's `PUT /tenants/me/webhook`),
    /// and where webhooks go now (the secret is never shown).
    #[serde(default)]
    pub webhook_registrations: u64,
    #[serde(default)]
    pub webhook_url: Option<String>,
    #[serde(default)]
    pub webhook_secret_set: bool,
    pub quota: Option<Quota>,
    /// Sliding window of the peak counts: the quota period, or 1 s.
    pub window_ms: u64,
    /// Most requests received in any window (real clock), 429s included.
    pub peak_requests_in_window: u64,
    /// Most requests admitted (not 429) in any window.
    pub peak_admitted_in_window: u64,
    /// Client key (`Idempotency-Key` header, or U-Gen's body key) -> jobs created.
    pub creates_by_key: BTreeMap<String, u64>,
    /// Keys with more than one job created.
    pub duplicate_creates: Vec<String>,
    /// U-Gen: job pauses, resumes and retries accepted.
    #[serde(default)]
    pub pauses: u64,
    #[serde(default)]
    pub resumes: u64,
    #[serde(default)]
    pub retries: u64,
    /// U-Gen: accepted retries by `restart_from_stage` ("" when none).
    #[serde(default)]
    pub retries_from_stage: BTreeMap<String, u64>,
}

/// One job as the simulator scripted it (`GET /_sim/jobs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimJob {
    pub provider: ProviderKind,
    pub job_id: String,
    pub client_key: Option<String>,
    /// Scripted outcome of the current attempt.
    pub outcome: Outcome,
    /// True when `x_sim_outcome` forced the outcome.
    pub scripted: bool,
    /// The provider's raw status word now.
    pub status: String,
    pub attempt: u32,
    pub cost: u64,
    pub created_ms: u64,
    pub finishes_ms: u64,
}
