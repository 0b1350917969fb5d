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
//! Why writes are buffered: a sled transaction (or an `apply_batch`) per
//! transition tops out near 8,000 per second on two cores, while many
//! transitions gathered into one `apply_batch` and one flush go several times
//! faster. So every write is checked and prepared under one mutex (which also
//! makes compare-and-swap and budget checks race-free), kept in a pending
//! batch plus an overlay that reads consult, and written to sled as one
//! atomic `apply_batch` when anyone syncs or scans. A transition is therefore
//! all-or-nothing on disk, batches reach disk in order, and readers always see
//! their own writes.
//!
//! Writes become durable on [`Store::sync`], which writes the pending batch
//! and shares one flush among concurrent callers (group commit): callers that
//! must not act on the outside world before their write is on disk await it,
//! others don't.

use crate::budget::{LedgerEntry, LedgerOp};
use crate::model::{now_rfc3339, Job, JobSpec, Transition};
use crate::state::{JobState, TransitionError};
use sled::IVec;
use std::collections::{HashMap, HashSet};
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
    #[error(
        "budget exceeded for {provider} in {period}: {used} used of {limit}, {amount} more needed"
    )]
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

fn ledger_key(provider: &str, period: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(provider.len() + period.len() + 2);
    k.push(P_LEDGER);
    k.extend_from_slice(provider.as_bytes());
    k.push(SEP);
    k.extend_from_slice(period.as_bytes());
    k
}

/// What is stored under a job's key: the job and its history together.
///
/// Why one record: a transition then costs one sled write for job and
/// history instead of two (sled copies a leaf per write, so writes, not
/// bytes, are what a transition pays for), and the history needs no id.
/// Records of the first format are this struct as JSON.
#[derive(serde::Deserialize)]
struct Record {
    job: Job,
    history: Vec<Transition>,
}

/// First byte of a record in the binary format. JSON records (this
/// project's first format) start with `{`.
const FORMAT_V1: u8 = 1;

/// The stored shape of a job: [`Job`] with `params` as JSON text, in
/// postcard's compact binary form (field order and enum variant order are
/// the format: append, never reorder).
///
/// Why binary: JSON spelled out two dozen field names per record. Records
/// less than half the size make sled's log (replayed at every start), its
/// cache and every encode and decode proportionally cheaper.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredJob {
    key: String,
    provider: String,
    priority: i32,
    params: String,
    state: JobState,
    held_by: Option<crate::model::HeldBy>,
    provider_job_id: Option<String>,
    provider_status: Option<String>,
    progress: Option<u8>,
    stage: Option<String>,
    output_urls: Vec<String>,
    credits_reserved: u64,
    credits_charged: u64,
    attempts: u32,
    error: Option<crate::model::JobError>,
    output_files: Vec<String>,
    seq: u64,
    budget_period: Option<String>,
    submitted_at: Option<String>,
    created_at: String,
    updated_at: String,
}

impl StoredJob {
    fn from_job(j: &Job) -> StoredJob {
        StoredJob {
            key: j.key.clone(),
            provider: j.provider.clone(),
            priority: j.priority,
            params: j.params.to_string(),
            state: j.state,
            held_by: j.held_by,
            provider_job_id: j.provider_job_id.clone(),
            provider_status: j.provider_status.clone(),
            progress: j.progress,
            stage: j.stage.clone(),
            output_urls: j.output_urls.clone(),
            credits_reserved: j.credits_reserved,
            credits_charged: j.credits_charged,
            attempts: j.attempts,
            error: j.error.clone(),
            output_files: j.output_files.clone(),
            seq: j.seq,
            budget_period: j.budget_period.clone(),
            submitted_at: j.submitted_at.clone(),
            created_at: j.created_at.clone(),
            updated_at: j.updated_at.clone(),
        }
    }

    fn into_job(self) -> Result<Job, serde_json::Error> {
        Ok(Job {
            params: serde_json::from_str(&self.params)?,
            key: self.key,
            provider: self.provider,
            priority: self.priority,
            state: self.state,
            held_by: self.held_by,
            provider_job_id: self.provider_job_id,
            provider_status: self.provider_status,
            progress: self.progress,
            stage: self.stage,
            output_urls: self.output_urls,
            credits_reserved: self.credits_reserved,
            credits_charged: self.credits_charged,
            attempts: self.attempts,
            error: self.error,
            output_files: self.output_files,
            seq: self.seq,
            budget_period: self.budget_period,
            submitted_at: self.submitted_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

fn corrupt(key: &[u8], message: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        message: message.to_string(),
    }
}

pub(crate) fn encode_record(job: &Job, history: &[Transition]) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![FORMAT_V1];
    let body = postcard::to_stdvec(&(StoredJob::from_job(job), history))
        .map_err(|e| StoreError::Storage(format!("encoding: {e}")))?;
    out.extend_from_slice(&body);
    Ok(out)
}

fn decode_record(key: &[u8], bytes: &[u8]) -> Result<Record, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT_V1, body)) => {
            let (job, history): (StoredJob, Vec<Transition>) =
                postcard::from_bytes(body).map_err(|e| corrupt(key, e))?;
            Ok(Record {
                job: job.into_job().map_err(|e| corrupt(key, e))?,
                history,
            })
        }
        Some((b'{', _)) => serde_json::from_slice(bytes).map_err(|e| corrupt(key, e)),
        _ => Err(corrupt(key, "unknown record format")),
    }
}

/// The job alone (postcard reads the history too; it is short).
fn decode_job(key: &[u8], bytes: &[u8]) -> Result<Job, StoreError> {
    decode_record(key, bytes).map(|r| r.job)
}

/// A sync request. It carries its own handle to the database so that the
/// flusher holds none while idle: dropping the store really closes it.
struct Waiter {
    store: SledStore,
    done: oneshot::Sender<Result<(), String>>,
}

/// Staged writes: the latest value per key (`None`: removed). A key written
/// twice before the next write-out (a ledger row, a job moved twice) reaches
/// sled once.
type Overlay = HashMap<Vec<u8>, Option<IVec>>;

/// Writes checked and accepted but not yet in sled.
#[derive(Default)]
struct Pending {
    overlay: Overlay,
    /// The overlay being written to sled right now, outside this lock, so
    /// that writers keep staging while sled works; reads consult it until
    /// the write is done.
    writing: Option<Arc<Overlay>>,
}

impl Pending {
    fn put(&mut self, k: Vec<u8>, v: impl Into<IVec>) {
        self.overlay.insert(k, Some(v.into()));
    }

    fn del(&mut self, k: Vec<u8>) {
        self.overlay.insert(k, None);
    }

    /// The staged value of `key`, if any write to it is not yet in sled.
    fn staged(&self, key: &[u8]) -> Option<Option<IVec>> {
        self.overlay
            .get(key)
            .or_else(|| self.writing.as_ref().and_then(|w| w.get(key)))
            .cloned()
    }
}

/// How the store configures sled (public so that benchmarks compare
/// against raw sled configured the same way).
pub fn sled_config(dir: &Path) -> sled::Config {
    // sled's default cache is 1 GiB. A daemon with 100,000 live jobs keeps
    // the working set in the OS page cache anyway; measured with
    // `bench scale` (100k live): 64 MiB cost 2,337 B of RSS per live job,
    // 8 MiB 1,707, at 33-34k instead of 37-40k durable transitions/s.
    //
    // No periodic flush: every write reaches sled through `sync()` (or
    // `import`), which flushes it before anyone is told it is durable, so
    // sled's own flusher thread only added an fsync twice a second, even
    // with nothing written.
    sled::Config::new()
        .path(dir)
        .mode(sled::Mode::HighThroughput)
        .cache_capacity(8 << 20)
        .flush_every_ms(None)
}

/// The sled implementation of [`Store`].
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
    /// Every write is prepared under this lock: CAS checks, budget checks
    /// and intake dedup see one consistent order.
    pending: Arc<Mutex<Pending>>,
    /// Held while a staged overlay is written to sled: overlays reach sled
    /// one at a time and in the order they were staged.
    writer: Arc<Mutex<()>>,
    flusher: mpsc::UnboundedSender<Waiter>,
    flushes: Arc<AtomicU64>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Poisoning means a panic while preparing a write; the overlay only
    // ever holds complete transitions (writes are staged after every check
    // passed), so it is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SledStore {
    /// Opens (or creates) the store under `dir`. Must be called inside a
    /// tokio runtime: the group-commit flusher runs as a task.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let db = sled_config(dir)
            .open()
            .map_err(|e| StoreError::Storage(format!("opening {}: {e}", dir.display())))?;
        let tree = db.open_tree("switchyard")?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(group_commit(rx));
        Ok(SledStore {
            db,
            tree,
            pending: Arc::new(Mutex::new(Pending::default())),
            writer: Arc::new(Mutex::new(())),
            flusher: tx,
            flushes: Arc::new(AtomicU64::new(0)),
        })
    }

    /// How many group-commit flushes ran (for benchmarks).
    pub fn flush_count(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Writes whole job records as they are (any state), with their index
    /// entries and one history entry each, in one atomic batch. For restoring
    /// an export and for building large stores in benchmarks; known keys are
    /// skipped. Not a transition: nothing is checked but key uniqueness.
    pub fn import(&self, jobs: Vec<Job>) -> Result<usize, StoreError> {
        // Large imports go straight to sled as one batch, after everything
        // staged before them.
        let _w = lock(&self.writer);
        self.write_out_held()?;
        let p = lock(&self.pending);
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for mut job in jobs {
            let jk = job_key(&job.key);
            if self.known(&p, &jk)? {
                continue;
            }
            job.seq = self.db.generate_id()?;
            batch.insert(idx_key(&job), job.key.as_bytes());
            let imported = Transition {
                at: job.updated_at.clone(),
                from: None,
                to: job.state,
                note: "imported".into(),
            };
            batch.insert(jk, encode_record(&job, &[imported])?);
            n += 1;
        }
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        Ok(n)
    }

    /// Writes pending changes and flushes synchronously (shutdown, tests).
    pub fn flush_now(&self) -> Result<(), StoreError> {
        self.write_out()?;
        self.db.flush()?;
        Ok(())
    }

    fn read(&self, p: &Pending, key: &[u8]) -> Result<Option<IVec>, StoreError> {
        self.staged_or_stored(p.staged(key), key)
    }

    /// The staged value if there is one, else what sled holds.
    fn staged_or_stored(
        &self,
        staged: Option<Option<IVec>>,
        key: &[u8],
    ) -> Result<Option<IVec>, StoreError> {
        match staged {
            Some(v) => Ok(v),
            None => Ok(self.tree.get(key)?),
        }
    }

    /// [`Self::read`] for readers: the staging lock is held only to look at
    /// the overlay, not while sled reads.
    fn read_unlocked(&self, key: &[u8]) -> Result<Option<IVec>, StoreError> {
        let staged = lock(&self.pending).staged(key);
        self.staged_or_stored(staged, key)
    }

    /// Whether a job with this key exists (staged or in sled).
    fn known(&self, p: &Pending, jk: &[u8]) -> Result<bool, StoreError> {
        Ok(self.read(p, jk)?.is_some())
    }

    /// Puts every staged write into sled (not yet flushed), so scans see
    /// it. sled does the work outside the staging lock.
    fn write_out(&self) -> Result<(), StoreError> {
        let _w = lock(&self.writer);
        self.write_out_held()
    }

    /// [`Self::write_out`] with the writer lock already held.
    fn write_out_held(&self) -> Result<(), StoreError> {
        let staged = {
            let mut p = lock(&self.pending);
            if p.overlay.is_empty() {
                return Ok(());
            }
            let staged = Arc::new(std::mem::take(&mut p.overlay));
            p.writing = Some(staged.clone());
            staged
        };
        let mut batch = sled::Batch::default();
        for (k, v) in staged.iter() {
            match v {
                Some(v) => batch.insert(k.as_slice(), v.clone()),
                None => batch.remove(k.as_slice()),
            }
        }
        let res = self.tree.apply_batch(batch);
        // Cleared even on error: the caller reports it, and a failed batch
        // was not written (sled applies a batch whole or not at all).
        lock(&self.pending).writing = None;
        Ok(res?)
    }

    fn scan_jobs_by_index(&self, prefix: &[u8], limit: usize) -> Result<Vec<Job>, StoreError> {
        self.write_out()?;
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

    fn ledger_get(&self, p: &Pending, key: &[u8]) -> Result<LedgerEntry, StoreError> {
        Ok(self
            .read(p, key)?
            .map(|v| LedgerEntry::from_bytes(&v))
            .unwrap_or_default())
    }
}

/// One `apply_batch` and one flush serve every waiter that arrived while
/// the previous flush ran: the writes of many transitions reach sled
/// together, which is what makes durable transitions cheap.
async fn group_commit(mut rx: mpsc::UnboundedReceiver<Waiter>) {
    while let Some(first) = rx.recv().await {
        let store = first.store.clone();
        let mut waiters = vec![first.done];
        while let Ok(w) = rx.try_recv() {
            waiters.push(w.done);
        }
        store.flushes.fetch_add(1, Ordering::Relaxed);
        let res = match tokio::task::spawn_blocking(move || store.flush_now()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("flush task: {e}")),
        };
        for w in waiters {
            let _ = w.send(res.clone());
        }
    }
}

impl Store for SledStore {
    fn intake(&self, specs: Vec<JobSpec>) -> Result<IntakeReport, StoreError> {
        let now = now_rfc3339();
        let mut report = IntakeReport::default();
        let mut seen = HashSet::with_capacity(specs.len());
        let mut staged = Vec::with_capacity(specs.len() * 3);
        // Checked and staged under one lock: two intakes of the same key
        // cannot both accept it. Staged as a whole, the batch reaches sled
        // in one atomic write.
        let mut p = lock(&self.pending);
        for spec in specs {
            let jk = job_key(&spec.key);
            if !seen.insert(spec.key.clone()) || self.known(&p, &jk)? {
                report.already_known.push(spec.key);
                continue;
            }
            let seq = self.db.generate_id()?;
            let job = Job::from_spec(spec, seq, &now);
            staged.push((idx_key(&job), IVec::from(job.key.as_bytes())));
            let accepted = Transition {
                at: now.clone(),
                from: None,
                to: JobState::Queued,
                note: "accepted".into(),
            };
            staged.push((jk, IVec::from(encode_record(&job, &[accepted])?)));
            report.accepted.push(job.key);
        }
        for (k, v) in staged {
            p.put(k, v);
        }
        Ok(report)
    }

    fn get(&self, key: &str) -> Result<Option<Job>, StoreError> {
        let jk = job_key(key);
        self.read_unlocked(&jk)?
            .map(|v| decode_job(&jk, &v))
            .transpose()
    }

    fn history(&self, key: &str) -> Result<Vec<Transition>, StoreError> {
        let jk = job_key(key);
        Ok(match self.read_unlocked(&jk)? {
            Some(v) => decode_record(&jk, &v)?.history,
            None => Vec::new(),
        })
    }

    fn list(&self, filter: &Filter) -> Result<Vec<Job>, StoreError> {
        // With a state, the index names exactly the jobs wanted: a restart
        // with a million finished jobs reads only the live ones.
        if let Some(state) = filter.state {
            let prefix = match &filter.provider {
                Some(p) => idx_prefix(state, p),
                None => vec![P_IDX, state.code()],
            };
            let mut out = self.scan_jobs_by_index(&prefix, usize::MAX)?;
            out.sort_by_key(|j| j.seq);
            return Ok(out);
        }
        self.write_out()?;
        let mut out = Vec::new();
        for item in self.tree.scan_prefix([P_JOB]) {
            let (k, v) = item?;
            let job = decode_job(&k, &v)?;
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
        self.write_out()?;
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
        let mut p = lock(&self.pending);
        let raw = self
            .read(&p, &jk)?
            .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        let Record {
            mut job,
            mut history,
        } = decode_record(&jk, &raw)?;
        if job.state != expect {
            return Err(StoreError::StateMismatch {
                key: key.to_string(),
                expected: expect,
                actual: job.state,
            });
        }
        if change.to != expect && !expect.can_become(change.to) {
            return Err(StoreError::Illegal(TransitionError {
                key: key.to_string(),
                from: expect,
                to: change.to,
            }));
        }
        let old_idx = idx_key(&job);
        let field_only = change.to == expect && change.ledger == LedgerOp::None;
        let before = field_only.then(|| job.clone());
        (change.edit)(&mut job);
        job.state = change.to;
        if change.to != JobState::Queued {
            job.held_by = None;
        }
        // A poll that changed nothing writes nothing: idle polling should not
        // cost a store write (and a flush's share) per job.
        if before.as_ref() == Some(&job) {
            return Ok(job);
        }
        job.updated_at.clone_from(&now);
        // Every check (budget included) happens before the first write is
        // staged, so a refused change stages nothing.
        let ledger_writes = self.plan_ledger(&p, &mut job, &change.ledger)?;
        if change.to != expect {
            history.push(Transition {
                at: now,
                from: Some(expect),
                to: change.to,
                note: change.note.clone(),
            });
        }
        let bytes = encode_record(&job, &history)?;
        for (k, e) in ledger_writes {
            p.put(k, &e.to_bytes()[..]);
        }
        let new_idx = idx_key(&job);
        if new_idx != old_idx {
            p.del(old_idx);
            p.put(new_idx, job.key.as_bytes().to_vec());
        }
        p.put(jk, bytes);
        Ok(job)
    }

    fn ledger(&self, provider: &str, period: &str) -> Result<LedgerEntry, StoreError> {
        let p = lock(&self.pending);
        self.ledger_get(&p, &ledger_key(provider, period))
    }

    async fn sync(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.flusher
            .send(Waiter {
                store: self.clone(),
                done: tx,
            })
            .map_err(|_| StoreError::Closed)?;
        rx.await
            .map_err(|_| StoreError::Closed)?
            .map_err(StoreError::Storage)
    }
}

impl SledStore {
    /// Computes the ledger rows a change writes and updates the job's credit
    /// fields; refuses (writing nothing) if a reservation would exceed the
    /// limit.
    fn plan_ledger(
        &self,
        p: &Pending,
        job: &mut Job,
        op: &LedgerOp,
    ) -> Result<Vec<(Vec<u8>, LedgerEntry)>, StoreError> {
        let mut rows: Vec<(Vec<u8>, LedgerEntry)> = Vec::new();
        let get =
            |rows: &mut Vec<(Vec<u8>, LedgerEntry)>, k: &[u8]| -> Result<LedgerEntry, StoreError> {
                match rows.iter().find(|(rk, _)| rk == k) {
                    Some((_, e)) => Ok(*e),
                    None => self.ledger_get(p, k),
                }
            };
        let set = |rows: &mut Vec<(Vec<u8>, LedgerEntry)>, k: Vec<u8>, e: LedgerEntry| match rows
            .iter_mut()
            .find(|(rk, _)| *rk == k)
        {
            Some(slot) => slot.1 = e,
            None => rows.push((k, e)),
        };
        match op {
            LedgerOp::None => {}
            LedgerOp::Reserve {
                period,
                amount,
                limit,
            } => {
                // A job never holds two reservations: release any old one.
                if let Some(old) = job
                    .budget_period
                    .clone()
                    .filter(|_| job.credits_reserved > 0)
                {
                    let ok = ledger_key(&job.provider, &old);
                    let mut e = get(&mut rows, &ok)?;
                    e.reserved = e.reserved.saturating_sub(job.credits_reserved);
                    set(&mut rows, ok, e);
                    job.credits_reserved = 0;
                }
                let lk = ledger_key(&job.provider, period);
                let mut e = get(&mut rows, &lk)?;
                if let Some(limit) = *limit {
                    if e.used().saturating_add(*amount) > limit {
                        return Err(StoreError::OverBudget {
                            provider: job.provider.clone(),
                            period: period.clone(),
                            used: e.used(),
                            limit,
                            amount: *amount,
                        });
                    }
                }
                e.reserved = e.reserved.saturating_add(*amount);
                set(&mut rows, lk, e);
                job.credits_reserved = *amount;
                job.budget_period = Some(period.clone());
            }
            LedgerOp::Settle { charged } => {
                let period = job.budget_period.clone().unwrap_or_else(|| "total".into());
                let lk = ledger_key(&job.provider, &period);
                let mut e = get(&mut rows, &lk)?;
                e.reserved = e.reserved.saturating_sub(job.credits_reserved);
                e.charged = e.charged.saturating_add(*charged);
                set(&mut rows, lk, e);
                job.credits_reserved = 0;
                job.credits_charged = job.credits_charged.saturating_add(*charged);
                job.budget_period = Some(period);
            }
            LedgerOp::Release => {
                if let Some(period) = job.budget_period.clone() {
                    let lk = ledger_key(&job.provider, &period);
                    let mut e = get(&mut rows, &lk)?;
                    e.reserved = e.reserved.saturating_sub(job.credits_reserved);
                    set(&mut rows, lk, e);
                }
                job.credits_reserved = 0;
            }
            LedgerOp::Refund { amount } => {
                let period = job.budget_period.clone().unwrap_or_else(|| "total".into());
                let amount = (*amount).min(job.credits_charged);
                let lk = ledger_key(&job.provider, &period);
                let mut e = get(&mut rows, &lk)?;
                e.charged = e.charged.saturating_sub(amount);
                set(&mut rows, lk, e);
                job.credits_charged -= amount;
            }
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn job() -> Job {
        let spec = JobSpec {
            key: "k".into(),
            provider: "viggle".into(),
            priority: -3,
            params: serde_json::json!({"prompt": "a \"quoted\" word", "n": [1, 2.5, null]}),
        };
        let mut j = Job::from_spec(spec, 7, "2026-11-30T00:00:00.000Z");
        j.state = JobState::Failed;
        j.error = Some(crate::model::JobError::new("E1", "broke"));
        j.output_urls = vec!["https://x/y.mp4".into()];
        j
    }

    fn history() -> Vec<Transition> {
        vec![Transition {
            at: "2026-11-30T00:00:00.000Z".into(),
            from: Some(JobState::Processing),
            to: JobState::Failed,
            note: "x".into(),
        }]
    }

    #[test]
    fn binary_records_round_trip() {
        let bytes = encode_record(&job(), &history()).unwrap();
        assert_eq!(bytes[0], FORMAT_V1);
        let r = decode_record(b"jk", &bytes).unwrap();
        assert_eq!(r.job, job());
        assert_eq!(r.history, history());
    }

    #[test]
    fn json_records_of_the_first_format_are_still_read() {
        let bytes =
            serde_json::to_vec(&serde_json::json!({"job": job(), "history": history()})).unwrap();
        let r = decode_record(b"jk", &bytes).unwrap();
        assert_eq!(r.job, job());
        assert_eq!(r.history, history());
        assert!(matches!(
            decode_record(b"jk", &[9, 9]),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
