//! `daemon.record_dir`: one recorder for all providers, told every
//! configured secret so that none can reach the files, whichever provider's
//! exchange it turns up in.

use crate::config::Config;
use anyhow::Context;
use switchyard_core::Secret;
use switchyard_provider::record::{RecordOptions, Recorder};

/// The recorder of `cfg`, if `record_dir` is set.
pub fn recorder(cfg: &Config) -> anyhow::Result<Option<Recorder>> {
    let Some(dir) = &cfg.daemon.record_dir else {
        return Ok(None);
    };
    let mut secrets: Vec<Secret> = Vec::new();
    for pc in cfg.providers.values() {
        secrets.extend(pc.api_key()?);
        secrets.extend(pc.webhook_secret()?);
    }
    secrets.extend(cfg.daemon.auth_token()?);
    let recorder = Recorder::start(RecordOptions::new(dir), secrets)
        .with_context(|| format!("starting to record exchanges in {}", dir.display()))?;
    tracing::info!(dir = %dir.display(), "recording every exchange with the providers (secrets redacted)");
    Ok(Some(recorder))
}
