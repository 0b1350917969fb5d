//! Batch files are written by people and by scripts, so every problem is
//! reported at once, with the file and the line of the job it concerns, and a
//! batch with any invalid job is rejected whole (nothing half-queued).
//!
//! Files are read as a stream, a line at a time, so that checking a batch of
//! tens of megabytes takes memory in proportion to one job, not the file:
//! JSON Lines are one job a line; a TOML batch is cut before each
//! `[[jobs]]` header (outside multi-line strings) and each piece parsed
//! alone, which is what the whole file means (see [`TomlCutter`]). Only a
//! TOML batch written as one `jobs = [...]` array is parsed whole.

mod check;

pub use check::{check, check_local, locate, Checker, Validator};

use serde::{Deserialize, Serialize};
use std::io::BufRead;
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
    /// 1-based column (in characters) on that line, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// Which of the job's fallbacks (1-based) the problem is about, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<usize>,
    pub message: String,
}

impl Problem {
    /// A problem about the whole batch, not one job.
    pub fn batch(message: impl Into<String>) -> Problem {
        Problem {
            index: None,
            key: None,
            line: None,
            column: None,
            fallback: None,
            message: message.into(),
        }
    }

    fn at(line: usize, column: Option<usize>, message: impl Into<String>) -> Problem {
        Problem {
            line: Some(line),
            column,
            ..Problem::batch(message)
        }
    }

    pub fn render(&self, file: &str) -> String {
        let loc = match (self.line, self.column) {
            (Some(l), Some(c)) => format!("{file}:{l}:{c}"),
            (Some(l), None) => format!("{file}:{l}"),
            _ => file.to_string(),
        };
        match &self.key {
            Some(k) => format!("{loc}: job {k:?}: {}", self.message),
            None => format!("{loc}: {}", self.message),
        }
    }
}

/// What an empty batch is told, wherever it comes from.
pub const EMPTY: &str = "no jobs in this batch";

/// A parsed batch: the jobs, the line each one starts on, and the line
/// of each of its fallbacks.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub jobs: Vec<JobSpec>,
    pub lines: Vec<Option<usize>>,
    /// Per job, the line of each `[[jobs.fallback]]` (empty when it has
    /// none, or when they were not written as tables of their own).
    pub fallback_lines: Vec<Vec<usize>>,
}

/// Receives jobs as they are read, with the line each starts on and the
/// lines of its fallbacks (as many as it has, where known).
pub trait Sink {
    fn job(&mut self, job: JobSpec, line: usize, fallback_lines: Vec<usize>);
}

impl Sink for Batch {
    fn job(&mut self, job: JobSpec, line: usize, fallback_lines: Vec<usize>) {
        self.jobs.push(job);
        self.lines.push(Some(line));
        self.fallback_lines.push(fallback_lines);
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlBatch {
    #[serde(default)]
    jobs: Vec<toml::Spanned<JobSpec>>,
}

/// Where the fallbacks of each job of a TOML text are (read a second time,
/// only when the text has any): the rules are [`TomlBatch`]'s, this only
/// finds lines.
#[derive(Deserialize)]
struct FallbackSpans {
    #[serde(default)]
    jobs: Vec<JobFallbackSpans>,
}

#[derive(Deserialize)]
struct JobFallbackSpans {
    #[serde(default)]
    fallback: Vec<toml::Spanned<serde::de::IgnoredAny>>,
}

/// Byte offsets of line starts, for turning many offsets into lines
/// without rescanning the text for each.
struct LineIndex(Vec<usize>);

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex(starts)
    }

    /// 1-based line and column (in characters) of a byte offset.
    fn locate(&self, text: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(text.len());
        let line = self.0.partition_point(|s| *s <= offset);
        let start = self.0[line - 1];
        let column = text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        (line, column)
    }
}

/// Parses TOML batch text whose first line is line `first_line` of the
/// file; jobs go to `sink`, problems to `problems`.
fn parse_toml_piece(
    text: &str,
    first_line: usize,
    sink: &mut dyn Sink,
    problems: &mut Vec<Problem>,
) {
    let index = LineIndex::new(text);
    match toml::from_str::<TomlBatch>(text) {
        Ok(parsed) => {
            let mut spans = if text.contains("fallback") {
                toml::from_str::<FallbackSpans>(text)
                    .map(|f| f.jobs)
                    .unwrap_or_default()
            } else {
                Vec::new()
            }
            .into_iter();
            for spanned in parsed.jobs {
                let (line, _) = index.locate(text, spanned.span().start);
                let fallback_lines = spans
                    .next()
                    .map(|j| {
                        j.fallback
                            .iter()
                            .map(|f| first_line + index.locate(text, f.span().start).0 - 1)
                            .collect()
                    })
                    .unwrap_or_default();
                sink.job(spanned.into_inner(), first_line + line - 1, fallback_lines);
            }
        }
        Err(e) => {
            let message = e.message().trim().to_string();
            problems.push(match e.span() {
                Some(span) => {
                    let (line, column) = index.locate(text, span.start);
                    Problem::at(first_line + line - 1, Some(column), message)
                }
                None => Problem::batch(message),
            });
        }
    }
}

/// Where a TOML text stands at the end of a line, as far as cutting it
/// goes: inside a multi-line string or not. Comments and one-line strings
/// end with their line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Lex {
    #[default]
    Normal,
    /// Inside `"""…"""`.
    MultiBasic,
    /// Inside `'''…'''`.
    MultiLiteral,
}

/// Cuts a TOML batch into pieces of one `[[jobs]]` table each.
///
/// Parsing a piece alone means what parsing the file does: an array of
/// tables gets one element per header, everything up to the next header
/// belongs to that element (its `[jobs.params]` sub-tables too), and a
/// header inside a multi-line string is text, not a cut. What would tie
/// pieces together is the text before the first header: when it holds
/// anything but comments and blank lines, the file is parsed whole.
#[derive(Default)]
struct TomlCutter {
    lex: Lex,
    /// The text since the last cut (the prelude before the first header).
    piece: String,
    piece_line: usize,
    seen_header: bool,
    prelude_has_content: bool,
    /// Set when the file must be parsed whole.
    whole: bool,
}

impl TomlCutter {
    fn new() -> TomlCutter {
        TomlCutter {
            piece_line: 1,
            ..TomlCutter::default()
        }
    }

    fn line(&mut self, line_no: usize, line: &str, sink: &mut dyn Sink, out: &mut Vec<Problem>) {
        if !self.whole && self.lex == Lex::Normal && is_jobs_header(line) {
            if !self.seen_header && self.prelude_has_content {
                self.whole = true;
            } else {
                if self.seen_header {
                    parse_toml_piece(&self.piece, self.piece_line, sink, out);
                }
                self.piece.clear();
                self.piece_line = line_no;
                self.seen_header = true;
            }
        }
        if !self.seen_header && !self.whole {
            let t = line.trim();
            if !(t.is_empty() || t.starts_with('#')) {
                self.prelude_has_content = true;
            }
        }
        self.lex = lex_line(self.lex, line);
        self.piece.push_str(line);
    }

    fn finish(self, sink: &mut dyn Sink, out: &mut Vec<Problem>) {
        parse_toml_piece(&self.piece, self.piece_line, sink, out);
    }
}

/// A line that opens an element of the `jobs` array: `[[jobs]]`, spaces
/// allowed inside the brackets, a comment after.
fn is_jobs_header(line: &str) -> bool {
    let t = line.trim_start();
    if !t.starts_with("[[") {
        return false;
    }
    let mut compact = t
        .split('#')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_whitespace());
    "[[jobs]]".chars().all(|want| compact.next() == Some(want)) && compact.next().is_none()
}

/// The lexical state after `line`, starting in `state`.
fn lex_line(mut state: Lex, line: &str) -> Lex {
    let b = line.as_bytes();
    let run = |i: usize, q: u8| b[i..].iter().take_while(|c| **c == q).count();
    let mut i = 0;
    while i < b.len() {
        match state {
            Lex::Normal => match b[i] {
                b'#' => break,
                q @ (b'"' | b'\'') if run(i, q) >= 3 => {
                    state = if q == b'"' {
                        Lex::MultiBasic
                    } else {
                        Lex::MultiLiteral
                    };
                    i += 3;
                }
                b'"' => {
                    i += 1;
                    while i < b.len() && b[i] != b'"' {
                        i += if b[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
                b'\'' => {
                    i += 1;
                    while i < b.len() && b[i] != b'\'' {
                        i += 1;
                    }
                    i += 1;
                }
                _ => i += 1,
            },
            Lex::MultiBasic if b[i] == b'\\' => i += 2,
            Lex::MultiBasic | Lex::MultiLiteral => {
                let q = if state == Lex::MultiBasic {
                    b'"'
                } else {
                    b'\''
                };
                let n = run(i, q);
                if n >= 3 {
                    // Up to two quotes may sit before the closing three.
                    state = Lex::Normal;
                    i += n.min(5);
                } else {
                    i += n.max(1);
                }
            }
        }
    }
    state
}

/// Whether a batch is JSON Lines: by its name, or (for any other name) by
/// its first non-blank character being `{`.
fn named_jsonl(name: &str) -> bool {
    name.ends_with(".jsonl") || name.ends_with(".ndjson")
}

enum Reader {
    Undecided,
    Jsonl,
    Toml(TomlCutter),
}

/// Reads a batch from `input`, a line at a time, handing each job to
/// `sink`. Every problem is returned (syntax, unknown fields, invalid UTF-8
/// with its line and column); a batch with problems must be refused whole
/// by the caller, whatever `sink` received.
pub fn scan(name: &str, mut input: impl BufRead, sink: &mut dyn Sink) -> Result<(), Vec<Problem>> {
    let mut problems = Vec::new();
    let mut reader = if named_jsonl(name) {
        Reader::Jsonl
    } else {
        Reader::Undecided
    };
    // Blank lines before the first character: kept for TOML (its lines
    // count), nothing for JSON Lines.
    let mut leading = String::new();
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        match input.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                problems.push(Problem::batch(format!("cannot read: {e}")));
                return Err(problems);
            }
        }
        line_no += 1;
        let line = match std::str::from_utf8(&buf) {
            Ok(l) => l,
            Err(e) => {
                let good = &buf[..e.valid_up_to()];
                let column = String::from_utf8_lossy(good).chars().count() + 1;
                problems.push(Problem::at(
                    line_no,
                    Some(column),
                    format!(
                        "invalid UTF-8 (byte 0x{:02X}): a batch must be UTF-8 text",
                        buf[e.valid_up_to()]
                    ),
                ));
                return Err(problems);
            }
        };
        if let Reader::Undecided = reader {
            match line.trim_start().chars().next() {
                None => {
                    leading.push_str(line);
                    continue;
                }
                Some('{') => reader = Reader::Jsonl,
                Some(_) => {
                    let mut cutter = TomlCutter::new();
                    for (i, l) in leading.split_inclusive('\n').enumerate() {
                        cutter.line(i + 1, l, sink, &mut problems);
                    }
                    reader = Reader::Toml(cutter);
                }
            }
        }
        match &mut reader {
            Reader::Undecided => {}
            Reader::Jsonl => {
                let l = line.trim();
                if l.is_empty() || l.starts_with('#') {
                    continue;
                }
                match serde_json::from_str::<JobSpec>(l) {
                    Ok(job) => {
                        let at = vec![line_no; job.fallback.len()];
                        sink.job(job, line_no, at)
                    }
                    Err(e) => {
                        problems.push(Problem::at(line_no, None, format!("not a valid job: {e}")))
                    }
                }
            }
            Reader::Toml(cutter) => cutter.line(line_no, line, sink, &mut problems),
        }
    }
    match reader {
        Reader::Toml(cutter) => cutter.finish(sink, &mut problems),
        // Only blank lines: an empty TOML document (an empty batch).
        Reader::Undecided if !named_jsonl(name) => {
            parse_toml_piece(&leading, 1, sink, &mut problems)
        }
        _ => {}
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Parses a whole batch held in memory (the demo's built-in one, an inbox
/// file already read).
pub fn parse_bytes(name: &str, bytes: &[u8]) -> Result<Batch, Vec<Problem>> {
    let mut batch = Batch::default();
    scan(name, bytes, &mut batch)?;
    Ok(batch)
}

pub fn parse(name: &str, text: &str) -> Result<Batch, Vec<Problem>> {
    parse_bytes(name, text.as_bytes())
}

/// Reads a batch file into `sink`, as a stream.
pub fn scan_file(path: &Path, sink: &mut dyn Sink) -> Result<(), Vec<Problem>> {
    let file =
        std::fs::File::open(path).map_err(|e| vec![Problem::batch(format!("cannot read: {e}"))])?;
    scan(
        &path.to_string_lossy(),
        std::io::BufReader::with_capacity(64 * 1024, file),
        sink,
    )
}

/// Reads and parses a batch file.
pub fn read(path: &Path) -> Result<Batch, Vec<Problem>> {
    let mut batch = Batch::default();
    scan_file(path, &mut batch)?;
    Ok(batch)
}

/// The jobs of a `POST /v1/jobs` body, each read with the same rule as a
/// file's (unknown fields refused); every bad job is reported by index.
pub fn from_json(values: Vec<serde_json::Value>) -> Result<Vec<JobSpec>, Vec<Problem>> {
    let mut jobs = Vec::with_capacity(values.len());
    let mut problems = Vec::new();
    for (i, v) in values.into_iter().enumerate() {
        let key = v.get("key").and_then(|k| k.as_str()).map(String::from);
        match serde_json::from_value::<JobSpec>(v) {
            Ok(job) => jobs.push(job),
            Err(e) => problems.push(Problem {
                index: Some(i),
                key,
                message: format!("not a valid job: {e}"),
                ..Problem::batch("")
            }),
        }
    }
    if problems.is_empty() {
        Ok(jobs)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
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

    /// Cut or whole, a TOML batch means the same jobs on the same lines.
    fn same_as_whole(text: &str) {
        let cut = parse("b.toml", text);
        let mut whole = Batch::default();
        let mut problems = Vec::new();
        parse_toml_piece(text, 1, &mut whole, &mut problems);
        match cut {
            Ok(b) => {
                assert!(problems.is_empty(), "{problems:?}");
                assert_eq!(b.jobs, whole.jobs, "{text}");
                assert_eq!(b.lines, whole.lines, "{text}");
            }
            Err(p) => assert!(!problems.is_empty(), "cut: {p:?}, whole parsed"),
        }
    }

    #[test]
    fn cutting_a_toml_batch_at_its_headers_changes_nothing() {
        same_as_whole("# a batch\n\n[[jobs]]\nkey = \"a\"\nprovider = \"v\"\n[jobs.params]\nimage_url = \"x\"\n\n[[ jobs ]] # second\nkey = \"b\"\nprovider = \"v\"\n");
        // A header inside multi-line strings is text, not a new job.
        same_as_whole("[[jobs]]\nkey = \"a\"\nprovider = \"v\"\nparams = { script = \"\"\"\n[[jobs]]\nkey = \"\"\"\" }\n[[jobs]]\nkey = \"b\"\nprovider = \"v\"\n");
        same_as_whole("[[jobs]]\nkey = \"a\"\nprovider = \"v\"\nparams = { script = '''\n[[jobs]]\n''' }\n[[jobs]]\nkey = 'b\"'\nprovider = \"v\"\n");
        same_as_whole("[[jobs]]\nkey = \"a\\\"\"\nprovider = \"v\" # \"\"\"\n[[jobs]]\nkey = \"b\"\nprovider = \"v\"\n");
        // Text before the first header ties the pieces: parsed whole.
        same_as_whole(
            "jobs = [{ key = \"a\", provider = \"v\" }]\n[[jobs]]\nkey = \"b\"\nprovider = \"v\"\n",
        );
        same_as_whole("jobs = []\n");
        same_as_whole("");
    }

    #[test]
    fn every_broken_toml_job_is_reported_at_its_line() {
        let text = "[[jobs]]\nkey = \"a\"\nprovider = \"v\"\npriorty = 5\n\n[[jobs]]\nkey = \"b\"\nprovider = \"v\"\n\n[[jobs]]\nkey = \"c\"\nprovider = \n";
        let err = parse("b.toml", text).unwrap_err();
        let at: Vec<_> = err.iter().map(|p| (p.line, p.column)).collect();
        assert_eq!(
            at,
            vec![(Some(4), Some(1)), (Some(12), Some(12))],
            "{err:?}"
        );
        assert!(
            err[0].message.contains("unknown field `priorty`"),
            "{err:?}"
        );
    }

    #[test]
    fn invalid_utf8_is_reported_with_line_and_column() {
        for name in ["b.toml", "b.jsonl"] {
            let mut bytes = b"[[jobs]]\nkey = \"caf\xc3\xa9\"\nprovider = \"v\xff\"\n".to_vec();
            if name.ends_with("jsonl") {
                bytes =
                    b"{\"key\":\"a\",\"provider\":\"v\"}\n{\"key\":\"\xc3\xa9\xfe\"}\n".to_vec();
            }
            let err = parse_bytes(name, &bytes).unwrap_err();
            let (line, col) = if name.ends_with("jsonl") {
                (2, 10)
            } else {
                (3, 14)
            };
            assert_eq!(
                (err[0].line, err[0].column),
                (Some(line), Some(col)),
                "{err:?}"
            );
            let shown = err[0].render(name);
            assert!(
                shown.starts_with(&format!("{name}:{line}:{col}: invalid UTF-8")),
                "{shown}"
            );
        }
    }

    #[test]
    fn an_empty_batch_is_a_problem() {
        for (name, text) in [
            ("e.jsonl", ""),
            ("e.toml", "jobs = []\n"),
            ("e.toml", "# none\n"),
        ] {
            let b = parse(name, text).unwrap();
            let problems = check_local(&b);
            assert_eq!(problems.len(), 1, "{name}: {problems:?}");
            assert_eq!(problems[0].message, EMPTY);
        }
    }

    const WITH_FALLBACKS: &str = "[[jobs]]\nkey = \"a\"\nprovider = \"viggle\"\nparams = { image_url = \"https://x/y.png\" }\nfallback_on = [\"failed\", \"budget\"]\n\n[[jobs.fallback]]\nprovider = \"viggle\"\nparams = { image_url = \"https://x/z.png\" }\n\n[[jobs.fallback]] # the last resort\nprovider = \"nope\"\n\n[[jobs]]\nkey = \"b\"\nprovider = \"viggle\"\nparams = { image_url = \"https://x/b.png\" }\n[[jobs.fallback]]\nprovider = \"viggle\"\n[jobs.fallback.params]\nprompt = \"no image\"\n";

    #[test]
    fn fallbacks_are_read_and_each_bad_one_is_reported_at_its_own_line() {
        let batch = parse("b.toml", WITH_FALLBACKS).unwrap();
        assert_eq!(batch.jobs[0].fallback.len(), 2);
        assert_eq!(
            batch.jobs[0].fallback_on,
            Some(vec![
                switchyard_core::FallbackOn::Failed,
                switchyard_core::FallbackOn::Budget
            ])
        );
        assert_eq!(batch.jobs[1].fallback_on, None);
        assert_eq!(batch.fallback_lines, vec![vec![7, 11], vec![18]]);
        let mut c = Checker::new(Some(&Only("viggle")));
        scan("b.toml", WITH_FALLBACKS.as_bytes(), &mut c).unwrap();
        let rendered: Vec<String> = c.finish().iter().map(|p| p.render("b.toml")).collect();
        assert_eq!(
            rendered,
            vec![
                "b.toml:11: job \"a\": fallback #2 (provider \"nope\"): provider \"nope\" is not configured (configured: viggle)",
                "b.toml:18: job \"b\": fallback #1 (provider \"viggle\"): params.image_url: required",
            ]
        );
        // Found by the daemon (by index), placed by the client.
        let mut problems = check(&batch.jobs, &Only("viggle"));
        assert_eq!(problems[0].fallback, Some(2));
        locate(&mut problems, &batch);
        let lines: Vec<_> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![Some(11), Some(18)]);
    }

    #[test]
    fn fallbacks_in_json_lines_and_the_rules_of_fallback_on() {
        let text = "{\"key\":\"a\",\"provider\":\"viggle\",\"params\":{\"image_url\":\"u\"},\"fallback\":[{\"provider\":\"nope\",\"params\":{}}]}\n{\"key\":\"b\",\"provider\":\"viggle\",\"params\":{\"image_url\":\"u\"},\"fallback_on\":[\"budget\"]}\n{\"key\":\"c\",\"provider\":\"viggle\",\"params\":{\"image_url\":\"u\"},\"fallback_on\":[],\"fallback\":[{\"provider\":\"viggle\",\"params\":{\"image_url\":\"v\"}}]}\n";
        let mut c = Checker::new(Some(&Only("viggle")));
        scan("b.jsonl", text.as_bytes(), &mut c).unwrap();
        let rendered: Vec<String> = c.finish().iter().map(|p| p.render("b.jsonl")).collect();
        assert_eq!(rendered.len(), 3, "{rendered:?}");
        assert!(rendered[0].starts_with("b.jsonl:1: job \"a\": fallback #1 (provider \"nope\")"));
        assert!(rendered[1]
            .starts_with("b.jsonl:2: job \"b\": fallback_on is set but the job names no fallback"));
        assert!(rendered[2].starts_with("b.jsonl:3: job \"c\": fallback_on is empty"));
        // An unknown reason, or an unknown field of a fallback, is refused
        // where it is written.
        let err = parse(
            "b.toml",
            "[[jobs]]\nkey = \"a\"\nprovider = \"v\"\nfallback_on = [\"late\"]\n",
        )
        .unwrap_err();
        assert_eq!(err[0].line, Some(4), "{err:?}");
        assert!(err[0].message.contains("unknown variant `late`"), "{err:?}");
        let err = parse(
            "b.toml",
            "[[jobs]]\nkey = \"a\"\nprovider = \"v\"\n[[jobs.fallback]]\nprovider = \"w\"\nparms = {}\n",
        )
        .unwrap_err();
        assert_eq!(err[0].line, Some(6), "{err:?}");
        assert!(err[0].message.contains("unknown field `parms`"), "{err:?}");
    }
}
