//! Running the daemon: the runtime, the HTTP listener, signals and systemd
//! readiness, and a drain bounded by `shutdown_grace` so SIGTERM always ends
//! in an exit, with every accepted write flushed.

use crate::config::Config;
use crate::http;
use crate::runtime::Runtime;
use anyhow::Context;
use futures::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A running daemon (runtime + HTTP server).
pub struct Daemon {
    pub rt: Arc<Runtime>,
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    grace: std::time::Duration,
}

impl Daemon {
    /// Opens the store, starts the runtime and binds the control listener.
    pub async fn start(cfg: &Config) -> anyhow::Result<Daemon> {
        let shutdown = CancellationToken::new();
        let rt = Runtime::start(cfg, shutdown.child_token())?;
        let listener = TcpListener::bind(cfg.daemon.listen)
            .await
            .with_context(|| format!("binding {}", cfg.daemon.listen))?;
        let addr = listener.local_addr()?;
        if let Some(dir) = cfg.daemon.inbox_dir.clone() {
            tokio::spawn(crate::inbox::run(rt.clone(), dir));
        }
        let app = http::router(rt.clone());
        let stop = shutdown.clone();
        let server = tokio::spawn(async move {
            let res = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = res {
                tracing::error!("HTTP server: {e}");
            }
        });
        tracing::info!(%addr, providers = rt.providers.len(), "switchyard daemon listening");
        Ok(Daemon { rt, addr, shutdown, server, grace: cfg.daemon.shutdown_grace })
    }

    /// Stops intake and dispatch, lets in-flight requests finish within the
    /// grace period, flushes the store.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.rt.tracker.close();
        if tokio::time::timeout(self.grace, self.rt.tracker.wait()).await.is_err() {
            tracing::warn!(grace_s = self.grace.as_secs(), "in-flight requests did not finish within the grace period");
        }
        let _ = self.server.await;
        self.rt.store.flush_now()?;
        tracing::info!("stopped cleanly");
        Ok(())
    }
}

/// `switchyard daemon`: runs until SIGTERM/SIGINT; SIGHUP reloads.
pub async fn run(cfg: Config, cfg_path: Option<PathBuf>) -> anyhow::Result<()> {
    let mut signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGHUP]).context("installing signal handlers")?;
    let daemon = Daemon::start(&cfg).await?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let watchdog = spawn_watchdog(daemon.shutdown.clone());
    while let Some(sig) = signals.next().await {
        match sig {
            SIGHUP => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                match Config::load(cfg_path.as_deref()) {
                    Ok(new) => daemon.rt.reload(&new),
                    Err(e) => tracing::error!("reload refused, keeping the running configuration: {e:#}"),
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

/// Pings systemd's watchdog at half its interval while the runtime lives.
fn spawn_watchdog(stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(usec) = std::env::var("WATCHDOG_USEC").ok().and_then(|v| v.parse::<u64>().ok()) else {
            return;
        };
        let every = std::time::Duration::from_micros(usec / 2);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => { let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]); }
                _ = stop.cancelled() => return,
            }
        }
    })
}
