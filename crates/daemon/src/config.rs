//! The daemon's configuration: one TOML file layered with `SWITCHYARD_…`
//! environment variables (`__` between levels), read with figment from an
//! explicit path (figment's relative lookup would search parent folders, which
//! a daemon must not do). Unknown keys are errors: a typo in a budget must not
//! silently mean "no budget".

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use switchyard_core::{Period, ProviderKind, Secret};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/switchyard/switchyard.toml";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub output_dir: Option<PathBuf>,
    pub inbox_dir: Option<PathBuf>,
    /// How long SIGTERM waits for in-flight requests before exiting anyway.
    #[serde(with = "dur")]
    pub shutdown_grace: Duration,
    /// Timeout of one HTTP request to a provider.
    #[serde(with = "dur")]
    pub request_timeout: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            data_dir: PathBuf::from("/var/lib/switchyard"),
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            output_dir: None,
            inbox_dir: None,
            shutdown_grace: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: Option<u32>,
    pub per_minute: Option<u32>,
    pub burst: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub credits: u64,
    #[serde(default)]
    pub period: Period,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollConfig {
    #[serde(with = "dur_list")]
    pub schedule: Vec<Duration>,
    #[serde(with = "dur")]
    pub max: Duration,
    #[serde(with = "dur")]
    pub timeout: Duration,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            schedule: [3, 5, 8, 10].map(Duration::from_secs).to_vec(),
            max: Duration::from_secs(60),
            timeout: Duration::from_secs(2 * 3600),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
    pub api_key_file: Option<PathBuf>,
    #[serde(default)]
    pub rate_limit: RateLimit,
    #[serde(default = "default_in_flight")]
    pub max_in_flight: u32,
    pub budget: Option<Budget>,
    #[serde(default)]
    pub poll: PollConfig,
    pub webhook_secret_env: Option<String>,
    pub webhook_secret_file: Option<PathBuf>,
    /// Create attempts (transient failures) before a job fails.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
}

fn default_in_flight() -> u32 {
    10
}
fn default_attempts() -> u32 {
    5
}

impl ProviderConfig {
    pub fn base_url(&self) -> String {
        self.base_url
            .clone()
            .unwrap_or_else(|| self.kind.default_base_url().to_string())
    }

    pub fn api_key(&self) -> anyhow::Result<Option<Secret>> {
        read_secret(self.api_key_env.as_deref(), self.api_key_file.as_deref(), "api key")
    }

    pub fn webhook_secret(&self) -> anyhow::Result<Option<Secret>> {
        read_secret(
            self.webhook_secret_env.as_deref(),
            self.webhook_secret_file.as_deref(),
            "webhook secret",
        )
    }
}

/// Reads a secret from the named env var or file. Errors name the variable
/// or file, never the value.
fn read_secret(env: Option<&str>, file: Option<&Path>, what: &str) -> anyhow::Result<Option<Secret>> {
    if let Some(path) = file {
        let path = expand_credentials_dir(path);
        let v = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {what} file {}", path.display()))?;
        return Ok(Some(Secret::new(v.trim())));
    }
    if let Some(var) = env {
        return match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(Secret::new(v))),
            _ => Ok(None),
        };
    }
    Ok(None)
}

/// `LoadCredential=` puts files under `$CREDENTIALS_DIRECTORY`; a relative
/// `api_key_file` is looked up there first.
fn expand_credentials_dir(path: &Path) -> PathBuf {
    if path.is_relative() {
        if let Ok(dir) = std::env::var("CREDENTIALS_DIRECTORY") {
            let p = Path::new(&dir).join(path);
            if p.exists() {
                return p;
            }
        }
    }
    path.to_path_buf()
}

/// Which file the config comes from: `--config`, then `$SWITCHYARD_CONFIG`,
/// then the system path if it exists, else built-in defaults.
pub fn resolve_path(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Ok(p) = std::env::var("SWITCHYARD_CONFIG") {
        if !p.is_empty() {
            return Some(PathBuf::from(p));
        }
    }
    let sys = Path::new(DEFAULT_CONFIG_PATH);
    sys.exists().then(|| sys.to_path_buf())
}

impl Config {
    /// Loads and checks the config; every problem is reported at once.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(p) = path {
            if !p.exists() {
                bail!("config file {} does not exist", p.display());
            }
            // Parse with toml first: its errors carry line and column.
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading config file {}", p.display()))?;
            if let Err(e) = toml::from_str::<toml::Value>(&text) {
                bail!("{}: {}", p.display(), crate::batch::describe_toml_error(&text, &e));
            }
            fig = fig.merge(Toml::file_exact(p));
        }
        fig = fig.merge(
            Env::prefixed("SWITCHYARD_")
                .ignore(&["CONFIG", "LOG", "LOG_FORMAT", "DAEMON_URL"])
                .split("__"),
        );
        let cfg: Config = fig.extract().map_err(|e| {
            let where_ = path.map(|p| p.display().to_string()).unwrap_or_else(|| "config".into());
            let msgs: Vec<String> = e.into_iter().map(|e| format!("{where_}: {e}")).collect();
            anyhow::anyhow!(msgs.join("\n"))
        })?;
        let problems = cfg.problems();
        if !problems.is_empty() {
            let where_ = path.map(|p| p.display().to_string()).unwrap_or_else(|| "config".into());
            bail!(
                "{}",
                problems
                    .iter()
                    .map(|p| format!("{where_}: {p}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        Ok(cfg)
    }

    /// Semantic checks serde cannot express.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, p) in &self.providers {
            let at = format!("providers.{name}");
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                out.push(format!("{at}: provider names may use letters, digits, '-' and '_'"));
            }
            let rl = p.rate_limit;
            if rl.per_second.is_some() && rl.per_minute.is_some() {
                out.push(format!("{at}.rate_limit: set per_second or per_minute, not both"));
            }
            if rl.per_second == Some(0) || rl.per_minute == Some(0) || rl.burst == Some(0) {
                out.push(format!("{at}.rate_limit: values must be at least 1"));
            }
            if p.max_in_flight == 0 {
                out.push(format!("{at}.max_in_flight: must be at least 1"));
            }
            if p.max_attempts == 0 {
                out.push(format!("{at}.max_attempts: must be at least 1"));
            }
            if p.poll.schedule.is_empty() {
                out.push(format!("{at}.poll.schedule: needs at least one interval"));
            }
            if p.poll.schedule.iter().any(|d| d.is_zero()) {
                out.push(format!("{at}.poll.schedule: intervals must be above zero"));
            }
            if p.api_key_env.is_some() && p.api_key_file.is_some() {
                out.push(format!("{at}: set api_key_env or api_key_file, not both"));
            }
            if let Some(url) = &p.base_url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    out.push(format!("{at}.base_url: {url:?} is not an http(s) URL"));
                }
            }
        }
        out
    }
}

/// Durations as humantime strings ("3s", "2h", "500ms").
pub mod dur {
    use super::*;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
    }
}

pub mod dur_list {
    use super::*;
    pub fn serialize<S: serde::Serializer>(d: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(d.iter().map(|d| humantime::format_duration(*d).to_string()))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.iter()
            .map(|s| {
                humantime::parse_duration(s)
                    .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
            })
            .collect()
    }
}
