//! What the four dialects share: auth, error bodies, body parsing and the
//! simulator's own create parameters. Each provider answers errors in its own
//! shape, because adapters are tested on exactly that.

use crate::state::{lock, Outcome, SimState};
use crate::util;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use std::time::Duration;
use switchyard_core::ProviderKind;

/// A JSON response with a status.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}

/// UGC Lab's `meta` block.
pub fn ugc_meta(sim: &SimState) -> Value {
    json!({
        "requestId": sim.request_id(),
        "timestamp": util::iso_millis(sim.now_ms()),
    })
}

/// An error in the provider's own shape:
/// - UGC Lab: `{"error": {"code", "message"}, "meta": {...}}`
/// - U-Gen: `{"error": {"code", "message", "details": {...}}}`
/// - UlazAI: `{"success": false, "error": "..."}` (plus `code`)
/// - Viggle: `{"detail": "...", "error_code": "..."}` (assumed, FastAPI-like)
pub fn error(
    sim: &SimState,
    kind: ProviderKind,
    status: StatusCode,
    code: &str,
    message: &str,
    details: Option<Value>,
) -> Response {
    let body = match kind {
        ProviderKind::Ugclab => json!({
            "error": {"code": code, "message": message},
            "meta": ugc_meta(sim),
        }),
        ProviderKind::Ugen => json!({
            "error": {
                "code": code,
                "message": message,
                "details": details.unwrap_or_else(|| json!({})),
            }
        }),
        ProviderKind::Ulazai => json!({"success": false, "error": message, "code": code}),
        ProviderKind::Viggle => json!({"detail": message, "error_code": code}),
    };
    json_response(status, &body)
}

/// 429 with `Retry-After` (whole seconds, rounded up, at least 1).
pub fn rate_limited(sim: &SimState, kind: ProviderKind, retry_after_secs: u64) -> Response {
    let code = match kind {
        ProviderKind::Viggle => "RATE_LIMITED",
        _ => "RATE_LIMIT_EXCEEDED",
    };
    let mut resp = error(
        sim,
        kind,
        StatusCode::TOO_MANY_REQUESTS,
        code,
        "Too many requests",
        Some(json!({"retry_after_seconds": retry_after_secs})),
    );
    if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

pub fn internal_error(sim: &SimState, kind: ProviderKind) -> Response {
    error(
        sim,
        kind,
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL_ERROR",
        "Internal server error",
        None,
    )
}

pub fn not_found(sim: &SimState, kind: ProviderKind, what: &str) -> Response {
    let code = match kind {
        ProviderKind::Ugclab => "UGC_NOT_FOUND",
        ProviderKind::Ugen => "JOB_NOT_FOUND",
        ProviderKind::Ulazai => "not_found",
        ProviderKind::Viggle => "JOB_NOT_FOUND",
    };
    error(sim, kind, StatusCode::NOT_FOUND, code, what, None)
}

/// Checks the documented credential header: `X-API-Key` for U-Gen, a Bearer
/// token for the others. Any non-empty key passes unless the scenario pins one.
#[allow(clippy::result_large_err)] // an early-return response, built once per error
pub fn check_auth(sim: &SimState, kind: ProviderKind, headers: &HeaderMap) -> Result<(), Response> {
    let presented = match kind {
        ProviderKind::Ugen => headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|s| !s.is_empty()),
        _ => headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|s| !s.is_empty()),
    };
    let prov = sim.provider(kind);
    let ok = match (presented, &prov.cfg.api_key) {
        (None, _) => false,
        (Some(p), Some(want)) => p == want,
        (Some(_), None) => true,
    };
    if ok {
        return Ok(());
    }
    lock(&prov.inner).counters.auth_failures += 1;
    let (code, message) = match (kind, presented.is_some()) {
        (ProviderKind::Ulazai, false) => (
            "not_authenticated",
            "Authentication credentials were not provided.",
        ),
        (ProviderKind::Ulazai, true) => ("authentication_failed", "Invalid API key."),
        (ProviderKind::Viggle, _) => ("UNAUTHORIZED", "Not authenticated"),
        (ProviderKind::Ugen, false) => ("UNAUTHORIZED", "Missing X-API-Key header"),
        (_, false) => ("UNAUTHORIZED", "Missing or malformed Authorization header"),
        (_, true) => ("UNAUTHORIZED", "Invalid API key"),
    };
    Err(error(
        sim,
        kind,
        StatusCode::UNAUTHORIZED,
        code,
        message,
        None,
    ))
}

/// The client's job key from the `Idempotency-Key` header.
pub fn header_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Parses a JSON object body; anything else is the provider's 400.
#[allow(clippy::result_large_err)] // an early-return response, built once per error
pub fn parse_object(
    sim: &SimState,
    kind: ProviderKind,
    body: &[u8],
) -> Result<Map<String, Value>, Response> {
    let bad = |msg: String| {
        let code = match kind {
            ProviderKind::Ulazai => "invalid_request",
            _ => "INVALID_REQUEST",
        };
        error(sim, kind, StatusCode::BAD_REQUEST, code, &msg, None)
    };
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(bad("Request body is required".into()));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad("Request body must be a JSON object".into())),
        Err(e) => Err(bad(format!("Malformed JSON body: {e}"))),
    }
}

/// One validation problem.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl Problem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub fn problems_text(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {}", p.field, p.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Field checks shared by the validators. `None`/null means absent.
pub struct Fields<'a> {
    pub obj: &'a Map<String, Value>,
    pub prefix: String,
    pub problems: Vec<Problem>,
}

impl<'a> Fields<'a> {
    pub fn new(obj: &'a Map<String, Value>, prefix: &str) -> Fields<'a> {
        Fields {
            obj,
            prefix: prefix.to_string(),
            problems: Vec::new(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.obj.get(name).filter(|v| !v.is_null())
    }

    pub fn problem(&mut self, name: &str, message: impl Into<String>) {
        let field = format!("{}{}", self.prefix, name);
        self.problems.push(Problem::new(field, message));
    }

    /// A required non-empty string.
    pub fn required_str(&mut self, name: &str) -> Option<&'a str> {
        match self.get(name) {
            None => {
                self.problem(name, "is required");
                None
            }
            Some(Value::String(s)) if s.trim().is_empty() => {
                self.problem(name, "must not be empty");
                None
            }
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                self.problem(name, "must be a string");
                None
            }
        }
    }

    pub fn required_url(&mut self, name: &str) -> Option<&'a str> {
        let s = self.required_str(name)?;
        if util::is_http_url(s) {
            Some(s)
        } else {
            self.problem(name, "must be a valid http(s) URL");
            None
        }
    }

    pub fn opt_str(&mut self, name: &str) -> Option<&'a str> {
        match self.get(name) {
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                self.problem(name, "must be a string");
                None
            }
        }
    }

    pub fn opt_url(&mut self, name: &str) -> Option<&'a str> {
        let s = self.opt_str(name)?;
        if util::is_http_url(s) {
            Some(s)
        } else {
            self.problem(name, "must be a valid http(s) URL");
            None
        }
    }

    /// An integer (JSON number without fraction); `Err(())` when present but wrong.
    pub(crate) fn opt_int(&mut self, name: &str) -> Result<Option<i64>, ()> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match v.as_i64() {
                Some(n) => Ok(Some(n)),
                None => {
                    self.problem(name, "must be an integer");
                    Err(())
                }
            },
        }
    }

    pub fn opt_int_range(&mut self, name: &str, min: i64, max: i64) -> Option<i64> {
        let n = self.opt_int(name).ok().flatten()?;
        if n < min || n > max {
            self.problem(name, format!("must be between {min} and {max} (got {n})"));
            return None;
        }
        Some(n)
    }

    pub fn required_int_range(&mut self, name: &str, min: i64, max: i64) -> Option<i64> {
        if self.get(name).is_none() {
            self.problem(name, "is required");
            return None;
        }
        self.opt_int_range(name, min, max)
    }

    pub fn opt_bool(&mut self, name: &str) -> Option<bool> {
        match self.get(name) {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                self.problem(name, "must be a boolean");
                None
            }
        }
    }

    pub fn opt_number(&mut self, name: &str) {
        if let Some(v) = self.get(name) {
            if !v.is_number() {
                self.problem(name, "must be a number");
            }
        }
    }

    pub fn opt_object(&mut self, name: &str) {
        if let Some(v) = self.get(name) {
            if !v.is_object() {
                self.problem(name, "must be an object");
            }
        }
    }

    pub fn opt_str_array(&mut self, name: &str) {
        if let Some(v) = self.get(name) {
            let ok = v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
            if !ok {
                self.problem(name, "must be an array of strings");
            }
        }
    }

    /// The simulator's own knobs: `x_sim_outcome` ("completed" | "failed")
    /// scripts the outcome, `x_sim_duration` ("30s") the simulated duration.
    pub fn sim_params(&mut self) -> (Option<Outcome>, Option<Duration>) {
        let outcome = match self.opt_str("x_sim_outcome") {
            None => None,
            Some("completed") => Some(Outcome::Completed),
            Some("failed") => Some(Outcome::Failed),
            Some(other) => {
                self.problem(
                    "x_sim_outcome",
                    format!("must be \"completed\" or \"failed\" (got {other:?})"),
                );
                None
            }
        };
        let duration = match self.opt_str("x_sim_duration") {
            None => None,
            Some(s) => match humantime::parse_duration(s) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.problem("x_sim_duration", format!("bad duration: {e}"));
                    None
                }
            },
        };
        (outcome, duration)
    }
}

/// A number from a salt in [lo, hi), for cosmetic values (scores, picks).
pub fn salted(salt: u64, n: u64, lo: f64, hi: f64) -> f64 {
    let x = util::mix64(salt ^ util::mix64(n)) >> 11;
    lo + (hi - lo) * (x as f64 / (1u64 << 53) as f64)
}

/// Picks one of `items` by salt.
pub fn pick<T: Copy>(salt: u64, items: &[T]) -> T {
    items[(util::mix64(salt) % items.len() as u64) as usize]
}

/// 0-100 from a pipeline position.
pub fn pct(p: f64) -> u64 {
    (p.clamp(0.0, 1.0) * 100.0).round() as u64
}
