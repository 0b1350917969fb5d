//! What the four adapters share, so that they cannot disagree about it: one
//! way to send a request, one classification of failures into
//! [`ProviderError`], one set of tolerant field readers, and one param
//! checker (those two in `fields.rs`, the classification in `classify.rs`,
//! re-exported here).
//!
//! Why it is shaped this way:
//!
//! - The daemon's retry, cool-down and pause decisions hang entirely on the
//!   error class, so classification lives here once, with each provider
//!   contributing only a table of its own error codes ([`CodeMap`]).
//! - The API key leaves the process through exactly one place
//!   ([`Transport::send`], as a sensitive header). Every error message that
//!   comes back through [`Transport`] is scrubbed of the configured secrets,
//!   in case a provider echoes a key in an error body.
//! - Provider bodies are read as loosely as the documents allow (numbers as
//!   int or float, missing optional fields), because a too-strict parser
//!   turns a harmless provider change into a stuck job. What cannot be read
//!   at all is `Transient`, as the contract asks.
//! - A create that answers 2xx with an unreadable body, a timeout and a
//!   reset connection all come back as `Transient`, yet the job may exist at
//!   the provider: the message says so, and it is the daemon's call whether
//!   to reconcile (`find_by_key`) or to resend (only safe where
//!   `idempotent_create()` is true).

pub use crate::classify::{
    classify, error_parts, error_parts_value, missing, parse_json, parse_retry_after,
    unexpected_of, CodeClass, CodeMap,
};
use crate::classify::{error_chain, transport_error};
pub(crate) use crate::classify::{quote, scalar_text};
use crate::record::{Exchange, Recorder};
use crate::{answer_kind, ProviderError, RemoteStatus};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use std::fmt;
use std::time::{Duration, Instant, SystemTime};
use switchyard_core::Secret;

/// Sent with every create call so that a provider (or the simulator) that
/// deduplicates by header can do so.
/// (Lower case because `HeaderName` is; HTTP header names are
/// case-insensitive.)
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// A provider asking for a longer pause than this is more likely broken than
/// serious; the daemon can always back off further on its own.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// An excerpt of an unexpected answer is cut to this many characters.
const EXCERPT: usize = 200;

/// How a provider wants the API key presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// The key as the whole value of the named header (`X-API-Key`).
    Header(&'static str),
}

/// One provider's connection: base URL, credentials, auth style and error
/// codes.
#[derive(Clone)]
pub struct Transport {
    client: reqwest::Client,
    base_url: String,
    /// `base_url` parsed once (a parse per request was 4 % of the CPU of an
    /// idle daemon's polls); the error is kept to report at each call.
    parsed: Result<Url, String>,
    api_key: Option<Secret>,
    /// Everything that must never appear in an error message.
    secrets: Vec<Secret>,
    auth: Auth,
    codes: CodeMap,
    recorder: Option<Recorder>,
}

/// A provider's answer, before classification.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    /// The `Date` header, for comparing clocks (`doctor`).
    pub date: Option<SystemTime>,
    /// Only when the status is not 2xx (`Retry-After` lives here).
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("base_url", &self.base_url)
            .field("auth", &self.auth)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// One request, described independently of the provider's base URL.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    method: Method,
    /// Path segments after the base URL, each percent-encoded on its own so
    /// that a job id can never change the path. A trailing `""` yields a
    /// trailing slash (UlazAI's paths end in one).
    segments: Vec<&'a str>,
    query: Vec<(&'a str, String)>,
    body: Option<&'a Value>,
    authenticated: bool,
    idempotency_key: Option<&'a str>,
}

impl<'a> Call<'a> {
    pub fn new(method: Method, segments: &[&'a str]) -> Self {
        Call {
            method,
            segments: segments.to_vec(),
            query: Vec::new(),
            body: None,
            authenticated: true,
            idempotency_key: None,
        }
    }

    pub fn get(segments: &[&'a str]) -> Self {
        Call::new(Method::GET, segments)
    }

    pub fn delete(segments: &[&'a str]) -> Self {
        Call::new(Method::DELETE, segments)
    }

    pub fn post(segments: &[&'a str], body: Option<&'a Value>) -> Self {
        Call {
            body,
            ..Call::new(Method::POST, segments)
        }
    }

    pub fn put(segments: &[&'a str], body: &'a Value) -> Self {
        Call {
            body: Some(body),
            ..Call::new(Method::PUT, segments)
        }
    }

    /// Sends no credentials (Viggle's status endpoint needs none, and a key
    /// not sent cannot leak).
    pub fn without_auth(mut self) -> Self {
        self.authenticated = false;
        self
    }

    pub fn idempotency_key(mut self, key: &'a str) -> Self {
        self.idempotency_key = Some(key);
        self
    }

    pub fn query(mut self, name: &'a str, value: impl ToString) -> Self {
        self.query.push((name, value.to_string()));
        self
    }
}

/// Borrows rendered path segments for a [`Call`].
pub fn refs(segments: &[String]) -> Vec<&str> {
    segments.iter().map(String::as_str).collect()
}

impl Transport {
    /// `secrets` lists what must be scrubbed from error messages besides the
    /// API key (the webhook secret, where one is configured).
    pub fn new(
        client: reqwest::Client,
        base_url: &str,
        api_key: Option<Secret>,
        secrets: &[Option<Secret>],
        auth: Auth,
        codes: CodeMap,
    ) -> Self {
        let api_key = api_key.filter(|k| !k.is_empty());
        let secrets = api_key
            .iter()
            .chain(secrets.iter().flatten())
            .filter(|s| !s.is_empty())
            .cloned()
            .collect();
        let base_url = base_url.trim().to_string();
        let parsed = match Url::parse(&base_url) {
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                Err("must use http or https".to_string())
            }
            Ok(u) if u.cannot_be_a_base() => Err("cannot carry a path".to_string()),
            Ok(u) => Ok(u),
            Err(e) => Err(format!("is not a URL: {e}")),
        };
        Transport {
            client,
            base_url,
            parsed,
            api_key,
            secrets,
            auth,
            codes,
            recorder: None,
        }
    }

    /// Records every exchange of this transport (`daemon.record_dir`).
    pub fn with_recorder(mut self, recorder: Option<Recorder>) -> Self {
        self.recorder = recorder;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends `call` and returns the body of a 2xx answer; anything else is
    /// classified. Error messages are scrubbed of the configured secrets.
    pub async fn send(&self, call: Call<'_>) -> Result<Vec<u8>, ProviderError> {
        self.send_inner(call).await.map_err(|e| self.scrub(e))
    }

    /// [`Transport::send`], then the body as JSON (unreadable: `Transient`).
    /// An empty body (a 204 to pause, say) is `null`, which the status
    /// readers in turn refuse as unusable.
    pub async fn json(&self, call: Call<'_>) -> Result<Value, ProviderError> {
        let bytes = self.send(call).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        parse_json(&bytes)
    }

    /// Sends `call` and returns the answer unclassified, whatever its
    /// status (`doctor` judges a 404 itself). Errors are transport errors
    /// only, scrubbed.
    pub async fn exchange(&self, call: Call<'_>) -> Result<Answer, ProviderError> {
        self.exchange_inner(&call).await.map_err(|e| self.scrub(e))
    }

    /// A short excerpt of a provider's answer, fit for a log line or a
    /// `doctor` report: cut, and with every configured secret removed.
    pub fn excerpt(&self, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let cut = match text.char_indices().nth(EXCERPT) {
            Some((end, _)) => format!("{}…", &text[..end]),
            None => text.to_string(),
        };
        self.secrets
            .iter()
            .fold(cut, |acc, s| acc.replace(s.expose(), "[redacted]"))
    }

    async fn send_inner(&self, call: Call<'_>) -> Result<Vec<u8>, ProviderError> {
        let answer = self.exchange_inner(&call).await?;
        if answer.status.is_success() {
            Ok(answer.body)
        } else {
            Err(classify(
                answer.status,
                &answer.headers,
                &answer.body,
                self.codes,
                SystemTime::now(),
            ))
        }
    }

    async fn exchange_inner(&self, call: &Call<'_>) -> Result<Answer, ProviderError> {
        let url = self.url(&call.segments, &call.query)?;
        let mut headers = HeaderMap::new();
        if call.authenticated {
            if let Some(key) = &self.api_key {
                let invalid = |what: &str| ProviderError::Permanent {
                    code: "invalid_api_key".into(),
                    message: format!("the configured API key {what}"),
                };
                let (name, value) = match self.auth {
                    Auth::Bearer => (AUTHORIZATION, format!("Bearer {}", key.expose())),
                    Auth::Header(name) => (
                        HeaderName::from_bytes(name.as_bytes())
                            .map_err(|_| invalid("header name is not valid"))?,
                        key.expose().to_string(),
                    ),
                };
                let mut value = HeaderValue::from_str(&value)
                    .map_err(|_| invalid("contains characters not allowed in an HTTP header"))?;
                value.set_sensitive(true);
                headers.insert(name, value);
            }
        }
        if let Some(key) = call.idempotency_key {
            match HeaderValue::from_str(key) {
                Ok(value) => {
                    headers.insert(HeaderName::from_static(IDEMPOTENCY_KEY_HEADER), value);
                }
                Err(_) => {
                    tracing::debug!("job key not valid as a header value; Idempotency-Key not sent")
                }
            }
        }
        // The recorder sees the headers as sent (it redacts the key).
        let recorded_headers = self.recorder.as_ref().map(|_| headers.clone());
        let mut request = self
            .client
            .request(call.method.clone(), url.clone())
            .headers(headers);
        if let Some(body) = call.body {
            request = request.json(body);
        }
        let (started, t0) = (SystemTime::now(), Instant::now());
        let result = self.read_answer(call, &url, request).await;
        if let (Some(rec), Some(sent)) = (&self.recorder, &recorded_headers) {
            rec.record(
                Exchange {
                    started,
                    elapsed: t0.elapsed(),
                    method: call.method.as_str(),
                    url: &url,
                    request_headers: sent,
                    request_body: call.body,
                    answer: result.as_ref().ok(),
                    error: result
                        .as_ref()
                        .err()
                        .map(|e| self.scrub(e.clone()).to_string()),
                },
                &self.secrets,
            );
        }
        result
    }

    async fn read_answer(
        &self,
        call: &Call<'_>,
        url: &Url,
        request: reqwest::RequestBuilder,
    ) -> Result<Answer, ProviderError> {
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(&call.method, &e))?;
        let status = response.status();
        let date = response
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        // Only an error answer needs its headers (Retry-After), and a
        // recording its few selected ones: cloned then, not for every answer.
        let headers = if status.is_success() && self.recorder.is_none() {
            HeaderMap::new()
        } else {
            response.headers().clone()
        };
        let body = response.bytes().await.map_err(|e| {
            ProviderError::Transient(format!(
                "{} {}: reading the response body failed: {}",
                call.method,
                url.path(),
                error_chain(&e)
            ))
        })?;
        tracing::debug!(method = %call.method, path = url.path(), status = status.as_u16(), "provider call");
        Ok(Answer {
            status,
            date,
            headers,
            body: body.to_vec(),
        })
    }

    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Url, ProviderError> {
        let bad = |why: &str| ProviderError::Permanent {
            code: "invalid_base_url".into(),
            message: format!("base_url {:?} {why}", self.base_url),
        };
        let mut url = self.parsed.clone().map_err(|why| bad(&why))?;
        url.path_segments_mut()
            .map_err(|_| bad("cannot carry a path"))?
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in query {
                pairs.append_pair(name, value);
            }
        }
        Ok(url)
    }

    /// Removes every configured secret from an error's text.
    pub fn scrub(&self, error: ProviderError) -> ProviderError {
        let clean = |s: String| -> String {
            self.secrets
                .iter()
                .fold(s, |acc, secret| acc.replace(secret.expose(), "<redacted>"))
        };
        match error {
            ProviderError::Transient(m) => ProviderError::Transient(clean(m)),
            ProviderError::Unavailable(m) => ProviderError::Unavailable(clean(m)),
            ProviderError::InsufficientCredits(m) => ProviderError::InsufficientCredits(clean(m)),
            ProviderError::NotFound(m) => ProviderError::NotFound(clean(m)),
            ProviderError::Conflict { code, message } => ProviderError::Conflict {
                code: clean(code),
                message: clean(message),
            },
            ProviderError::Permanent { code, message } => ProviderError::Permanent {
                code: clean(code),
                message: clean(message),
            },
            ProviderError::Unexpected {
                kind,
                detail,
                excerpt,
            } => ProviderError::Unexpected {
                kind,
                detail: clean(detail),
                excerpt: clean(excerpt),
            },
            other @ (ProviderError::RateLimited { .. } | ProviderError::Unsupported(_)) => other,
        }
    }
}

/// An unknown status word: the answer is readable, but says what no
/// document shows.
/// `status` if its word is one the provider's documents show (`known`, any
/// case), else the anomaly [`unknown_word`]. `body` is rendered only then:
/// a poll that reads as expected pays nothing for the check.
pub fn known_word<B: AsRef<[u8]>>(
    transport: &Transport,
    status: RemoteStatus,
    known: &[&str],
    body: impl FnOnce() -> B,
) -> Result<RemoteStatus, ProviderError> {
    if known
        .iter()
        .any(|w| w.eq_ignore_ascii_case(&status.raw_status))
    {
        return Ok(status);
    }
    Err(unknown_word(transport, &status.raw_status, body().as_ref()))
}

pub fn unknown_word(transport: &Transport, word: &str, body: &[u8]) -> ProviderError {
    ProviderError::Unexpected {
        kind: answer_kind::STATUS_WORD,
        detail: transport.excerpt(word.as_bytes()),
        excerpt: transport.excerpt(body),
    }
}

pub use crate::fields::*;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_codes(_: &str) -> Option<CodeClass> {
        None
    }

    #[test]
    fn retry_after_seconds_date_and_garbage() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(" 2.5 ", now),
            Some(Duration::from_millis(2500))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(parse_retry_after("99999999999", now), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn error_bodies_of_every_dialect() {
        let ugen = br#"{"error": {"code": "VALIDATION_ERROR", "message": "bad", "details": {}}}"#;
        assert_eq!(
            error_parts(ugen),
            (Some("VALIDATION_ERROR".into()), Some("bad".into()))
        );
        let ulazai = br#"{"success": false, "error": "Invalid duration"}"#;
        assert_eq!(error_parts(ulazai), (None, Some("Invalid duration".into())));
        let flat = br#"{"error": "UGC_PROCESSING", "message": "Cannot cancel job in progress"}"#;
        assert_eq!(
            error_parts(flat),
            (
                Some("UGC_PROCESSING".into()),
                Some("Cannot cancel job in progress".into())
            )
        );
        assert_eq!(
            error_parts(br#"{"code": "X_Y"}"#),
            (Some("X_Y".into()), Some("X_Y".into()))
        );
        let viggle = br#"{"error_code": "CS-UORC01-009", "error_message": "no person"}"#;
        assert_eq!(
            error_parts(viggle),
            (Some("CS-UORC01-009".into()), Some("no person".into()))
        );
        let fastapi = br#"{"detail": "Not authenticated"}"#;
        assert_eq!(
            error_parts(fastapi),
            (None, Some("Not authenticated".into()))
        );
        assert_eq!(error_parts(b"<html>"), (None, None));
    }

    #[test]
    fn status_classes() {
        let h = HeaderMap::new();
        let now = SystemTime::now();
        let c = |s: u16| classify(StatusCode::from_u16(s).unwrap(), &h, b"", no_codes, now);
        assert!(matches!(c(402), ProviderError::InsufficientCredits(_)));
        assert!(matches!(c(404), ProviderError::NotFound(_)));
        assert!(matches!(c(409), ProviderError::Conflict { .. }));
        for s in [400, 401, 403, 422] {
            assert!(matches!(c(s), ProviderError::Permanent { .. }), "{s}");
        }
        for s in [500, 502, 504] {
            assert!(matches!(c(s), ProviderError::Transient(_)), "{s}");
        }
        assert!(matches!(c(503), ProviderError::Unavailable(_)));
        assert_eq!(c(429), ProviderError::RateLimited { retry_after: None });
    }

    #[test]
    fn params_collects_everything() {
        let v = json!({"a": 1.5, "b": "x", "c": [1, "y"], "d": null});
        let mut p = Params::new(&v);
        p.required_integer("a", 1..=3);
        p.required_string("missing");
        p.optional_integer("b", None);
        p.optional_string_array("c");
        p.required_string("d");
        let problems = p.finish().unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "params.a",
                "params.missing",
                "params.b",
                "params.c",
                "params.d"
            ]
        );
        assert!(Params::new(&json!([1])).finish().is_err());
    }

    #[test]
    fn readers() {
        assert_eq!(percent(Some(&json!(44.6))), Some(45));
        assert_eq!(percent(Some(&json!(140))), Some(100));
        assert_eq!(percent(Some(&json!(-3))), Some(0));
        assert_eq!(percent(Some(&json!("50"))), None);
        assert_eq!(credits(Some(&json!(12.2))), Some(13));
        assert_eq!(credits(Some(&json!(-1))), None);
        assert!(is_http_url("https://example.com/h.jpg"));
        assert!(!is_http_url("ftp://example.com/h.jpg"));
        assert!(!is_http_url("example.com/h.jpg"));
    }
}
