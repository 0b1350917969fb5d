//! The fleet backend of [`Store`]: several daemons given one PostgreSQL
//! database share one queue, one credit ledger, one rate gate, hold and
//! pause per provider, and one in-flight cap.
//!
//! Every rule about what a change does is [`switchyard_core::change`]'s:
//! this crate locks the rows a change reads (`SELECT … FOR UPDATE`), calls
//! `change::apply` on them, and writes what it returns in the same
//! transaction. Claims take `FOR UPDATE SKIP LOCKED` on the queue's head
//! after locking their provider's row, so claims of one provider take turns
//! and the in-flight count and rate gate they read stay true until they
//! commit. Times that the fleet shares (the gate, holds, leases) are on the
//! database's clock, never a daemon's.
//!
//! Durability: every transaction commits with `synchronous_commit = on`
//! (set on each connection, whatever the server's default), so a write is
//! durable when the call that made it returns and [`Store::sync`] has
//! nothing left to do. PostgreSQL already gathers the commits of
//! concurrent sessions into one WAL flush, which is what sled's group
//! commit does by hand.
//!
//! The database URL and its password are secrets: they are not kept in
//! this crate's `Debug` output, and every error message is scrubbed of them
//! ([`redact`]).

/// The database's clock in microseconds since the Unix epoch, as SQL.
/// `clock_timestamp()`, not `now()`: a statement that waited for a lock
/// must not count from when its transaction began.
macro_rules! now_us {
    () => {
        "(extract(epoch from clock_timestamp()) * 1000000)::bigint"
    };
}

mod counts;
mod fleet;
mod group;
mod hints;
mod jobs;
mod redact;
mod schema;
mod tx;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::{Change, Gate, Job, JobSpec, JobState, LedgerEntry, Transition};
use switchyard_store::{
    Claim, Claimed, DaemonInfo, Filter, Hint, IntakeReport, Lease, Owner, Permit, StateCount,
    Store, StoreError,
};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub use schema::SCHEMA_VERSION;

use redact::Redactor;

/// How a [`PgStore`] connects.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections in the pool (the LISTEN connection is one more).
    pub pool_size: usize,
    /// Shown in `pg_stat_activity`, so an operator can tell daemons apart.
    pub application_name: String,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            pool_size: 16,
            application_name: "switchyard".into(),
        }
    }
}

/// The PostgreSQL implementation of [`Store`]. Cheap to clone; the last
/// clone dropped stops its background tasks (LISTEN, count folding).
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    redact: Arc<Redactor>,
    /// This store's own tag on the hints it sends, so that it does not
    /// hear itself.
    me: u64,
    hints: broadcast::Sender<Hint>,
    stop: CancellationToken,
    opts: PgOptions,
    writers: group::Writers,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may carry the password.
        f.debug_struct("PgStore")
            .field("application_name", &self.inner.opts.application_name)
            .field("pool_size", &self.inner.opts.pool_size)
            .finish_non_exhaustive()
    }
}

/// The connector every connection uses: rustls with the webpki roots
/// when built with the `tls` feature (the URL's `sslmode` decides whether
/// it is used), plain otherwise.
#[cfg(feature = "tls")]
fn tls() -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StoreError::Storage(format!("TLS setup: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[cfg(not(feature = "tls"))]
fn tls() -> Result<tokio_postgres::NoTls, StoreError> {
    Ok(tokio_postgres::NoTls)
}

impl PgStore {
    /// Connects, applies migrations (under a lock, by whichever daemon is
    /// first), refuses a schema newer than this binary knows with a clear
    /// message ("database schema is version N; this switchyard knows up to
    /// M: upgrade switchyard").
    pub async fn connect(url: &str, opts: PgOptions) -> Result<PgStore, StoreError> {
        let (config, redact) = redact::parse(url)?;
        let redact = Arc::new(redact);
        let mut config = config;
        config.application_name(&opts.application_name);
        // Durable at commit, whatever the server's default: `sync` relies
        // on it.
        let options = match config.get_options() {
            Some(o) if !o.trim().is_empty() => format!("{o} -c synchronous_commit=on"),
            _ => "-c synchronous_commit=on".to_string(),
        };
        config.options(options);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let manager = Manager::from_config(
            config.clone(),
            tls()?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(opts.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(15)))
            .build()
            .map_err(|e| StoreError::Storage(redact.text(&format!("connection pool: {e}"))))?;
        {
            let mut client = pool.get().await.map_err(|e| redact.pool(e))?;
            schema::migrate(&mut client, &redact).await?;
        }
        let stop = CancellationToken::new();
        let (hints_tx, _) = broadcast::channel(1024);
        let me = hints::instance_id();
        hints::start(
            config,
            tls()?,
            hints_tx.clone(),
            me,
            stop.clone(),
            redact.clone(),
        )
        .await?;
        counts::start_folding(pool.clone(), stop.clone(), redact.clone());
        let writers = group::Writers::start(pool.clone(), redact.clone(), stop.clone());
        Ok(PgStore {
            inner: Arc::new(Inner {
                writers,
                pool,
                redact,
                me,
                hints: hints_tx,
                stop,
                opts,
            }),
        })
    }

    fn err(&self, e: tokio_postgres::Error) -> StoreError {
        self.inner.redact.db(e)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        if self.inner.stop.is_cancelled() {
            return Err(StoreError::Closed);
        }
        self.inner
            .pool
            .get()
            .await
            .map_err(|e| self.inner.redact.pool(e))
    }

    /// Folds the appended count changes into the totals now (the
    /// background task does it every second; benchmarks and tests call it
    /// to measure or see a folded table).
    pub async fn fold_counts(&self) -> Result<u64, StoreError> {
        let c = self.client().await?;
        counts::fold(&c).await.map_err(|e| self.err(e))
    }
}

#[async_trait]
impl Store for PgStore {
    async fn intake(&self, specs: Vec<JobSpec>) -> Result<IntakeReport, StoreError> {
        jobs::intake(self, specs).await
    }

    async fn get(&self, key: &str) -> Result<Option<Job>, StoreError> {
        jobs::get(self, key).await
    }

    async fn history(&self, key: &str) -> Result<Vec<Transition>, StoreError> {
        jobs::history(self, key).await
    }

    async fn list(&self, filter: &Filter) -> Result<Vec<Job>, StoreError> {
        jobs::list(self, filter).await
    }

    async fn counts(&self) -> Result<Vec<StateCount>, StoreError> {
        let c = self.client().await?;
        counts::read(&c).await.map_err(|e| self.err(e))
    }

    async fn claim(&self, claim: Claim<'_>) -> Result<Claimed, StoreError> {
        jobs::claim(self, &claim).await
    }

    async fn apply(&self, key: &str, expect: JobState, change: Change) -> Result<Job, StoreError> {
        self.inner.writers.apply(None, key, expect, change).await
    }

    async fn apply_owned(
        &self,
        lease: &Lease,
        key: &str,
        expect: JobState,
        change: Change,
    ) -> Result<Job, StoreError> {
        self.inner
            .writers
            .apply(Some(lease), key, expect, change)
            .await
    }

    async fn ledger(&self, provider: &str, period: &str) -> Result<LedgerEntry, StoreError> {
        jobs::ledger(self, provider, period).await
    }

    async fn renew(&self, owner: &Owner, ttl: Duration) -> Result<Lease, StoreError> {
        fleet::renew(self, owner, ttl).await
    }

    async fn daemons(&self) -> Result<Vec<DaemonInfo>, StoreError> {
        fleet::daemons(self).await
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        fleet::release(self, lease).await
    }

    async fn recover(&self, lease: &Lease) -> Result<Vec<Job>, StoreError> {
        fleet::recover(self, lease).await
    }

    async fn rescue(&self, lease: &Lease) -> Result<Vec<Job>, StoreError> {
        fleet::rescue(self, lease).await
    }

    async fn permit(&self, provider: &str, gate: Gate) -> Result<Permit, StoreError> {
        fleet::permit(self, provider, gate).await
    }

    async fn hold(&self, provider: &str, wait: Duration) -> Result<(), StoreError> {
        fleet::hold(self, provider, wait).await
    }

    async fn held(&self, provider: &str) -> Result<Option<Duration>, StoreError> {
        fleet::held(self, provider).await
    }

    async fn set_paused(&self, provider: &str, paused: bool) -> Result<(), StoreError> {
        fleet::set_paused(self, provider, paused).await
    }

    async fn paused(&self) -> Result<Vec<String>, StoreError> {
        fleet::paused(self).await
    }

    async fn hint(&self, hint: Hint) -> Result<(), StoreError> {
        let c = self.client().await?;
        let payload = hints::payload(self.inner.me, &hint);
        let st = c
            .prepare_cached("SELECT pg_notify($1, $2)")
            .await
            .map_err(|e| self.err(e))?;
        c.execute(&st, &[&hints::CHANNEL, &payload])
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn hints(&self) -> Option<broadcast::Receiver<Hint>> {
        Some(self.inner.hints.subscribe())
    }

    async fn sync(&self) -> Result<(), StoreError> {
        // Every write committed with synchronous_commit = on before it
        // returned: there is nothing left to flush.
        if self.inner.stop.is_cancelled() {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    async fn load_stats(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        fleet::load_stats(self).await
    }

    async fn save_stats(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        fleet::save_stats(self, key, bytes).await
    }
}

/// A job state as the database spells it (the `state` column).
pub(crate) fn state_name(s: JobState) -> &'static str {
    s.as_str()
}

pub(crate) const LIVE: [JobState; 3] = [
    JobState::Submitting,
    JobState::Pending,
    JobState::Processing,
];

pub(crate) fn is_live(s: JobState) -> bool {
    LIVE.contains(&s)
}

/// Credits and epochs are unsigned in the domain and `bigint` in the
/// database; nothing real comes near the limit, so it saturates.
pub(crate) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
