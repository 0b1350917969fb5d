//! `switchyard sim --replay FILE`: answers from a recording made with
//! `daemon.record_dir`, so that an exchange a user had with a real provider
//! (an odd status word, a changed body) can be played to the daemon again,
//! and kept as a fixture.
//!
//! Requests are matched by method and path (with the query if the
//! recording has that exact query, else without it); each such request
//! kind gets its recorded answers in recorded order, and the last one again
//! once they run out (a daemon polls as often as its schedule says, which
//! need not be as often as when recording). A create that carries an
//! `Idempotency-Key` gets the answers recorded for that key first, so jobs
//! submitted in another order still get their own ids. Exchanges recorded
//! without an answer (a timeout, a refused connection) are skipped.
//!
//! The format is the recorder's (switchyard_provider::record): one JSON
//! object a line with `method`, `path`, `query`, `request.headers`, and
//! `response` = `{status, headers, body}`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

use crate::SimError;

/// Headers of a recorded answer worth sending again (the rest, such as
/// `date` and `content-length`, the server writes itself).
const REPLAYED_HEADERS: &[&str] = &["content-type", "retry-after", "location"];

#[derive(Debug, Clone, Deserialize)]
struct Line {
    method: String,
    path: String,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    request: Option<Req>,
    #[serde(default)]
    response: Option<Answer>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Req {
    #[serde(default)]
    headers: HashMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Answer {
    status: u16,
    #[serde(default)]
    headers: HashMap<String, String>,
    #[serde(default)]
    body: String,
}

/// The answers of one request kind, and how far each sequence has got.
#[derive(Debug, Default)]
struct Queue {
    answers: Vec<Answer>,
    next: usize,
    /// Idempotency key -> indices into `answers`, and how far that got.
    by_key: HashMap<String, (Vec<usize>, usize)>,
}

impl Queue {
    fn take(&mut self, key: Option<&str>) -> Option<Answer> {
        if let Some((idx, next)) = key.and_then(|k| self.by_key.get_mut(k)) {
            let i = idx.get(*next).or(idx.last()).copied()?;
            *next = (*next + 1).min(idx.len());
            return self.answers.get(i).cloned();
        }
        let a = self.answers.get(self.next).or(self.answers.last()).cloned();
        self.next = (self.next + 1).min(self.answers.len());
        a
    }
}

/// A recording, ready to answer.
#[derive(Debug, Default)]
pub struct Replay {
    queues: Mutex<HashMap<String, Queue>>,
    /// Exchanges loaded (with an answer).
    pub loaded: usize,
}

fn kind_key(method: &str, path: &str, query: Option<&str>) -> String {
    match query.filter(|q| !q.is_empty()) {
        Some(q) => format!("{} {path}?{q}", method.to_ascii_uppercase()),
        None => format!("{} {path}", method.to_ascii_uppercase()),
    }
}

impl Replay {
    /// Parses a recording; a line that is not a record is an error naming
    /// its line number.
    pub fn from_jsonl(text: &str) -> Result<Replay, SimError> {
        let mut queues: HashMap<String, Queue> = HashMap::new();
        let mut loaded = 0;
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let rec: Line = serde_json::from_str(line)
                .map_err(|e| SimError::Parse(format!("line {}: {e}", n + 1)))?;
            let Some(answer) = rec.response else { continue };
            let idem = rec
                .request
                .unwrap_or_default()
                .headers
                .get("idempotency-key")
                .cloned();
            for key in [
                kind_key(&rec.method, &rec.path, rec.query.as_deref()),
                kind_key(&rec.method, &rec.path, None),
            ] {
                let q = queues.entry(key).or_default();
                if let Some(k) = &idem {
                    let at = q.answers.len();
                    q.by_key.entry(k.clone()).or_default().0.push(at);
                }
                q.answers.push(answer.clone());
                if rec.query.as_deref().is_none_or(str::is_empty) {
                    break; // both keys are the same one
                }
            }
            loaded += 1;
        }
        Ok(Replay {
            queues: Mutex::new(queues),
            loaded,
        })
    }

    pub fn from_file(path: &Path) -> Result<Replay, SimError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Replay::from_jsonl(&text).map_err(|e| SimError::InFile {
            path: path.display().to_string(),
            source: Box::new(e),
        })
    }

    fn answer(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<Answer> {
        let idem = headers.get("idempotency-key").and_then(|v| v.to_str().ok());
        let mut queues = crate::state::lock(&self.queues);
        let exact = kind_key(method.as_str(), uri.path(), uri.query());
        if let Some(a) = queues.get_mut(&exact).and_then(|q| q.take(idem)) {
            return Some(a);
        }
        let loose = kind_key(method.as_str(), uri.path(), None);
        queues.get_mut(&loose).and_then(|q| q.take(idem))
    }
}

async fn handle(
    State(replay): State<Arc<Replay>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let Some(a) = replay.answer(&method, &uri, &headers) else {
        tracing::warn!(%method, path = uri.path(), "no recorded answer for this request");
        let body = serde_json::json!({"error": {"code": "NOT_RECORDED",
            "message": format!("no recorded answer for {method} {}", uri.path())}});
        return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    };
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Body::from(a.body));
    *response.status_mut() = status;
    for (name, value) in &a.headers {
        if !REPLAYED_HEADERS.contains(&name.as_str()) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().insert(n, v);
        }
    }
    response
}

/// Serves `replay` on `listen` until `cancel` fires.
pub async fn serve(
    listen: SocketAddr,
    replay: Replay,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    serve_on(listener, replay, cancel).await
}

/// [`serve`] on a listener already bound (tests bind port 0 and read it).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    replay: Replay,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, exchanges = replay.loaded, "replaying a recording");
    let app = Router::new().fallback(handle).with_state(Arc::new(replay));
    axum::serve(listener, app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_in_order_then_the_last_and_by_key_first() {
        let text = r#"
{"method":"POST","path":"/v/render","request":{"headers":{"idempotency-key":"b"}},"response":{"status":200,"body":"B"}}
{"method":"POST","path":"/v/render","request":{"headers":{"idempotency-key":"a"}},"response":{"status":200,"body":"A"}}
{"method":"GET","path":"/v/render/1","response":{"status":200,"body":"one"}}
{"method":"GET","path":"/v/render/1","response":{"status":200,"body":"two"}}
{"method":"GET","path":"/v/render/2","response":null,"error":"timed out"}
"#;
        let r = Replay::from_jsonl(text).unwrap();
        assert_eq!(r.loaded, 4);
        let get = |m: Method, p: &str, key: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(k) = key {
                h.insert("idempotency-key", HeaderValue::from_str(k).unwrap());
            }
            r.answer(&m, &p.parse().unwrap(), &h).map(|a| a.body)
        };
        assert_eq!(
            get(Method::POST, "/v/render", Some("a")).as_deref(),
            Some("A")
        );
        assert_eq!(
            get(Method::POST, "/v/render", Some("b")).as_deref(),
            Some("B")
        );
        let polls: Vec<_> = (0..3)
            .filter_map(|_| get(Method::GET, "/v/render/1", None))
            .collect();
        assert_eq!(polls, ["one", "two", "two"]);
        assert_eq!(get(Method::GET, "/v/render/2", None), None);
        assert!(Replay::from_jsonl("not json\n").is_err());
    }
}
