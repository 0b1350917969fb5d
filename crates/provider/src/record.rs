//! Recorded exchanges (`daemon.record_dir`): every request to a provider and
//! its answer, one JSON object a line, so that a mismatch a user meets with a
//! real account can be replayed (`switchyard sim --replay FILE`) and become
//! a test fixture.
//!
//! Why it is shaped this way:
//!
//! - Secrets never reach the file: the credential headers are written as
//!   `[redacted]`, fields and query parameters named like secrets are
//!   blanked, and then every configured secret value is replaced wherever it
//!   appears (a provider echoing a key in an error body included).
//! - Recording must never slow the requests down: a request hands its record
//!   to a bounded queue with `try_send` and goes on; a writer thread does
//!   the file work. When the queue is full the record is dropped and
//!   counted, with a warning, rather than making a poll wait on a disk.
//! - Files rotate by size (`exchanges.jsonl`, then `exchanges.1.jsonl`, …)
//!   and only the newest few are kept, so a daemon left recording for a
//!   week cannot fill its disk.

use crate::http::Answer;
use reqwest::header::HeaderMap;
use reqwest::Url;
use serde_json::{json, Map, Value};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use switchyard_core::Secret;

/// What every redaction writes instead.
pub const REDACTED: &str = "[redacted]";

/// The file being written; rotated ones are `exchanges.N.jsonl`.
pub const CURRENT_FILE: &str = "exchanges.jsonl";

/// Headers worth keeping; everything else is left out.
const KEPT_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "idempotency-key",
    "retry-after",
    "date",
    "location",
    "x-request-id",
];

/// Headers that carry credentials: shown present, never their value.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "x-api-key",
    "proxy-authorization",
    "cookie",
];

/// How recording behaves; [`RecordOptions::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    pub dir: PathBuf,
    /// A file is rotated once it would grow past this.
    pub max_file_bytes: u64,
    /// Rotated files kept besides the current one.
    pub keep: usize,
    /// Each body is cut to this many bytes (marked `body_truncated`).
    pub max_body_bytes: usize,
    /// Records waiting for the writer; beyond this they are dropped.
    pub queue: usize,
}

impl RecordOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RecordOptions {
            dir: dir.into(),
            max_file_bytes: 16 * 1024 * 1024,
            keep: 4,
            max_body_bytes: 64 * 1024,
            queue: 4096,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record_dir {path}: {source}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

struct Shared {
    tx: SyncSender<String>,
    dropped: AtomicU64,
    /// Every configured secret of every provider: redacted by value.
    secrets: Vec<Secret>,
    max_body_bytes: usize,
}

/// A handle on the recording; cheap to clone, one per provider (`named`).
#[derive(Clone)]
pub struct Recorder {
    shared: Arc<Shared>,
    provider: Arc<str>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

/// One exchange as the transport saw it.
pub(crate) struct Exchange<'a> {
    pub started: SystemTime,
    pub elapsed: Duration,
    pub method: &'a str,
    pub url: &'a Url,
    pub request_headers: &'a HeaderMap,
    pub request_body: Option<&'a Value>,
    pub answer: Option<&'a Answer>,
    /// No answer: why (already scrubbed).
    pub error: Option<String>,
}

impl Recorder {
    /// Creates `dir` if needed and starts the writer thread. `secrets`: all
    /// configured secret values, redacted wherever they appear.
    pub fn start(options: RecordOptions, secrets: Vec<Secret>) -> Result<Recorder, RecordError> {
        let dir_error = |source| RecordError::Dir {
            path: options.dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&options.dir).map_err(dir_error)?;
        let writer = Writer::open(&options).map_err(dir_error)?;
        let (tx, rx) = sync_channel(options.queue.max(1));
        std::thread::Builder::new()
            .name("switchyard-record".into())
            .spawn(move || writer.run(rx))
            .map_err(dir_error)?;
        Ok(Recorder {
            shared: Arc::new(Shared {
                tx,
                dropped: AtomicU64::new(0),
                secrets: secrets.into_iter().filter(|s| !s.is_empty()).collect(),
                max_body_bytes: options.max_body_bytes,
            }),
            provider: Arc::from(""),
        })
    }

    /// The same recording, with records tagged as this provider's.
    pub fn named(&self, provider: &str) -> Recorder {
        Recorder {
            shared: self.shared.clone(),
            provider: Arc::from(provider),
        }
    }

    /// Records dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Hands one exchange to the writer, never waiting. `secrets`: the
    /// transport's own, besides the recording's.
    pub(crate) fn record(&self, ex: Exchange<'_>, secrets: &[Secret]) {
        let line = self.line(&ex, secrets);
        match self.shared.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let n = self.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // Once per doubling: a stuck disk must not flood the log too.
                if n.is_power_of_two() {
                    tracing::warn!(
                        dropped = n,
                        "recording falls behind: exchanges dropped from record_dir"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn redact(&self, text: &str, secrets: &[Secret]) -> String {
        self.shared
            .secrets
            .iter()
            .chain(secrets)
            .filter(|s| !s.is_empty())
            .fold(text.to_string(), |acc, s| acc.replace(s.expose(), REDACTED))
    }

    fn body(&self, bytes: &[u8], secrets: &[Secret]) -> (String, bool) {
        // Re-serialized only when a field had to be blanked, so that the
        // recorded body is byte for byte what was sent otherwise.
        let blanked = serde_json::from_slice::<Value>(bytes)
            .ok()
            .and_then(|mut v| blank_secret_fields(&mut v).then(|| v.to_string()));
        let text = blanked.unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned());
        let text = self.redact(&text, secrets);
        let cap = self.shared.max_body_bytes;
        if text.len() <= cap {
            return (text, false);
        }
        let mut end = cap;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        (text[..end].to_string(), true)
    }

    fn line(&self, ex: &Exchange<'_>, secrets: &[Secret]) -> String {
        let mut url = ex.url.clone();
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret_name(&k) {
                    REDACTED.to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        if pairs.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(&pairs);
        }
        let _ = url.set_password(None);
        let _ = url.set_username("");
        let mut request = Map::new();
        request.insert("headers".into(), headers(ex.request_headers));
        if let Some(body) = ex.request_body {
            let (text, cut) = self.body(body.to_string().as_bytes(), secrets);
            request.insert("body".into(), Value::String(text));
            if cut {
                request.insert("body_truncated".into(), Value::Bool(true));
            }
        }
        let response = ex.answer.map(|a| {
            let (text, cut) = self.body(&a.body, secrets);
            let mut m = Map::new();
            m.insert("status".into(), json!(a.status.as_u16()));
            m.insert("headers".into(), headers(&a.headers));
            m.insert("body".into(), Value::String(text));
            if cut {
                m.insert("body_truncated".into(), Value::Bool(true));
            }
            Value::Object(m)
        });
        let record = json!({
            "ts": humantime::format_rfc3339_millis(ex.started).to_string(),
            "elapsed_ms": u64::try_from(ex.elapsed.as_millis()).unwrap_or(u64::MAX),
            "provider": &*self.provider,
            "method": ex.method,
            "url": self.redact(url.as_str(), secrets),
            "path": self.redact(url.path(), secrets),
            "query": url.query().map(|q| self.redact(q, secrets)),
            "request": request,
            "response": response,
            "error": ex.error.as_deref().map(|e| self.redact(e, secrets)),
        });
        // Last line of defence: a secret that survived in any field.
        self.redact(&record.to_string(), secrets)
    }
}

fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase().replace('-', "_");
    matches!(
        n.as_str(),
        "key"
            | "api_key"
            | "apikey"
            | "x_api_key"
            | "token"
            | "access_token"
            | "secret"
            | "password"
            | "authorization"
            | "signature"
    ) || n.ends_with("_secret")
        || n.ends_with("_token")
        || n.ends_with("_password")
        || n.ends_with("api_key")
}

/// Blanks every field named like a secret; true if any was.
fn blank_secret_fields(v: &mut Value) -> bool {
    match v {
        Value::Object(map) => {
            let mut any = false;
            for (k, item) in map.iter_mut() {
                if secret_name(k) && !item.is_null() {
                    *item = Value::String(REDACTED.into());
                    any = true;
                } else {
                    any |= blank_secret_fields(item);
                }
            }
            any
        }
        Value::Array(items) => {
            // Every item is visited (no short circuit): each may need blanking.
            let mut any = false;
            for item in items.iter_mut() {
                any |= blank_secret_fields(item);
            }
            any
        }
        _ => false,
    }
}

fn headers(h: &HeaderMap) -> Value {
    let mut out = Map::new();
    for (name, value) in h {
        let n = name.as_str();
        if SECRET_HEADERS.contains(&n) {
            out.insert(n.into(), Value::String(REDACTED.into()));
        } else if KEPT_HEADERS.contains(&n) {
            if let Ok(v) = value.to_str() {
                out.insert(n.into(), Value::String(v.into()));
            }
        }
    }
    Value::Object(out)
}

/// The writer thread's state: the open file and its size.
struct Writer {
    dir: PathBuf,
    file: BufWriter<File>,
    size: u64,
    max: u64,
    keep: usize,
}

impl Writer {
    fn open(o: &RecordOptions) -> std::io::Result<Writer> {
        let (file, size) = open_current(&o.dir)?;
        Ok(Writer {
            dir: o.dir.clone(),
            file,
            size,
            max: o.max_file_bytes.max(1),
            keep: o.keep,
        })
    }

    fn run(mut self, rx: Receiver<String>) {
        let mut failed = false;
        while let Ok(line) = rx.recv() {
            let mut next = Some(line);
            // Written as they come; flushed once the queue is empty, so a
            // burst costs one flush and a quiet daemon leaves nothing behind.
            while let Some(line) = next {
                if let Err(e) = self.write(&line) {
                    if !failed {
                        tracing::error!("writing to record_dir {}: {e}", self.dir.display());
                    }
                    failed = true;
                }
                next = rx.try_recv().ok();
            }
            if self.file.flush().is_ok() {
                failed = false;
            }
        }
        let _ = self.file.flush();
    }

    fn write(&mut self, line: &str) -> std::io::Result<()> {
        let n = line.len() as u64 + 1;
        if self.size > 0 && self.size + n > self.max {
            self.rotate()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.size += n;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        let rotated = |i: usize| self.dir.join(format!("exchanges.{i}.jsonl"));
        if self.keep == 0 {
            std::fs::remove_file(self.dir.join(CURRENT_FILE))?;
        } else {
            let _ = std::fs::remove_file(rotated(self.keep));
            for i in (1..self.keep).rev() {
                if rotated(i).exists() {
                    std::fs::rename(rotated(i), rotated(i + 1))?;
                }
            }
            std::fs::rename(self.dir.join(CURRENT_FILE), rotated(1))?;
        }
        let (file, size) = open_current(&self.dir)?;
        self.file = file;
        self.size = size;
        Ok(())
    }
}

fn open_current(dir: &Path) -> std::io::Result<(BufWriter<File>, u64)> {
    let path = dir.join(CURRENT_FILE);
    let file = OpenOptions::new().create(true).append(true).open(&path)?;
    let size = file.metadata()?.len();
    Ok((BufWriter::new(file), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_fields_are_blanked_but_job_keys_kept() {
        let mut v = json!({"webhook_secret": "s", "idempotency_key": "job-1",
            "nested": [{"api_key": "k", "prompt": "p"}]});
        assert!(blank_secret_fields(&mut v));
        assert_eq!(v["webhook_secret"], REDACTED);
        assert_eq!(v["nested"][0]["api_key"], REDACTED);
        assert_eq!(v["idempotency_key"], "job-1");
        assert_eq!(v["nested"][0]["prompt"], "p");
    }

    #[test]
    fn files_rotate_and_only_the_newest_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = RecordOptions::new(dir.path());
        o.max_file_bytes = 100;
        o.keep = 2;
        let mut w = Writer::open(&o).unwrap();
        for i in 0..10 {
            w.write(&format!("{i:>60}")).unwrap();
        }
        w.file.flush().unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["exchanges.1.jsonl", "exchanges.2.jsonl", "exchanges.jsonl"]
        );
        let newest = std::fs::read_to_string(dir.path().join(CURRENT_FILE)).unwrap();
        assert!(newest.trim().ends_with('9'), "{newest}");
    }
}
