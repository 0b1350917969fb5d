//! The provider simulator on a free loopback port, from a scenario given
//! as TOML text (the form every test and benchmark writes it in).

use anyhow::Context;
use switchyard_sim::{Scenario, SimServer};

/// Parses a scenario; the error carries the TOML's line and column.
pub fn scenario(toml: &str) -> anyhow::Result<Scenario> {
    Scenario::from_toml_str(toml).context("parsing the simulator scenario")
}

/// Starts the simulator on 127.0.0.1 (any free port) in this process's
/// tokio runtime.
pub async fn start_sim(toml: &str) -> anyhow::Result<SimServer> {
    let sc = scenario(toml)?;
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    SimServer::start(listen, sc)
        .await
        .context("starting the simulator on loopback")
}

/// [`start_sim`] for tests.
pub async fn sim(toml: &str) -> SimServer {
    start_sim(toml).await.unwrap_or_else(|e| panic!("{e:#}"))
}
