//! `switchyard check`: the same validation the daemon does at intake, run
//! offline so a batch or config can be fixed before anything is queued.

use crate::batch::{self, Validator};
use crate::config::Config;
use anyhow::{anyhow, bail};
use std::collections::BTreeMap;
use std::io::BufRead;
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

/// A batch: JSON Lines, or TOML with a `jobs` array. Decided from the name
/// and the lines, read as a stream (a batch may be large; a config never
/// is): the first character `{`, a `[[jobs]]`/`[jobs…]` header, or a
/// top-level `jobs` key before any table header. A batch with a syntax
/// error is still recognised, so it is checked as a batch.
fn is_batch(path: &Path) -> std::io::Result<bool> {
    let name = path.to_string_lossy();
    if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
        return Ok(true);
    }
    let mut input = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut buf = Vec::new();
    let mut first = true;
    let mut in_table = false;
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            return Ok(false);
        }
        let code = buf.split(|b| *b == b'#').next().unwrap_or_default();
        let compact: Vec<u8> = code
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        if compact.is_empty() {
            continue;
        }
        if first && compact[0] == b'{' {
            return Ok(true);
        }
        first = false;
        if compact.starts_with(b"[[jobs]]")
            || compact.starts_with(b"[jobs]")
            || compact.starts_with(b"[jobs.")
        {
            return Ok(true);
        }
        if compact[0] == b'[' {
            in_table = true;
        } else if !in_table
            && (compact.starts_with(b"jobs=")
                || compact.starts_with(b"jobs.")
                || compact.starts_with(b"\"jobs\"="))
        {
            return Ok(true);
        }
    }
}

pub fn run(config: Option<&Path>, files: &[PathBuf]) -> anyhow::Result<()> {
    let cfg_path = crate::config::resolve_path(config);
    let mut errors = Vec::new();
    let mut cfg: Option<Config> = None;
    let mut batches = Vec::new();
    for f in files {
        match is_batch(f) {
            Err(e) => errors.push(format!("{}: cannot read: {e}", f.display())),
            Ok(true) => batches.push(f.clone()),
            // Checked as the daemon's start would: credentials, dirs.
            Ok(false) => match Config::load_for_start(Some(f)) {
                Ok(c) => {
                    for w in c.start_warnings() {
                        eprintln!("{}: warning: {w}", f.display());
                    }
                    println!(
                        "{}: config ok ({} provider(s))",
                        f.display(),
                        c.providers.len()
                    );
                    cfg = Some(c);
                }
                Err(e) => errors.push(format!("{e:#}")),
            },
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
    for f in batches {
        let name = f.display().to_string();
        // Checked as it is read: only the keys are kept (for repeats).
        let mut checker = batch::Checker::new(Some(&v));
        match batch::scan_file(&f, &mut checker) {
            Err(problems) => errors.extend(problems.iter().map(|p| p.render(&name))),
            Ok(()) => {
                let n = checker.count();
                let problems = checker.finish();
                if problems.is_empty() {
                    println!("{name}: batch ok ({n} jobs)");
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
