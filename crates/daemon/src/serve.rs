//! Running the daemon: the runtime, the HTTP listener, signals and systemd
//! readiness, and a drain bounded by `shutdown_grace` so SIGTERM always ends
//! in an exit, with every accepted write flushed.

use crate::config::{Config, ProviderConfig};
use crate::http;
use crate::store_config::Backend;
use anyhow::Context;
use futures::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use switchyard_engine::{Engine, EngineConfig, Health, ProviderLimits, ProviderSetup};
use switchyard_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A running daemon (engine + HTTP server).
pub struct Daemon {
    pub rt: Engine,
    /// The control API's bearer token (SIGHUP re-reads its file).
    pub auth: Arc<http::Auth>,
    /// Allowed host names (SIGHUP replaces them).
    pub guard: Arc<http::Guard>,
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    grace: std::time::Duration,
    /// Held while running (see [`lock_data_dir`]).
    _data_dir_lock: Option<std::fs::File>,
}

impl Daemon {
    /// Opens the store, starts the runtime and binds the control listener.
    pub async fn start(cfg: &Config) -> anyhow::Result<Daemon> {
        // What `check` reports, refused before anything is opened (a
        // provider without its key would fail every job with 401).
        let problems = cfg.start_problems();
        if !problems.is_empty() {
            let lines: Vec<String> = problems.iter().map(|(k, m)| format!("{k}: {m}")).collect();
            return Err(crate::Invalid(anyhow::anyhow!("{}", lines.join("\n"))).into());
        }
        for w in cfg.start_warnings() {
            tracing::warn!("{w}");
        }
        let token = cfg.daemon.auth_token().map_err(crate::Invalid)?;
        let auth = Arc::new(http::Auth::new(token.as_ref()));
        let guard = Arc::new(http::Guard::new(&cfg.daemon.allowed_hosts, auth.clone()));
        let shutdown = CancellationToken::new();
        let (store, lock) = open_store(cfg).await?;
        let rt = Engine::start(engine_config(cfg)?, store, shutdown.child_token()).await?;
        let listener = TcpListener::bind(cfg.daemon.listen)
            .await
            .with_context(|| format!("binding {}", cfg.daemon.listen))?;
        let addr = listener.local_addr()?;
        // After the listener: a provider may call the URL at once.
        rt.register_webhooks(&cfg.webhook_urls());
        if let Some(dir) = cfg.daemon.inbox_dir.clone() {
            tokio::spawn(switchyard_engine::inbox::run(
                rt.clone(),
                dir,
                cfg.daemon.inbox_settle,
            ));
        }
        let app = http::router(rt.clone(), auth.clone(), guard.clone());
        let stop = shutdown.clone();
        let server = tokio::spawn(async move {
            let res = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = res {
                tracing::error!("HTTP server: {e}");
            }
        });
        if !addr.ip().is_loopback() && !auth.enabled() {
            tracing::warn!(%addr, "listening beyond loopback without daemon.auth_token_file: anyone who can reach this address controls the queue");
        }
        if !addr.ip().is_loopback() && cfg.daemon.allowed_hosts.is_empty() {
            tracing::info!(%addr, "requests naming this machine by a host name get 421 unless the name is listed in daemon.allowed_hosts (IP addresses always work)");
        }
        tracing::info!(%addr, providers = rt.provider_names().len(), auth = auth.enabled(), "switchyard daemon listening");
        Ok(Daemon {
            rt,
            auth,
            guard,
            addr,
            shutdown,
            server,
            grace: cfg.daemon.shutdown_grace,
            _data_dir_lock: lock,
        })
    }

    /// Stops intake and dispatch, lets in-flight requests finish within the
    /// grace period, flushes the store.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let drained = self.rt.drain(self.grace).await;
        // The listener stopped accepting at cancel(); connections still open
        // (a slow client) get what is left of a short bound, not forever.
        if tokio::time::timeout(std::time::Duration::from_secs(2), self.server)
            .await
            .is_err()
        {
            tracing::warn!("HTTP connections still open at exit were dropped");
        }
        if !drained.context("making accepted writes durable at stop")? {
            tracing::warn!(
                grace_ms = self.grace.as_millis() as u64,
                "in-flight requests did not finish within the grace period: their jobs are reconciled at the next start"
            );
        }
        tracing::info!("stopped cleanly");
        Ok(())
    }
}

/// `switchyard daemon`: runs until SIGTERM/SIGINT; SIGHUP reloads.
pub async fn run(cfg: Config, cfg_path: Option<PathBuf>) -> anyhow::Result<()> {
    let mut signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("installing signal handlers")?;
    let daemon = Daemon::start(&cfg).await?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let watchdog = spawn_watchdog(daemon.rt.clone(), daemon.shutdown.clone());
    let mut running = cfg;
    while let Some(sig) = signals.next().await {
        match sig {
            SIGHUP => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                if let Some(new) = reload(&daemon, &running, cfg_path.as_deref()) {
                    running = new;
                }
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            }
            _ => {
                tracing::info!(signal = sig, "shutting down: draining in-flight requests");
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
                break;
            }
        }
    }
    watchdog.abort();
    daemon.stop().await
}

/// SIGHUP: re-reads the config file and the environment. Rate limits,
/// budgets, polling settings, max_in_flight/max_attempts, the auth token and
/// allowed_hosts take effect at once, and webhook URLs are registered again; anything else waits for a restart (said in the log).
/// A config with any problem is refused whole and the running one kept.
fn reload(daemon: &Daemon, running: &Config, path: Option<&std::path::Path>) -> Option<Config> {
    // Checked as at start: a provider whose key went missing is refused too.
    let new = match Config::load_for_start(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("reload refused, keeping the running configuration: {e:#}");
            return None;
        }
    };
    let token = match new.daemon.auth_token() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("reload refused, keeping the running configuration: {e:#}");
            return None;
        }
    };
    daemon.auth.set(token.as_ref());
    daemon.guard.set_allowed(&new.daemon.allowed_hosts);
    let limits: BTreeMap<String, ProviderLimits> = new
        .providers
        .iter()
        .map(|(name, pc)| (name.clone(), limits(pc)))
        .collect();
    for name in daemon.rt.reload(&limits) {
        tracing::warn!(provider = %name, "new provider in the reloaded config: takes effect at the next restart");
    }
    daemon.rt.register_webhooks(&new.webhook_urls());
    tracing::info!("configuration reloaded: limits, budgets and polling settings updated");
    let d = (&running.daemon, &new.daemon);
    let mut later = Vec::new();
    if d.0.data_dir != d.1.data_dir {
        later.push("daemon.data_dir");
    }
    if d.0.name != d.1.name {
        later.push("daemon.name");
    }
    if running.store != new.store {
        later.push("store");
    }
    if d.0.listen != d.1.listen {
        later.push("daemon.listen");
    }
    if d.0.output_dir != d.1.output_dir {
        later.push("daemon.output_dir");
    }
    if d.0.record_dir != d.1.record_dir {
        later.push("daemon.record_dir");
    }
    if d.0.inbox_dir != d.1.inbox_dir || d.0.inbox_settle != d.1.inbox_settle {
        later.push("daemon.inbox_*");
    }
    if d.0.shutdown_grace != d.1.shutdown_grace || d.0.request_timeout != d.1.request_timeout {
        later.push("daemon timeouts");
    }
    for (name, p) in &running.providers {
        match new.providers.get(name) {
            None => {
                tracing::warn!(provider = %name, "provider removed from the config: it keeps running until the next restart")
            }
            Some(np)
                if np.kind != p.kind
                    || np.base_url != p.base_url
                    || np.api_key_env != p.api_key_env
                    || np.api_key_file != p.api_key_file
                    || np.paths != p.paths =>
            {
                tracing::warn!(provider = %name, "kind, base_url, paths or API key settings changed: they take effect at the next restart");
            }
            Some(_) => {}
        }
    }
    if !later.is_empty() {
        tracing::warn!(changed = ?later, "these settings take effect at the next restart");
    }
    Some(new)
}

/// Pings systemd's watchdog at half its interval, as long as the store
/// answers (a wedged daemon stops pinging and systemd restarts it).
fn spawn_watchdog(rt: Engine, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(usec) = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        else {
            return;
        };
        let every = std::time::Duration::from_micros(usec / 2);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {
                    match tokio::time::timeout(every, rt.health()).await {
                        Ok(Health::Ok) => { let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]); }
                        Ok(Health::StoreFailing(why)) => tracing::error!("the store is failing ({why}): not pinging the watchdog"),
                        Err(_) => tracing::error!("the store did not answer: not pinging the watchdog"),
                    }
                }
                _ = stop.cancelled() => return,
            }
        }
    })
}

/// The store `[store]` names: sled under `data_dir`, or PostgreSQL.
/// Returns the lock on `data_dir` a shared store needs (sled locks its own
/// directory).
async fn open_store(cfg: &Config) -> anyhow::Result<(Arc<dyn Store>, Option<std::fs::File>)> {
    let dir = &cfg.daemon.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating data_dir {}", dir.display()))?;
    match cfg.store.backend {
        Backend::Sled => {
            let store = switchyard_store_sled::SledStore::open(&dir.join("db"))?;
            Ok((Arc::new(store), None))
        }
        Backend::Postgres => {
            let lock = lock_data_dir(dir)?;
            // `start_problems` already refused a missing or unreadable URL.
            let url = match cfg.store.url() {
                Ok(Some(url)) => url,
                Ok(None) => anyhow::bail!("store.backend = \"postgres\" without a URL"),
                Err((key, why)) => anyhow::bail!("store.{key}: {why}"),
            };
            let opts = switchyard_store_postgres::PgOptions {
                pool_size: cfg.store.pool_size,
                application_name: format!("switchyard {}", owner_name(cfg)),
            };
            // The store's errors never carry the URL or its password.
            let store = switchyard_store_postgres::PgStore::connect(url.expose(), opts)
                .await
                .context("connecting to the PostgreSQL store (store.url_env / store.url_file)")?;
            tracing::info!(owner = %owner_name(cfg), "store: PostgreSQL, shared with every daemon on the same database");
            Ok((Arc::new(store), Some(lock)))
        }
    }
}

/// On a shared store, a daemon's name (host and data dir, by default) is
/// what fences its writes: two processes under one name would both pass.
/// sled locks its directory; here the daemon locks `data_dir` itself, so a
/// second daemon on the same directory refuses to start.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use fs2::FileExt;
    let path = dir.join("daemon.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.try_lock_exclusive().with_context(|| {
        format!(
            "{} is locked: another daemon runs on data_dir {}",
            path.display(),
            dir.display()
        )
    })?;
    Ok(f)
}

/// A provider's limits as the engine takes them.
pub fn limits(pc: &ProviderConfig) -> ProviderLimits {
    ProviderLimits {
        rate_limit: pc.rate_limit,
        max_in_flight: pc.max_in_flight,
        budget: pc.budget.clone(),
        poll: pc.poll.clone(),
        max_attempts: pc.max_attempts,
    }
}

/// The engine's providers (adapters with their credentials) and outputs.
fn engine_config(cfg: &Config) -> anyhow::Result<EngineConfig> {
    let client = switchyard_provider::default_client(cfg.daemon.request_timeout)?;
    let recorder = crate::recording::recorder(cfg)?;
    let mut providers = Vec::new();
    for (name, pc) in &cfg.providers {
        let settings = switchyard_provider::Settings {
            base_url: pc.base_url(),
            api_key: pc.api_key()?,
            webhook_secret: pc.webhook_secret()?,
            paths: pc.paths.clone(),
            recorder: recorder.as_ref().map(|r| r.named(name)),
        };
        if settings.api_key.is_none() {
            tracing::warn!(provider = %name, "no API key configured (api_key_env / api_key_file)");
        }
        providers.push(ProviderSetup {
            name: name.clone(),
            adapter: switchyard_provider::build(pc.kind, settings, client.clone()),
            limits: limits(pc),
        });
    }
    Ok(EngineConfig {
        providers,
        output_dir: cfg.daemon.output_dir.clone(),
        parallel_downloads: 4,
        owner: owner_name(cfg),
        lease_ttl: cfg.store.lease_ttl,
    })
}

/// This daemon's name in the store: `daemon.name`, else host and data dir:
/// different for every daemon sharing a store, the same across restarts
/// (so a restarted daemon takes its own live jobs back at once).
fn owner_name(cfg: &Config) -> String {
    if let Some(name) = &cfg.daemon.name {
        return name.clone();
    }
    // uname, not /proc/sys/kernel/hostname: the unit's ProcSubset=pid hides
    // /proc/sys, and a fallback name shared by every machine would let two
    // daemons pass each other's fences.
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let dir =
        std::fs::canonicalize(&cfg.daemon.data_dir).unwrap_or_else(|_| cfg.daemon.data_dir.clone());
    format!("{host}:{}", dir.display())
}
