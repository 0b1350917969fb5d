//! The operator's commands: pause and resume dispatch to a provider (kept
//! in the store, so durable and shared by every daemon on it), adopt an
//! uncertain job by the id the user found at the provider, plan a batch
//! without queueing it (`plan.rs`), and register the daemon's webhook URL
//! with providers that take it through their API.

mod plan;

use crate::limits::{jitter, read, ProviderRt};
use crate::record::By;
use crate::{Engine, EngineError, Shared};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use switchyard_api::ProviderView;
use switchyard_core::{Change, HeldBy, Job, JobState, LedgerOp, Patch};
use switchyard_provider::ProviderError;
use switchyard_store::StoreError;

/// How often a daemon reads the store's pauses: another daemon on a shared
/// store may have paused or resumed a provider.
const PAUSE_REFRESH: Duration = Duration::from_secs(2);

/// Attempts at registering a webhook URL before giving up until the next
/// reload (the provider may be restarting too).
const REGISTER_ATTEMPTS: u32 = 5;

/// The operator commands' own state.
#[derive(Default)]
pub(crate) struct Operator {
    /// Held while a pause is changed or read back from the store, so that a
    /// refresh that read the store before a resume cannot undo it after.
    pauses: tokio::sync::Mutex<()>,
}

impl Shared {
    fn provider_or_not_found(&self, name: &str) -> Result<&Arc<ProviderRt>, EngineError> {
        self.providers
            .get(name)
            .ok_or_else(|| EngineError::UnknownProvider {
                name: name.to_string(),
                configured: self.providers.keys().cloned().collect(),
            })
    }

    /// Takes the user's pauses from the store (at start, and every
    /// [`PAUSE_REFRESH`] after).
    pub(crate) async fn load_pauses(&self) -> Result<(), StoreError> {
        let _turn = self.operator.pauses.lock().await;
        let paused = self.store.paused().await?;
        for (name, p) in &self.providers {
            let now = paused.iter().any(|n| n == name);
            let was = p.user_paused.swap(now, Ordering::Relaxed);
            if was != now {
                if now {
                    p.set_hold(Some(HeldBy::Paused));
                    tracing::info!(provider = %name, "dispatch paused by user (as the store says)");
                } else {
                    tracing::info!(provider = %name, "dispatch resumed by user (as the store says)");
                }
                p.wake.notify_one();
            }
        }
        Ok(())
    }
}

/// Keeps this daemon's view of the user's pauses in step with the store.
pub(crate) async fn watch_pauses(s: Arc<Shared>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PAUSE_REFRESH) => {}
            _ = s.cancel.cancelled() => return,
        }
        if let Err(e) = s.load_pauses().await {
            tracing::warn!("reading the providers' pauses from the store: {e}");
        }
    }
}

impl Engine {
    /// A user's pause: nothing new is dispatched to `provider` (live jobs
    /// are still followed), on every daemon of the store, until `resume`.
    /// Durable when it returns.
    pub async fn pause(&self, provider: &str) -> Result<ProviderView, EngineError> {
        self.set_paused(provider, true).await
    }

    /// Ends a user's pause, and a pause after a 402 (the user says the
    /// credits are there, as a reload does).
    pub async fn resume(&self, provider: &str) -> Result<ProviderView, EngineError> {
        self.set_paused(provider, false).await
    }

    async fn set_paused(&self, provider: &str, paused: bool) -> Result<ProviderView, EngineError> {
        let s = &self.shared;
        let p = s.provider_or_not_found(provider)?;
        {
            let _turn = s.operator.pauses.lock().await;
            s.store.set_paused(provider, paused).await?;
            p.user_paused.store(paused, Ordering::Relaxed);
            if paused {
                p.set_hold(Some(HeldBy::Paused));
                tracing::info!(%provider, "dispatch paused by user");
            } else {
                p.paused.store(false, Ordering::Relaxed);
                p.set_hold(None);
                tracing::info!(%provider, "dispatch resumed by user");
            }
        }
        p.wake.notify_one();
        self.providers()
            .await?
            .into_iter()
            .find(|v| v.name == provider)
            .ok_or_else(|| EngineError::UnknownProvider {
                name: provider.to_string(),
                configured: s.providers.keys().cloned().collect(),
            })
    }

    /// Adopts an `uncertain` job: the user found it at the provider under
    /// `provider_job_id`. The provider is asked about that id first (an id
    /// it does not know is refused and nothing changes); then the id is
    /// recorded, the job's estimate reserved again in the current period
    /// (without a limit: the job exists and will be charged, so its credits
    /// must count, and new jobs wait if that takes the budget), and the job
    /// is followed like any other.
    pub async fn adopt(&self, key: &str, provider_job_id: &str) -> Result<Job, EngineError> {
        let s = &self.shared;
        let id = provider_job_id.trim();
        if id.is_empty() || id.len() > 200 || id.chars().any(char::is_control) {
            return Err(EngineError::BadRequest(format!(
                "{provider_job_id:?} is not a provider job id (1 to 200 characters, no control characters)"
            )));
        }
        let job = s.job_or_not_found(key).await?;
        if job.state != JobState::Uncertain {
            return Err(EngineError::Conflict(format!(
                "only uncertain jobs can be adopted; this one is {}",
                job.state
            )));
        }
        let p = s.providers.get(&job.provider).cloned().ok_or_else(|| {
            EngineError::Conflict(format!(
                "the job's provider {:?} is not configured",
                job.provider
            ))
        })?;
        if !p.permit(&s.cancel).await {
            return Err(EngineError::Unavailable(
                "the daemon is shutting down".into(),
            ));
        }
        p.counters.polls.fetch_add(1, Ordering::Relaxed);
        let answer = match p.adapter.status(id).await {
            Ok(st) => Some(st),
            // The id exists; what it says is followed by the polls.
            Err(ProviderError::Unexpected { .. }) => None,
            Err(ProviderError::NotFound(m)) => {
                return Err(EngineError::Conflict(format!(
                    "the provider has no job {id:?} ({m}); nothing was changed"
                )))
            }
            Err(e) => {
                return Err(EngineError::Provider(format!(
                    "asking the provider about {id:?} failed, nothing was changed: {e}"
                )))
            }
        };
        let budget = read(&p.limits).budget.clone();
        let period = budget
            .as_ref()
            .map(|b| b.current_period())
            .unwrap_or_else(|| "total".into());
        let patch = Patch {
            provider_job_id: Some(Some(id.to_string())),
            provider_status: Some(answer.as_ref().map(|st| st.raw_status.clone())),
            error: Some(None),
            // Polls and the poll timeout count from the adoption: when the
            // provider took the create is not known.
            submitted_at: Some(Some(switchyard_core::model::now_rfc3339())),
            ..Patch::default()
        };
        let change = Change::to(
            JobState::Pending,
            format!("adopted by user as provider job {id}"),
        )
        .ledger(LedgerOp::Reserve {
            period,
            amount: p.adapter.estimate_credits(&job.params),
            limit: None,
        })
        .patch(patch);
        // An uncertain job is held by no one: this daemon takes it on.
        let gen = s.gen();
        s.write(By::Owner(&gen.lease), key, JobState::Uncertain, change)
            .await
            .map_err(|e| match e {
                e if e.is_state_mismatch() => EngineError::Conflict(format!(
                    "the job changed meanwhile; nothing was adopted: {e}"
                )),
                e => EngineError::Store(e),
            })?;
        if let Err(e) = s.store.sync().await {
            s.store_failed("adopting a job", &e);
            return Err(e.into());
        }
        s.health.ok();
        tracing::info!(%key, provider = %p.name, %id, "uncertain job adopted by user");
        // What the provider said just now counts as the first poll.
        if let Some(st) = answer {
            s.record(&p, key, JobState::Pending, st, By::Owner(&gen.lease))
                .await;
        }
        let job = s.job_or_not_found(key).await?;
        if job.state.is_live() {
            s.track(&job, id);
        }
        Ok(job)
    }

    /// Registers `urls` (provider name to the daemon's public webhook URL)
    /// with each provider that takes one through its API, in the
    /// background, retrying a provider that does not answer; says in the
    /// log what it did (the secret is never logged).
    pub fn register_webhooks(&self, urls: &BTreeMap<String, String>) {
        for (name, url) in urls {
            let Some(p) = self.shared.providers.get(name).cloned() else {
                continue;
            };
            let (s, url) = (self.shared.clone(), url.clone());
            self.shared
                .tracker
                .spawn(async move { register(&s, &p, &url).await });
        }
    }
}

async fn register(s: &Shared, p: &ProviderRt, url: &str) {
    let shown = shown_url(url);
    for attempt in 1..=REGISTER_ATTEMPTS {
        if !p.permit(&s.cancel).await {
            return;
        }
        match p.adapter.register_webhook(url).await {
            Ok(()) => {
                tracing::info!(provider = %p.name, url = %shown, "webhook URL registered with the provider (signed with the configured webhook secret)");
                return;
            }
            Err(e) if e.is_retryable() && attempt < REGISTER_ATTEMPTS => {
                let wait = Duration::from_secs(1 << attempt);
                let wait = wait + jitter(wait / 4);
                tracing::warn!(provider = %p.name, url = %shown, attempt, "registering the webhook URL failed, trying again in {}s: {e}", wait.as_secs());
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = s.cancel.cancelled() => return,
                }
            }
            Err(e) => {
                tracing::error!(provider = %p.name, url = %shown, "the webhook URL was not registered (jobs are still polled): {e}");
                return;
            }
        }
    }
}

/// The URL as logged: a query or user info may carry a token.
fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let secretive =
                u.query().is_some() || !u.username().is_empty() || u.password().is_some();
            if secretive {
                u.set_query(None);
                let _ = u.set_username("");
                let _ = u.set_password(None);
                format!("{u} (query and user info not shown)")
            } else {
                u.to_string()
            }
        }
        Err(_) => "(not a URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::shown_url;

    #[test]
    fn a_logged_url_keeps_no_token() {
        assert_eq!(
            shown_url("https://hooks.example.com/webhooks/ugen"),
            "https://hooks.example.com/webhooks/ugen"
        );
        let shown = shown_url("https://me:pw@hooks.example.com/webhooks/ugen?token=abc");
        assert!(!shown.contains("abc") && !shown.contains("pw"), "{shown}");
        assert!(shown.starts_with("https://hooks.example.com/webhooks/ugen"));
    }
}
