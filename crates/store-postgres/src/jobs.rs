//! Jobs: intake, reads, the compare-and-swap write path and claims.
//!
//! A change locks the job's row (and the ledger rows the rules will read,
//! in period order), hands them to `switchyard_core::change::apply`, and
//! writes what it returns, with the count changes, in the same
//! transaction. Claims first lock their provider's row: claims of one
//! provider take turns, so the in-flight count, the gate and the queue's
//! head they read stay true until they commit, while claims of other
//! providers and every other write go on beside them.

use crate::redact::chain;
use crate::tx::{Flight, Tx, TxError, TRIES};
use crate::{state_name, to_i64, to_u64, PgStore};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use switchyard_core::change::{self, Outcome};
use switchyard_core::model::now_rfc3339;
use switchyard_core::{
    Attempts, Change, Job, JobSpec, JobState, LedgerEntry, LedgerOp, Patch, Refusal, Transition,
};
use switchyard_store::{Claim, Claimed, Filter, IntakeReport, StoreError};
use tokio_postgres::types::Json;
use tokio_postgres::Row;

const SEQS: &str = "SELECT nextval('job_seq') FROM generate_series(1, $1::int)";

/// One statement, so one transaction: the new jobs, their counts and a
/// NOTIFY per provider that got jobs (delivered at commit, to every
/// daemon listening).
const INTAKE: &str = "
WITH ins AS (
    INSERT INTO jobs (key, seq, provider, state, priority, job, history)
    SELECT k, s, p, 'queued', pr, j, ARRAY[h]
    FROM unnest($1::text[], $2::bigint[], $3::text[], $4::int[], $5::json[], $6::json[])
        AS u(k, s, p, pr, j, h)
    ON CONFLICT (key) DO NOTHING
    RETURNING key, provider
), d AS (
    INSERT INTO count_deltas (provider, state, n)
    SELECT provider, 'queued', count(*) FROM ins GROUP BY provider
), n AS (
    SELECT pg_notify($7, json_build_object('from', $8::text, 'queued', provider)::text)
    FROM (SELECT DISTINCT provider FROM ins) AS x
)
SELECT key FROM ins WHERE (SELECT count(*) FROM n) >= 0";

const GET: &str = "SELECT job FROM jobs WHERE key = $1";
const HISTORY: &str = "SELECT history FROM jobs WHERE key = $1";
const LEDGER: &str = "SELECT reserved, charged FROM ledger WHERE provider = $1 AND period = $2";

const LEDGER_ENSURE: &str = "INSERT INTO ledger (provider, period)
    SELECT $1, p FROM unnest($2::text[]) AS p ON CONFLICT DO NOTHING";
/// In period order: two transactions that lock the same rows lock them in
/// the same order.
const LEDGER_LOCK: &str = "SELECT period, reserved, charged FROM ledger
    WHERE provider = $1 AND period = ANY($2::text[]) ORDER BY period FOR UPDATE";
const WRITE_LEDGER: &str = "
UPDATE ledger SET reserved = u.reserved, charged = u.charged
FROM unnest($2::text[], $3::bigint[], $4::bigint[]) AS u(period, reserved, charged)
WHERE ledger.provider = $1 AND ledger.period = u.period";
pub(crate) const DELTAS: &str = "INSERT INTO count_deltas (provider, state, n)
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])";

const PROVIDER_ENSURE: &str = "INSERT INTO providers (provider) VALUES ($1) ON CONFLICT DO NOTHING";
const PROVIDER_LOCK: &str =
    "SELECT tat_us, hold_until_us FROM providers WHERE provider = $1 FOR UPDATE";
/// Read after the lock, so that a claim that waited for its turn counts
/// from when it got it.
const CLOCK: &str = concat!("SELECT ", now_us!());
const IN_FLIGHT: &str = "SELECT count(*) FROM jobs WHERE provider = $1 AND state = 'submitting'";
const QUEUED: &str = "SELECT key, job FROM jobs WHERE provider = $1 AND state = 'queued'
    ORDER BY priority DESC, seq LIMIT $2 FOR UPDATE SKIP LOCKED";
const SET_TAT: &str = "UPDATE providers SET tat_us = $2 WHERE provider = $1";

pub(crate) fn corrupt(key: &str, e: &(dyn std::error::Error + 'static)) -> StoreError {
    StoreError::Corrupt {
        key: key.to_string(),
        message: chain(e),
    }
}

pub(crate) fn job_at(row: &Row, idx: usize, key: &str) -> Result<Job, StoreError> {
    row.try_get::<_, Json<Job>>(idx)
        .map(|j| j.0)
        .map_err(|e| corrupt(key, &e))
}

/// `(key, job)` rows.
pub(crate) fn jobs_of(rows: &[Row]) -> Result<Vec<Job>, StoreError> {
    rows.iter()
        .map(|r| {
            let key: String = r.try_get(0).map_err(|e| corrupt("?", &e))?;
            job_at(r, 1, &key)
        })
        .collect()
}

pub(crate) async fn intake(s: &PgStore, specs: Vec<JobSpec>) -> Result<IntakeReport, StoreError> {
    let mut report = IntakeReport::default();
    if specs.is_empty() {
        return Ok(report);
    }
    // The first spec of each key is the one offered; repeats are known.
    let mut seen = HashSet::with_capacity(specs.len());
    let mut order = Vec::with_capacity(specs.len());
    let mut fresh = Vec::with_capacity(specs.len());
    for spec in specs {
        let first = seen.insert(spec.key.clone());
        order.push((spec.key.clone(), first));
        if first {
            fresh.push(spec);
        }
    }
    let c = s.client().await?;
    let st = crate::tx::prepare(&c, &[SEQS, INTAKE])
        .await
        .map_err(|e| s.err(e))?;
    let n = i32::try_from(fresh.len())
        .map_err(|_| StoreError::Storage("a batch of more than 2^31 jobs".into()))?;
    let mut seqs: Vec<i64> = c
        .query(&st[0], &[&n])
        .await
        .map_err(|e| s.err(e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    seqs.sort_unstable();
    let now = now_rfc3339();
    let accepted = Transition {
        at: now.clone(),
        from: None,
        to: JobState::Queued,
        note: "accepted".into(),
    };
    let jobs: Vec<Job> = fresh
        .into_iter()
        .zip(&seqs)
        .map(|(spec, &seq)| Job::from_spec(spec, to_u64(seq), &now))
        .collect();
    let keys: Vec<&str> = jobs.iter().map(|j| j.key.as_str()).collect();
    let providers: Vec<&str> = jobs.iter().map(|j| j.provider.as_str()).collect();
    let priorities: Vec<i32> = jobs.iter().map(|j| j.priority).collect();
    let records: Vec<Json<&Job>> = jobs.iter().map(Json).collect();
    let entries: Vec<Json<&Transition>> = jobs.iter().map(|_| Json(&accepted)).collect();
    let me = s.inner.me.to_string();
    let rows = c
        .query(
            &st[1],
            &[
                &keys,
                &seqs,
                &providers,
                &priorities,
                &records,
                &entries,
                &crate::hints::CHANNEL,
                &me,
            ],
        )
        .await
        .map_err(|e| s.err(e))?;
    let inserted: HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
    for (key, first) in order {
        if first && inserted.contains(&key) {
            report.accepted.push(key);
        } else {
            report.already_known.push(key);
        }
    }
    Ok(report)
}

pub(crate) async fn get(s: &PgStore, key: &str) -> Result<Option<Job>, StoreError> {
    let c = s.client().await?;
    let st = c.prepare_cached(GET).await.map_err(|e| s.err(e))?;
    match c.query_opt(&st, &[&key]).await.map_err(|e| s.err(e))? {
        Some(row) => Ok(Some(job_at(&row, 0, key)?)),
        None => Ok(None),
    }
}

pub(crate) async fn history(s: &PgStore, key: &str) -> Result<Vec<Transition>, StoreError> {
    let c = s.client().await?;
    let st = c.prepare_cached(HISTORY).await.map_err(|e| s.err(e))?;
    match c.query_opt(&st, &[&key]).await.map_err(|e| s.err(e))? {
        Some(row) => Ok(row
            .try_get::<_, Vec<Json<Transition>>>(0)
            .map_err(|e| corrupt(key, &e))?
            .into_iter()
            .map(|t| t.0)
            .collect()),
        None => Ok(Vec::new()),
    }
}

pub(crate) async fn list(s: &PgStore, filter: &Filter) -> Result<Vec<Job>, StoreError> {
    // The state is spelt into the statement (it is one of our own words),
    // so the planner sees which partial index covers it.
    let mut sql = String::from("SELECT key, job FROM jobs");
    let mut conds = Vec::new();
    if let Some(state) = filter.state {
        conds.push(format!("state = '{}'", state_name(state)));
    }
    if filter.provider.is_some() {
        conds.push("provider = $1".to_string());
    }
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql.push_str(" ORDER BY seq");
    let c = s.client().await?;
    let st = c.prepare_cached(&sql).await.map_err(|e| s.err(e))?;
    let rows = match &filter.provider {
        Some(p) => c.query(&st, &[p]).await,
        None => c.query(&st, &[]).await,
    }
    .map_err(|e| s.err(e))?;
    jobs_of(&rows)
}

pub(crate) async fn ledger(
    s: &PgStore,
    provider: &str,
    period: &str,
) -> Result<LedgerEntry, StoreError> {
    let c = s.client().await?;
    let st = c.prepare_cached(LEDGER).await.map_err(|e| s.err(e))?;
    Ok(
        match c
            .query_opt(&st, &[&provider, &period])
            .await
            .map_err(|e| s.err(e))?
        {
            Some(r) => LedgerEntry {
                reserved: to_u64(r.get(0)),
                charged: to_u64(r.get(1)),
            },
            None => LedgerEntry::default(),
        },
    )
}

/// The job rows a transaction writes.
#[derive(Default)]
struct Writes<'a> {
    keys: Vec<&'a str>,
    states: Vec<&'static str>,
    jobs: Vec<Json<&'a Job>>,
    entries: Vec<Json<Vec<&'a Transition>>>,
    owners: Vec<Option<&'a str>>,
    epochs: Vec<Option<i64>>,
    providers: Vec<&'a str>,
}

impl<'a> Writes<'a> {
    fn push(
        &mut self,
        job: &'a Job,
        entries: &'a [Transition],
        owner: Option<&'a str>,
        epoch: Option<i64>,
    ) {
        self.keys.push(&job.key);
        self.states.push(state_name(job.state));
        self.jobs.push(Json(job));
        self.entries.push(Json(entries.iter().collect()));
        self.owners.push(owner);
        self.epochs.push(epoch);
        self.providers.push(&job.provider);
    }
}

/// Ledger rows to write back.
struct LedgerRows {
    periods: Vec<String>,
    reserved: Vec<i64>,
    charged: Vec<i64>,
}

impl LedgerRows {
    fn of<'a>(rows: impl IntoIterator<Item = (&'a String, &'a LedgerEntry)>) -> LedgerRows {
        let mut out = LedgerRows {
            periods: Vec::new(),
            reserved: Vec::new(),
            charged: Vec::new(),
        };
        for (p, e) in rows {
            out.periods.push(p.clone());
            out.reserved.push(to_i64(e.reserved));
            out.charged.push(to_i64(e.charged));
        }
        out
    }
}

/// Count changes of one transaction.
struct Deltas {
    providers: Vec<String>,
    states: Vec<&'static str>,
    n: Vec<i64>,
}

impl Deltas {
    fn moved(provider: &str, from: JobState, to: JobState, n: i64) -> Deltas {
        Deltas {
            providers: vec![provider.to_string(), provider.to_string()],
            states: vec![state_name(from), state_name(to)],
            n: vec![-n, n],
        }
    }
}

fn ledger_entries(rows: &[Row]) -> Result<Vec<(String, LedgerEntry)>, StoreError> {
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get::<_, String>(0)
                    .map_err(|e| corrupt("ledger", &e))?,
                LedgerEntry {
                    reserved: to_u64(r.try_get(1).map_err(|e| corrupt("ledger", &e))?),
                    charged: to_u64(r.try_get(2).map_err(|e| corrupt("ledger", &e))?),
                },
            ))
        })
        .collect()
}

pub(crate) async fn claim(s: &PgStore, cl: &Claim<'_>) -> Result<Claimed, StoreError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match claim_once(s, cl).await {
            Err(e) if e.retryable() && tries < TRIES => continue,
            r => return r.map_err(|e| e.into_store(&s.inner.redact)),
        }
    }
}

async fn claim_once(s: &PgStore, cl: &Claim<'_>) -> Result<Claimed, TxError> {
    let mut out = Claimed::default();
    if cl.limit == 0 {
        return Ok(out);
    }
    let tx = Tx::new(s.client().await?);
    let st = tx
        .prepare(&[
            PROVIDER_ENSURE,
            PROVIDER_LOCK,
            CLOCK,
            IN_FLIGHT,
            QUEUED,
            LEDGER_ENSURE,
            LEDGER_LOCK,
            crate::group::WRITE_JOBS,
            WRITE_LEDGER,
            SET_TAT,
            DELTAS,
        ])
        .await?;
    let c = tx.c()?;
    let provider = cl.provider;
    let periods = vec![cl.period.to_string()];
    let limit = to_i64(cl.limit as u64);
    let p1: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&provider];
    let pq: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&provider, &limit];
    let pl: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&provider, &periods];
    let mut f = Flight::default();
    f.simple(c, "BEGIN");
    f.execute(c, &st[0], &p1);
    let gate_row = f.query(c, &st[1], &p1);
    let clock = f.query(c, &st[2], &[]);
    let in_flight = cl.max_in_flight.map(|_| f.query(c, &st[3], &p1));
    let queued = f.query(c, &st[4], &pq);
    f.execute(c, &st[5], &pl);
    let ledger_row = f.query(c, &st[6], &pl);
    let mut res = f.run().await?;

    let gate_row = res[gate_row].rows();
    let (mut tat, hold_until) = match gate_row.first() {
        Some(r) => (to_u64(r.get(0)), to_u64(r.get(1))),
        None => (0, 0),
    };
    let now: u64 = res[clock]
        .rows()
        .first()
        .map(|r| to_u64(r.get(0)))
        .unwrap_or(0);
    let mut take = cl.limit;
    if let (Some(cap), Some(i)) = (cl.max_in_flight, in_flight) {
        let submitting: i64 = res[i].rows().first().map(|r| r.get(0)).unwrap_or(0);
        let free = u64::from(cap).saturating_sub(to_u64(submitting)) as usize;
        if free < take {
            take = free;
            out.at_cap = true;
        }
    }
    let mut candidates = jobs_of(&res[queued].rows())?;
    candidates.truncate(take);
    let mut ledger: BTreeMap<String, LedgerEntry> = ledger_entries(&res[ledger_row].rows())?
        .into_iter()
        .collect();
    if candidates.is_empty() {
        tx.rollback().await?;
        return Ok(out);
    }
    let reserve = |amount| LedgerOp::Reserve {
        period: cl.period.to_string(),
        amount,
        limit: cl.budget,
    };
    // A requeued job may still hold a reservation in another period: its
    // row is read (locked) too before the rules run.
    let others: Vec<String> = candidates
        .iter()
        .flat_map(|j| change::ledger_periods(j, &reserve(0)))
        .filter(|p| !ledger.contains_key(p))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !others.is_empty() {
        let p: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&provider, &others];
        let mut f = Flight::default();
        f.execute(c, &st[5], &p);
        let locked = f.query(c, &st[6], &p);
        let mut res = f.run().await?;
        ledger.extend(ledger_entries(&res[locked].rows())?);
    }

    let now_text = now_rfc3339();
    let mut moved: Vec<(Job, Vec<Transition>)> = Vec::new();
    let mut touched = BTreeSet::new();
    let mut gated = false;
    for job in candidates {
        let next = match cl.gate {
            Some(g) => {
                if hold_until > now {
                    out.gate_wait = Some(std::time::Duration::from_micros(hold_until - now));
                    break;
                }
                match g.take(tat, now) {
                    Ok(n) => Some(n),
                    Err(wait) => {
                        out.gate_wait = Some(wait);
                        break;
                    }
                }
            }
            None => None,
        };
        let Some(amount) = (cl.admit)(&job) else {
            out.not_admitted = true;
            break;
        };
        let change = Change::to(JobState::Submitting, cl.note)
            .ledger(reserve(amount))
            .patch(Patch {
                attempts: Some(Attempts::Increment),
                error: Some(None),
                ..Patch::default()
            });
        let lookup = |p: &str| ledger.get(p).copied().unwrap_or_default();
        match change::apply(job, JobState::Queued, &change, &now_text, &lookup) {
            Ok(Outcome::Changed {
                job,
                entries,
                ledger: rows,
            }) => {
                for (p, e) in rows {
                    touched.insert(p.clone());
                    ledger.insert(p, e);
                }
                if let Some(n) = next {
                    tat = n;
                    gated = true;
                }
                moved.push((job, entries));
            }
            Ok(Outcome::Unchanged(_)) => {}
            // Strict queue order: a job that does not fit holds those
            // behind it.
            Err(Refusal::OverBudget { .. }) => {
                out.over_budget = true;
                break;
            }
            Err(e) if moved.is_empty() => {
                tx.rollback().await?;
                return Err(StoreError::Refused(e).into());
            }
            Err(_) => break,
        }
    }
    if moved.is_empty() {
        tx.rollback().await?;
        return Ok(out);
    }
    let owner = cl.lease.owner.0.as_str();
    let epoch = to_i64(cl.lease.epoch);
    let mut w = Writes::default();
    for (job, entries) in &moved {
        w.push(job, entries, Some(owner), Some(epoch));
    }
    let lr = LedgerRows::of(ledger.iter().filter(|(p, _)| touched.contains(*p)));
    let deltas = Deltas::moved(
        provider,
        JobState::Queued,
        JobState::Submitting,
        moved.len() as i64,
    );
    let tat_i = to_i64(tat);
    let pj: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
        &w.keys,
        &w.states,
        &w.jobs,
        &w.entries,
        &w.owners,
        &w.epochs,
        &w.providers,
    ];
    let pw: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&provider, &lr.periods, &lr.reserved, &lr.charged];
    let pt: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&provider, &tat_i];
    let pd: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
        [&deltas.providers, &deltas.states, &deltas.n];
    let mut f = Flight::default();
    f.execute(c, &st[7], &pj);
    if !lr.periods.is_empty() {
        f.execute(c, &st[8], &pw);
    }
    if gated {
        f.execute(c, &st[9], &pt);
    }
    f.execute(c, &st[10], &pd);
    f.simple(c, "COMMIT");
    f.run().await?;
    drop(w);
    tx.finished();
    out.jobs = moved.into_iter().map(|(j, _)| j).collect();
    Ok(out)
}
