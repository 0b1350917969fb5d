//! Changes to single jobs, committed in groups.
//!
//! The engine changes one job at a time (an acknowledgement, a finish),
//! many at once from many tasks. A transaction per change pays, for one
//! row, five statements, three round trips and a share of a WAL flush;
//! and a finish holds its provider's ledger row from its lock to its
//! commit, so every finish of a provider waits for the one before. So
//! changes go to a few writer tasks instead: each takes every change
//! waiting (up to [`MOST`]) and applies them in one transaction: the jobs
//! locked in key order, the ledger rows the rules will read locked in
//! (provider, period) order, `switchyard_core::change::apply` run on each
//! change in arrival order (a later change to the same job sees the
//! earlier), and everything written and committed in one flight. Each
//! caller gets its own answer (a refused change refuses only itself)
//! once the group is committed: durable, as before.

use crate::jobs::{corrupt, job_at, DELTAS};
use crate::redact::Redactor;
use crate::tx::{Flight, Params, Tx, TxError, TRIES};
use crate::{is_live, state_name, to_i64, to_u64};
use deadpool_postgres::Pool;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use switchyard_core::change::{self, Outcome};
use switchyard_core::model::now_rfc3339;
use switchyard_core::{Change, Job, JobState, LedgerEntry, Transition};
use switchyard_store::{Lease, StoreError};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_postgres::types::{Json, ToSql};
use tokio_util::sync::CancellationToken;

/// Changes in one transaction at most.
const MOST: usize = 256;
/// Writer tasks: while one group commits, the next gathers.
const WRITERS: usize = 4;

const LOCK_JOBS: &str = "SELECT key, owner, epoch, job FROM jobs
    WHERE key = ANY($1::text[]) ORDER BY key FOR UPDATE";
const LEDGER_ENSURE: &str = "INSERT INTO ledger (provider, period)
    SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING";
const LEDGER_LOCK: &str = "SELECT l.provider, l.period, l.reserved, l.charged FROM ledger l
    JOIN unnest($1::text[], $2::text[]) AS u(provider, period)
      ON l.provider = u.provider AND l.period = u.period
    ORDER BY l.provider, l.period FOR UPDATE OF l";
pub(crate) const WRITE_JOBS: &str = "
UPDATE jobs SET state = u.state, job = u.job, owner = u.owner, epoch = u.epoch,
    provider = u.provider,
    history = jobs.history || ARRAY(SELECT json_array_elements(u.entries))
FROM unnest($1::text[], $2::text[], $3::json[], $4::json[], $5::text[], $6::bigint[], $7::text[])
    AS u(key, state, job, entries, owner, epoch, provider)
WHERE jobs.key = u.key";
const WRITE_LEDGER: &str = "
UPDATE ledger SET reserved = u.reserved, charged = u.charged
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
    AS u(provider, period, reserved, charged)
WHERE ledger.provider = u.provider AND ledger.period = u.period";

struct Request {
    key: String,
    expect: JobState,
    change: Change,
    /// `Some`: fenced on this lease (`apply_owned`).
    lease: Option<Lease>,
    reply: oneshot::Sender<Result<Job, StoreError>>,
}

pub(crate) struct Writers {
    tx: mpsc::UnboundedSender<Request>,
}

impl Writers {
    pub(crate) fn start(pool: Pool, redact: Arc<Redactor>, stop: CancellationToken) -> Writers {
        let (tx, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..WRITERS {
            tokio::spawn(writer(
                rx.clone(),
                pool.clone(),
                redact.clone(),
                stop.clone(),
            ));
        }
        Writers { tx }
    }

    pub(crate) async fn apply(
        &self,
        lease: Option<&Lease>,
        key: &str,
        expect: JobState,
        change: Change,
    ) -> Result<Job, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request {
                key: key.to_string(),
                expect,
                change,
                lease: lease.cloned(),
                reply,
            })
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

async fn writer(
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Request>>>,
    pool: Pool,
    redact: Arc<Redactor>,
    stop: CancellationToken,
) {
    loop {
        let mut group = Vec::new();
        {
            // One writer gathers at a time; the others commit meanwhile.
            let mut rx = rx.lock().await;
            tokio::select! {
                _ = stop.cancelled() => return,
                r = rx.recv() => match r {
                    Some(r) => group.push(r),
                    None => return,
                },
            }
            while group.len() < MOST {
                match rx.try_recv() {
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
        }
        let answers = run(&pool, &redact, &group).await;
        for (req, answer) in group.into_iter().zip(answers) {
            // A caller that gave up no longer needs the answer.
            let _ = req.reply.send(answer);
        }
    }
}

async fn run(pool: &Pool, redact: &Redactor, group: &[Request]) -> Vec<Result<Job, StoreError>> {
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt(pool, redact, group).await {
            Ok(answers) => return answers,
            Err(e) if e.retryable() && tries < TRIES => continue,
            Err(e) => {
                // Nothing of the group was written: each change failed.
                let e = e.into_store(redact);
                return group.iter().map(|_| Err(e.clone())).collect();
            }
        }
    }
}

/// A locked job as the group changes it.
struct Slot {
    owner: Option<String>,
    epoch: Option<i64>,
    job: Job,
    entries: Vec<Transition>,
    changed: bool,
}

type LedgerKey = (String, String);

/// Locks the ledger rows `keys` (creating missing ones), in key order.
async fn lock_ledger(
    tx: &Tx,
    ensure: &tokio_postgres::Statement,
    lock: &tokio_postgres::Statement,
    keys: &BTreeSet<LedgerKey>,
    into: &mut BTreeMap<LedgerKey, LedgerEntry>,
) -> Result<(), TxError> {
    if keys.is_empty() {
        return Ok(());
    }
    let c = tx.c()?;
    let providers: Vec<&str> = keys.iter().map(|(p, _)| p.as_str()).collect();
    let periods: Vec<&str> = keys.iter().map(|(_, p)| p.as_str()).collect();
    let p: [&(dyn ToSql + Sync); 2] = [&providers, &periods];
    let mut f = Flight::default();
    f.execute(c, ensure, &p);
    let locked = f.query(c, lock, &p);
    let mut out = f.run().await?;
    for r in out[locked].rows() {
        let get = |i| r.try_get::<_, i64>(i).map_err(|e| corrupt("ledger", &e));
        into.insert(
            (r.get(0), r.get(1)),
            LedgerEntry {
                reserved: to_u64(get(2)?),
                charged: to_u64(get(3)?),
            },
        );
    }
    Ok(())
}

async fn attempt(
    pool: &Pool,
    redact: &Redactor,
    group: &[Request],
) -> Result<Vec<Result<Job, StoreError>>, TxError> {
    let tx = Tx::new(pool.get().await.map_err(|e| redact.pool(e))?);
    let st = tx
        .prepare(&[
            LOCK_JOBS,
            LEDGER_ENSURE,
            LEDGER_LOCK,
            WRITE_JOBS,
            WRITE_LEDGER,
            DELTAS,
        ])
        .await?;
    let c = tx.c()?;
    let keys: Vec<&str> = group
        .iter()
        .map(|r| r.key.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let pk: [&(dyn ToSql + Sync); 1] = [&keys];
    let mut f = Flight::default();
    f.simple(c, "BEGIN");
    let locked = f.query(c, &st[0], &pk);
    let mut out = f.run().await?;
    let mut slots: HashMap<String, Slot> = HashMap::with_capacity(keys.len());
    for r in out[locked].rows() {
        let key: String = r.try_get(0).map_err(|e| corrupt("?", &e))?;
        let slot = Slot {
            owner: r.try_get(1).map_err(|e| corrupt(&key, &e))?,
            epoch: r.try_get(2).map_err(|e| corrupt(&key, &e))?,
            job: job_at(&r, 3, &key)?,
            entries: Vec::new(),
            changed: false,
        };
        slots.insert(key, slot);
    }
    // The ledger rows the rules will read, as far as the jobs as they are
    // now tell; a later change to the same job may need another, locked
    // when it comes.
    let mut need = BTreeSet::new();
    for r in group {
        if let Some(s) = slots.get(&r.key) {
            for p in change::ledger_periods(&s.job, &r.change.ledger) {
                need.insert((s.job.provider.clone(), p));
            }
        }
    }
    let mut ledger = BTreeMap::new();
    lock_ledger(&tx, &st[1], &st[2], &need, &mut ledger).await?;

    let now = now_rfc3339();
    let mut touched: BTreeSet<LedgerKey> = BTreeSet::new();
    let mut deltas: BTreeMap<(String, JobState), i64> = BTreeMap::new();
    let mut answers = Vec::with_capacity(group.len());
    for r in group {
        let Some(slot) = slots.get_mut(&r.key) else {
            answers.push(Err(StoreError::NotFound(r.key.clone())));
            continue;
        };
        if let Some(lease) = &r.lease {
            let held = slot.owner.as_deref() == Some(lease.owner.0.as_str())
                && slot.epoch == Some(to_i64(lease.epoch));
            if is_live(slot.job.state) && !held {
                answers.push(Err(StoreError::LeaseLost {
                    owner: lease.owner.0.clone(),
                }));
                continue;
            }
        }
        let provider = slot.job.provider.clone();
        let missing: BTreeSet<LedgerKey> = change::ledger_periods(&slot.job, &r.change.ledger)
            .into_iter()
            .map(|p| (provider.clone(), p))
            .filter(|k| !ledger.contains_key(k))
            .collect();
        lock_ledger(&tx, &st[1], &st[2], &missing, &mut ledger).await?;
        let lookup = |period: &str| {
            ledger
                .get(&(provider.clone(), period.to_string()))
                .copied()
                .unwrap_or_default()
        };
        let old_state = slot.job.state;
        match change::apply(slot.job.clone(), r.expect, &r.change, &now, &lookup) {
            Err(refusal) => answers.push(Err(StoreError::Refused(refusal))),
            Ok(Outcome::Unchanged(j)) => answers.push(Ok(j)),
            Ok(Outcome::Changed {
                job,
                entries,
                ledger: rows,
            }) => {
                for (period, e) in rows {
                    let k = (provider.clone(), period);
                    touched.insert(k.clone());
                    ledger.insert(k, e);
                }
                // A fallback's hop moves the job to another provider: its
                // count moves with it (its ledger rows stay: `rows` are
                // the provider's it had).
                if old_state != job.state || provider != job.provider {
                    *deltas.entry((provider.clone(), old_state)).or_default() -= 1;
                    *deltas.entry((job.provider.clone(), job.state)).or_default() += 1;
                }
                // A live job is held by the lease that wrote it (or keeps
                // its holder when written unfenced); a job that is not
                // live is held by no one.
                match (is_live(job.state), &r.lease) {
                    (false, _) => (slot.owner, slot.epoch) = (None, None),
                    (true, Some(l)) => {
                        (slot.owner, slot.epoch) = (Some(l.owner.0.clone()), Some(to_i64(l.epoch)))
                    }
                    (true, None) => {}
                }
                slot.entries.extend(entries);
                slot.changed = true;
                slot.job = job.clone();
                answers.push(Ok(job));
            }
        }
    }

    if !slots.values().any(|s| s.changed) {
        tx.rollback().await?;
        return Ok(answers);
    }
    let changed: Vec<&Slot> = slots.values().filter(|s| s.changed).collect();
    let w_keys: Vec<&str> = changed.iter().map(|s| s.job.key.as_str()).collect();
    let w_states: Vec<&str> = changed.iter().map(|s| state_name(s.job.state)).collect();
    let w_jobs: Vec<Json<&Job>> = changed.iter().map(|s| Json(&s.job)).collect();
    let w_entries: Vec<Json<&Vec<Transition>>> = changed.iter().map(|s| Json(&s.entries)).collect();
    let w_owners: Vec<Option<&str>> = changed.iter().map(|s| s.owner.as_deref()).collect();
    let w_epochs: Vec<Option<i64>> = changed.iter().map(|s| s.epoch).collect();
    let w_providers: Vec<&str> = changed.iter().map(|s| s.job.provider.as_str()).collect();
    let l_providers: Vec<&str> = touched.iter().map(|(p, _)| p.as_str()).collect();
    let l_periods: Vec<&str> = touched.iter().map(|(_, p)| p.as_str()).collect();
    let l_values: Vec<LedgerEntry> = touched
        .iter()
        .map(|k| ledger.get(k).copied().unwrap_or_default())
        .collect();
    let l_reserved: Vec<i64> = l_values.iter().map(|e| to_i64(e.reserved)).collect();
    let l_charged: Vec<i64> = l_values.iter().map(|e| to_i64(e.charged)).collect();
    let deltas: Vec<(&(String, JobState), &i64)> =
        deltas.iter().filter(|(_, n)| **n != 0).collect();
    let d_providers: Vec<&str> = deltas.iter().map(|((p, _), _)| p.as_str()).collect();
    let d_states: Vec<&str> = deltas.iter().map(|((_, s), _)| state_name(*s)).collect();
    let d_n: Vec<i64> = deltas.iter().map(|(_, n)| **n).collect();
    let pj: [&(dyn ToSql + Sync); 7] = [
        &w_keys,
        &w_states,
        &w_jobs,
        &w_entries,
        &w_owners,
        &w_epochs,
        &w_providers,
    ];
    let pl: [&(dyn ToSql + Sync); 4] = [&l_providers, &l_periods, &l_reserved, &l_charged];
    let pd: [&(dyn ToSql + Sync); 3] = [&d_providers, &d_states, &d_n];
    let mut f = Flight::default();
    f.execute(c, &st[3], &pj as Params);
    if !l_providers.is_empty() {
        f.execute(c, &st[4], &pl);
    }
    if !d_n.is_empty() {
        f.execute(c, &st[5], &pd);
    }
    f.simple(c, "COMMIT");
    f.run().await?;
    tx.finished();
    Ok(answers)
}
