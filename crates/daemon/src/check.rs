//! `switchyard check`: the same validation the daemon does at intake, run
//! offline so a batch or config can be fixed before anything is queued.

use crate::batch::{self, Validator};
use crate::config::Config;
use anyhow::{anyhow, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use switchyard_core::ProviderKind;
use switchyard_provider::{Provider, Settings};

/// Adapters used only to validate params: never sent a request.
struct Offline(BTreeMap<String, Arc<dyn Provider>>);

impl Validator for Offline {
    fn validate(&self, provider: &str, params: &serde_json::Value) -> Option<Vec<String>> {
        let p = self.0.get(provider)?;
        Some(match p.validate(params) {
            Ok(()) => vec![],
            Err(list) => list.into_iter().map(|p| p.to_string()).collect(),
        })
    }
    fn provider_names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
}

fn offline(cfg: Option<&Config>) -> anyhow::Result<Offline> {
    let client = reqwest::Client::new();
    let settings = |base: String| Settings {
        base_url: base,
        api_key: None,
        webhook_secret: None,
        ..Default::default()
    };
    let mut map = BTreeMap::new();
    match cfg {
        Some(c) if !c.providers.is_empty() => {
            for (name, pc) in &c.providers {
                map.insert(
                    name.clone(),
                    switchyard_provider::build(pc.kind, settings(pc.base_url()), client.clone()),
                );
            }
        }
        // Without a config, a provider named like its kind is assumed.
        _ => {
            for k in ProviderKind::ALL {
                map.insert(
                    k.to_string(),
                    switchyard_provider::build(
                        k,
                        settings(k.default_base_url().into()),
                        client.clone(),
                    ),
                );
            }
        }
    }
    Ok(Offline(map))
}

/// A batch: JSON Lines, or TOML with a `jobs` array (looked for in the
/// text too, so a batch with a syntax error is still checked as a batch).
fn is_batch(path: &Path, text: &str) -> bool {
    let name = path.to_string_lossy();
    if name.ends_with(".jsonl") || name.ends_with(".ndjson") || text.trim_start().starts_with('{') {
        return true;
    }
    match toml::from_str::<toml::Table>(text) {
        Ok(t) => t.contains_key("jobs"),
        Err(_) => text.lines().any(|l| {
            let l: String = l.chars().filter(|c| !c.is_whitespace()).collect();
            l.starts_with("[[jobs]]")
        }),
    }
}

pub fn run(config: Option<&Path>, files: &[PathBuf]) -> anyhow::Result<()> {
    let cfg_path = crate::config::resolve_path(config);
    let mut errors = Vec::new();
    let mut cfg: Option<Config> = None;
    let mut batches = Vec::new();
    for f in files {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("{}: cannot read: {e}", f.display()));
                continue;
            }
        };
        if is_batch(f, &text) {
            batches.push((f.clone(), text));
        } else {
            match Config::load(Some(f)) {
                Ok(c) => {
                    println!(
                        "{}: config ok ({} provider(s))",
                        f.display(),
                        c.providers.len()
                    );
                    cfg = Some(c);
                }
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
    }
    if cfg.is_none() && !batches.is_empty() {
        if let Some(p) = &cfg_path {
            match Config::load(Some(p)) {
                Ok(c) => cfg = Some(c),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
    }
    let v = offline(cfg.as_ref())?;
    for (f, text) in batches {
        let name = f.display().to_string();
        match batch::parse(&name, &text) {
            Err(problems) => errors.extend(problems.iter().map(|p| p.render(&name))),
            Ok(b) => {
                let mut problems = batch::check(&b.jobs, &v);
                batch::locate(&mut problems, &b);
                if problems.is_empty() {
                    println!("{name}: batch ok ({} jobs)", b.jobs.len());
                } else {
                    errors.extend(problems.iter().map(|p| p.render(&name)));
                }
            }
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    if files.is_empty() {
        return Err(anyhow!("no files given"));
    }
    Ok(())
}
