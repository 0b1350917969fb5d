//! Batch files are written by people and by scripts, so every problem is
//! reported at once, with the file and the line of the job it concerns, and a
//! batch with any invalid job is rejected whole (nothing half-queued).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use switchyard_core::JobSpec;

/// One problem in a batch, located as precisely as the format allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Index of the job in the batch (0-based), if the problem is about one.
    pub index: Option<usize>,
    pub key: Option<String>,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl Problem {
    pub fn render(&self, file: &str) -> String {
        let loc = match self.line {
            Some(l) => format!("{file}:{l}"),
            None => file.to_string(),
        };
        match &self.key {
            Some(k) => format!("{loc}: job {k:?}: {}", self.message),
            None => format!("{loc}: {}", self.message),
        }
    }
}

/// A parsed batch: the jobs, and the line each one starts on.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub jobs: Vec<JobSpec>,
    pub lines: Vec<Option<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlBatch {
    #[serde(default)]
    jobs: Vec<toml::Spanned<RawJob>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    key: String,
    provider: String,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    params: Option<serde_json::Value>,
}

impl From<RawJob> for JobSpec {
    fn from(r: RawJob) -> JobSpec {
        JobSpec {
            key: r.key,
            provider: r.provider,
            priority: r.priority,
            params: r
                .params
                .unwrap_or_else(|| serde_json::Value::Object(Default::default())),
        }
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Parses a batch: JSON Lines when the file name ends in `.jsonl`/`.ndjson`
/// or the text starts with `{`, TOML otherwise.
pub fn parse(name: &str, text: &str) -> Result<Batch, Vec<Problem>> {
    let trimmed = text.trim_start();
    let jsonl = name.ends_with(".jsonl") || name.ends_with(".ndjson") || trimmed.starts_with('{');
    if jsonl {
        parse_jsonl(text)
    } else {
        parse_toml(text)
    }
}

fn parse_toml(text: &str) -> Result<Batch, Vec<Problem>> {
    let parsed: TomlBatch = toml::from_str(text).map_err(|e| {
        vec![Problem {
            index: None,
            key: None,
            line: e.span().map(|s| line_of(text, s.start)),
            message: e.message().trim().to_string(),
        }]
    })?;
    let mut batch = Batch::default();
    for spanned in parsed.jobs {
        let line = line_of(text, spanned.span().start);
        batch.jobs.push(spanned.into_inner().into());
        batch.lines.push(Some(line));
    }
    Ok(batch)
}

fn parse_jsonl(text: &str) -> Result<Batch, Vec<Problem>> {
    let mut batch = Batch::default();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        match serde_json::from_str::<RawJob>(l) {
            Ok(raw) => {
                batch.jobs.push(raw.into());
                batch.lines.push(Some(i + 1));
            }
            Err(e) => problems.push(Problem {
                index: None,
                key: None,
                line: Some(i + 1),
                message: format!("not a valid job: {e}"),
            }),
        }
    }
    if problems.is_empty() {
        Ok(batch)
    } else {
        Err(problems)
    }
}

/// Reads and parses a batch file.
pub fn read(path: &Path) -> Result<Batch, Vec<Problem>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Problem {
            index: None,
            key: None,
            line: None,
            message: format!("cannot read: {e}"),
        }]
    })?;
    parse(&path.to_string_lossy(), &text)
}

/// What intake needs to know to check a job: the providers by name, with
/// their adapters' validators.
pub trait Validator {
    /// `None` when no provider has that name.
    fn validate(&self, provider: &str, params: &serde_json::Value) -> Option<Vec<String>>;
    fn provider_names(&self) -> Vec<String>;
}

/// Checks every job; returns every problem, indexed by job.
pub fn check(jobs: &[JobSpec], v: &dyn Validator) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let names: HashSet<String> = v.provider_names().into_iter().collect();
    for (i, job) in jobs.iter().enumerate() {
        let mut push = |message: String| {
            problems.push(Problem {
                index: Some(i),
                key: Some(job.key.clone()),
                line: None,
                message,
            })
        };
        if job.key.trim().is_empty() {
            push("key must not be empty".into());
        } else if job.key.len() > 200 {
            push("key must be at most 200 bytes".into());
        } else if job.key.chars().any(|c| c.is_control() || c == '/') {
            push("key must not contain control characters or '/'".into());
        }
        if let Some(first) = seen.insert(job.key.as_str(), i) {
            push(format!("key repeats job #{} of this batch", first + 1));
        }
        if !job.params.is_object() {
            push("params must be a table (the provider's create body)".into());
            continue;
        }
        match v.validate(&job.provider, &job.params) {
            None => {
                let mut known: Vec<_> = names.iter().cloned().collect();
                known.sort();
                push(format!(
                    "provider {:?} is not configured (configured: {})",
                    job.provider,
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ))
            }
            Some(list) => {
                for m in list {
                    push(m);
                }
            }
        }
    }
    problems
}

/// Puts the file's line numbers on problems found by index.
pub fn locate(problems: &mut [Problem], batch: &Batch) {
    for p in problems {
        if p.line.is_none() {
            if let Some(i) = p.index {
                p.line = batch.lines.get(i).copied().flatten();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Only(&'static str);
    impl Validator for Only {
        fn validate(&self, provider: &str, params: &serde_json::Value) -> Option<Vec<String>> {
            (provider == self.0).then(|| {
                if params.get("image_url").is_some() {
                    vec![]
                } else {
                    vec!["params.image_url: required".into()]
                }
            })
        }
        fn provider_names(&self) -> Vec<String> {
            vec![self.0.into()]
        }
    }

    #[test]
    fn toml_problems_carry_the_line_of_their_job() {
        let text = "[[jobs]]\nkey = \"a\"\nprovider = \"viggle\"\nparams = { image_url = \"https://x/y.png\" }\n\n[[jobs]]\nkey = \"b\"\nprovider = \"nope\"\n\n[[jobs]]\nkey = \"a\"\nprovider = \"viggle\"\n";
        let batch = parse("b.toml", text).unwrap();
        let mut problems = check(&batch.jobs, &Only("viggle"));
        locate(&mut problems, &batch);
        let rendered: Vec<String> = problems.iter().map(|p| p.render("b.toml")).collect();
        assert_eq!(rendered.len(), 3, "{rendered:?}");
        assert!(rendered[0].starts_with("b.toml:6: job \"b\": provider \"nope\" is not configured"));
        assert!(rendered[1].starts_with("b.toml:10: job \"a\": key repeats job #1"));
        assert!(rendered[2].starts_with("b.toml:10: job \"a\": params.image_url: required"));
    }

    #[test]
    fn toml_syntax_errors_name_the_line() {
        let err = parse("b.toml", "[[jobs]]\nkey = \"a\"\nprovider = \n").unwrap_err();
        assert_eq!(err[0].line, Some(3), "{err:?}");
    }

    #[test]
    fn jsonl_reports_each_bad_line() {
        let text =
            "{\"key\":\"a\",\"provider\":\"viggle\",\"params\":{}}\nnot json\n\n{\"key\":\"b\"}\n";
        let err = parse("b.jsonl", text).unwrap_err();
        let lines: Vec<_> = err.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![Some(2), Some(4)]);
    }
}
