//! Versioned migrations, embedded in the binary and applied in order
//! inside one transaction, under a transaction-level advisory lock: of
//! several daemons starting together on a fresh database, one migrates and
//! the others wait, then find the work done. (A transaction-level lock is
//! released at commit, so it also holds behind a transaction pooler.)

use crate::redact::Redactor;
use switchyard_store::StoreError;

/// Every migration, by the version it brings the schema to.
const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("../migrations/0001_init.sql"))];

/// The newest schema this build knows.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Any fixed number: the key of the migration lock ("SWYD" and 1).
const MIGRATION_LOCK: i64 = 0x5357_5944_0001;

pub(crate) async fn migrate(
    client: &mut deadpool_postgres::Object,
    r: &Redactor,
) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(|e| r.db(e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| r.db(e))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    integer     PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(|e| r.db(e))?;
    let row = tx
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await
        .map_err(|e| r.db(e))?;
    let current: i32 = row.get(0);
    if current > SCHEMA_VERSION {
        return Err(StoreError::Storage(newer_schema(current)));
    }
    for &(version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql).await.map_err(|e| {
            StoreError::Storage(format!(
                "applying schema migration {version}: {}",
                r.text(&crate::redact::chain(&e))
            ))
        })?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(|e| r.db(e))?;
    }
    tx.commit().await.map_err(|e| r.db(e))?;
    if current < SCHEMA_VERSION {
        tracing::info!(
            from = current,
            to = SCHEMA_VERSION,
            "database schema migrated"
        );
    }
    Ok(())
}

fn newer_schema(found: i32) -> String {
    format!(
        "database schema is version {found}; this switchyard knows up to {SCHEMA_VERSION}: upgrade switchyard"
    )
}
