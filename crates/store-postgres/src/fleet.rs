//! What the daemons of a fleet share besides the jobs: leases (one
//! heartbeat row per daemon; a job is held under `(owner, epoch)` and is
//! orphaned once no live lease has that pair), the rate gate, holds and
//! pauses per provider (times on the database's clock), and the
//! scheduler's saved statistics.

use crate::jobs::{corrupt, jobs_of};
use crate::{to_i64, to_u64, PgStore};
use std::time::Duration;
use switchyard_core::{Gate, Job};
use switchyard_store::{DaemonInfo, Lease, Owner, Permit, StoreError};

/// A live lease keeps its epoch; one that had expired (or is new) gets
/// the next.
const RENEW: &str = "
INSERT INTO daemons (owner, epoch, expires_at)
VALUES ($1, 1, clock_timestamp() + $2::float8 * interval '1 microsecond')
ON CONFLICT (owner) DO UPDATE SET
    epoch = CASE WHEN daemons.expires_at > clock_timestamp() THEN daemons.epoch
                 ELSE daemons.epoch + 1 END,
    expires_at = excluded.expires_at
RETURNING epoch";
const DAEMONS: &str = "
SELECT owner, epoch, (extract(epoch from expires_at - clock_timestamp()) * 1000000)::bigint
FROM daemons WHERE expires_at > clock_timestamp() ORDER BY owner";
const RELEASE: &str =
    "UPDATE daemons SET expires_at = clock_timestamp() WHERE owner = $1 AND epoch = $2";
const LIVE_LEASE: &str = "SELECT 1 FROM daemons
    WHERE owner = $1 AND epoch = $2 AND expires_at > clock_timestamp()";
/// Live jobs whose `(owner, epoch)` no live lease holds, taken over by a
/// lease that is live itself. They are locked in key order, as groups of
/// changes lock jobs (no deadlock between a rescue and a group). Two
/// rescuers racing for a job: the second waits for the first's row lock,
/// then finds the job held by a live lease and leaves it.
const RESCUE: &str = "
WITH orphans AS (
    SELECT key FROM jobs
    WHERE state IN ('submitting', 'pending', 'processing')
      AND (owner IS NULL OR epoch IS NULL OR NOT EXISTS (
            SELECT 1 FROM daemons d
            WHERE d.owner = jobs.owner AND d.epoch = jobs.epoch
              AND d.expires_at > clock_timestamp()))
      AND EXISTS (SELECT 1 FROM daemons d
            WHERE d.owner = $1 AND d.epoch = $2 AND d.expires_at > clock_timestamp())
    ORDER BY key
    FOR UPDATE
)
UPDATE jobs SET owner = $1, epoch = $2
FROM orphans WHERE jobs.key = orphans.key
RETURNING jobs.key, jobs.job";
const MINE: &str = "SELECT key, job FROM jobs
    WHERE state IN ('submitting', 'pending', 'processing') AND owner = $1 AND epoch = $2
    ORDER BY seq";

/// `Gate::take`'s inequality in one statement: granted when
/// `tat - tolerance <= now` and no hold is on, moving `tat` to
/// `max(tat, now) + interval`. The clock is read in the statement itself,
/// so a permit that waited for another's row lock counts from when it got
/// it (the condition is checked again on the row as the other left it).
const PERMIT: &str = concat!(
    "UPDATE providers SET tat_us = greatest(tat_us, ",
    now_us!(),
    ") + $2 WHERE provider = $1 AND hold_until_us <= ",
    now_us!(),
    " AND tat_us - $3 <= ",
    now_us!(),
    " RETURNING tat_us"
);
const GATE: &str = concat!(
    "SELECT tat_us, hold_until_us, ",
    now_us!(),
    " FROM providers WHERE provider = $1"
);
const PROVIDER_ENSURE: &str = "INSERT INTO providers (provider) VALUES ($1) ON CONFLICT DO NOTHING";
/// A longer hold already set stays.
const HOLD: &str = concat!(
    "INSERT INTO providers (provider, hold_until_us) VALUES ($1, ",
    now_us!(),
    " + $2) ON CONFLICT (provider) DO UPDATE SET hold_until_us = ",
    "greatest(providers.hold_until_us, excluded.hold_until_us)"
);
const HELD: &str = concat!(
    "SELECT hold_until_us - ",
    now_us!(),
    " FROM providers WHERE provider = $1"
);
const SET_PAUSED: &str = "INSERT INTO providers (provider, paused) VALUES ($1, $2)
    ON CONFLICT (provider) DO UPDATE SET paused = excluded.paused";
const PAUSED: &str = "SELECT provider FROM providers WHERE paused";
const SAVE_STATS: &str = "INSERT INTO stats (key, bytes) VALUES ($1, $2)
    ON CONFLICT (key) DO UPDATE SET bytes = excluded.bytes";
const LOAD_STATS: &str = "SELECT key, bytes FROM stats";

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

pub(crate) async fn renew(s: &PgStore, owner: &Owner, ttl: Duration) -> Result<Lease, StoreError> {
    let c = s.client().await?;
    let st = c.prepare_cached(RENEW).await.map_err(|e| s.err(e))?;
    let ttl_us = micros(ttl) as f64;
    let row = c
        .query_one(&st, &[&owner.0, &ttl_us])
        .await
        .map_err(|e| s.err(e))?;
    Ok(Lease {
        owner: owner.clone(),
        epoch: to_u64(row.get(0)),
        ttl,
    })
}

pub(crate) async fn daemons(s: &PgStore) -> Result<Vec<DaemonInfo>, StoreError> {
    let c = s.client().await?;
    let st = c.prepare_cached(DAEMONS).await.map_err(|e| s.err(e))?;
    let rows = c.query(&st, &[]).await.map_err(|e| s.err(e))?;
    Ok(rows
        .iter()
        .map(|r| DaemonInfo {
            owner: Owner(r.get(0)),
            epoch: to_u64(r.get(1)),
            expires_in: Duration::from_micros(to_u64(r.get(2))),
        })
        .collect())
}

pub(crate) async fn release(s: &PgStore, lease: &Lease) -> Result<(), StoreError> {
    let c = s.client().await?;
    let st = c.prepare_cached(RELEASE).await.map_err(|e| s.err(e))?;
    c.execute(&st, &[&lease.owner.0, &to_i64(lease.epoch)])
        .await
        .map_err(|e| s.err(e))?;
    Ok(())
}

/// Takes over orphaned live jobs for `lease`; refuses a lease that is not
/// live (it would only orphan them again).
async fn take_over(s: &PgStore, lease: &Lease) -> Result<Vec<Job>, StoreError> {
    let c = s.client().await?;
    let st = crate::tx::prepare(&c, &[LIVE_LEASE, RESCUE])
        .await
        .map_err(|e| s.err(e))?;
    let epoch = to_i64(lease.epoch);
    let live = c
        .query_opt(&st[0], &[&lease.owner.0, &epoch])
        .await
        .map_err(|e| s.err(e))?;
    if live.is_none() {
        return Err(StoreError::LeaseLost {
            owner: lease.owner.0.clone(),
        });
    }
    let rows = c
        .query(&st[1], &[&lease.owner.0, &epoch])
        .await
        .map_err(|e| s.err(e))?;
    let mut jobs = jobs_of(&rows)?;
    jobs.sort_by_key(|j| j.seq);
    Ok(jobs)
}

pub(crate) async fn recover(s: &PgStore, lease: &Lease) -> Result<Vec<Job>, StoreError> {
    take_over(s, lease).await?;
    let c = s.client().await?;
    let st = c.prepare_cached(MINE).await.map_err(|e| s.err(e))?;
    let rows = c
        .query(&st, &[&lease.owner.0, &to_i64(lease.epoch)])
        .await
        .map_err(|e| s.err(e))?;
    jobs_of(&rows)
}

pub(crate) async fn rescue(s: &PgStore, lease: &Lease) -> Result<Vec<Job>, StoreError> {
    take_over(s, lease).await
}

pub(crate) async fn permit(s: &PgStore, provider: &str, gate: Gate) -> Result<Permit, StoreError> {
    let c = s.client().await?;
    let st = crate::tx::prepare(&c, &[PERMIT, GATE, PROVIDER_ENSURE])
        .await
        .map_err(|e| s.err(e))?;
    let interval = to_i64(gate.interval_us());
    let tolerance = to_i64(gate.tolerance_us());
    // A refusal reads the gate to say how long to wait; if another permit
    // moved it meanwhile so that one is there after all, try again.
    for _ in 0..3 {
        let granted = c
            .query_opt(&st[0], &[&provider, &interval, &tolerance])
            .await
            .map_err(|e| s.err(e))?;
        if granted.is_some() {
            return Ok(Permit::Granted);
        }
        let Some(row) = c
            .query_opt(&st[1], &[&provider])
            .await
            .map_err(|e| s.err(e))?
        else {
            // The provider's first permit: its row (no history: the
            // whole burst) comes first.
            c.execute(&st[2], &[&provider])
                .await
                .map_err(|e| s.err(e))?;
            continue;
        };
        let (tat, hold, now) = (to_u64(row.get(0)), to_u64(row.get(1)), to_u64(row.get(2)));
        if hold > now {
            return Ok(Permit::Wait(Duration::from_micros(hold - now)));
        }
        if let Err(wait) = gate.take(tat, now) {
            return Ok(Permit::Wait(wait));
        }
    }
    // Lost three races in a row: say when to come back rather than spin.
    Ok(Permit::Wait(gate.interval))
}

pub(crate) async fn hold(s: &PgStore, provider: &str, wait: Duration) -> Result<(), StoreError> {
    let c = s.client().await?;
    let st = c.prepare_cached(HOLD).await.map_err(|e| s.err(e))?;
    c.execute(&st, &[&provider, &micros(wait)])
        .await
        .map_err(|e| s.err(e))?;
    Ok(())
}

pub(crate) async fn held(s: &PgStore, provider: &str) -> Result<Option<Duration>, StoreError> {
    let c = s.client().await?;
    let st = c.prepare_cached(HELD).await.map_err(|e| s.err(e))?;
    let row = c.query_opt(&st, &[&provider]).await.map_err(|e| s.err(e))?;
    Ok(row
        .map(|r| r.get::<_, i64>(0))
        .filter(|&left| left > 0)
        .map(|left| Duration::from_micros(to_u64(left))))
}

pub(crate) async fn set_paused(
    s: &PgStore,
    provider: &str,
    paused: bool,
) -> Result<(), StoreError> {
    let c = s.client().await?;
    let st = c.prepare_cached(SET_PAUSED).await.map_err(|e| s.err(e))?;
    c.execute(&st, &[&provider, &paused])
        .await
        .map_err(|e| s.err(e))?;
    Ok(())
}

pub(crate) async fn paused(s: &PgStore) -> Result<Vec<String>, StoreError> {
    let c = s.client().await?;
    let st = c.prepare_cached(PAUSED).await.map_err(|e| s.err(e))?;
    let mut out: Vec<String> = c
        .query(&st, &[])
        .await
        .map_err(|e| s.err(e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Byte order, as every backend sorts (not the database's collation).
    out.sort();
    Ok(out)
}

pub(crate) async fn save_stats(s: &PgStore, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
    let c = s.client().await?;
    let st = c.prepare_cached(SAVE_STATS).await.map_err(|e| s.err(e))?;
    c.execute(&st, &[&key, &bytes])
        .await
        .map_err(|e| s.err(e))?;
    Ok(())
}

pub(crate) async fn load_stats(s: &PgStore) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let c = s.client().await?;
    let st = c.prepare_cached(LOAD_STATS).await.map_err(|e| s.err(e))?;
    let mut out = Vec::new();
    for r in c.query(&st, &[]).await.map_err(|e| s.err(e))? {
        let key: String = r.try_get(0).map_err(|e| corrupt("stats", &e))?;
        let bytes: Vec<u8> = r.try_get(1).map_err(|e| corrupt(&key, &e))?;
        out.push((key, bytes));
    }
    out.sort();
    Ok(out)
}
