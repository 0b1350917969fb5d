//! A tiny HTTP/1.1 server on 127.0.0.1:0 that answers from a closure and
//! records every request, so adapters are tested against exact bytes
//! (including malformed ones) without the simulator.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_core::Secret;
use switchyard_provider::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const API_KEY: &str = "sk_live_TOPSECRET_key_0123456789";
pub const WEBHOOK_SECRET: &str = "whsec_TOPSECRET_0123456789abcdef";

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Wait this long before answering (timeouts).
    pub delay: Option<Duration>,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into(),
            delay: None,
        }
    }

    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        Reply::new(200, body)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn delayed(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }
}

type Handler = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

pub struct FakeServer {
    pub addr: std::net::SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    pub async fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let log = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, handler, log).await;
                });
            }
        });
        FakeServer {
            addr,
            requests,
            task,
        }
    }

    /// Always answers `reply`.
    pub async fn fixed(reply: Reply) -> FakeServer {
        FakeServer::start(move |_| reply.clone()).await
    }

    pub fn url(&self, prefix: &str) -> String {
        format!("http://{}{}", self.addr, prefix)
    }

    pub fn settings(&self, prefix: &str) -> Settings {
        Settings {
            base_url: self.url(prefix),
            api_key: Some(Secret::new(API_KEY)),
            webhook_secret: Some(Secret::new(WEBHOOK_SECRET)),
            ..Default::default()
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }

    pub fn last(&self) -> Recorded {
        self.requests().pop().expect("a request was made")
    }
}

async fn serve(
    mut stream: TcpStream,
    handler: Handler,
    log: Arc<Mutex<Vec<Recorded>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let recorded = Recorded {
        method,
        target,
        headers,
        body,
    };
    log.lock().expect("lock").push(recorded.clone());
    let reply = handler(&recorded);
    if let Some(d) = reply.delay {
        tokio::time::sleep(d).await;
    }
    let mut out = format!("HTTP/1.1 {} X\r\n", reply.status);
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        reply.body.len()
    ));
    stream.write_all(out.as_bytes()).await?;
    stream.write_all(&reply.body).await?;
    stream.shutdown().await
}

pub fn client() -> reqwest::Client {
    switchyard_provider::default_client(Duration::from_secs(5)).expect("client")
}

/// The seed documents' examples, verbatim (see tests/fixtures/).
pub mod fixtures {
    pub const UGCLAB_STATUS: &str = include_str!("../fixtures/ugclab_status.json");
    pub const UGCLAB_CANCEL: &str = include_str!("../fixtures/ugclab_cancel.json");
    pub const UGEN_CREATE_JOBS_API: &str = include_str!("../fixtures/ugen_create_jobs_api.json");
    pub const UGEN_CREATE_SDK: &str = include_str!("../fixtures/ugen_create_sdk.json");
    pub const UGEN_SUGGEST_FIELDS: &str = include_str!("../fixtures/ugen_suggest_fields.json");
    pub const UGEN_RETRY: &str = include_str!("../fixtures/ugen_retry.json");
    pub const UGEN_CREDITS_ESTIMATE: &str = include_str!("../fixtures/ugen_credits_estimate.json");
    pub const UGEN_WEBHOOK_CONFIG: &str = include_str!("../fixtures/ugen_webhook_config.json");
    pub const ULAZAI_STATUS: &str = include_str!("../fixtures/ulazai_status.json");
    pub const ULAZAI_FAILURE: &str = include_str!("../fixtures/ulazai_failure.json");
    pub const VIGGLE_STATUS: &str = include_str!("../fixtures/viggle_status.json");

    pub fn json(s: &str) -> serde_json::Value {
        serde_json::from_str(s).expect("fixture is JSON")
    }
}
