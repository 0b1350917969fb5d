//! The optional bearer token. Compared as a SHA-256 digest in constant
//! time; never logged.
//!
//! The dashboard cannot put a header on a `<video src>` or an
//! `EventSource`, so a page that was given the token gets it back as a
//! session cookie (`POST /v1/session`): `HttpOnly` (no script reads it),
//! `SameSite=Strict` (no other site's page makes the browser send it). Its
//! value is derived from the token, not the token itself, so a copied
//! cookie does not give the token for the CLI, and a new token (SIGHUP)
//! ends every session. A cookie authorizes reads and, through the guards in
//! `guard.rs`, only same-site JSON changes: it never stands in for the
//! token in the content-type rule.

use super::errors::ApiError;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::{Arc, RwLock};
use switchyard_core::Secret;

/// The session cookie's name, before its port.
const COOKIE: &str = "switchyard_session";

/// The session cookie's name for a request sent to `host` (its `Host`
/// header): browsers keep cookies per host name, whatever the port, so two
/// daemons on one machine (or one reached through a tunnel on another
/// port) would otherwise overwrite each other's session.
pub fn cookie_name(host: Option<&HeaderValue>) -> String {
    let port = host
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.rsplit_once(':'))
        .map(|(_, p)| p)
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or("80");
    format!("{COOKIE}_{port}")
}

/// The control API's bearer token; replaced on SIGHUP.
#[derive(Default)]
pub struct Auth {
    /// SHA-256 of the token: compared in constant time, never logged.
    digest: RwLock<Option<[u8; 32]>>,
}

/// Routes that carry no data and so need no token: the dashboard's shells
/// and assets (the page asks for the token itself), health, webhooks.
pub(super) fn open_path(path: &str) -> bool {
    path == "/healthz"
        || path.starts_with("/webhooks/")
        || path == "/"
        || path.starts_with("/job/")
        || path.starts_with("/assets/")
}

impl Auth {
    pub fn new(token: Option<&Secret>) -> Auth {
        let auth = Auth::default();
        auth.set(token);
        auth
    }

    pub fn set(&self, token: Option<&Secret>) {
        let d = token.map(|t| digest(t.expose().as_bytes()));
        *self.digest.write().unwrap_or_else(|e| e.into_inner()) = d;
    }

    pub fn enabled(&self) -> bool {
        self.digest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// True when a token is configured and `header` carries it.
    pub fn accepts(&self, header: Option<&HeaderValue>) -> bool {
        self.enabled() && self.allows(header)
    }

    /// The session cookie's value for `token`, when it is the right one.
    pub fn session_for(&self, token: &str) -> Option<String> {
        let want = (*self.digest.read().unwrap_or_else(|e| e.into_inner()))?;
        let right: bool =
            subtle::ConstantTimeEq::ct_eq(&digest(token.as_bytes())[..], &want[..]).into();
        right.then(|| hex_of(&session_value(&want)))
    }

    /// True when a token is configured and the request's `Cookie` header
    /// carries a session made with it, under the name for its `Host`.
    fn cookie_allows(&self, cookies: Option<&HeaderValue>, host: Option<&HeaderValue>) -> bool {
        let Some(want) = *self.digest.read().unwrap_or_else(|e| e.into_inner()) else {
            return false;
        };
        let want = hex_of(&session_value(&want));
        let Some(cookies) = cookies.and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let name = cookie_name(host);
        cookies
            .split(';')
            .filter_map(|c| c.trim().split_once('='))
            .filter(|(n, _)| *n == name)
            .any(|(_, v)| {
                bool::from(subtle::ConstantTimeEq::ct_eq(
                    v.trim().as_bytes(),
                    want.as_bytes(),
                ))
            })
    }

    /// True when no token is configured or `header` carries the right one.
    fn allows(&self, header: Option<&HeaderValue>) -> bool {
        let Some(want) = *self.digest.read().unwrap_or_else(|e| e.into_inner()) else {
            return true;
        };
        let given = header
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        match given {
            Some(t) => bool::from(subtle::ConstantTimeEq::ct_eq(
                &digest(t.as_bytes())[..],
                &want[..],
            )),
            None => false,
        }
    }
}

fn digest(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

/// A session is the token's digest hashed once more under its own label:
/// it proves the token was given, and cannot be turned back into it.
fn session_value(token_digest: &[u8; 32]) -> [u8; 32] {
    let mut b = b"switchyard-session\0".to_vec();
    b.extend_from_slice(token_digest);
    digest(&b)
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(super) async fn require_token(
    State(auth): State<Arc<Auth>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    let h = req.headers();
    let session = path == "/v1/session";
    if open_path(path)
        || session
        || auth.allows(h.get(header::AUTHORIZATION))
        || auth.cookie_allows(h.get(header::COOKIE), h.get(header::HOST))
    {
        return next.run(req).await;
    }
    let mut resp =
        ApiError::new(401, "unauthorized", "missing or wrong bearer token").into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}
