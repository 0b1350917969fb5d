//! The part of Switchyard that must never be wrong: what a job is, which state
//! changes are legal, and how jobs, their history and the credit ledger are kept
//! durable. Nothing here speaks HTTP, so every invariant can be tested without a
//! network and every backend (sled today, PostgreSQL later) sits behind [`Store`].

pub mod model;
pub mod secret;
pub mod state;

pub use model::{check_key, HeldBy, Job, JobError, JobSpec, KeyError, ProviderKind, Transition};
pub use secret::Secret;
pub use state::{JobState, TransitionError};
pub mod bench;
pub mod budget;
pub mod poll;
pub mod store;

pub use budget::{LedgerEntry, LedgerOp, Period};
pub use store::{Change, Filter, IntakeReport, SledStore, Store, StoreError};
