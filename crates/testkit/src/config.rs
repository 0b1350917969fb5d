//! A daemon's config, written for a simulator: one data dir, one loopback
//! port, one `[providers.NAME]` table per provider.

use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use switchyard_core::ProviderKind;
use switchyard_sim::SimServer;

/// Environment variable every written config names as `api_key_env`;
/// [`crate::Daemon::command`] sets it. Not `SWITCHYARD_…`: those are
/// config keys, and the daemon rejects unknown ones.
pub const KEY_ENV: &str = "E2E_KEY";

/// A daemon's files: config, data dir, and the URL it listens on.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub url: String,
}

/// One `[providers.NAME]` table: kind and extra TOML lines.
pub struct P<'a> {
    pub name: &'a str,
    pub kind: ProviderKind,
    pub extra: &'a str,
}

impl Env {
    /// A fresh temporary directory and a free loopback port; no config
    /// written yet ([`Env::write`]), so a store can be built under
    /// [`Env::data_dir`] first.
    pub fn new() -> anyhow::Result<Env> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let addr = crate::free_addr().context("finding a free loopback port")?;
        Ok(Env {
            config: dir.path().join("switchyard.toml"),
            url: format!("http://{addr}"),
            dir,
        })
    }

    /// The config's `daemon.data_dir`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The address in [`Env::url`].
    pub fn addr(&self) -> anyhow::Result<SocketAddr> {
        url_addr(&self.url)
    }

    /// Writes the config: the daemon on [`Env::url`] with its data under
    /// [`Env::data_dir`], `daemon_extra` lines in `[daemon]`, and one table
    /// per provider pointing at `sim`.
    pub fn write(
        &self,
        sim: &SimServer,
        providers: &[P<'_>],
        daemon_extra: &str,
    ) -> anyhow::Result<()> {
        let listen = self.addr()?;
        let mut text = format!(
            "[daemon]\ndata_dir = \"{}\"\nlisten = \"{listen}\"\nshutdown_grace = \"5s\"\n{daemon_extra}\n",
            self.data_dir().display()
        );
        for p in providers {
            text.push_str(&format!(
                "\n[providers.{}]\nkind = \"{}\"\nbase_url = \"{}\"\napi_key_env = \"{KEY_ENV}\"\n{}\n",
                p.name,
                p.kind,
                sim.base_url(p.kind),
                p.extra
            ));
        }
        std::fs::write(&self.config, text)
            .with_context(|| format!("writing {}", self.config.display()))
    }
}

impl Env {
    /// Appends TOML to the written config (a `[store]` table, say).
    pub fn append(&self, toml: &str) -> anyhow::Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.config)
            .with_context(|| format!("opening {}", self.config.display()))?;
        writeln!(f, "\n{toml}").with_context(|| format!("writing {}", self.config.display()))
    }
}

/// [`Env::new`] and [`Env::write`] in one, for tests.
pub fn write_config(sim: &SimServer, providers: &[P<'_>], daemon_extra: &str) -> Env {
    let env = Env::new().unwrap_or_else(|e| panic!("{e:#}"));
    env.write(sim, providers, daemon_extra)
        .unwrap_or_else(|e| panic!("{e:#}"));
    env
}

/// The address of an `http://IP:PORT` URL, as [`Env::url`] is written.
pub(crate) fn url_addr(url: &str) -> anyhow::Result<SocketAddr> {
    url.trim_start_matches("http://")
        .parse()
        .with_context(|| format!("{url}: not an http://IP:PORT URL"))
}
