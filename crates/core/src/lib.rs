//! The part of Switchyard that must never be wrong: what a job is, which state
//! changes are legal, what a change does to a job and to the credit ledger.
//! No I/O: every store backend (sled, PostgreSQL) applies these same rules,
//! and every rule is tested without a disk or a network.

pub mod budget;
pub mod change;
pub mod detail;
pub mod fallback;
pub mod gcra;
pub mod learn;
pub mod limits;
pub mod model;
pub mod poll;
pub mod secret;
pub mod state;

pub use budget::{LedgerEntry, LedgerOp, Period};
pub use change::{Attempts, Change, Outcome, Patch, Refusal};
pub use fallback::{Alternative, FallbackOn, Tried};
pub use gcra::Gate;
pub use model::{check_key, HeldBy, Job, JobError, JobSpec, KeyError, ProviderKind, Transition};
pub use secret::Secret;
pub use state::{JobState, TransitionError};
