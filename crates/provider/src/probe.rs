//! `switchyard doctor`'s one request per provider: cheap, authenticated,
//! and costing no credits, with its answer sorted into what a user can act
//! on. Each adapter chooses the request (its provider's dialect); the
//! sorting is shared here so the four cannot disagree about what "key
//! refused" means.

use crate::http::{Answer, Call, Transport};
use crate::ProviderError;
use std::time::{Duration, Instant, SystemTime};

/// An id no provider can have issued: a status request for it is answered
/// "not found" by a provider that accepted the key.
pub const IMPOSSIBLE_ID: &str = "switchyard-doctor-0000000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// Reachable, and the answer shows the key was accepted (or, where the
    /// call needs no key, the answer had the documented shape).
    Ok,
    /// 401 or 403.
    KeyRefused,
    /// 429: the key may be fine; try again later.
    RateLimited,
    /// No answer: connection refused, DNS, TLS, timeout.
    Unreachable,
    /// An answer in a shape no document shows (a wrong path, a changed API).
    Unexpected,
}

impl ProbeOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeOutcome::Ok => "ok",
            ProbeOutcome::KeyRefused => "key_refused",
            ProbeOutcome::RateLimited => "rate_limited",
            ProbeOutcome::Unreachable => "unreachable",
            ProbeOutcome::Unexpected => "unexpected",
        }
    }
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub outcome: ProbeOutcome,
    /// `GET /jobs?page_size=1`, as sent (under the base URL).
    pub request: String,
    pub http_status: Option<u16>,
    /// One line for a person.
    pub detail: String,
    /// A short excerpt of the answer, secrets removed (unexpected answers).
    pub excerpt: Option<String>,
    /// The provider's clock (its `Date` header).
    pub server_date: Option<SystemTime>,
    /// When the answer came, by the local clock (to compare with `server_date`).
    pub local_date: SystemTime,
    pub elapsed: Duration,
}

/// Sends `call` and sorts the answer; `judge` decides on any answer that is
/// not 401/403/429: `Ok(detail)` if it proves what the probe wanted,
/// `Err(why)` if its shape is unexpected.
pub(crate) async fn run(
    http: &Transport,
    request: String,
    call: Call<'_>,
    judge: impl FnOnce(&Answer) -> Result<String, String>,
) -> Probe {
    let t0 = Instant::now();
    let answer = http.exchange(call).await;
    let mut probe = Probe {
        outcome: ProbeOutcome::Unexpected,
        request,
        http_status: None,
        detail: String::new(),
        excerpt: None,
        server_date: None,
        local_date: SystemTime::now(),
        elapsed: t0.elapsed(),
    };
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            probe.outcome = match e {
                ProviderError::Unavailable(_) | ProviderError::Transient(_) => {
                    ProbeOutcome::Unreachable
                }
                // A base URL that cannot be used, a key that cannot be a header.
                _ => ProbeOutcome::Unexpected,
            };
            probe.detail = e.to_string();
            return probe;
        }
    };
    probe.http_status = Some(answer.status.as_u16());
    probe.server_date = answer.date;
    let status = answer.status.as_u16();
    match status {
        401 | 403 => {
            probe.outcome = ProbeOutcome::KeyRefused;
            probe.detail = format!("HTTP {status}: the provider refused the key");
            probe.excerpt = Some(http.excerpt(&answer.body));
        }
        429 => {
            probe.outcome = ProbeOutcome::RateLimited;
            probe.detail = "HTTP 429: rate-limited; the key was not judged".into();
        }
        _ => match judge(&answer) {
            Ok(detail) => {
                probe.outcome = ProbeOutcome::Ok;
                probe.detail = detail;
            }
            Err(why) => {
                probe.outcome = ProbeOutcome::Unexpected;
                probe.detail = format!("HTTP {status}: {why}");
                probe.excerpt = Some(http.excerpt(&answer.body));
            }
        },
    }
    probe
}

/// The request as a person reads it: method, template, query.
pub(crate) fn describe(method: &str, path: &str, query: &str) -> String {
    if query.is_empty() {
        format!("{method} {path}")
    } else {
        format!("{method} {path}?{query}")
    }
}
