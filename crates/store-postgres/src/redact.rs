//! Errors without secrets. tokio-postgres keeps its `Config` out of its
//! own messages, but an error's causes (a parse error quoting the text it
//! choked on, a server message) are outside its control and ours: every
//! message this crate returns passes through [`Redactor::text`], which
//! takes out the URL and the password wherever they appear.

use std::error::Error as _;
use std::str::FromStr;
use switchyard_store::StoreError;

const REDACTED: &str = "<redacted>";

pub(crate) struct Redactor {
    /// Longest first, so that the URL goes before the password inside it.
    secrets: Vec<String>,
}

/// Parses the URL (or key=value string); the error says what is wrong
/// without repeating it.
pub(crate) fn parse(url: &str) -> Result<(tokio_postgres::Config, Redactor), StoreError> {
    let mut r = Redactor {
        secrets: vec![url.to_string()],
    };
    // The password as written in the URL (percent-encoded) and as decoded.
    if let Some(rest) = url.split_once("://").map(|(_, r)| r) {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if let Some((_, pw)) = userinfo.split_once(':') {
                r.add(pw);
            }
        }
    }
    let config = tokio_postgres::Config::from_str(url).map_err(|e| {
        StoreError::Storage(format!(
            "the database URL is not valid: {}",
            r.text(&chain(&e))
        ))
    })?;
    if let Some(pw) = config.get_password() {
        r.add(&String::from_utf8_lossy(pw));
    }
    Ok((config, r))
}

/// An error and its causes, as one line.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        next = s.source();
    }
    out
}

impl Redactor {
    fn add(&mut self, secret: &str) {
        // A one-character password would redact every such character of
        // every message; a password that short is no secret anyway.
        if secret.len() >= 3 && !self.secrets.iter().any(|s| s == secret) {
            self.secrets.push(secret.to_string());
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    pub(crate) fn text(&self, message: &str) -> String {
        let mut out = message.to_string();
        for s in &self.secrets {
            if !s.is_empty() && out.contains(s.as_str()) {
                out = out.replace(s.as_str(), REDACTED);
            }
        }
        out
    }

    pub(crate) fn db(&self, e: tokio_postgres::Error) -> StoreError {
        StoreError::Storage(self.text(&describe(&e)))
    }

    pub(crate) fn pool(&self, e: deadpool_postgres::PoolError) -> StoreError {
        use deadpool_postgres::PoolError;
        let text = match &e {
            PoolError::Backend(b) => format!("connecting to the database: {}", describe(b)),
            PoolError::Timeout(_) => "timed out waiting for a database connection".into(),
            PoolError::Closed => return StoreError::Closed,
            other => format!("database connection pool: {}", chain(other)),
        };
        StoreError::Storage(self.text(&text))
    }
}

/// A database error with its server message (and SQLSTATE), or the
/// client-side cause.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("database error {}: {}", db.code().code(), db.message()),
        None => match e.source() {
            Some(_) => chain(e),
            None => e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_url_and_the_password_never_come_back() {
        let url = "postgres://sy:s%40cret-pw@db.example:5432/switchyard";
        let (_, r) = parse(url).unwrap();
        let msg = format!("failed for {url}: password s@cret-pw and s%40cret-pw");
        let out = r.text(&msg);
        assert!(!out.contains("cret-pw"), "{out}");
        assert!(out.contains("failed for <redacted>"), "{out}");
        let bad = "postgres://sy:hunter22@db.example:notaport/x";
        let e = parse(bad).err().unwrap().to_string();
        assert!(!e.contains("hunter22") && !e.contains(bad), "{e}");
        assert!(e.contains("not valid"), "{e}");
    }
}
