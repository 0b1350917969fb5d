//! The optional bearer token. Compared as a SHA-256 digest in constant
//! time; never logged.

use super::errors::ApiError;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::{Arc, RwLock};
use switchyard_core::Secret;

/// The control API's bearer token; replaced on SIGHUP.
#[derive(Default)]
pub struct Auth {
    /// SHA-256 of the token: compared in constant time, never logged.
    digest: RwLock<Option<[u8; 32]>>,
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

pub(super) async fn require_token(
    State(auth): State<Arc<Auth>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    let open = path == "/healthz" || path.starts_with("/webhooks/");
    if open || auth.allows(req.headers().get(header::AUTHORIZATION)) {
        return next.run(req).await;
    }
    let mut resp =
        ApiError::new(401, "unauthorized", "missing or wrong bearer token").into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}
