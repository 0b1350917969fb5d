//! `switchyard doctor`: what a user wants to know before a first paid batch.
//! Offline: the config as `check` sees it, every credential present and
//! readable, the directories writable with their free space. Online: one
//! request per provider that costs no credits (each adapter's
//! [`Provider::probe`]), sorted into reachable + key accepted, key refused,
//! rate-limited, unreachable or unexpected, and the provider's clock
//! compared with ours (U-Gen's webhook signatures allow ±300 s).
//!
//! Exit codes: 0 all good, 1 a provider problem, 2 bad config (including a
//! missing or unreadable credential, or a directory the daemon could not
//! write). Nothing here is ever sent that could create a job.

use crate::config::{Config, ProviderConfig};
use crate::Invalid;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use switchyard_core::{ProviderKind, Secret};
use switchyard_provider::probe::{Probe, ProbeOutcome};
use switchyard_provider::{paths, Settings};

/// U-Gen rejects webhook timestamps further off than this.
const CLOCK_TOLERANCE_SECS: u64 = switchyard_provider::ugen::WEBHOOK_TOLERANCE_SECS;

/// A probe waits at most this long, whatever `daemon.request_timeout` says:
/// a doctor that hangs for half a minute per provider helps nobody.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Severity {
    Ok,
    /// Worth saying, changes no exit code.
    Note,
    /// A provider problem: exit 1.
    Provider,
    /// Bad config or setup: exit 2.
    Config,
}

pub struct Options {
    pub provider: Option<String>,
    pub json: bool,
    pub offline: bool,
    /// The running daemon, asked for its unexpected-answer counts.
    pub daemon_url: String,
    pub token: Option<Secret>,
}

struct Report {
    worst: Severity,
    lines: Vec<String>,
}

impl Report {
    fn note(&mut self, severity: Severity, line: String) {
        self.worst = self.worst.max(severity);
        self.lines.push(line);
    }
}

pub async fn run(config: Option<&Path>, opts: Options) -> anyhow::Result<()> {
    let path = crate::config::resolve_path(config);
    let cfg = Config::load(path.as_deref()).map_err(Invalid)?;
    let where_ = path
        .as_ref()
        .map_or("built-in defaults".to_string(), |p| p.display().to_string());
    let mut report = Report {
        worst: Severity::Ok,
        lines: Vec::new(),
    };
    let names: Vec<&String> = match &opts.provider {
        Some(name) if !cfg.providers.contains_key(name) => {
            return Err(Invalid(anyhow::anyhow!(
                "no provider {name:?} in {where_} (configured: {})",
                cfg.providers.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
            .into());
        }
        Some(name) => cfg.providers.keys().filter(|n| *n == name).collect(),
        None => cfg.providers.keys().collect(),
    };
    report.note(
        Severity::Ok,
        format!("config {where_}: ok ({} provider(s))", cfg.providers.len()),
    );
    if cfg.providers.is_empty() {
        report.note(
            Severity::Config,
            "no [providers.NAME] table: the daemon would have nothing to run".into(),
        );
    }

    let mut dirs = Vec::new();
    let d = &cfg.daemon;
    for (key, dir) in [
        ("daemon.data_dir", Some(&d.data_dir)),
        ("daemon.output_dir", d.output_dir.as_ref()),
        ("daemon.inbox_dir", d.inbox_dir.as_ref()),
        ("daemon.record_dir", d.record_dir.as_ref()),
    ] {
        let Some(dir) = dir else { continue };
        let (sev, v) = check_dir(dir);
        report.note(
            sev,
            format!(
                "{key} {}: {}",
                dir.display(),
                v["detail"].as_str().unwrap_or("")
            ),
        );
        dirs.push(json!({"key": key, "path": dir, "ok": sev < Severity::Provider, "writable": v["writable"], "free_bytes": v["free_bytes"], "detail": v["detail"]}));
    }
    let now = SystemTime::now();
    report.note(
        Severity::Ok,
        format!(
            "clock: local time {}",
            humantime::format_rfc3339_seconds(now)
        ),
    );

    let counts = if opts.offline {
        None
    } else {
        daemon_counts(&opts.daemon_url, opts.token.as_ref()).await
    };
    report.note(
        Severity::Ok,
        match &counts {
            Some(_) => format!(
                "daemon {}: running (its unexpected-answer counts are shown)",
                opts.daemon_url
            ),
            None if opts.offline => "daemon: not asked (--offline)".to_string(),
            None => format!(
                "daemon {}: not running here (unexpected-answer counts come from a running daemon)",
                opts.daemon_url
            ),
        },
    );

    let timeout = d.request_timeout.min(PROBE_TIMEOUT);
    let client = switchyard_provider::default_client(timeout)?;
    let mut checks = Vec::new();
    for name in &names {
        let pc = &cfg.providers[*name];
        checks.push(check_provider(
            name,
            pc,
            client.clone(),
            opts.offline,
            counts.as_ref(),
        ));
    }
    let mut providers = Vec::new();
    for (sev, lines, v) in futures::future::join_all(checks).await {
        report.worst = report.worst.max(sev);
        report.lines.push(String::new());
        report.lines.extend(lines);
        providers.push(v);
    }
    let exit = match report.worst {
        Severity::Ok | Severity::Note => 0,
        Severity::Provider => 1,
        Severity::Config => 2,
    };
    if opts.json {
        let doc = json!({
            "config": where_,
            "dirs": dirs,
            "local_time": humantime::format_rfc3339_seconds(now).to_string(),
            "daemon": {"url": opts.daemon_url, "running": counts.is_some()},
            "providers": providers,
            "exit": exit,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for l in &report.lines {
            println!("{l}");
        }
        println!();
    }
    match exit {
        0 => {
            if !opts.json {
                println!("doctor: all good");
            }
            Ok(())
        }
        1 => anyhow::bail!("doctor: a provider has a problem (see above)"),
        _ => Err(Invalid(anyhow::anyhow!(
            "doctor: the config or the setup has a problem (see above)"
        ))
        .into()),
    }
}

/// Writable (a file can be made in it, or in the nearest parent that exists
/// when it does not yet), and the free space there.
fn check_dir(dir: &Path) -> (Severity, Value) {
    let existing = dir.ancestors().find(|p| p.exists()).map(PathBuf::from);
    let Some(base) = existing else {
        return (
            Severity::Config,
            json!({"writable": false, "free_bytes": null, "detail": "no part of this path exists"}),
        );
    };
    if !base.is_dir() {
        return (
            Severity::Config,
            json!({"writable": false, "free_bytes": null, "detail": format!("{} is not a directory", base.display())}),
        );
    }
    let free = fs2::available_space(&base).ok();
    let free_text = free.map_or("free space unknown".to_string(), |b| {
        format!("{} free", bytes(b))
    });
    let writable = tempfile::Builder::new()
        .prefix(".switchyard-doctor-")
        .tempfile_in(&base)
        .is_ok();
    let (sev, detail) = match (writable, base.as_path() == dir) {
        (true, true) => (Severity::Ok, format!("writable, {free_text}")),
        (true, false) => (
            Severity::Ok,
            format!(
                "does not exist yet; {} is writable, so the daemon can create it; {free_text}",
                base.display()
            ),
        ),
        (false, _) => (
            Severity::Config,
            format!(
                "{} is not writable by this user; {free_text}",
                base.display()
            ),
        ),
    };
    (
        sev,
        json!({"writable": writable, "free_bytes": free, "detail": detail}),
    )
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Where a credential comes from, for a person (never its value).
fn source(env: Option<&str>, file: Option<&Path>) -> String {
    match (env, file) {
        (_, Some(f)) => format!("file {}", f.display()),
        (Some(e), None) => format!("env {e}"),
        (None, None) => "not configured".into(),
    }
}

fn bump(s: Severity, w: &mut Severity) {
    *w = (*w).max(s);
}

async fn check_provider(
    name: &str,
    pc: &ProviderConfig,
    client: reqwest::Client,
    offline: bool,
    counts: Option<&std::collections::BTreeMap<String, u64>>,
) -> (Severity, Vec<String>, Value) {
    let mut worst = Severity::Ok;
    let mut lines = vec![format!("{name} ({}) {}", pc.kind, pc.base_url())];
    let resolved = paths::Resolved::new(pc.kind, &pc.paths);
    let mut shown = vec![
        format!("create {}", resolved.create.as_str()),
        format!("status {}", resolved.status.as_str()),
    ];
    shown.extend(
        resolved
            .cancel
            .as_ref()
            .map(|t| format!("cancel {}", t.as_str())),
    );
    shown.extend(
        resolved
            .list
            .as_ref()
            .map(|t| format!("list {}", t.as_str())),
    );
    let overridden = pc.paths != paths::Paths::default();
    lines.push(format!(
        "  paths: {}{}",
        shown.join(", "),
        if overridden {
            " (overridden in the config)"
        } else {
            ""
        }
    ));

    let key_from = source(pc.api_key_env.as_deref(), pc.api_key_file.as_deref());
    let (key, key_state) = match pc.api_key() {
        Ok(Some(k)) if !k.is_empty() => (Some(k), format!("present ({key_from})")),
        Ok(_) => {
            bump(Severity::Config, &mut worst);
            (
                None,
                format!("missing ({key_from}): set api_key_env or api_key_file"),
            )
        }
        Err(e) => {
            bump(Severity::Config, &mut worst);
            (None, format!("unreadable: {e:#}"))
        }
    };
    lines.push(format!("  api key: {key_state}"));
    let configured = pc.webhook_secret_env.is_some() || pc.webhook_secret_file.is_some();
    let secret_from = source(
        pc.webhook_secret_env.as_deref(),
        pc.webhook_secret_file.as_deref(),
    );
    let (secret, secret_state) = match pc.webhook_secret() {
        Ok(Some(s)) if !s.is_empty() => (Some(s), format!("present ({secret_from})")),
        Ok(_) if !configured => (
            None,
            if pc.kind == ProviderKind::Ugen {
                "not configured: U-Gen webhooks cannot be verified and are refused".into()
            } else {
                "not configured".into()
            },
        ),
        Ok(_) => {
            bump(Severity::Config, &mut worst);
            (None, format!("missing ({secret_from})"))
        }
        Err(e) => {
            bump(Severity::Config, &mut worst);
            (None, format!("unreadable: {e:#}"))
        }
    };
    lines.push(format!("  webhook secret: {secret_state}"));

    let mut probe_json = Value::Null;
    if offline {
        lines.push("  probe: not sent (--offline)".into());
    } else if key.is_none() {
        lines.push("  probe: not sent (no API key)".into());
    } else {
        let settings = Settings {
            base_url: pc.base_url(),
            api_key: key,
            webhook_secret: secret,
            paths: pc.paths.clone(),
            recorder: None,
        };
        let adapter = switchyard_provider::build(pc.kind, settings, client);
        let probe = adapter.probe().await;
        let (sev, text, skew) = judge(pc.kind, &probe);
        bump(sev, &mut worst);
        lines.extend(text);
        probe_json = json!({
            "outcome": probe.outcome.as_str(),
            "request": probe.request,
            "http_status": probe.http_status,
            "detail": probe.detail,
            "excerpt": probe.excerpt,
            "elapsed_ms": probe.elapsed.as_millis() as u64,
            "clock_skew_secs": skew,
        });
    }
    let unexpected = counts.and_then(|c| c.get(name).copied());
    if let Some(n) = unexpected {
        lines.push(format!(
            "  unexpected answers seen by the running daemon: {n}{}",
            if n > 0 {
                " (see its log and /metrics switchyard_unexpected_answers_total)"
            } else {
                ""
            }
        ));
        if n > 0 {
            bump(Severity::Note, &mut worst);
        }
    }
    let v = json!({
        "name": name,
        "kind": pc.kind.to_string(),
        "base_url": pc.base_url(),
        "paths": {
            "create": resolved.create.as_str(),
            "status": resolved.status.as_str(),
            "cancel": resolved.cancel.as_ref().map(|t| t.as_str()),
            "list": resolved.list.as_ref().map(|t| t.as_str()),
            "overridden": overridden,
        },
        "api_key": key_state,
        "webhook_secret": secret_state,
        "probe": probe_json,
        "unexpected_answers": unexpected,
        "ok": worst < Severity::Provider,
    });
    (worst, lines, v)
}

/// A probe's lines, its severity and the clock skew (provider minus local,
/// whole seconds, as the `Date` header has no finer resolution).
fn judge(kind: ProviderKind, p: &Probe) -> (Severity, Vec<String>, Option<i64>) {
    let what = match p.outcome {
        ProbeOutcome::Ok => "ok",
        ProbeOutcome::KeyRefused => "KEY REFUSED",
        ProbeOutcome::RateLimited => "RATE-LIMITED",
        ProbeOutcome::Unreachable => "UNREACHABLE",
        ProbeOutcome::Unexpected => "UNEXPECTED ANSWER",
    };
    let status = p
        .http_status
        .map_or(String::new(), |s| format!("HTTP {s}, "));
    let mut lines = vec![format!(
        "  probe {}: {what}: {} [{status}{} ms]",
        p.request,
        p.detail,
        p.elapsed.as_millis()
    )];
    if let Some(excerpt) = &p.excerpt {
        lines.push(format!("    answer: {excerpt}"));
    }
    let mut sev = if p.outcome == ProbeOutcome::Ok {
        Severity::Ok
    } else {
        Severity::Provider
    };
    let skew = p
        .server_date
        .map(|server| match server.duration_since(p.local_date) {
            Ok(ahead) => ahead.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        });
    match skew {
        None if p.http_status.is_some() => {
            lines.push("  clock: the answer had no Date header to compare with".into())
        }
        None => {}
        Some(s) if s.unsigned_abs() <= 2 => lines.push(format!(
            "  clock: within {}s of the provider's",
            s.unsigned_abs().max(1)
        )),
        Some(s) if s.unsigned_abs() <= CLOCK_TOLERANCE_SECS => lines.push(format!(
            "  clock: {s:+}s from the provider's (within U-Gen's ±{CLOCK_TOLERANCE_SECS}s)"
        )),
        Some(s) => {
            if kind == ProviderKind::Ugen {
                sev = sev.max(Severity::Provider);
                lines.push(format!("  clock: {s:+}s from the provider's: beyond ±{CLOCK_TOLERANCE_SECS}s, signed webhooks will be refused as stale; fix the clock (NTP)"));
            } else {
                sev = sev.max(Severity::Note);
                lines.push(format!(
                    "  clock: {s:+}s from the provider's; fix the clock (NTP)"
                ));
            }
        }
    }
    (sev, lines, skew)
}

/// The running daemon's unexpected-answer count per provider, if it answers
/// within a moment.
async fn daemon_counts(
    url: &str,
    token: Option<&Secret>,
) -> Option<std::collections::BTreeMap<String, u64>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    let mut req = client.get(format!("{}/v1/providers", url.trim_end_matches('/')));
    if let Some(t) = token {
        req = req.bearer_auth(t.expose());
    }
    let resp = req.send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let views: Vec<switchyard_api::ProviderView> = resp.json().await.ok()?;
    Some(
        views
            .into_iter()
            .map(|v| (v.name, v.unexpected_answers))
            .collect(),
    )
}
