//! The inbox: batch files dropped into `daemon.inbox_dir` are ingested with
//! the same all-or-nothing intake as `POST /v1/jobs`, then moved to `done/`,
//! or to `rejected/` beside a `.error.txt` listing every problem.
//!
//! A file still being written must not be read early: dot-files and
//! `*.tmp`/`*.part` names are skipped (write-then-rename is the safe way),
//! and any other file is read only once its size and modification time
//! have not changed for `daemon.inbox_settle` (default 2 s), so a writer
//! that pauses for less than that is never read half-way. A file that
//! changes between the read and the move is left for the next scan.
//!
//! Ingesting is idempotent: if the daemon stops between the intake and the
//! move, the next start ingests the file again and every job is "already
//! known". A storage error leaves the file in the inbox for another try.

use crate::{Engine, EngineError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};
use switchyard_api::batch;

type Signature = (u64, SystemTime);

/// Watches `dir` until the engine stops.
pub async fn run(rt: Engine, dir: PathBuf, settle: Duration) {
    for sub in ["done", "rejected"] {
        if let Err(e) = tokio::fs::create_dir_all(dir.join(sub)).await {
            tracing::error!(dir = %dir.display(), "inbox unusable: {e}");
            return;
        }
    }
    tracing::info!(dir = %dir.display(), settle_ms = settle.as_millis() as u64, "watching the inbox");
    let scan_every = (settle / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    // When each file was first seen with its current size and mtime.
    let mut seen: HashMap<PathBuf, (Signature, Instant)> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(scan_every) => {}
            _ = rt.shared.cancel.cancelled() => return,
        }
        let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
            continue;
        };
        let mut present = Vec::new();
        while let Ok(Some(e)) = entries.next_entry().await {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if !is_candidate(&name) {
                continue;
            }
            let Ok(meta) = e.metadata().await else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let sig = (
                meta.len(),
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            );
            present.push(path.clone());
            let since = match seen.get(&path) {
                Some((prev, since)) if *prev == sig => *since,
                _ => {
                    seen.insert(path.clone(), (sig, Instant::now()));
                    continue;
                }
            };
            if since.elapsed() >= settle {
                seen.remove(&path);
                ingest(&rt, &dir, &path, &name, sig).await;
            }
        }
        seen.retain(|p, _| present.contains(p));
    }
}

fn is_candidate(name: &str) -> bool {
    !name.starts_with('.')
        && !name.ends_with(".tmp")
        && !name.ends_with(".part")
        && (name.ends_with(".toml") || name.ends_with(".jsonl") || name.ends_with(".ndjson"))
}

async fn ingest(rt: &Engine, dir: &Path, path: &Path, name: &str, sig: Signature) {
    let text = match tokio::fs::read(path).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(file = %path.display(), "inbox: cannot read: {e}");
            return;
        }
    };
    // Written to while being read: not settled after all.
    match tokio::fs::metadata(path).await {
        Ok(m)
            if (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)) == sig
                && m.len() == text.len() as u64 => {}
        _ => return,
    }
    // Same reading and rules as `check` and `submit`: invalid UTF-8 and an
    // empty batch are problems located like any other.
    let outcome = match batch::parse_bytes(name, &text) {
        Err(problems) => Err(problems.iter().map(|p| p.render(name)).collect::<Vec<_>>()),
        Ok(parsed) => match rt.intake(parsed.jobs.clone()).await {
            Ok(answer) => Ok(answer),
            Err(EngineError::Invalid(mut problems)) => {
                batch::locate(&mut problems, &parsed);
                Err(problems.iter().map(|p| p.render(name)).collect())
            }
            Err(e) => {
                tracing::error!(
                    file = name,
                    "inbox: storing the batch failed, will try again: {e}"
                );
                return;
            }
        },
    };
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace(':', "");
    match outcome {
        Ok(a) => {
            tracing::info!(
                file = name,
                accepted = a.accepted,
                already_known = a.already_known,
                "inbox batch ingested"
            );
            // If the move fails, the next scan ingests the file again:
            // every job is then already known, nothing is queued twice.
            if let Err(e) = move_unique(path, &dir.join("done"), name, &stamp).await {
                tracing::warn!(file = name, "inbox: moving to done/: {e}");
            }
        }
        Err(lines) => {
            tracing::warn!(file = name, problems = lines.len(), "inbox batch rejected");
            if let Ok(dest) = move_unique(path, &dir.join("rejected"), name, &stamp).await {
                let report = format!(
                    "{} was rejected whole; nothing was queued.\n\n{}\n",
                    name,
                    lines.join("\n")
                );
                let err_path = PathBuf::from(format!("{}.error.txt", dest.display()));
                let tmp = PathBuf::from(format!("{}.tmp", err_path.display()));
                if tokio::fs::write(&tmp, report).await.is_ok() {
                    let _ = tokio::fs::rename(&tmp, &err_path).await;
                }
            }
        }
    }
}

/// Moves `path` into `to_dir`, never overwriting an earlier file of the
/// same name.
async fn move_unique(
    path: &Path,
    to_dir: &Path,
    name: &str,
    stamp: &str,
) -> std::io::Result<PathBuf> {
    let mut dest = to_dir.join(name);
    if tokio::fs::try_exists(&dest).await.unwrap_or(false) {
        dest = to_dir.join(format!("{stamp}-{name}"));
    }
    tokio::fs::rename(path, &dest).await?;
    Ok(dest)
}
