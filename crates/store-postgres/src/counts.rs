//! Jobs per provider and state without a scan and without a shared
//! counter row: every transaction that moves jobs appends its changes to
//! `count_deltas` (an insert takes no lock another writer waits for,
//! where a counter row updated by every transition would put all of a
//! provider's transitions in one queue, each waiting for the previous
//! commit's flush). `counts()` adds the folded totals and the deltas not
//! yet folded, in one statement, so it sees one consistent snapshot; a
//! background task folds the deltas into the totals every second, so
//! there are never many to add.

use deadpool_postgres::Pool;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::JobState;
use switchyard_store::StateCount;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::redact::Redactor;

const READ: &str = "
SELECT provider, state, sum(n)::bigint FROM (
    SELECT provider, state, n FROM counts
    UNION ALL
    SELECT provider, state, n FROM count_deltas
) AS c GROUP BY provider, state";

/// Moves every delta into the totals in one statement: a reader sees the
/// deltas or the totals they became, never both or neither. Rows are
/// upserted in key order, so two daemons folding at once lock them in the
/// same order.
const FOLD: &str = "
WITH d AS (
    DELETE FROM count_deltas RETURNING provider, state, n
), s AS (
    SELECT provider, state, sum(n)::bigint AS n FROM d
    GROUP BY provider, state ORDER BY provider, state
)
INSERT INTO counts (provider, state, n) SELECT provider, state, n FROM s
ON CONFLICT (provider, state) DO UPDATE SET n = counts.n + excluded.n";

const EVERY: Duration = Duration::from_secs(1);

pub(crate) async fn read(c: &Client) -> Result<Vec<StateCount>, tokio_postgres::Error> {
    let st = c.prepare(READ).await?;
    let mut by_provider: BTreeMap<String, [u64; JobState::ALL.len()]> = BTreeMap::new();
    for r in c.query(&st, &[]).await? {
        let provider: String = r.get(0);
        let state: String = r.get(1);
        let n: i64 = r.get(2);
        let row = by_provider.entry(provider).or_default();
        if let Ok(state) = state.parse::<JobState>() {
            row[state.code() as usize] = crate::to_u64(n);
        }
    }
    Ok(by_provider
        .into_iter()
        .flat_map(|(provider, row)| {
            JobState::ALL.into_iter().map(move |state| StateCount {
                provider: provider.clone(),
                state,
                jobs: row[state.code() as usize],
            })
        })
        .collect())
}

pub(crate) async fn fold(c: &Client) -> Result<u64, tokio_postgres::Error> {
    let st = c.prepare(FOLD).await?;
    c.execute(&st, &[]).await
}

pub(crate) fn start_folding(pool: Pool, stop: CancellationToken, redact: Arc<Redactor>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let res = match pool.get().await {
                Ok(c) => fold(&c).await.map_err(|e| redact.db(e)),
                Err(e) => Err(redact.pool(e)),
            };
            // Nothing is lost when a fold fails: the deltas stay, counted
            // by every read, and the next fold takes them.
            if let Err(e) = res {
                tracing::warn!(error = %e, "folding job counts failed; will retry");
            }
        }
    });
}
