//! Guards in front of the control API against the web pages its user
//! visits. The API listens on loopback and, by default, needs no token, so
//! the threats are a browser's:
//!
//! - **Cross-site requests.** A page on any site can send a POST to
//!   `127.0.0.1:7700` without asking (no CORS preflight) as long as its
//!   content type is `text/plain`, `application/x-www-form-urlencoded`,
//!   `multipart/form-data` or absent. So a request that changes anything
//!   (any method but GET, HEAD, OPTIONS) must be JSON (`Content-Type:
//!   application/json`, which a page cannot send across sites without a
//!   preflight this API never grants) or carry the bearer token; a DELETE
//!   without a body may omit the content type (no page can send a DELETE
//!   across sites without a preflight either). And such a request is
//!   refused (403) when the browser says it comes from elsewhere: a
//!   `Sec-Fetch-Site` other than `same-origin`/`none`, or an `Origin` that
//!   is not the daemon's own (the `Host` it was sent to) nor a name in
//!   `daemon.allowed_hosts`. A page served by the daemon itself is
//!   same-origin and passes.
//! - **DNS rebinding.** A page on `attacker.example` can make its name
//!   resolve to 127.0.0.1 and then read the API as "its own" site; the
//!   request still says `Host: attacker.example`. So a `Host` that is not an
//!   IP literal, `localhost` or a name in `daemon.allowed_hosts` gets 421.
//!   An IP literal cannot be rebound, so every one is accepted (the listen
//!   address, or any of the machine's when listening on 0.0.0.0).
//!
//! `/webhooks/*` is exempt from both: providers call it from their servers,
//! under whatever name the user registered, and a webhook is signed or only
//! a hint. `/healthz` is exempt from the host rule (probes use any name; it
//! answers "ok" and nothing else).

use super::auth::Auth;
use super::errors::ApiError;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, RwLock};

/// One `daemon.allowed_hosts` entry: a host name, and a port if given
/// (without one, any port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    name: String,
    port: Option<u16>,
}

impl AllowedHost {
    /// `name` or `name:port`; `None` for anything else (a URL, a path, a
    /// wildcard, an empty name).
    pub fn parse(entry: &str) -> Option<AllowedHost> {
        let (name, port) = split_host(entry)?;
        let ok = !name.is_empty()
            && (is_ip_literal(&name)
                || name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
        ok.then_some(AllowedHost { name, port })
    }

    fn matches(&self, name: &str, port: Option<u16>) -> bool {
        self.name == name && (self.port.is_none() || self.port == port)
    }
}

/// Splits `host[:port]` (IPv6 in brackets) into the lower-cased host,
/// without a trailing dot, and the port. `None` when malformed.
fn split_host(s: &str) -> Option<(String, Option<u16>)> {
    let s = s.trim();
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{inside}]"), port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (s.to_string(), None),
        }
    };
    if host.contains([':', '/', '@', '?', '#', '*', ' ']) && !host.starts_with('[') {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    let host = host.to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host).to_string();
    Some((host, port))
}

fn is_ip_literal(host: &str) -> bool {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
        None => host.parse::<Ipv4Addr>().is_ok(),
    }
}

/// What the guards need: the allowed names (replaced on SIGHUP) and the
/// token, which exempts a request from the content-type rule.
pub struct Guard {
    allowed: RwLock<Vec<AllowedHost>>,
    auth: Arc<Auth>,
}

impl Guard {
    pub fn new(allowed_hosts: &[String], auth: Arc<Auth>) -> Guard {
        let g = Guard {
            allowed: RwLock::new(Vec::new()),
            auth,
        };
        g.set_allowed(allowed_hosts);
        g
    }

    /// Entries that do not parse were refused by the config check.
    pub fn set_allowed(&self, allowed_hosts: &[String]) {
        let list = allowed_hosts
            .iter()
            .filter_map(|h| AllowedHost::parse(h))
            .collect();
        *self.allowed.write().unwrap_or_else(|e| e.into_inner()) = list;
    }

    fn listed(&self, name: &str, port: Option<u16>) -> bool {
        self.allowed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|a| a.matches(name, port))
    }

    fn host_allowed(&self, name: &str, port: Option<u16>) -> bool {
        is_ip_literal(name) || name == "localhost" || self.listed(name, port)
    }
}

fn refuse(status: u16, code: &'static str, message: String) -> Response {
    ApiError {
        status,
        code,
        message,
    }
    .into_response()
}

/// The `Host` a request was sent to (the header, else an absolute URI's
/// authority), as the client wrote it.
fn host_of(req: &Request) -> Option<String> {
    match req.headers().get(header::HOST) {
        Some(v) => Some(String::from_utf8_lossy(v.as_bytes()).into_owned()),
        None => req.uri().authority().map(|a| a.to_string()),
    }
}

/// 421 for a `Host` that is not this daemon's (see the module docs).
pub async fn known_host(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/healthz" || path.starts_with("/webhooks/") {
        return next.run(req).await;
    }
    // No Host at all: not a browser (every browser sends one).
    if let Some(host) = host_of(&req) {
        let ok = split_host(&host).is_some_and(|(name, port)| g.host_allowed(&name, port));
        if !ok {
            let shown: String = host.chars().take(100).collect();
            return refuse(
                421,
                "misdirected",
                format!("Host {shown:?} is not a name of this daemon: use its IP address or localhost, or list the name in daemon.allowed_hosts"),
            );
        }
    }
    next.run(req).await
}

/// 403 for a request that changes something and could come from another
/// site's page (see the module docs).
pub async fn same_site(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if safe || req.uri().path().starts_with("/webhooks/") {
        return next.run(req).await;
    }
    if let Some(why) = cross_site(&g, req.headers(), host_of(&req).as_deref()) {
        return refuse(403, "cross_site", format!("refused: {why}; requests that change jobs are taken only from this daemon's own pages and from programs"));
    }
    let headers = req.headers();
    let token = g.auth.accepts(headers.get(header::AUTHORIZATION));
    let content_type = headers.get(header::CONTENT_TYPE);
    let json = content_type.is_some_and(|v| {
        let v = String::from_utf8_lossy(v.as_bytes());
        let media = v.split(';').next().unwrap_or("").trim();
        media.eq_ignore_ascii_case("application/json")
    });
    let bodiless_delete = req.method() == Method::DELETE && content_type.is_none();
    if !(json || token || bodiless_delete) {
        return refuse(
            403,
            "json_required",
            format!(
                "a {} needs Content-Type: application/json (or the bearer token): other content types are what any web page can send here",
                req.method()
            ),
        );
    }
    next.run(req).await
}

/// Why the browser's own headers say this request comes from another site.
fn cross_site(g: &Guard, headers: &HeaderMap, host: Option<&str>) -> Option<String> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = String::from_utf8_lossy(site.as_bytes()).to_ascii_lowercase();
        if site != "same-origin" && site != "none" {
            return Some(format!("Sec-Fetch-Site is {site:?}"));
        }
    }
    let origin = headers.get(header::ORIGIN)?;
    let origin = String::from_utf8_lossy(origin.as_bytes()).into_owned();
    let shown: String = origin.chars().take(100).collect();
    let Some((name, port)) = origin_host(&origin) else {
        return Some(format!("Origin {shown:?} is not this daemon"));
    };
    let same_origin = host
        .and_then(split_host)
        .is_some_and(|(h, hp)| h == name && hp.unwrap_or(default_port(&origin)) == port);
    if same_origin || g.listed(&name, Some(port)) {
        None
    } else {
        Some(format!("Origin {shown:?} is another site"))
    }
}

/// Host (lower-cased, IPv6 in brackets) and port, explicit or the
/// scheme's, of an `Origin` value; `None` for `null` and anything that is
/// not an http(s) origin.
fn origin_host(origin: &str) -> Option<(String, u16)> {
    let url = reqwest::Url::parse(origin).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let host = url.host_str()?.to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host).to_string();
    Some((host, url.port_or_known_default()?))
}

/// The port a `Host` without one means, for a request from `origin`.
fn default_port(origin: &str) -> u16 {
    if origin.starts_with("https:") {
        443
    } else {
        80
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn host_headers_split_into_name_and_port() {
        assert_eq!(
            split_host("LocalHost.:7700"),
            Some(("localhost".into(), Some(7700)))
        );
        assert_eq!(split_host("[::1]:80"), Some(("[::1]".into(), Some(80))));
        assert_eq!(split_host("[::1]"), Some(("[::1]".into(), None)));
        assert_eq!(split_host("a.example"), Some(("a.example".into(), None)));
        for bad in ["a:b:c", "a:99999", "[::1", "http://a", "a/b", "*.a"] {
            assert_eq!(AllowedHost::parse(bad), None, "{bad}");
        }
        assert!(is_ip_literal("127.0.0.1") && is_ip_literal("[::1]"));
        assert!(!is_ip_literal("127.1") && !is_ip_literal("localhost"));
    }

    #[test]
    fn origins_are_compared_with_the_host_and_the_allowed_names() {
        let g = Guard::new(
            &["dash.example".into(), "fixed.example:8443".into()],
            Arc::new(Auth::default()),
        );
        let with = |origin: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ORIGIN, origin.parse().unwrap());
            h
        };
        let host = Some("127.0.0.1:7700");
        assert_eq!(cross_site(&g, &with("http://127.0.0.1:7700"), host), None);
        assert!(cross_site(&g, &with("http://127.0.0.1:3000"), host).is_some());
        assert!(cross_site(&g, &with("http://localhost:7700"), host).is_some());
        assert!(cross_site(&g, &with("null"), host).is_some());
        assert!(cross_site(&g, &with("http://evil.example"), host).is_some());
        assert_eq!(cross_site(&g, &with("https://dash.example"), host), None);
        assert_eq!(
            cross_site(&g, &with("https://fixed.example:8443"), host),
            None
        );
        assert!(cross_site(&g, &with("https://fixed.example"), host).is_some());
        assert_eq!(
            cross_site(&g, &with("http://localhost"), Some("localhost")),
            None
        );
    }
}
