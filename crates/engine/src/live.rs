//! What a page showing one daemon live needs beyond the views: the rate a
//! provider is held to right now and the rate sent to it lately, and a job's outputs with the downloaded
//! file each one has, checked to lie inside `output_dir`.

use crate::{Engine, EngineError};
use std::path::{Path, PathBuf};

/// One output of a completed job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Where the provider serves it.
    pub url: String,
    /// The downloaded copy, when `output_dir` has it (canonical, inside
    /// `output_dir`, a regular file).
    pub file: Option<PathBuf>,
}

impl Engine {
    /// Requests per second the provider is held to now: the configured
    /// rate, or less while it is throttled after 429s.
    pub fn rate_in_use(&self, provider: &str) -> Option<f64> {
        let p = self.shared.providers.get(provider)?;
        let slot = p.slot().as_secs_f64();
        (slot > 0.0).then(|| 1.0 / slot)
    }

    /// Requests per second this daemon sent to the provider over the last
    /// ten seconds.
    pub fn rate_sent(&self, provider: &str) -> Option<f64> {
        let p = self.shared.providers.get(provider)?;
        Some(p.counters.recent.per_second(tokio::time::Instant::now()))
    }

    /// The outputs of job `key`, in the provider's order (Viggle's mask
    /// second).
    pub async fn outputs(&self, key: &str) -> Result<Vec<Output>, EngineError> {
        let job = self.shared.job_or_not_found(key).await?;
        let dir = match &self.shared.downloads {
            Some(d) => tokio::fs::canonicalize(d.dir()).await.ok(),
            None => None,
        };
        let mut out = Vec::new();
        for (i, url) in job.output_urls.iter().enumerate() {
            let want = crate::results::file_name(&job.key, i, url);
            let named = job
                .output_files
                .iter()
                .find(|f| Path::new(f).file_name().is_some_and(|n| *n == *want));
            let file = match (&dir, named) {
                (Some(dir), Some(f)) => inside(dir, Path::new(f)).await,
                _ => None,
            };
            out.push(Output {
                url: url.clone(),
                file,
            });
        }
        Ok(out)
    }
}

/// `file`, resolved (links and `..` followed), if it is a regular file
/// inside `dir` (already canonical): a record naming a path elsewhere
/// (edited, or a link placed in `output_dir`) is never served.
async fn inside(dir: &Path, file: &Path) -> Option<PathBuf> {
    let real = tokio::fs::canonicalize(file).await.ok()?;
    let meta = tokio::fs::metadata(&real).await.ok()?;
    (real.starts_with(dir) && meta.is_file()).then_some(real)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn only_regular_files_inside_the_dir_are_served() {
        let root = tempfile_dir();
        let dir = root.join("out");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.mp4"), b"x").unwrap();
        std::fs::write(root.join("secret"), b"x").unwrap();
        std::os::unix::fs::symlink(root.join("secret"), dir.join("link.mp4")).unwrap();
        let dir = std::fs::canonicalize(&dir).unwrap();
        assert!(inside(&dir, &dir.join("a.mp4")).await.is_some());
        assert!(inside(&dir, &dir.join("../secret")).await.is_none());
        assert!(inside(&dir, &dir.join("link.mp4")).await.is_none());
        assert!(inside(&dir, &dir).await.is_none());
        assert!(inside(&dir, &dir.join("missing.mp4")).await.is_none());
        std::fs::remove_dir_all(&root).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("switchyard-live-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
