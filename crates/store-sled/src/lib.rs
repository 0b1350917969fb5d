//! The embedded default backend of [`Store`]: one sled tree holds jobs (each
//! with its history), an index by (state, provider, priority, enqueue
//! order), the credit ledger and per-provider job counts.
//!
//! Why one sled tree with prefixed keys rather than a tree per kind: sled
//! makes a single tree's `apply_batch` atomic, so a whole batch intake, or a
//! state change together with its index move, ledger update and counts, is
//! all-or-nothing across crashes without sled's slower multi-tree
//! transactions.
//!
//! Why writes are buffered: a sled transaction (or an `apply_batch`) per
//! transition tops out near 8,000 per second on two cores, while many
//! transitions gathered into one `apply_batch` and one flush go several times
//! faster. So every write is checked and prepared under one mutex (which also
//! makes compare-and-swap and budget checks race-free), kept in an overlay
//! that reads consult, and written to sled as one atomic `apply_batch` when
//! anyone syncs or scans. A transition is therefore all-or-nothing on disk,
//! batches reach disk in order, and readers always see their own writes.
//!
//! Writes become durable on [`Store::sync`], which writes the staged batch
//! and shares one flush among concurrent callers (group commit).
//!
//! One process owns a sled directory (sled locks it), so leases are always
//! granted and every live job is this owner's.

mod gate;
mod leases;
mod record;
mod store_impl;

pub use record::encode_record;

use async_trait::async_trait;
use record::{
    count_key, decode_counts, decode_job, decode_record, encode_counts, idx_key, idx_parts,
    idx_prefix, job_key, ledger_key, stats_key, Record, COUNTS_MARKER, P_COUNT, P_IDX, P_JOB,
    P_STATS,
};
use sled::IVec;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_core::change::{self, Outcome};
use switchyard_core::model::now_rfc3339;
use switchyard_core::Gate;
use switchyard_core::{
    Attempts, Change, Job, JobSpec, JobState, LedgerEntry, LedgerOp, Patch, Transition,
};
use switchyard_store::{
    Claim, Claimed, DaemonInfo, Filter, Hint, IntakeReport, Lease, Owner, Permit, StateCount,
    Store, StoreError,
};
use tokio::sync::{mpsc, oneshot};

pub(crate) fn storage(e: sled::Error) -> StoreError {
    StoreError::Storage(e.to_string())
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

const STATES: usize = JobState::ALL.len();

/// Jobs per provider and state, kept current under the staging lock and
/// written with the transitions they count, so that `counts()` reads
/// memory and a restart reads a few rows instead of scanning the index.
#[derive(Default)]
struct Counts {
    by_provider: HashMap<String, [u64; STATES]>,
    /// Providers whose row changed since the last write-out.
    dirty: HashSet<String>,
}

impl Counts {
    fn add(&mut self, provider: &str, state: JobState, delta: i64) {
        let row = match self.by_provider.get_mut(provider) {
            Some(r) => r,
            None => self
                .by_provider
                .entry(provider.to_string())
                .or_insert([0; STATES]),
        };
        let n = &mut row[state.code() as usize];
        *n = n.saturating_add_signed(delta);
        if !self.dirty.contains(provider) {
            self.dirty.insert(provider.to_string());
        }
    }

    /// A job moved from one (provider, state) to another.
    fn moved(&mut self, from: (&str, JobState), to: (&str, JobState)) {
        if from != to {
            self.add(from.0, from.1, -1);
            self.add(to.0, to.1, 1);
        }
    }

    fn mark_all_dirty(&mut self) {
        self.dirty = self.by_provider.keys().cloned().collect();
    }

    /// The changed rows, to be written with the writes they count.
    fn take_dirty(&mut self) -> Vec<(Vec<u8>, IVec)> {
        self.dirty
            .drain()
            .filter_map(|p| {
                let row = self.by_provider.get(&p)?;
                Some((count_key(&p), encode_counts(row)))
            })
            .collect()
    }
}

/// Writes checked and accepted but not yet in sled.
#[derive(Default)]
struct Pending {
    overlay: Overlay,
    /// The overlay being written to sled right now, outside this lock, so
    /// that writers keep staging while sled works; reads consult it until
    /// the write is done.
    writing: Option<Arc<Overlay>>,
    counts: Counts,
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
    /// Every write is prepared under this lock: CAS checks, budget checks,
    /// intake dedup and counts see one consistent order.
    pending: Arc<Mutex<Pending>>,
    /// Held while a staged overlay is written to sled: overlays reach sled
    /// one at a time and in the order they were staged.
    writer: Arc<Mutex<()>>,
    flusher: mpsc::UnboundedSender<Waiter>,
    flushes: Arc<AtomicU64>,
    gates: Arc<gate::Gates>,
    leases: Arc<leases::Leases>,
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
        let tree = db.open_tree("switchyard").map_err(storage)?;
        let counts = load_counts(&db, &tree)?;
        let gates = Arc::new(gate::Gates::load(&tree)?);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(group_commit(rx));
        Ok(SledStore {
            db,
            tree,
            pending: Arc::new(Mutex::new(Pending {
                counts,
                ..Pending::default()
            })),
            writer: Arc::new(Mutex::new(())),
            flusher: tx,
            flushes: Arc::new(AtomicU64::new(0)),
            gates,
            leases: Arc::default(),
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
        let mut p = lock(&self.pending);
        let mut batch = sled::Batch::default();
        // Writes staged since the write-out above go in the same batch:
        // the count rows written below count them too.
        for (k, v) in &p.overlay {
            match v {
                Some(v) => batch.insert(k.as_slice(), v.clone()),
                None => batch.remove(k.as_slice()),
            }
        }
        let mut n = 0;
        for mut job in jobs {
            let jk = job_key(&job.key);
            if self.known(&p, &jk)? {
                continue;
            }
            job.seq = self.db.generate_id().map_err(storage)?;
            batch.insert(idx_key(&job), job.key.as_bytes());
            let imported = Transition {
                at: job.updated_at.clone(),
                from: None,
                to: job.state,
                note: "imported".into(),
            };
            batch.insert(jk, encode_record(&job, &[imported])?);
            p.counts.add(&job.provider, job.state, 1);
            n += 1;
        }
        for (k, v) in p.counts.take_dirty() {
            batch.insert(k, v);
        }
        if let Err(e) = self.tree.apply_batch(batch) {
            // Nothing was written: the staged writes stay staged, and every
            // count row is written again with them.
            p.counts.mark_all_dirty();
            return Err(storage(e));
        }
        p.overlay.clear();
        drop(p);
        self.db.flush().map_err(storage)?;
        Ok(n)
    }

    /// Writes staged changes and flushes synchronously (shutdown, tests).
    pub fn flush_now(&self) -> Result<(), StoreError> {
        self.write_out()?;
        self.db.flush().map_err(storage)?;
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
            None => self.tree.get(key).map_err(storage),
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
            // The counts go out in the same atomic batch as the writes
            // they count.
            for (k, v) in p.counts.take_dirty() {
                p.put(k, v);
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
        let mut p = lock(&self.pending);
        p.writing = None;
        if res.is_err() {
            // sled applies a batch whole or not at all: none of it was
            // written. Dropping it would lose writes already reported as
            // accepted, and a later sync would then call them durable; so
            // it goes back under whatever was staged since, to be read
            // and written again.
            for (k, v) in staged.iter() {
                p.overlay.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        res.map_err(storage)
    }

    fn scan_jobs_by_index(&self, prefix: &[u8], limit: usize) -> Result<Vec<Job>, StoreError> {
        self.write_out()?;
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(prefix) {
            let (_, key) = item.map_err(storage)?;
            let k = String::from_utf8_lossy(&key).into_owned();
            if let Some(job) = self.get_now(&k)? {
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

    fn get_now(&self, key: &str) -> Result<Option<Job>, StoreError> {
        let jk = job_key(key);
        self.read_unlocked(&jk)?
            .map(|v| decode_job(&jk, &v))
            .transpose()
    }

    fn intake_now(&self, specs: Vec<JobSpec>) -> Result<IntakeReport, StoreError> {
        let now = now_rfc3339();
        let mut report = IntakeReport::default();
        let mut seen = HashSet::with_capacity(specs.len());
        let mut staged = Vec::with_capacity(specs.len() * 3);
        // Checked and staged under one lock: two intakes of the same key
        // cannot both accept it. Staged as a whole, the batch reaches sled
        // in one atomic write.
        let mut p = lock(&self.pending);
        let mut providers = Vec::new();
        for spec in specs {
            let jk = job_key(&spec.key);
            if !seen.insert(spec.key.clone()) || self.known(&p, &jk)? {
                report.already_known.push(spec.key);
                continue;
            }
            let seq = self.db.generate_id().map_err(storage)?;
            let job = Job::from_spec(spec, seq, &now);
            staged.push((idx_key(&job), IVec::from(job.key.as_bytes())));
            let accepted = Transition {
                at: now.clone(),
                from: None,
                to: JobState::Queued,
                note: "accepted".into(),
            };
            staged.push((jk, IVec::from(encode_record(&job, &[accepted])?)));
            providers.push(job.provider);
            report.accepted.push(job.key);
        }
        for (k, v) in staged {
            p.put(k, v);
        }
        for provider in providers {
            p.counts.add(&provider, JobState::Queued, 1);
        }
        Ok(report)
    }

    fn apply_now(&self, key: &str, expect: JobState, change: &Change) -> Result<Job, StoreError> {
        let jk = job_key(key);
        let now = now_rfc3339();
        let mut p = lock(&self.pending);
        let raw = self
            .read(&p, &jk)?
            .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        let Record { job, mut history } = decode_record(&jk, &raw)?;
        // Only the rows the rules will read, fetched before they run.
        let mut rows = Vec::new();
        for period in change::ledger_periods(&job, &change.ledger) {
            let e = self.ledger_get(&p, &ledger_key(&job.provider, &period))?;
            rows.push((period, e));
        }
        let lookup = |period: &str| {
            rows.iter()
                .find(|(p, _)| p == period)
                .map(|(_, e)| *e)
                .unwrap_or_default()
        };
        let (old_idx, old_state) = (idx_key(&job), job.state);
        // A fallback changes the job's provider: the ledger rows are the
        // old one's, the index entry and the counts move to the new one.
        let old_provider = job.provider.clone();
        let (new, entries, ledger) = match change::apply(job, expect, change, &now, &lookup)? {
            Outcome::Unchanged(j) => return Ok(j),
            Outcome::Changed {
                job,
                entries,
                ledger,
            } => (job, entries, ledger),
        };
        history.extend(entries);
        let bytes = encode_record(&new, &history)?;
        for (period, e) in ledger {
            p.put(ledger_key(&old_provider, &period), &e.to_bytes()[..]);
        }
        let new_idx = idx_key(&new);
        if new_idx != old_idx {
            p.del(old_idx);
            p.put(new_idx, new.key.as_bytes().to_vec());
        }
        p.counts
            .moved((&old_provider, old_state), (&new.provider, new.state));
        p.put(jk, bytes);
        Ok(new)
    }

    /// Claims under the gate's turn (`None`: ungated).
    fn claim_now(
        &self,
        c: &Claim<'_>,
        mut turn: Option<&mut gate::Turn<'_>>,
    ) -> Result<Claimed, StoreError> {
        let mut limit = c.limit;
        let mut out = Claimed::default();
        if let Some(cap) = c.max_in_flight {
            let submitting = lock(&self.pending)
                .counts
                .by_provider
                .get(c.provider)
                .map_or(0, |row| row[JobState::Submitting.code() as usize]);
            let free = (cap as u64).saturating_sub(submitting) as usize;
            if free < limit {
                limit = free;
                out.at_cap = true;
            }
        }
        if limit == 0 {
            return Ok(out);
        }
        let queued = self.scan_jobs_by_index(&idx_prefix(JobState::Queued, c.provider), limit)?;
        for job in queued {
            let next = match turn.as_deref().map(|t| t.peek()) {
                Some(Err(wait)) => {
                    out.gate_wait = Some(wait);
                    break;
                }
                Some(Ok(next)) => Some(next),
                None => None,
            };
            let Some(amount) = (c.admit)(&job) else {
                out.not_admitted = true;
                break;
            };
            let change = Change::to(JobState::Submitting, c.note)
                .ledger(LedgerOp::Reserve {
                    period: c.period.to_string(),
                    amount,
                    limit: c.budget,
                })
                .patch(Patch {
                    attempts: Some(Attempts::Increment),
                    error: Some(None),
                    ..Patch::default()
                });
            match self.apply_now(&job.key, JobState::Queued, &change) {
                Ok(j) => {
                    if let (Some(t), Some(n)) = (turn.as_deref_mut(), next) {
                        t.commit(n);
                    }
                    out.jobs.push(j)
                }
                // Strict queue order: a job that does not fit holds those
                // behind it.
                Err(e) if e.is_over_budget() => {
                    out.over_budget = true;
                    break;
                }
                // Cancelled meanwhile.
                Err(e) if e.is_state_mismatch() => continue,
                Err(e) if out.jobs.is_empty() => return Err(e),
                // The jobs already moved are valid claims; the error comes
                // back at the next claim of this job.
                Err(_) => break,
            }
        }
        Ok(out)
    }

    fn list_now(&self, filter: &Filter) -> Result<Vec<Job>, StoreError> {
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
            let (k, v) = item.map_err(storage)?;
            let job = decode_job(&k, &v)?;
            if filter.provider.as_ref().is_some_and(|p| *p != job.provider) {
                continue;
            }
            out.push(job);
        }
        out.sort_by_key(|j| j.seq);
        Ok(out)
    }
}

/// The count rows, or (a store written before counts were kept) a count
/// of the index, written at once so it happens only once.
fn load_counts(db: &sled::Db, tree: &sled::Tree) -> Result<Counts, StoreError> {
    let mut counts = Counts::default();
    if tree.contains_key(COUNTS_MARKER).map_err(storage)? {
        for item in tree.scan_prefix([P_COUNT]) {
            let (k, v) = item.map_err(storage)?;
            let provider = String::from_utf8_lossy(&k[1..]).into_owned();
            counts.by_provider.insert(provider, decode_counts(&v));
        }
        return Ok(counts);
    }
    for item in tree.scan_prefix([P_IDX]) {
        let (k, _) = item.map_err(storage)?;
        if let Some((state, provider)) = idx_parts(&k) {
            counts.add(&String::from_utf8_lossy(provider), state, 1);
        }
    }
    let mut batch = sled::Batch::default();
    for (k, v) in counts.take_dirty() {
        batch.insert(k, v);
    }
    batch.insert(COUNTS_MARKER, &[1u8][..]);
    tree.apply_batch(batch).map_err(storage)?;
    db.flush().map_err(storage)?;
    Ok(counts)
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
            // A waiter that gave up no longer needs the answer.
            let _ = w.send(res.clone());
        }
    }
}
