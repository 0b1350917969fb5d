//! Fallbacks at run time. When a job moves on is core's rule
//! ([`switchyard_core::fallback`]); here is when the engine asks for it:
//!
//! - with every failure it records (one change: failed at its provider,
//!   then queued at the next), unless the failure is one the daemon
//!   declared itself while the provider may still have the job: a poll
//!   timeout (the cancel it sent may not have been honoured), or transient
//!   errors running out on a create the provider may have kept (U-Gen).
//!   Such a job, like an `uncertain` one, stays where it is: a fallback
//!   could pay twice for one video;
//! - for queued jobs, when their provider's queue is held by its budget
//!   (or the provider said it has no credits, 402) or a user paused it:
//!   a sweep every second moves those that asked for that reason.

use crate::limits::ProviderRt;
use crate::Shared;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::fallback::can_hop;
use switchyard_core::{Change, FallbackOn, HeldBy, Job, JobError, JobState};
use switchyard_provider::Provider;
use switchyard_store::Filter;

/// The reason to offer with a failure the daemon records itself (`None`:
/// no fallback may follow it).
pub(crate) fn after_failure(adapter: &dyn Provider, err: &JobError) -> Option<FallbackOn> {
    match err.code.as_str() {
        "timeout" => None,
        // The last error may have been one the provider acted on, and an
        // idempotent provider was not asked before giving up.
        "transient" if adapter.idempotent_create() => None,
        _ => Some(FallbackOn::Failed),
    }
}

impl Shared {
    /// A job moved from provider `from` to its next alternative: its new
    /// provider's dispatcher is woken (the old one's slot is given back by
    /// whoever recorded the move).
    pub(crate) fn hopped(&self, from: &str, job: &Job) {
        tracing::info!(key = %job.key, from = %from, to = %job.provider, "job moved to its fallback");
        match self.providers.get(&job.provider) {
            Some(next) => next.wake.notify_one(),
            None => {
                tracing::warn!(key = %job.key, provider = %job.provider, "the fallback's provider is not configured now: the job waits until it is")
            }
        }
    }

    /// Moves the queued jobs of `p` that asked to leave it for `why` to
    /// their next alternative; returns how many moved.
    async fn sweep(&self, p: &ProviderRt, why: FallbackOn) -> u64 {
        let filter = Filter {
            state: Some(JobState::Queued),
            provider: Some(p.name.clone()),
        };
        let queued = match self.store.list(&filter).await {
            Ok(jobs) => jobs,
            Err(e) => {
                self.store_failed(&format!("listing the queue of {}", p.name), &e);
                return 0;
            }
        };
        let mut moved = 0;
        for job in queued.iter().filter(|j| can_hop(j, why)) {
            let change = Change::to(JobState::Queued, "").fallback(why);
            match self.store.apply(&job.key, JobState::Queued, change).await {
                Ok(j) if j.provider != p.name => {
                    moved += 1;
                    self.hopped(&p.name, &j);
                }
                Ok(_) => {}
                // Claimed or cancelled meanwhile.
                Err(e) if e.is_state_mismatch() => {}
                Err(e) => {
                    self.store_failed(&format!("moving {} to its fallback", job.key), &e);
                    break;
                }
            }
        }
        if moved > 0 {
            // Not durable: the moves are staged and a later sync may write
            // them; until then health says the store is failing.
            self.durable("moving queued jobs to their fallbacks").await;
        }
        moved
    }
}

/// Why `p`'s queue waits, as a reason its jobs may leave it for.
fn held_for(p: &ProviderRt, user_paused: &HashSet<String>) -> Option<FallbackOn> {
    if user_paused.contains(&p.name) {
        Some(FallbackOn::Paused)
    } else if p.paused.load(Ordering::Relaxed) || p.hold() == Some(HeldBy::Budget) {
        Some(FallbackOn::Budget)
    } else {
        None
    }
}

/// Every second, for each provider whose queue is held by its budget or
/// paused: moves the queued jobs that asked for it to their fallbacks. A
/// provider's queue is read again only when the reason or its number of
/// queued jobs changed since the last sweep (two cheap reads a second,
/// no listing, while nothing changes).
pub(crate) async fn fallback_loop(s: Arc<Shared>) {
    let mut swept: HashMap<String, (FallbackOn, u64)> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = s.cancel.cancelled() => return,
        }
        let user_paused: HashSet<String> = match s.store.paused().await {
            Ok(p) => p.into_iter().collect(),
            Err(e) => {
                tracing::debug!("reading paused providers: {e}");
                continue;
            }
        };
        let counts = match s.store.counts().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("reading the store's counts: {e}");
                continue;
            }
        };
        for (name, p) in &s.providers {
            let Some(why) = held_for(p, &user_paused) else {
                swept.remove(name);
                continue;
            };
            let queued = counts
                .iter()
                .find(|c| c.provider == *name && c.state == JobState::Queued)
                .map_or(0, |c| c.jobs);
            if queued == 0 || swept.get(name) == Some(&(why, queued)) {
                continue;
            }
            let moved = s.sweep(p, why).await;
            swept.insert(name.clone(), (why, queued.saturating_sub(moved)));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use switchyard_core::ProviderKind;

    fn rt(kind: ProviderKind) -> std::sync::Arc<dyn Provider> {
        let client = switchyard_provider::default_client(Duration::from_secs(1)).unwrap();
        switchyard_provider::build(kind, Default::default(), client)
    }

    #[test]
    fn no_fallback_after_a_failure_the_provider_may_not_have_had() {
        let (ugen, viggle) = (rt(ProviderKind::Ugen), rt(ProviderKind::Viggle));
        let err = |code: &str| JobError::new(code, "x");
        assert_eq!(after_failure(&*viggle, &err("timeout")), None);
        assert_eq!(after_failure(&*ugen, &err("timeout")), None);
        // Transient errors ran out: U-Gen was not asked whether it kept the
        // create; the others were asked and said no.
        assert_eq!(after_failure(&*ugen, &err("transient")), None);
        assert_eq!(
            after_failure(&*viggle, &err("transient")),
            Some(FallbackOn::Failed)
        );
        assert_eq!(
            after_failure(&*ugen, &err("VALIDATION_ERROR")),
            Some(FallbackOn::Failed)
        );
    }

    #[tokio::test]
    async fn a_user_pause_names_the_reason_before_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let store = switchyard_store_sled::SledStore::open(dir.path()).unwrap();
        let p = ProviderRt::new(
            crate::config::ProviderSetup {
                name: "ugen".into(),
                adapter: rt(ProviderKind::Ugen),
                limits: crate::config::ProviderLimits {
                    rate_limit: Default::default(),
                    max_in_flight: 1,
                    budget: None,
                    poll: Default::default(),
                    max_attempts: 1,
                },
            },
            std::sync::Arc::new(store),
        );
        let none = HashSet::new();
        let paused: HashSet<String> = ["ugen".to_string()].into();
        assert_eq!(held_for(&p, &none), None);
        p.set_hold(Some(HeldBy::Rate));
        assert_eq!(held_for(&p, &none), None, "a rate hold passes");
        p.set_hold(Some(HeldBy::Budget));
        assert_eq!(held_for(&p, &none), Some(FallbackOn::Budget));
        assert_eq!(held_for(&p, &paused), Some(FallbackOn::Paused));
        p.set_hold(None);
        p.paused.store(true, Ordering::Relaxed);
        assert_eq!(held_for(&p, &none), Some(FallbackOn::Budget), "402");
    }
}
