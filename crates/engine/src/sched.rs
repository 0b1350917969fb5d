//! The poll scheduler's messages, and the progress it keeps for jobs in
//! memory. A leaf: everything that talks to the scheduler uses these, and
//! they use nothing of the engine.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::{Job, JobState};

/// Messages to the poll scheduler.
#[derive(Debug)]
pub(crate) enum Sched {
    /// `elapsed`: time since the provider acknowledged the create.
    Track {
        key: String,
        provider: String,
        provider_job_id: String,
        state: JobState,
        elapsed: Duration,
        /// The job's class (`switchyard_core::learn::job_class`).
        class: String,
    },
    /// A webhook named this job: poll it now (`verified`) or soon.
    Due {
        provider: String,
        provider_job_id: String,
        verified: bool,
    },
    Polled {
        key: String,
        done: bool,
        progress: Option<u8>,
        /// The job's state after the poll, where the store changed it.
        state: Option<JobState>,
        /// `Some(report)`: what the provider said, not written to the store;
        /// `Some(None)`: the store has the latest; `None`: nothing learned.
        live: Option<Option<LiveReport>>,
    },
    /// The live reports of these tracked jobs.
    Peek {
        keys: Vec<String>,
        reply: tokio::sync::oneshot::Sender<HashMap<String, LiveReport>>,
    },
    Untrack {
        key: String,
    },
    /// Another daemon received a verified webhook for this job: poll it
    /// now if it is followed here.
    DueKey {
        key: String,
    },
    /// The lease was found lost: nothing is followed until the store says
    /// what this daemon still holds.
    Forget,
    /// What was learned per class, by provider name.
    Learned {
        reply: tokio::sync::oneshot::Sender<Vec<(String, switchyard_api::PollClassView)>>,
    },
}

/// What a poll learned that changed nothing but progress: kept with the
/// job's poll schedule, not in the store.
///
/// Why: a job in `processing` reports new progress at nearly every poll.
/// Writing each report durably cost a store write per poll and, worse,
/// sled's log cleaning after it (measured: two thirds of the daemon's CPU
/// with 10,000 jobs polled each minute). Progress is worth nothing after a
/// restart (the next poll reports it again), so it lives here and is merged
/// into the job as the API shows it; state changes, provider ids, outputs
/// and errors still go to the store before anything acts on them.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveReport {
    pub progress: Option<u8>,
    pub stage: Option<Arc<str>>,
    pub provider_status: Arc<str>,
}

impl LiveReport {
    /// Shows the report on `job` (a no-op for a job no longer live).
    pub fn apply_to(&self, job: &mut Job) {
        if !job.state.is_live() {
            return;
        }
        if self.progress.is_some() {
            job.progress = self.progress;
        }
        if let Some(stage) = &self.stage {
            job.stage = Some(stage.to_string());
        }
        job.provider_status = Some(self.provider_status.to_string());
    }
}
