//! The tolerant field readers and the param checker the adapters share
//! (re-exported from [`crate::http`], where they used to live): provider
//! bodies are read as loosely as the documents allow, and a batch's params
//! are checked with every problem collected.

use crate::http::{quote, scalar_text};
use crate::{ParamProblem, WebhookCheck};
use reqwest::Url;
use serde_json::{Map, Value};
use std::ops::RangeInclusive;

// ---- tolerant readers -------------------------------------------------------

/// A non-empty string field (numbers are accepted as ids).
pub fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(scalar_text)
}

/// The value at a path of object keys.
pub fn at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

/// A percentage, rounded and clamped to 0..=100.
pub fn percent(v: Option<&Value>) -> Option<u8> {
    let p = v?.as_f64()?;
    if !p.is_finite() {
        return None;
    }
    // Clamped first, so the cast cannot truncate.
    Some(p.round().clamp(0.0, 100.0) as u8)
}

/// A credit amount: a non-negative integer, or a float rounded up (an
/// upward error only over-reserves).
pub fn credits(v: Option<&Value>) -> Option<u64> {
    let v = v?;
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let f = v.as_f64()?;
    if !f.is_finite() || f < 0.0 || f > u64::MAX as f64 {
        return None;
    }
    // Range checked just above, so the cast is exact up to f64 precision.
    Some(f.ceil() as u64)
}

/// An object's string field, as long as it is an `http(s)` URL.
pub fn url_field(v: &Value, key: &str) -> Option<String> {
    text(v, key).filter(|u| is_http_url(u))
}

pub fn is_http_url(s: &str) -> bool {
    Url::parse(s)
        .map(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
        })
        .unwrap_or(false)
}

/// The job id an unsigned webhook names, if it names one plausibly. The body
/// is otherwise ignored: an unsigned webhook is only a reason to poll.
pub fn unsigned_hint(body: &[u8], paths: &[&[&str]]) -> WebhookCheck {
    let provider_job_id = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        paths
            .iter()
            .find_map(|p| at(&v, p).and_then(scalar_text))
            .filter(|id| plausible_id(id))
    });
    WebhookCheck::Hint {
        provider_job_id,
        verified: false,
    }
}

/// Ids are short printable tokens at every provider; anything else in a
/// webhook body is not worth a lookup.
pub fn plausible_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 200 && id.chars().all(|c| c.is_ascii_graphic())
}

// ---- param checking ---------------------------------------------------------

/// Collects every problem with a job's params instead of stopping at the
/// first, because the contract rejects a batch with all its problems listed.
/// A `null` field counts as absent.
pub struct Params<'a> {
    map: Option<&'a Map<String, Value>>,
    problems: Vec<ParamProblem>,
}

impl<'a> Params<'a> {
    pub fn new(params: &'a Value) -> Self {
        let mut problems = Vec::new();
        let map = params.as_object();
        if map.is_none() {
            problems.push(ParamProblem::new(
                "params",
                "must be a table (JSON object) of the provider's create fields",
            ));
        }
        Params { map, problems }
    }

    fn field(name: &str) -> String {
        format!("params.{name}")
    }

    pub fn problem(&mut self, name: &str, message: impl Into<String>) {
        self.problems
            .push(ParamProblem::new(Self::field(name), message));
    }

    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.map?.get(name).filter(|v| !v.is_null())
    }

    fn require(&mut self, name: &str) -> Option<&'a Value> {
        let v = self.get(name);
        if v.is_none() && self.map.is_some() {
            self.problem(name, "is required");
        }
        v
    }

    fn string_of(&mut self, name: &str, v: &'a Value) -> Option<&'a str> {
        match v.as_str() {
            Some(s) => Some(s),
            None => {
                self.problem(name, format!("must be a string, not {}", kind(v)));
                None
            }
        }
    }

    pub fn required_string(&mut self, name: &str) -> Option<&'a str> {
        let v = self.require(name)?;
        let s = self.string_of(name, v)?;
        if s.trim().is_empty() {
            self.problem(name, "must not be empty");
            return None;
        }
        Some(s)
    }

    pub fn optional_string(&mut self, name: &str) -> Option<&'a str> {
        let v = self.get(name)?;
        self.string_of(name, v)
    }

    fn url_of(&mut self, name: &str, s: &'a str) -> Option<&'a str> {
        if is_http_url(s) {
            Some(s)
        } else {
            self.problem(name, format!("must be an http(s) URL, not {:?}", quote(s)));
            None
        }
    }

    pub fn required_url(&mut self, name: &str) -> Option<&'a str> {
        let s = self.required_string(name)?;
        self.url_of(name, s)
    }

    pub fn optional_url(&mut self, name: &str) -> Option<&'a str> {
        let s = self.optional_string(name)?;
        self.url_of(name, s)
    }

    fn integer_of(
        &mut self,
        name: &str,
        v: &Value,
        range: Option<&RangeInclusive<i64>>,
    ) -> Option<i64> {
        let Some(n) = v.as_i64() else {
            let why = if v.is_number() {
                "a whole number"
            } else {
                "an integer"
            };
            self.problem(name, format!("must be {why}, not {}", kind_value(v)));
            return None;
        };
        if let Some(range) = range {
            if !range.contains(&n) {
                self.problem(
                    name,
                    format!(
                        "must be between {} and {}, not {n}",
                        range.start(),
                        range.end()
                    ),
                );
                return None;
            }
        }
        Some(n)
    }

    pub fn required_integer(&mut self, name: &str, range: RangeInclusive<i64>) -> Option<i64> {
        let v = self.require(name)?;
        self.integer_of(name, v, Some(&range))
    }

    pub fn optional_integer(
        &mut self,
        name: &str,
        range: Option<RangeInclusive<i64>>,
    ) -> Option<i64> {
        let v = self.get(name)?;
        self.integer_of(name, v, range.as_ref())
    }

    pub fn optional_bool(&mut self, name: &str) {
        if let Some(v) = self.get(name) {
            if !v.is_boolean() {
                self.problem(name, format!("must be true or false, not {}", kind(v)));
            }
        }
    }

    pub fn optional_number(&mut self, name: &str) {
        if let Some(v) = self.get(name) {
            if !v.is_number() {
                self.problem(name, format!("must be a number, not {}", kind(v)));
            }
        }
    }

    pub fn optional_object(&mut self, name: &str) {
        if let Some(v) = self.get(name) {
            if !v.is_object() {
                self.problem(name, format!("must be a table (object), not {}", kind(v)));
            }
        }
    }

    pub fn optional_string_array(&mut self, name: &str) {
        if let Some(v) = self.get(name) {
            match v.as_array() {
                Some(items) => {
                    let bad: Vec<usize> = items
                        .iter()
                        .enumerate()
                        .filter(|(_, item)| !item.is_string())
                        .map(|(i, _)| i)
                        .collect();
                    if !bad.is_empty() {
                        self.problem(
                            name,
                            format!("must be a list of strings (items {bad:?} are not)"),
                        );
                    }
                }
                None => self.problem(name, format!("must be a list of strings, not {}", kind(v))),
            }
        }
    }

    pub fn finish(self) -> Result<(), Vec<ParamProblem>> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(self.problems)
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

fn kind_value(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        other => kind(other).to_string(),
    }
}
