//! Many jobs at once: a bulk cancel or retry of everything a filter
//! matches, confirmed by count (see [`switchyard_api::bulk`]), and a whole
//! batch file's intake as the dashboard uploads it.
//!
//! A bulk action runs each job through the one-job command
//! ([`Engine::cancel`], [`Engine::retry`]), so it keeps every rule those
//! keep (a live job is cancelled at the provider, through its rate gate; a
//! retry releases the reservation), a few at a time so that their syncs
//! share the store's group commit. It runs as a task of its own: a page
//! closed half-way does not leave it half done.

use crate::paging::JobQuery;
use crate::{Engine, EngineError};
use futures::StreamExt;
use switchyard_api::batch;
use switchyard_api::{BatchAnswer, BulkAction, BulkAnswer, BulkFailure};

/// Jobs handled at once by a bulk action.
const AT_ONCE: usize = 16;

/// Failures listed in a bulk answer (all are counted).
const LISTED: usize = 50;

impl Engine {
    /// The keys of the jobs `q` matches that `action` applies to.
    async fn bulk_keys(
        &self,
        action: BulkAction,
        q: &JobQuery,
    ) -> Result<Vec<String>, EngineError> {
        let jobs = self.matching(q).await?;
        Ok(jobs
            .into_iter()
            .filter(|j| action.applies_to(j.state))
            .map(|j| j.key)
            .collect())
    }

    /// How many jobs `action` would touch (what the user confirms).
    pub async fn bulk_count(&self, action: BulkAction, q: &JobQuery) -> Result<u64, EngineError> {
        Ok(self.bulk_keys(action, q).await?.len() as u64)
    }

    /// Applies `action` to every job `q` matches that it applies to, if
    /// those are still `confirmed` many; else [`EngineError::CountChanged`]
    /// and nothing is done.
    pub async fn bulk(
        &self,
        action: BulkAction,
        q: &JobQuery,
        confirmed: u64,
    ) -> Result<BulkAnswer, EngineError> {
        let keys = self.bulk_keys(action, q).await?;
        let now = keys.len() as u64;
        if now != confirmed {
            return Err(EngineError::CountChanged { confirmed, now });
        }
        let rt = self.clone();
        let task = self.shared.tracker.spawn(async move {
            let outcomes: Vec<(String, Result<(), EngineError>)> = futures::stream::iter(keys)
                .map(|key| {
                    let rt = rt.clone();
                    async move {
                        let r = match action {
                            BulkAction::Cancel => rt.cancel(&key).await.map(drop),
                            BulkAction::Retry => rt.retry(&key).await.map(drop),
                        };
                        (key, r)
                    }
                })
                .buffer_unordered(AT_ONCE)
                .collect()
                .await;
            let mut answer = BulkAnswer {
                action,
                matched: now,
                done: 0,
                failed: Vec::new(),
                failed_total: 0,
            };
            for (key, r) in outcomes {
                match r {
                    Ok(()) => answer.done += 1,
                    Err(e) => {
                        answer.failed_total += 1;
                        if answer.failed.len() < LISTED {
                            answer.failed.push(BulkFailure {
                                key,
                                message: e.to_string(),
                            });
                        }
                    }
                }
            }
            answer
        });
        task.await
            .map_err(|e| EngineError::Unavailable(format!("the bulk {action} stopped: {e}")))
    }

    /// A whole batch file (`name` tells its format and names it in
    /// problems): read and checked with the files' rules, every problem at
    /// its line, queued whole or not at all.
    pub async fn intake_file(&self, name: &str, bytes: &[u8]) -> Result<BatchAnswer, EngineError> {
        let parsed = batch::parse_bytes(name, bytes).map_err(EngineError::Invalid)?;
        match self.intake(parsed.jobs.clone()).await {
            Err(EngineError::Invalid(mut problems)) => {
                batch::locate(&mut problems, &parsed);
                Err(EngineError::Invalid(problems))
            }
            other => other,
        }
    }
}
