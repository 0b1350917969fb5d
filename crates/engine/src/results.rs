//! Downloads of finished videos into `daemon.output_dir`. A file appears
//! under its final name only once complete (temp file, then rename), is
//! checked against Content-Length, resumed with a Range request after a cut,
//! and listed in `manifest.jsonl`. Downloads are bounded in number and do not
//! pass the provider's rate limit (they hit CDNs, not the API).

use crate::Shared;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use switchyard_core::{Change, Job, JobState, Patch};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

pub(crate) struct Downloader {
    dir: PathBuf,
    client: reqwest::Client,
    slots: Semaphore,
    /// Serializes manifest appends so lines never interleave.
    manifest: tokio::sync::Mutex<()>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum DownloadError {
    #[error("HTTP {0}")]
    Status(u16),
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("got {got} bytes, Content-Length said {want}")]
    Short { got: u64, want: u64 },
    #[error("the server resumed at byte {got}, not {want}")]
    BadRange { got: u64, want: u64 },
}

impl Downloader {
    pub(crate) fn new(dir: PathBuf, parallel: usize) -> Result<Downloader, DownloadError> {
        std::fs::create_dir_all(&dir)?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Downloader {
            dir,
            client,
            slots: Semaphore::new(parallel.max(1)),
            manifest: tokio::sync::Mutex::new(()),
        })
    }

    /// Where results are downloaded to.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Downloads every output of job `key`; the files that arrived whole.
    pub(crate) async fn fetch_all(&self, key: &str, urls: &[String]) -> Vec<String> {
        let Ok(_slot) = self.slots.acquire().await else {
            return Vec::new();
        };
        let mut files = Vec::new();
        for (i, url) in urls.iter().enumerate() {
            let name = file_name(key, i, url);
            let dest = self.dir.join(&name);
            match self.fetch(url, &dest).await {
                Ok(()) => {
                    tracing::info!(%key, file = %dest.display(), "downloaded");
                    files.push(dest.display().to_string());
                }
                Err(e) => tracing::warn!(%key, %url, "download failed: {e}"),
            }
        }
        files
    }

    /// For a job recorded completed without its files (by an older
    /// version, which downloaded after the completion): downloads every
    /// output, records the files on the job and appends the job to the
    /// manifest.
    pub(crate) async fn fetch_job(&self, s: &Shared, job: &Job) {
        let files = self.fetch_all(&job.key, &job.output_urls).await;
        let patch = Patch {
            output_files: Some(files),
            ..Patch::default()
        };
        let change = Change::to(JobState::Completed, "").patch(patch);
        match s.store.apply(&job.key, JobState::Completed, change).await {
            // Durable before the manifest names the files: a restart must
            // not forget what the manifest says was downloaded (if it
            // fails, the next start downloads again).
            Ok(j) => {
                if s.durable("recording downloads").await {
                    self.append_manifest(&j).await
                }
            }
            Err(e) => s.store_failed(&format!("recording the downloads of {}", job.key), &e),
        }
    }

    pub(crate) async fn append_manifest(&self, job: &Job) {
        let _g = self.manifest.lock().await;
        let line = serde_json::json!({
            "key": job.key, "provider": job.provider, "provider_job_id": job.provider_job_id,
            "output_urls": job.output_urls, "files": job.output_files,
            "complete": job.output_files.len() == job.output_urls.len(),
            "credits_charged": job.credits_charged, "finished_at": job.updated_at,
        });
        let path = self.dir.join("manifest.jsonl");
        let res = async {
            let mut f = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .await?;
            f.write_all(format!("{line}\n").as_bytes()).await?;
            f.sync_data().await
        }
        .await;
        if let Err(e) = res {
            tracing::warn!("writing {}: {e}", path.display());
        }
    }

    /// Up to five tries; each one resumes (Range) from what the temp file
    /// already holds. The file gets its final name only once complete.
    pub(crate) async fn fetch(&self, url: &str, dest: &Path) -> Result<(), DownloadError> {
        let tmp = dest.with_extension(format!(
            "{}.part",
            dest.extension().and_then(|e| e.to_str()).unwrap_or("bin")
        ));
        let mut last = None;
        for attempt in 0..5u32 {
            match self.try_fetch(url, &tmp).await {
                Ok(()) => {
                    tokio::fs::rename(&tmp, dest).await?;
                    return Ok(());
                }
                Err(e) => {
                    tracing::debug!(%url, attempt, "download attempt failed: {e}");
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
        let _ = tokio::fs::remove_file(&tmp).await;
        Err(last.unwrap_or(DownloadError::Status(0)))
    }

    async fn try_fetch(&self, url: &str, tmp: &Path) -> Result<(), DownloadError> {
        let have = tokio::fs::metadata(tmp).await.map(|m| m.len()).unwrap_or(0);
        let mut req = self.client.get(url);
        if have > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let (mut file, start) = match status {
            206 => {
                let from = content_range_start(resp.headers());
                if from != Some(have) {
                    // Not the resume we asked for: start over next time.
                    let _ = tokio::fs::remove_file(tmp).await;
                    return Err(DownloadError::BadRange {
                        got: from.unwrap_or(0),
                        want: have,
                    });
                }
                (
                    tokio::fs::OpenOptions::new().append(true).open(tmp).await?,
                    have,
                )
            }
            200 => (tokio::fs::File::create(tmp).await?, 0),
            s => {
                if s == 416 {
                    let _ = tokio::fs::remove_file(tmp).await;
                }
                return Err(DownloadError::Status(s));
            }
        };
        let want = resp.content_length().map(|l| l + start);
        let mut got = start;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            file.write_all(&chunk).await?;
            got += chunk.len() as u64;
        }
        file.sync_all().await?;
        match want {
            Some(w) if w != got => Err(DownloadError::Short { got, want: w }),
            _ => Ok(()),
        }
    }
}

/// The first byte of `Content-Range: bytes START-END/TOTAL`.
fn content_range_start(h: &reqwest::header::HeaderMap) -> Option<u64> {
    let v = h.get(reqwest::header::CONTENT_RANGE)?.to_str().ok()?;
    let range = v.trim().strip_prefix("bytes")?.trim();
    range.split('-').next()?.trim().parse().ok()
}

/// `<key>.<ext>` for the main video, `<key>-<n>.<ext>` for the others
/// (Viggle's mask).
pub(crate) fn file_name(key: &str, index: usize, url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path
        .rsplit('/')
        .next()
        .and_then(|last| last.rsplit_once('.').map(|(_, e)| e))
        .filter(|e| !e.is_empty() && e.len() <= 5 && e.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or("mp4");
    if index == 0 {
        format!("{key}.{ext}")
    } else {
        format!("{key}-{index}.{ext}")
    }
}
