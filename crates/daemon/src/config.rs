//! The daemon's configuration: one TOML file layered with `SWITCHYARD_…`
//! environment variables (`__` between levels), read with figment from an
//! explicit path (figment's relative lookup would search parent folders, which
//! a daemon must not do). Unknown keys are errors: a typo in a budget must not
//! silently mean "no budget".

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use switchyard_core::limits::{Budget, PollConfig, RateLimit};
use switchyard_core::{ProviderKind, Secret};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/switchyard/switchyard.toml";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default)]
    pub store: crate::store_config::StoreConfig,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// This daemon's name among the daemons sharing a store (its lease and
    /// the owner of its jobs). Unset: host name and data dir, which differ
    /// between daemons and stay the same across restarts.
    pub name: Option<String>,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub output_dir: Option<PathBuf>,
    pub inbox_dir: Option<PathBuf>,
    /// An inbox file is read only once its size and modification time have
    /// not changed for this long (a file still being written is left alone).
    #[serde(with = "dur")]
    pub inbox_settle: Duration,
    /// A file holding the bearer token the control API requires (every route
    /// but `/healthz` and `/webhooks/*`). Unset: no token (loopback only is
    /// the default listen address). A relative path is looked up in
    /// `$CREDENTIALS_DIRECTORY` first.
    pub auth_token_file: Option<PathBuf>,
    /// Host names (optionally `name:port`) the control API answers to,
    /// besides `localhost` and IP literals: a request whose `Host` header
    /// names anything else gets 421 (a DNS-rebinding page sends its own
    /// name). Also the only other origins allowed to send changes.
    pub allowed_hosts: Vec<String>,
    /// How long SIGTERM waits for in-flight requests before exiting anyway.
    #[serde(with = "dur")]
    pub shutdown_grace: Duration,
    /// Timeout of one HTTP request to a provider.
    #[serde(with = "dur")]
    pub request_timeout: Duration,
    /// Threads running the daemon's tasks (sled's writes have their own).
    /// One is the measured best on a small machine: with two, the cost of
    /// waking each other per poll made an idle daemon with 10,000 jobs use
    /// 1.5 % of a core instead of 0.8 %, at the same throughput. Read at
    /// start only.
    pub worker_threads: usize,
    /// Where every request to a provider and its answer is recorded as
    /// JSON Lines, secrets redacted (`sim --replay` plays one back). Unset:
    /// nothing is recorded.
    pub record_dir: Option<PathBuf>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            name: None,
            data_dir: PathBuf::from("/var/lib/switchyard"),
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            output_dir: None,
            inbox_dir: None,
            inbox_settle: Duration::from_secs(2),
            auth_token_file: None,
            allowed_hosts: Vec::new(),
            shutdown_grace: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            worker_threads: 1,
            record_dir: None,
        }
    }
}

impl DaemonConfig {
    /// Reads the control API's bearer token, if one is configured. The
    /// error names the file, never the content.
    pub fn auth_token(&self) -> anyhow::Result<Option<Secret>> {
        let Some(path) = &self.auth_token_file else {
            return Ok(None);
        };
        let secret =
            read_secret(None, Some(path), "auth token")?.unwrap_or_else(|| Secret::new(""));
        if secret.is_empty() {
            bail!(
                "auth token file {} is empty",
                expand_credentials_dir(path).display()
            );
        }
        Ok(Some(secret))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
    pub api_key_file: Option<PathBuf>,
    /// Whether the provider needs an API key (every kind's create does).
    /// With `false`, a missing key is not an error.
    #[serde(default = "default_true")]
    pub api_key_required: bool,
    #[serde(default)]
    pub rate_limit: RateLimit,
    #[serde(default = "default_in_flight")]
    pub max_in_flight: u32,
    pub budget: Option<Budget>,
    #[serde(default)]
    pub poll: PollConfig,
    pub webhook_secret_env: Option<String>,
    pub webhook_secret_file: Option<PathBuf>,
    /// The URL at which the provider reaches this daemon's
    /// `/webhooks/NAME` from outside (through a proxy or tunnel, say). Set:
    /// the daemon registers it, with the webhook secret, at start and on
    /// SIGHUP (U-Gen: `PUT /tenants/me/webhook`).
    pub webhook_public_url: Option<String>,
    /// Create attempts (transient failures) before a job fails.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Endpoint overrides: `paths = { create = "/ugc", status = "/ugc/{id}" }`.
    #[serde(default)]
    pub paths: switchyard_provider::paths::Paths,
}

fn default_in_flight() -> u32 {
    10
}
fn default_attempts() -> u32 {
    5
}
fn default_true() -> bool {
    true
}

impl ProviderConfig {
    pub fn base_url(&self) -> String {
        self.base_url
            .clone()
            .unwrap_or_else(|| self.kind.default_base_url().to_string())
    }

    /// The API key. A missing one is an error unless `api_key_required =
    /// false`: every job would fail at the provider with 401.
    pub fn api_key(&self) -> anyhow::Result<Option<Secret>> {
        let key = read_secret(
            self.api_key_env.as_deref(),
            self.api_key_file.as_deref(),
            "api key",
        )?
        .filter(|k| !k.is_empty());
        if key.is_none() {
            if let Some((_, why)) = self.missing_key() {
                bail!("{why}");
            }
        }
        Ok(key)
    }

    /// Why this provider has no usable API key, as (the key to point at,
    /// empty for the provider's table; message), or `None` when it has one
    /// or needs none. Names the variable or file, never a value.
    fn missing_key(&self) -> Option<(&'static str, String)> {
        let hint = "set it, or api_key_required = false if this provider needs no key";
        if let Some(path) = &self.api_key_file {
            let found = expand_credentials_dir(path);
            return match std::fs::read_to_string(&found) {
                Err(e) => Some((
                    "api_key_file",
                    format!(
                        "cannot read {}: {e}{}",
                        found.display(),
                        credentials_dir_hint(path)
                    ),
                )),
                Ok(t) if t.trim().is_empty() && self.api_key_required => Some((
                    "api_key_file",
                    format!("{} is empty: no API key; {hint}", found.display()),
                )),
                Ok(_) => None,
            };
        }
        if !self.api_key_required {
            return None;
        }
        match &self.api_key_env {
            Some(var) => match std::env::var_os(var) {
                Some(v) if !v.is_empty() => None,
                _ => Some((
                    "api_key_env",
                    format!("environment variable {var} is not set (or is empty): no API key; {hint}"),
                )),
            },
            None => Some((
                "",
                "no API key: set api_key_env or api_key_file (or api_key_required = false if this provider needs no key)".into(),
            )),
        }
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
fn read_secret(
    env: Option<&str>,
    file: Option<&Path>,
    what: &str,
) -> anyhow::Result<Option<Secret>> {
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

/// Said after "cannot read" for a relative path: where it was looked for.
pub(crate) fn credentials_dir_hint(path: &Path) -> &'static str {
    if !path.is_relative() {
        ""
    } else if std::env::var_os("CREDENTIALS_DIRECTORY").is_some() {
        " (looked up in $CREDENTIALS_DIRECTORY, then the current directory)"
    } else {
        " (a relative path is looked up in $CREDENTIALS_DIRECTORY, which is not set, then the current directory)"
    }
}

/// Why `dir` cannot be created or written by this user, if it cannot. A
/// directory that does not exist yet is judged by its nearest existing
/// ancestor, and nothing is left on disk: the write test is an unnamed
/// temporary file.
fn dir_problem(dir: &Path) -> Option<String> {
    let mut at = dir;
    loop {
        match std::fs::metadata(at) {
            Ok(m) if m.is_dir() => break,
            Ok(_) if at == dir => {
                return Some(format!("{} exists and is not a directory", dir.display()))
            }
            Ok(_) => {
                return Some(format!(
                    "cannot be created: {} is a file, not a directory",
                    at.display()
                ))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                at = match at.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
            }
            Err(e) => return Some(format!("cannot inspect {}: {e}", at.display())),
        }
    }
    match tempfile::tempfile_in(at) {
        Ok(_) => None,
        Err(e) if at == dir => Some(format!("{} is not writable: {e}", dir.display())),
        Err(e) => Some(format!(
            "cannot be created: {} is not writable: {e}",
            at.display()
        )),
    }
}

/// `LoadCredential=` puts files under `$CREDENTIALS_DIRECTORY`; a relative
/// `api_key_file` is looked up there first.
pub(crate) fn expand_credentials_dir(path: &Path) -> PathBuf {
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

/// Environment variables under `SWITCHYARD_` that are not config keys
/// (`TEST_DATABASE_URL` and `BENCH_DATABASE_URL` name the PostgreSQL
/// server tests and benchmarks use: set for a whole run, they reach the
/// daemons those start too).
pub const NON_CONFIG_ENV: &[&str] = &[
    "CONFIG",
    "LOG",
    "LOG_FORMAT",
    "DAEMON_URL",
    "TOKEN_FILE",
    "TEST_DATABASE_URL",
    "BENCH_DATABASE_URL",
];

impl Config {
    /// Loads and checks the config: the file (if any), then `SWITCHYARD_…`
    /// environment variables over it. Every problem is reported, each with
    /// the file and line (`FILE:LINE:COLUMN: message`) or the variable it
    /// comes from.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        Config::load_checked(path, false)
    }

    /// [`Config::load`], plus what starting the daemon would find: missing
    /// credentials, a data, output or inbox dir that cannot be created. For
    /// `check`, the daemon's start and SIGHUP; not for client commands,
    /// which read the config only for the daemon's address and token.
    pub fn load_for_start(path: Option<&Path>) -> anyhow::Result<Config> {
        Config::load_checked(path, true)
    }

    fn load_checked(path: Option<&Path>, for_start: bool) -> anyhow::Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        let mut text = None;
        if let Some(p) = path {
            if !p.exists() {
                bail!("{}: config file does not exist", p.display());
            }
            let bytes =
                std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))?;
            let t = String::from_utf8(bytes).map_err(|e| {
                let bytes = e.as_bytes();
                let bad = e.utf8_error().valid_up_to();
                // Valid by definition of `valid_up_to`.
                let good = std::str::from_utf8(&bytes[..bad]).unwrap_or_default();
                let line = good.matches('\n').count() + 1;
                let column = good.rsplit('\n').next().unwrap_or("").chars().count() + 1;
                anyhow::anyhow!(
                    "{}:{line}:{column}: invalid UTF-8 (byte 0x{:02X}): the config must be UTF-8 text",
                    p.display(),
                    bytes[bad]
                )
            })?;
            // The file alone first, with toml: its errors (syntax, unknown
            // keys, wrong types) carry a span, so they can name the line.
            if let Err(e) = toml::from_str::<Config>(&t) {
                bail!("{}", toml_error_at(&p.display().to_string(), &t, &e));
            }
            fig = fig.merge(Toml::string(&t));
            text = Some(t);
        }
        fig = fig.merge(
            Env::prefixed("SWITCHYARD_")
                .ignore(NON_CONFIG_ENV)
                .split("__"),
        );
        let where_ = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "config".into());
        let cfg: Config = fig.extract().map_err(|e| {
            let msgs: Vec<String> = e
                .into_iter()
                .map(|e| figment_error_at(&where_, &e))
                .collect();
            anyhow::anyhow!(msgs.join("\n"))
        })?;
        let mut problems = cfg.problems();
        if for_start && problems.is_empty() {
            problems = cfg.start_problems();
        }
        if !problems.is_empty() {
            let doc = text
                .as_deref()
                .and_then(|t| toml_edit::ImDocument::parse(t).ok());
            let lines: Vec<String> = problems
                .iter()
                .map(|(key, msg)| {
                    let at = match (&doc, text.as_deref()) {
                        (Some(d), Some(t)) => {
                            line_of_key(d, t, key).map(|(l, c)| format!("{where_}:{l}:{c}"))
                        }
                        _ => None,
                    };
                    format!("{}: {key}: {msg}", at.unwrap_or_else(|| where_.clone()))
                })
                .collect();
            bail!("{}", lines.join("\n"));
        }
        Ok(cfg)
    }

    /// Semantic checks serde cannot express, as (dotted key, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut push = |k: String, m: &str| out.push((k, m.to_string()));
        if self.daemon.inbox_settle.is_zero() {
            push("daemon.inbox_settle".into(), "must be above zero");
        }
        if self.daemon.shutdown_grace.is_zero() {
            push("daemon.shutdown_grace".into(), "must be above zero");
        }
        if !(1..=64).contains(&self.daemon.worker_threads) {
            push("daemon.worker_threads".into(), "must be between 1 and 64");
        }
        if self.daemon.request_timeout.is_zero() {
            push("daemon.request_timeout".into(), "must be above zero");
        }
        if self
            .daemon
            .name
            .as_ref()
            .is_some_and(|n| n.trim().is_empty() || n.chars().any(char::is_control))
        {
            push(
                "daemon.name".into(),
                "must not be empty or contain control characters",
            );
        }
        for h in &self.daemon.allowed_hosts {
            if crate::http::AllowedHost::parse(h).is_none() {
                push(
                    "daemon.allowed_hosts".into(),
                    &format!("{h:?} is not a host name, optionally with :port (e.g. \"switchyard.lan\" or \"switchyard.lan:7700\"; not a URL)"),
                );
            }
        }
        for (name, p) in &self.providers {
            let at = format!("providers.{name}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                push(
                    at.clone(),
                    "provider names may use letters, digits, '-' and '_'",
                );
            }
            let rl = p.rate_limit;
            if rl.per_second.is_some() && rl.per_minute.is_some() {
                push(
                    format!("{at}.rate_limit"),
                    "set per_second or per_minute, not both",
                );
            }
            if rl.per_second == Some(0) || rl.per_minute == Some(0) || rl.burst == Some(0) {
                push(format!("{at}.rate_limit"), "values must be at least 1");
            }
            if let Some(Err(e)) = p.budget.as_ref().map(|b| b.offset_secs()) {
                push(format!("{at}.budget.utc_offset"), &e);
            }
            if p.max_in_flight == 0 {
                push(format!("{at}.max_in_flight"), "must be at least 1");
            }
            if p.max_attempts == 0 {
                push(format!("{at}.max_attempts"), "must be at least 1");
            }
            if p.poll.schedule.is_empty() {
                push(format!("{at}.poll.schedule"), "needs at least one interval");
            }
            if p.poll.schedule.iter().any(|d| d.is_zero()) {
                push(
                    format!("{at}.poll.schedule"),
                    "intervals must be above zero",
                );
            }
            if p.poll.max.is_zero() {
                push(format!("{at}.poll.max"), "must be above zero");
            }
            if p.api_key_env.is_some() && p.api_key_file.is_some() {
                push(at.clone(), "set api_key_env or api_key_file, not both");
            }
            if p.webhook_secret_env.is_some() && p.webhook_secret_file.is_some() {
                push(
                    at.clone(),
                    "set webhook_secret_env or webhook_secret_file, not both",
                );
            }
            for (path, msg) in switchyard_provider::paths::problems(p.kind, &p.paths) {
                push(format!("{at}.paths.{path}"), &msg);
            }
            if let Some(url) = &p.webhook_public_url {
                let at = format!("{at}.webhook_public_url");
                if !(url.starts_with("http://") || url.starts_with("https://"))
                    || reqwest::Url::parse(url).is_err()
                {
                    push(at.clone(), &format!("{url:?} is not an http(s) URL"));
                }
                if p.kind != ProviderKind::Ugen {
                    push(
                        at.clone(),
                        &format!("only U-Gen takes its webhook URL through its API; {} webhooks are set up with the provider", p.kind),
                    );
                }
                if p.webhook_secret_env.is_none() && p.webhook_secret_file.is_none() {
                    push(
                        at,
                        "needs webhook_secret_env or webhook_secret_file: the provider signs its webhooks with that secret",
                    );
                }
            }
            if let Some(url) = &p.base_url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    push(
                        format!("{at}.base_url"),
                        &format!("{url:?} is not an http(s) URL"),
                    );
                }
            }
        }
        out.extend(self.store.problems());
        out
    }
}

impl Config {
    /// The webhook URLs to register, by provider name.
    pub fn webhook_urls(&self) -> BTreeMap<String, String> {
        self.providers
            .iter()
            .filter_map(|(n, p)| Some((n.clone(), p.webhook_public_url.clone()?)))
            .collect()
    }
}

impl Config {
    /// What the daemon's start would trip on, as (dotted key, message):
    /// credentials that are missing or unreadable, directories that cannot
    /// be created. Judged for the user running it (`check` as root sees
    /// files the service user may not).
    pub fn start_problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let d = &self.daemon;
        let dirs = [
            ("daemon.data_dir", Some(&d.data_dir)),
            ("daemon.output_dir", d.output_dir.as_ref()),
            ("daemon.inbox_dir", d.inbox_dir.as_ref()),
        ];
        for (key, dir) in dirs {
            if let Some(why) = dir.and_then(|p| dir_problem(p)) {
                out.push((key.to_string(), why));
            }
        }
        if let Err(e) = d.auth_token() {
            out.push(("daemon.auth_token_file".into(), format!("{e:#}")));
        }
        out.extend(self.store.start_problems());
        for (name, p) in &self.providers {
            if let Some((key, why)) = p.missing_key() {
                let at = match key {
                    "" => format!("providers.{name}"),
                    key => format!("providers.{name}.{key}"),
                };
                out.push((at, why));
            }
            if let Some(path) = &p.webhook_secret_file {
                let found = expand_credentials_dir(path);
                if let Err(e) = std::fs::read(&found) {
                    out.push((
                        format!("providers.{name}.webhook_secret_file"),
                        format!(
                            "cannot read {}: {e}{}",
                            found.display(),
                            credentials_dir_hint(path)
                        ),
                    ));
                }
            }
        }
        out
    }

    /// Settings that start would accept but that are likely a mistake.
    pub fn start_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, p) in &self.providers {
            if let Some(var) = &p.webhook_secret_env {
                if std::env::var_os(var).is_none_or(|v| v.is_empty()) {
                    out.push(format!("providers.{name}.webhook_secret_env: environment variable {var} is not set: signed webhooks from this provider will be refused (polling still follows its jobs)"));
                    if p.webhook_public_url.is_some() {
                        out.push(format!("providers.{name}.webhook_public_url: not registered while {var} is not set"));
                    }
                }
            }
        }
        out
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let col = offset
        - before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1)
        + 1;
    (line, col)
}

/// A toml error as `FILE:LINE:COLUMN: message`.
pub fn toml_error_at(file: &str, text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim();
    match e.span() {
        Some(span) => {
            let (l, c) = line_col(text, span.start);
            format!("{file}:{l}:{c}: {msg}")
        }
        None => format!("{file}: {msg}"),
    }
}

/// Where a dotted key (`providers.ugen.rate_limit`) is written in the file:
/// the deepest part of the path that the file has.
fn line_of_key(
    doc: &toml_edit::ImDocument<&str>,
    text: &str,
    dotted: &str,
) -> Option<(usize, usize)> {
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let mut found = None;
    for part in dotted.split('.') {
        let Some((key, item)) = table.get_key_value(part) else {
            break;
        };
        found = key.span().or_else(|| item.span()).or(found);
        match item.as_table_like() {
            Some(t) => table = t,
            None => break,
        }
    }
    found.map(|s| line_col(text, s.start))
}

/// A figment error: one from the environment names the variable.
fn figment_error_at(file: &str, e: &figment::Error) -> String {
    let from_env = e
        .metadata
        .as_ref()
        .is_some_and(|m| m.name.contains("environment"));
    if !from_env {
        return format!("{file}: {e}");
    }
    let mut path = e.path.clone();
    if let figment::error::Kind::UnknownField(field, _) = &e.kind {
        if path.last() != Some(field) {
            path.push(field.clone());
        }
    }
    let var = format!("SWITCHYARD_{}", path.join("__").to_ascii_uppercase());
    let what = match &e.kind {
        figment::error::Kind::UnknownField(field, expected) => {
            format!(
                "unknown key `{field}` (expected one of: {})",
                expected.join(", ")
            )
        }
        other => other.to_string(),
    };
    format!("environment variable {var}: {what}")
}

pub use switchyard_core::limits::dur;

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::Period;

    fn budget(offset: Option<&str>) -> Budget {
        Budget {
            credits: 1,
            period: Period::Day,
            utc_offset: offset.map(String::from),
        }
    }

    #[test]
    fn utc_offsets_parse_and_bad_ones_are_named() {
        assert_eq!(budget(None).offset_secs(), Ok(0));
        assert_eq!(budget(Some("Z")).offset_secs(), Ok(0));
        assert_eq!(budget(Some("+02:00")).offset_secs(), Ok(7200));
        assert_eq!(budget(Some("-05:30")).offset_secs(), Ok(-19800));
        for bad in ["2", "+2", "+25:00", "+02:60", "CET"] {
            let e = budget(Some(bad)).offset_secs().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }
}
