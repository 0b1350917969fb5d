//! What an engine command can answer besides success. The HTTP edge maps
//! each to a status; the CLI to an exit code. Nothing here knows either.

use switchyard_api::Problem;
use switchyard_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no job with key {0:?}")]
    NotFound(String),
    #[error("no provider named {name:?} is configured (configured: {})", configured.join(", "))]
    UnknownProvider {
        name: String,
        configured: Vec<String>,
    },
    /// The request itself is wrong (not the job's state).
    #[error("{0}")]
    BadRequest(String),
    /// The job is not in a state where the command applies.
    #[error("{0}")]
    Conflict(String),
    /// The batch was rejected whole.
    #[error("the batch was rejected whole: {} problem(s)", .0.len())]
    Invalid(Vec<Problem>),
    /// Shutting down: try again after the restart.
    #[error("{0}")]
    Unavailable(String),
    /// The provider answered with an error the command cannot get past.
    #[error("{0}")]
    Provider(String),
    /// A bulk action's filter matches another number of jobs than the
    /// user confirmed: nothing was done.
    #[error(
        "the filter now matches {now} job(s), not the {confirmed} confirmed: nothing was done"
    )]
    CountChanged { confirmed: u64, now: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}
