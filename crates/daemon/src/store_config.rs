//! `[store]`: which store backend the daemon runs on. sled (embedded, in
//! `daemon.data_dir`) needs no setting; PostgreSQL is how several daemons
//! share one queue, budget, rate limit and cool-down. Its URL carries a
//! password, so it is never in the config file itself: `url_env` names an
//! environment variable, `url_file` a file (systemd's `LoadCredential=`
//! puts it under `$CREDENTIALS_DIRECTORY`). No message here ever shows it.

use crate::config::{credentials_dir_hint, dur, expand_credentials_dir};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;
use switchyard_core::Secret;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Sled,
    Postgres,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: Backend,
    /// An environment variable holding the `postgres://` URL.
    pub url_env: Option<String>,
    /// A file holding the URL; a relative path is looked up in
    /// `$CREDENTIALS_DIRECTORY` first.
    pub url_file: Option<PathBuf>,
    /// How long this daemon's lease holds without a heartbeat (renewed
    /// every third of it); after that the other daemons take its live jobs
    /// over. Read at start.
    #[serde(with = "dur")]
    pub lease_ttl: Duration,
    /// Connections to PostgreSQL this daemon keeps.
    pub pool_size: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: Backend::Sled,
            url_env: None,
            url_file: None,
            lease_ttl: Duration::from_secs(30),
            pool_size: 8,
        }
    }
}

/// The shortest `lease_ttl` accepted: a heartbeat every third of it must
/// fit between a busy machine's pauses.
const MIN_LEASE_TTL: Duration = Duration::from_secs(1);

impl StoreConfig {
    /// What serde cannot say, as (dotted key, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut push = |k: &str, m: &str| out.push((format!("store.{k}"), m.to_string()));
        if self.lease_ttl < MIN_LEASE_TTL {
            push("lease_ttl", "must be at least 1s");
        }
        if !(1..=256).contains(&self.pool_size) {
            push("pool_size", "must be between 1 and 256");
        }
        match self.backend {
            Backend::Sled => {
                for (key, set) in [
                    ("url_env", self.url_env.is_some()),
                    ("url_file", self.url_file.is_some()),
                ] {
                    if set {
                        push(
                            key,
                            "only used with backend = \"postgres\" (sled lives in daemon.data_dir)",
                        );
                    }
                }
            }
            Backend::Postgres => match (&self.url_env, &self.url_file) {
                (Some(_), Some(_)) => push("url_env", "set url_env or url_file, not both"),
                (None, None) => push(
                    "backend",
                    "backend = \"postgres\" needs url_env (an environment variable holding the postgres:// URL) or url_file",
                ),
                _ => {}
            },
        }
        out
    }

    /// What the start would trip on: the URL missing, unreadable or not a
    /// PostgreSQL URL. Names the variable or file, never the value.
    pub fn start_problems(&self) -> Vec<(String, String)> {
        match self.url() {
            Err((key, why)) => vec![(format!("store.{key}"), why)],
            Ok(_) => Vec::new(),
        }
    }

    /// The PostgreSQL URL (`None` for sled), or (key, why) it cannot be had.
    pub fn url(&self) -> Result<Option<Secret>, (&'static str, String)> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let (key, text) = if let Some(var) = &self.url_env {
            match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => ("url_env", v),
                _ => {
                    return Err((
                        "url_env",
                        format!(
                            "environment variable {var} is not set (or is empty): no database URL"
                        ),
                    ))
                }
            }
        } else if let Some(path) = &self.url_file {
            let found = expand_credentials_dir(path);
            match std::fs::read_to_string(&found) {
                Ok(t) if !t.trim().is_empty() => ("url_file", t),
                Ok(_) => {
                    return Err((
                        "url_file",
                        format!("{} is empty: no database URL", found.display()),
                    ))
                }
                Err(e) => {
                    return Err((
                        "url_file",
                        format!(
                            "cannot read {}: {e}{}",
                            found.display(),
                            credentials_dir_hint(path)
                        ),
                    ))
                }
            }
        } else {
            return Err(("backend", "no url_env or url_file".into()));
        };
        let url = text.trim();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            let from = match (key, &self.url_env, &self.url_file) {
                ("url_env", Some(var), _) => format!("environment variable {var}"),
                (_, _, Some(path)) => expand_credentials_dir(path).display().to_string(),
                _ => "it".into(),
            };
            return Err((
                key,
                format!("{from} does not hold a postgres:// or postgresql:// URL"),
            ));
        }
        Ok(Some(Secret::new(url)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_url_that_is_not_postgres_is_refused_without_being_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.url");
        std::fs::write(&path, "mysql://root:hunter2@db/x\n").unwrap();
        let cfg = StoreConfig {
            backend: Backend::Postgres,
            url_file: Some(path.clone()),
            ..StoreConfig::default()
        };
        let problems = cfg.start_problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "store.url_file");
        assert!(!problems[0].1.contains("hunter2"), "{problems:?}");
        std::fs::write(&path, "postgres://u:hunter2@db/x\n").unwrap();
        let url = cfg.url().unwrap().unwrap();
        assert_eq!(url.expose(), "postgres://u:hunter2@db/x");
        assert!(!format!("{url:?}").contains("hunter2"));
    }

    #[test]
    fn postgres_needs_exactly_one_way_to_the_url() {
        let mut cfg = StoreConfig {
            backend: Backend::Postgres,
            ..StoreConfig::default()
        };
        assert_eq!(cfg.problems()[0].0, "store.backend");
        cfg.url_env = Some("A".into());
        assert!(cfg.problems().is_empty());
        cfg.url_file = Some("f".into());
        assert_eq!(cfg.problems()[0].0, "store.url_env");
        cfg.backend = Backend::Sled;
        assert_eq!(cfg.problems().len(), 2, "{:?}", cfg.problems());
    }
}
