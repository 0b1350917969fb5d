//! The inbox: batch files dropped into `daemon.inbox_dir` are ingested with
//! the same all-or-nothing intake as `POST /v1/jobs`, then moved to `done/`,
//! or to `rejected/` beside a `.error.txt` listing every problem.
//!
//! A file still being written must not be read early: dot-files and
//! `*.tmp`/`*.part` names are skipped (write-then-rename is the safe way),
//! and any other file is read only once its size and modification time
//! have stayed the same across two scans.

use crate::runtime::Runtime;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const SCAN_EVERY: Duration = Duration::from_millis(500);

pub async fn run(rt: Arc<Runtime>, dir: PathBuf) {
    for sub in ["done", "rejected"] {
        if let Err(e) = tokio::fs::create_dir_all(dir.join(sub)).await {
            tracing::error!(dir = %dir.display(), "inbox unusable: {e}");
            return;
        }
    }
    let mut seen: HashMap<PathBuf, (u64, SystemTime)> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SCAN_EVERY) => {}
            _ = rt.cancel.cancelled() => return,
        }
        let Ok(mut entries) = tokio::fs::read_dir(&dir).await else { continue };
        let mut present = Vec::new();
        while let Ok(Some(e)) = entries.next_entry().await {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if !is_candidate(&name) {
                continue;
            }
            let Ok(meta) = e.metadata().await else { continue };
            if !meta.is_file() {
                continue;
            }
            let sig = (meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
            present.push(path.clone());
            match seen.get(&path) {
                Some(prev) if *prev == sig => {
                    seen.remove(&path);
                    ingest(&rt, &dir, &path, &name).await;
                }
                _ => {
                    seen.insert(path, sig);
                }
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

async fn ingest(rt: &Runtime, dir: &Path, path: &Path, name: &str) {
    let text = match tokio::fs::read_to_string(path).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(file = %path.display(), "inbox: cannot read: {e}");
            return;
        }
    };
    let outcome = match crate::batch::parse(name, &text) {
        Err(problems) => Err(problems.iter().map(|p| p.render(name)).collect::<Vec<_>>()),
        Ok(batch) => match crate::http::intake(rt, batch.jobs.clone()).await {
            Ok(answer) => Ok(answer),
            Err(mut problems) => {
                crate::batch::locate(&mut problems, &batch);
                Err(problems.iter().map(|p| p.render(name)).collect())
            }
        },
    };
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now()).to_string().replace(':', "");
    match outcome {
        Ok(a) => {
            tracing::info!(file = name, accepted = a.accepted, already_known = a.already_known, "inbox batch ingested");
            let _ = move_unique(path, &dir.join("done"), name, &stamp).await;
        }
        Err(lines) => {
            tracing::warn!(file = name, problems = lines.len(), "inbox batch rejected");
            if let Ok(dest) = move_unique(path, &dir.join("rejected"), name, &stamp).await {
                let report = format!("{} was rejected whole; nothing was queued.\n\n{}\n", name, lines.join("\n"));
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
async fn move_unique(path: &Path, to_dir: &Path, name: &str, stamp: &str) -> std::io::Result<PathBuf> {
    let mut dest = to_dir.join(name);
    if tokio::fs::try_exists(&dest).await.unwrap_or(false) {
        dest = to_dir.join(format!("{stamp}-{name}"));
    }
    tokio::fs::rename(path, &dest).await?;
    Ok(dest)
}
