//! The durable queue. Everything a restart must know lives here: jobs, an
//! index by (state, provider, priority, enqueue order), each job's history
//! and the credit ledger.
//!
//! Why one sled tree with prefixed keys rather than a tree per kind: sled
//! makes a single tree's `apply_batch` and `transaction` atomic, so a whole
//! batch intake, or a state change together with its index move, history
//! entry and ledger update, is all-or-nothing across crashes without sled's
//! slower multi-tree transactions.
//!
//! Writes become durable on [`Store::sync`], which batches the flushes of
//! concurrent callers (group commit): callers that must not act on the
//! outside world before their write is on disk await it, others don't.

use crate::budget::{LedgerEntry, LedgerOp};
use crate::model::{now_rfc3339, Job, JobSpec, Transition};
use crate::state::{JobState, TransitionError};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Storage(String),
    #[error("corrupt record for job {key}: {message}")]
    Corrupt { key: String, message: String },
    #[error("no job with key {0:?}")]
    NotFound(String),
    #[error("job {key} is {actual}, expected {expected}")]
    StateMismatch {
        key: String,
        expected: JobState,
        actual: JobState,
    },
    #[error(transparent)]
    Illegal(#[from] TransitionError),
    #[error("budget exceeded for {provider} in {period}: {used} used of {limit}, {amount} more needed")]
    OverBudget {
        provider: String,
        period: String,
        used: u64,
        limit: u64,
        amount: u64,
    },
    #[error("the store is shutting down")]
    Closed,
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Storage(e.to_string())
    }
}

/// Outcome of a batch intake.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IntakeReport {
    /// Keys newly accepted, in batch order.
    pub accepted: Vec<String>,
    /// Keys the store already had (or repeated within the batch): unchanged.
    pub already_known: Vec<String>,
}

/// A requested change to one job, checked against its current state.
pub struct Change<'a> {
    pub to: JobState,
    /// Recorded in the history when the state changes.
    pub note: String,
    pub ledger: LedgerOp,
    /// Field edits applied with the change (progress, ids, URLs...).
    pub edit: &'a (dyn Fn(&mut Job) + Sync),
}

impl<'a> Change<'a> {
    pub fn to(to: JobState, note: impl Into<String>) -> Self {
        Change {
            to,
            note: note.into(),
            ledger: LedgerOp::None,
            edit: &|_| {},
        }
    }

    pub fn ledger(mut self, op: LedgerOp) -> Self {
        self.ledger = op;
        self
    }

    pub fn edit(mut self, edit: &'a (dyn Fn(&mut Job) + Sync)) -> Self {
        self.edit = edit;
        self
    }
}

/// Which jobs to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub state: Option<JobState>,
    pub provider: Option<String>,
}

/// The storage interface. Shaped after what the daemon needs, not after sled:
/// no sled type crosses it, so a PostgreSQL backend can implement it.
pub trait Store: Send + Sync + 'static {
    /// Writes the whole batch or nothing; known keys are reported, unchanged.
    fn intake(&self, specs: Vec<JobSpec>) -> Result<IntakeReport, StoreError>;
    fn get(&self, key: &str) -> Result<Option<Job>, StoreError>;
    fn history(&self, key: &str) -> Result<Vec<Transition>, StoreError>;
    fn list(&self, filter: &Filter) -> Result<Vec<Job>, StoreError>;
    /// Up to `limit` queued jobs of `provider`, highest priority first, FIFO
    /// within a priority. A range scan over the index.
    fn next_queued(&self, provider: &str, limit: usize) -> Result<Vec<Job>, StoreError>;
    /// Number of jobs per state for `provider` (all providers when `None`).
    fn count_by_state(&self, provider: Option<&str>) -> Result<Vec<(JobState, u64)>, StoreError>;
    /// Compare-and-swap: applies `change` only if the job is in `expect` and
    /// `expect -> change.to` is legal (or equal, for field-only updates).
    fn apply(&self, key: &str, expect: JobState, change: Change<'_>) -> Result<Job, StoreError>;
    fn ledger(&self, provider: &str, period: &str) -> Result<LedgerEntry, StoreError>;
    /// Makes every write made before the call durable. Concurrent callers
    /// share one flush.
    fn sync(&self) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;
}

const P_JOB: u8 = b'j';
const P_IDX: u8 = b'i';
const P_HIST: u8 = b'h';
const P_LEDGER: u8 = b'l';
/// Never appears in UTF-8, so it separates user strings unambiguously.
const SEP: u8 = 0xFF;

fn job_key(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(P_JOB);
    k.extend_from_slice(key.as_bytes());
    k
}

/// Higher priority sorts first: flip the sign bit, then invert.
fn prio_bytes(priority: i32) -> [u8; 4] {
    (!((priority as u32) ^ 0x8000_0000)).to_be_bytes()
}

fn idx_prefix(state: JobState, provider: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(provider.len() + 3);
    k.push(P_IDX);
    k.push(state.code());
    k.extend_from_slice(provider.as_bytes());
    k.push(SEP);
    k
}

fn idx_key(job: &Job) -> Vec<u8> {
    let mut k = idx_prefix(job.state, &job.provider);
    k.extend_from_slice(&prio_bytes(job.priority));
    k.extend_from_slice(&job.seq.to_be_bytes());
    k
}

fn hist_prefix(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 2);
    k.push(P_HIST);
    k.extend_from_slice(key.as_bytes());
    k.push(SEP);
    k
}

fn hist_key(key: &str, id: u64) -> Vec<u8> {
    let mut k = hist_prefix(key);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn ledger_key(provider: &str, period: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(provider.len() + period.len() + 2);
    k.push(P_LEDGER);
    k.extend_from_slice(provider.as_bytes());
    k.push(SEP);
    k.extend_from_slice(period.as_bytes());
    k
}

fn decode_job(key: &[u8], bytes: &[u8]) -> Result<Job, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        message: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Storage(format!("encoding: {e}")))
}

/// A flush request. It carries its own handle to the database so that the
/// flusher holds none while idle: dropping the store really closes it.
type Waiter = (sled::Db, Arc<AtomicU64>, oneshot::Sender<Result<(), String>>);

/// The sled implementation of [`Store`].
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
    /// Intakes are serialized so the dedup read and the batch write cannot
    /// interleave with another intake (nothing else creates jobs).
    intake_lock: Arc<Mutex<()>>,
    flusher: mpsc::UnboundedSender<Waiter>,
    flushes: Arc<AtomicU64>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens (or creates) the store under `dir`. Must be called inside a
    /// tokio runtime: the group-commit flusher runs as a task.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| StoreError::Storage(format!("opening {}: {e}", dir.display())))?;
        let tree = db.open_tree("switchyard")?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(group_commit(rx));
        Ok(SledStore {
            db,
            tree,
            intake_lock: Arc::new(Mutex::new(())),
            flusher: tx,
            flushes: Arc::new(AtomicU64::new(0)),
        })
    }

    /// How many group-commit flushes ran (for benchmarks).
    pub fn flush_count(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Flushes synchronously (for shutdown and tests outside async code).
    pub fn flush_now(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn scan_jobs_by_index(&self, prefix: &[u8], limit: usize) -> Result<Vec<Job>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(prefix) {
            let (_, key) = item?;
            let k = String::from_utf8_lossy(&key).into_owned();
            if let Some(job) = self.get(&k)? {
                out.push(job);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}

/// One flush serves every waiter that arrived while the previous flush ran.
async fn group_commit(mut rx: mpsc::UnboundedReceiver<Waiter>) {
    while let Some((db, count, first)) = rx.recv().await {
        let mut waiters = vec![first];
        while let Ok((_, _, w)) = rx.try_recv() {
            waiters.push(w);
        }
        count.fetch_add(1, Ordering::Relaxed);
        let res = match tokio::task::spawn_blocking(move || db.flush()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("flush task: {e}")),
        };
        for w in waiters {
            let _ = w.send(res.clone());
        }
    }
}

enum TxFail {
    Store(StoreError),
}

fn abort(e: StoreError) -> ConflictableTransactionError<TxFail> {
    ConflictableTransactionError::Abort(TxFail::Store(e))
}

fn tx_err(e: TransactionError<TxFail>) -> StoreError {
    match e {
        TransactionError::Abort(TxFail::Store(e)) => e,
        TransactionError::Storage(e) => StoreError::Storage(e.to_string()),
    }
}

fn ledger_get(t: &TransactionalTree, key: &[u8]) -> Result<LedgerEntry, ConflictableTransactionError<TxFail>> {
    Ok(t.get(key)?
        .map(|v| LedgerEntry::from_bytes(&v))
        .unwrap_or_default())
}

impl Store for SledStore {
    fn intake(&self, specs: Vec<JobSpec>) -> Result<IntakeReport, StoreError> {
        // Poisoning only means another intake panicked; the store itself is
        // consistent (batches are atomic), so carry on.
        let _guard = self
            .intake_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = now_rfc3339();
        let mut report = IntakeReport::default();
        let mut seen = HashSet::with_capacity(specs.len());
        let mut batch = sled::Batch::default();
        for spec in specs {
            let jk = job_key(&spec.key);
            if !seen.insert(spec.key.clone()) || self.tree.contains_key(&jk)? {
                report.already_known.push(spec.key);
                continue;
            }
            let seq = self.db.generate_id()?;
            let job = Job::from_spec(spec, seq, &now);
            let hist = Transition {
                at: now.clone(),
                from: None,
                to: JobState::Queued,
                note: "accepted".into(),
            };
            batch.insert(idx_key(&job), job.key.as_bytes());
            batch.insert(hist_key(&job.key, seq), encode(&hist)?);
            batch.insert(jk, encode(&job)?);
            report.accepted.push(job.key);
        }
        if !report.accepted.is_empty() {
            self.tree.apply_batch(batch)?;
        }
        Ok(report)
    }

    fn get(&self, key: &str) -> Result<Option<Job>, StoreError> {
        let jk = job_key(key);
        match self.tree.get(&jk)? {
            Some(v) => Ok(Some(decode_job(&jk, &v)?)),
            None => Ok(None),
        }
    }

    fn history(&self, key: &str) -> Result<Vec<Transition>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(hist_prefix(key)) {
            let (k, v) = item?;
            out.push(serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                key: String::from_utf8_lossy(&k).into_owned(),
                message: e.to_string(),
            })?);
        }
        Ok(out)
    }

    fn list(&self, filter: &Filter) -> Result<Vec<Job>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix([P_JOB]) {
            let (k, v) = item?;
            let job = decode_job(&k, &v)?;
            if filter.state.is_some_and(|s| s != job.state) {
                continue;
            }
            if filter.provider.as_ref().is_some_and(|p| *p != job.provider) {
                continue;
            }
            out.push(job);
        }
        out.sort_by_key(|j| j.seq);
        Ok(out)
    }

    fn next_queued(&self, provider: &str, limit: usize) -> Result<Vec<Job>, StoreError> {
        self.scan_jobs_by_index(&idx_prefix(JobState::Queued, provider), limit)
    }

    fn count_by_state(&self, provider: Option<&str>) -> Result<Vec<(JobState, u64)>, StoreError> {
        let mut out = Vec::new();
        for state in JobState::ALL {
            let n = match provider {
                Some(p) => self.tree.scan_prefix(idx_prefix(state, p)).count(),
                None => self.tree.scan_prefix([P_IDX, state.code()]).count(),
            };
            out.push((state, n as u64));
        }
        Ok(out)
    }

    fn apply(&self, key: &str, expect: JobState, change: Change<'_>) -> Result<Job, StoreError> {
        let jk = job_key(key);
        let now = now_rfc3339();
        self.tree
            .transaction(|t| {
                let raw = t
                    .get(&jk)?
                    .ok_or_else(|| abort(StoreError::NotFound(key.to_string())))?;
                let mut job = decode_job(&jk, &raw).map_err(abort)?;
                if job.state != expect {
                    return Err(abort(StoreError::StateMismatch {
                        key: key.to_string(),
                        expected: expect,
                        actual: job.state,
                    }));
                }
                if change.to != expect && !expect.can_become(change.to) {
                    return Err(abort(StoreError::Illegal(TransitionError {
                        key: key.to_string(),
                        from: expect,
                        to: change.to,
                    })));
                }
                let old_idx = idx_key(&job);
                (change.edit)(&mut job);
                job.state = change.to;
                if change.to != JobState::Queued {
                    job.held_by = None;
                }
                job.updated_at.clone_from(&now);
                apply_ledger(t, &mut job, &change.ledger)?;
                let new_idx = idx_key(&job);
                if new_idx != old_idx {
                    t.remove(old_idx)?;
                    t.insert(new_idx, job.key.as_bytes())?;
                }
                if change.to != expect {
                    let hist = Transition {
                        at: now.clone(),
                        from: Some(expect),
                        to: change.to,
                        note: change.note.clone(),
                    };
                    let id = t.generate_id()?;
                    t.insert(hist_key(key, id), encode(&hist).map_err(abort)?)?;
                }
                t.insert(jk.clone(), encode(&job).map_err(abort)?)?;
                Ok(job)
            })
            .map_err(tx_err)
    }

    fn ledger(&self, provider: &str, period: &str) -> Result<LedgerEntry, StoreError> {
        Ok(self
            .tree
            .get(ledger_key(provider, period))?
            .map(|v| LedgerEntry::from_bytes(&v))
            .unwrap_or_default())
    }

    async fn sync(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.flusher
            .send((self.db.clone(), self.flushes.clone(), tx))
            .map_err(|_| StoreError::Closed)?;
        rx.await
            .map_err(|_| StoreError::Closed)?
            .map_err(StoreError::Storage)
    }
}

fn apply_ledger(
    t: &TransactionalTree,
    job: &mut Job,
    op: &LedgerOp,
) -> Result<(), ConflictableTransactionError<TxFail>> {
    match op {
        LedgerOp::None => Ok(()),
        LedgerOp::Reserve {
            period,
            amount,
            limit,
        } => {
            let lk = ledger_key(&job.provider, period);
            let mut e = ledger_get(t, &lk)?;
            // A job never holds two reservations: release any old one first.
            if let Some(old) = job.budget_period.clone().filter(|_| job.credits_reserved > 0) {
                release(t, job, &old)?;
                if old == *period {
                    e = ledger_get(t, &lk)?;
                }
            }
            if let Some(limit) = *limit {
                if e.used().saturating_add(*amount) > limit {
                    return Err(abort(StoreError::OverBudget {
                        provider: job.provider.clone(),
                        period: period.clone(),
                        used: e.used(),
                        limit,
                        amount: *amount,
                    }));
                }
            }
            e.reserved = e.reserved.saturating_add(*amount);
            t.insert(lk, &e.to_bytes())?;
            job.credits_reserved = *amount;
            job.budget_period = Some(period.clone());
            Ok(())
        }
        LedgerOp::Settle { charged } => {
            let period = job.budget_period.clone().unwrap_or_else(|| "total".into());
            let lk = ledger_key(&job.provider, &period);
            let mut e = ledger_get(t, &lk)?;
            e.reserved = e.reserved.saturating_sub(job.credits_reserved);
            e.charged = e.charged.saturating_add(*charged);
            t.insert(lk, &e.to_bytes())?;
            job.credits_reserved = 0;
            job.credits_charged = job.credits_charged.saturating_add(*charged);
            job.budget_period = Some(period);
            Ok(())
        }
        LedgerOp::Release => {
            if let Some(period) = job.budget_period.clone() {
                release(t, job, &period)?;
            }
            job.credits_reserved = 0;
            Ok(())
        }
        LedgerOp::Refund { amount } => {
            let period = job.budget_period.clone().unwrap_or_else(|| "total".into());
            let amount = (*amount).min(job.credits_charged);
            let lk = ledger_key(&job.provider, &period);
            let mut e = ledger_get(t, &lk)?;
            e.charged = e.charged.saturating_sub(amount);
            t.insert(lk, &e.to_bytes())?;
            job.credits_charged -= amount;
            Ok(())
        }
    }
}

fn release(
    t: &TransactionalTree,
    job: &mut Job,
    period: &str,
) -> Result<(), ConflictableTransactionError<TxFail>> {
    let lk = ledger_key(&job.provider, period);
    let mut e = ledger_get(t, &lk)?;
    e.reserved = e.reserved.saturating_sub(job.credits_reserved);
    t.insert(lk, &e.to_bytes())?;
    job.credits_reserved = 0;
    Ok(())
}
