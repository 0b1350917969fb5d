//! A stand-in for the four providers, so that the daemon's tests and
//! `switchyard demo` run with no network, no accounts and no spend, and so
//! that the hard cases (rate limits, 5xx, truncated answers, dropped
//! connections, slow jobs, failures, exhausted credits) can be produced on
//! demand and reproduced from a seed.
//!
//! It imitates the wire formats of the seed documents (shared/seeds) and the
//! contract's assumptions for what they do not show, since the adapters are
//! tested against it: a simulator that is lenient where a provider is strict
//! would let adapter bugs through. Every assumption is named in the module
//! docs of the provider it concerns (`ugclab`, `ugen`, `ulazai`,
//! `viggle`).
//!
//! Beyond the APIs it keeps score ([`Stats`], [`SimJob`]): per-key create
//! counts reveal a job submitted twice, peak request counts reveal a quota
//! overrun, and each job's scripted outcome lets a test compare what the
//! daemon concluded with what actually happened. Jobs are computed from the
//! clock at each request rather than driven by tasks (see `state`).
//!
//! Simulator-only create params, accepted by every provider and otherwise
//! ignored: `x_sim_outcome` (`"completed"` | `"failed"`) and `x_sim_duration`
//! (`"30s"`, simulated time).

mod common;
mod gate;
pub mod replay;
pub mod scenario;
mod simapi;
mod state;
mod ugclab;
mod ugen;
mod ulazai;
mod util;
mod viggle;
mod webhook;

pub use scenario::{
    DurationDist, FaultRequests, Faults, HumanDuration, ProviderScenario, Providers, RateLimit,
    Scenario, SimError, UnknownStatus,
};
pub use state::{FaultCounts, Outcome, ProviderStats, Quota, SimJob, Stats};
pub use webhook::ugen_signature;

use axum::middleware::from_fn_with_state;
use axum::Router;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::ProviderKind;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a graceful stop waits for open requests before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running simulator. Dropping it stops the server too (without waiting).
pub struct SimServer {
    addr: SocketAddr,
    state: Arc<state::SimState>,
    cancel: CancellationToken,
    server: Option<JoinHandle<std::io::Result<()>>>,
    webhooks: Option<JoinHandle<()>>,
}

fn provider_router(sim: &Arc<state::SimState>, kind: ProviderKind) -> Router<Arc<state::SimState>> {
    let api = match kind {
        ProviderKind::Ugclab => ugclab::router(),
        ProviderKind::Ugen => ugen::router(),
        ProviderKind::Ulazai => ulazai::router(),
        ProviderKind::Viggle => viggle::router(),
    };
    let fallback_sim = sim.clone();
    api.fallback(move || {
        let sim = fallback_sim.clone();
        async move { common::not_found(&sim, kind, "No such endpoint") }
    })
    .layer(from_fn_with_state(
        gate::Gate {
            sim: sim.clone(),
            kind,
        },
        gate::gate,
    ))
}

fn app(sim: Arc<state::SimState>) -> Router {
    let mut router = Router::new();
    for kind in ProviderKind::ALL {
        router = router.nest(kind.sim_prefix(), provider_router(&sim, kind));
    }
    router.nest("/_sim", simapi::router()).with_state(sim)
}

impl SimServer {
    /// Binds `listen` (use 127.0.0.1:0 in tests) and serves all four APIs.
    pub async fn start(listen: SocketAddr, scenario: Scenario) -> std::io::Result<SimServer> {
        scenario
            .validate()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let state = Arc::new(state::SimState::new(
            &scenario,
            format!("http://{}", public_addr(addr)),
            tx,
            cancel.clone(),
        ));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(std::io::Error::other)?;
        let webhooks = tokio::spawn(webhook::run(state.clone(), rx, client, cancel.clone()));
        let app = app(state.clone());
        let stop = cancel.clone();
        let server = tokio::spawn(async move {
            use axum::serve::ListenerExt;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        Ok(SimServer {
            addr,
            state,
            cancel,
            server: Some(server),
            webhooks: Some(webhooks),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// e.g. `http://127.0.0.1:PORT/ugen/api/v1`. An unspecified listen
    /// address (0.0.0.0) is shown as 127.0.0.1, which a client can reach.
    pub fn base_url(&self, kind: ProviderKind) -> String {
        format!("http://{}{}", public_addr(self.addr), kind.sim_prefix())
    }

    /// Same data as `GET /_sim/stats`.
    pub fn stats(&self) -> Stats {
        self.state.stats()
    }

    /// Same data as `GET /_sim/jobs`.
    pub fn jobs(&self) -> Vec<SimJob> {
        self.state.jobs(None)
    }

    /// Clears the stats, as `POST /_sim/reset` does.
    pub fn reset_stats(&self) {
        self.state.reset_stats();
    }

    /// Graceful stop: open requests get a few seconds to finish.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(mut server) = self.server.take() {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
                .await
                .is_err()
            {
                server.abort();
            }
        }
        if let Some(webhooks) = self.webhooks.take() {
            let _ = webhooks.await;
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn public_addr(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip = match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        };
        SocketAddr::new(ip, addr.port())
    } else {
        addr
    }
}

/// For the `switchyard sim` command: serve until `cancel` fires.
pub async fn run(
    listen: SocketAddr,
    scenario: Scenario,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let server = SimServer::start(listen, scenario).await?;
    tracing::info!(addr = %server.addr(), "provider simulator listening");
    cancel.cancelled().await;
    server.shutdown().await;
    Ok(())
}
