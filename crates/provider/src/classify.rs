//! Sorting what came back into [`ProviderError`]: a non-2xx answer by its
//! status, its `Retry-After` and the provider's error code; a transport
//! failure by whether the request could have been acted on; a 2xx body
//! that cannot be read. One classification for all four adapters, since
//! the engine's retry, cool-down and pause decisions hang on it.

use crate::http::MAX_RETRY_AFTER;
use crate::{answer_kind, ProviderError};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::{Duration, SystemTime};

/// Provider text quoted in error messages is cut to this many characters.
const MAX_QUOTED: usize = 300;

/// How the errors of an unreadable 2xx body begin, so that
/// [`unexpected_of`] can name them (they are built only here).
const MALFORMED: &str = "malformed response body";
const MISSING: &str = " response has no usable ";

/// What a provider's own error code means, where it says more than the HTTP
/// status (UGC Lab answers 400 to a refused cancel, for instance).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeClass {
    NotFound,
    Conflict,
    RateLimited,
    Transient,
    InsufficientCredits,
    Permanent,
}

/// A provider's table of error codes; `None` leaves the HTTP status to decide.
pub type CodeMap = fn(&str) -> Option<CodeClass>;

/// Codes no provider documents but any might use; consulted after the
/// provider's own table.
fn common_codes(code: &str) -> Option<CodeClass> {
    match code.to_ascii_uppercase().as_str() {
        "RATE_LIMIT_EXCEEDED" | "RATE_LIMITED" | "TOO_MANY_REQUESTS" => {
            Some(CodeClass::RateLimited)
        }
        "INSUFFICIENT_CREDITS" | "INSUFFICIENT_BALANCE" => Some(CodeClass::InsufficientCredits),
        "INTERNAL_ERROR" | "INTERNAL_SERVER_ERROR" | "SERVICE_UNAVAILABLE" => {
            Some(CodeClass::Transient)
        }
        _ => None,
    }
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

pub(crate) fn transport_error(method: &Method, e: &reqwest::Error) -> ProviderError {
    if e.is_builder() {
        return ProviderError::Permanent {
            code: "invalid_request".into(),
            message: error_chain(e),
        };
    }
    if e.is_connect() && !e.is_timeout() {
        return ProviderError::Unavailable(format!(
            "{method} request could not connect: {}",
            error_chain(e)
        ));
    }
    let what = if e.is_timeout() {
        "timed out (the provider may still have acted on it)"
    } else {
        "failed in transit (the provider may still have acted on it)"
    };
    ProviderError::Transient(format!("{method} request {what}: {}", error_chain(e)))
}

/// Classifies a non-2xx answer. `now` only matters for an HTTP-date
/// `Retry-After`.
pub fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    codes: CodeMap,
    now: SystemTime,
) -> ProviderError {
    let retry_after = || {
        headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now))
    };
    if status == StatusCode::TOO_MANY_REQUESTS {
        return ProviderError::RateLimited {
            retry_after: retry_after(),
        };
    }
    let (code, message) = error_parts(body);
    let message = message.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if text.is_empty() || text.starts_with('{') || text.starts_with('[') {
            status
                .canonical_reason()
                .unwrap_or("no reason given")
                .to_string()
        } else {
            quote(text)
        }
    });
    let class = code
        .as_deref()
        .and_then(|c| codes(c).or_else(|| common_codes(c)));
    let code = code.unwrap_or_else(|| format!("HTTP_{}", status.as_u16()));
    match class {
        Some(CodeClass::RateLimited) => {
            return ProviderError::RateLimited {
                retry_after: retry_after(),
            }
        }
        Some(CodeClass::NotFound) => return ProviderError::NotFound(format!("{code}: {message}")),
        Some(CodeClass::Conflict) => return ProviderError::Conflict { code, message },
        Some(CodeClass::Transient) => {
            return ProviderError::Transient(format!(
                "HTTP {} ({code}): {message}",
                status.as_u16()
            ))
        }
        Some(CodeClass::InsufficientCredits) => {
            return ProviderError::InsufficientCredits(format!("{code}: {message}"))
        }
        Some(CodeClass::Permanent) => return ProviderError::Permanent { code, message },
        None => {}
    }
    match status.as_u16() {
        402 => ProviderError::InsufficientCredits(format!("{code}: {message}")),
        404 | 410 => ProviderError::NotFound(format!("{code}: {message}")),
        409 => ProviderError::Conflict { code, message },
        408 | 425 => {
            ProviderError::Transient(format!("HTTP {} ({code}): {message}", status.as_u16()))
        }
        503 => ProviderError::Unavailable(format!("HTTP 503 ({code}): {message}")),
        400..=499 => ProviderError::Permanent { code, message },
        _ => ProviderError::Transient(format!("HTTP {} ({code}): {message}", status.as_u16())),
    }
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3), capped
/// at [`MAX_RETRY_AFTER`]. A date in the past means "now".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else if let Ok(secs) = value.parse::<f64>() {
        // Not in the RFC, but some servers send fractions; negative or NaN
        // values are ignored rather than guessed at.
        Duration::try_from_secs_f64(secs).ok()?
    } else {
        let when = httpdate::parse_http_date(value).ok()?;
        when.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// Pulls a code and a message out of any of the four providers' error
/// bodies: U-Gen's nested `{"error": {"code", "message", "details"}}`,
/// UlazAI's `{"success": false, "error": ...}`, Viggle's `error_code` /
/// `error_message`, and the common `code` / `message` / `detail` fields.
pub fn error_parts(body: &[u8]) -> (Option<String>, Option<String>) {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => error_parts_value(&v),
        Err(_) => (None, None),
    }
}

pub fn error_parts_value(v: &Value) -> (Option<String>, Option<String>) {
    let mut code = None;
    let mut message = None;
    match v.get("error") {
        Some(Value::Object(e)) => {
            code = e.get("code").and_then(scalar_text);
            message = e
                .get("message")
                .or_else(|| e.get("detail"))
                .and_then(scalar_text);
        }
        // `{"error": "UGC_NOT_FOUND", "message": ...}` or `{"error": "Invalid duration"}`.
        Some(e @ Value::String(_)) => {
            let text = scalar_text(e);
            if text.as_deref().is_some_and(looks_like_code) {
                code = text;
            } else {
                message = text;
            }
        }
        _ => {}
    }
    code = code.or_else(|| {
        ["error_code", "code", "errorCode"]
            .iter()
            .find_map(|k| v.get(*k).and_then(scalar_text))
    });
    message = message.or_else(|| {
        ["error_message", "message", "errorMessage", "detail"]
            .iter()
            .find_map(|k| v.get(*k).and_then(scalar_text))
    });
    if message.is_none() {
        message = code.clone();
    }
    (code.map(|c| quote(&c)), message.map(|m| quote(&m)))
}

/// `UGC_NOT_FOUND`, `CS-UORC01-009`: upper case, digits and separators only.
fn looks_like_code(s: &str) -> bool {
    s.len() <= 64
        && s.chars().any(|c| c.is_ascii_uppercase())
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'))
}

pub(crate) fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Cuts provider text to a size fit for an error message.
pub(crate) fn quote(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// A 2xx body as JSON; unreadable is `Transient`, as the contract asks.
pub fn parse_json(body: &[u8]) -> Result<Value, ProviderError> {
    serde_json::from_slice(body).map_err(|e| {
        ProviderError::Transient(format!(
            "{MALFORMED} ({e}); if this answered a create, the job may exist at the provider"
        ))
    })
}

/// A required field was missing from an otherwise readable answer.
pub fn missing(provider: &str, what: &str) -> ProviderError {
    ProviderError::Transient(format!(
        "{provider}{MISSING}{what}; if this answered a create, the job may exist at the provider"
    ))
}

/// Names the unreadable-body errors built by [`parse_json`] and
/// [`missing`]: (kind, missing field or "").
pub fn unexpected_of(message: &str) -> Option<(&'static str, String)> {
    if message.starts_with(MALFORMED) {
        return Some((answer_kind::UNPARSEABLE_BODY, String::new()));
    }
    let (_, rest) = message.split_once(MISSING)?;
    let field = rest.split(';').next().unwrap_or_default();
    Some((answer_kind::MISSING_FIELD, field.to_string()))
}
