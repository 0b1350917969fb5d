//! Classification of failures, through real HTTP, for every adapter.

use crate::common::{FakeServer, Reply};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use switchyard_core::{ProviderKind, Secret};
use switchyard_provider::{build, Provider, ProviderError, Settings};

fn all(server: &FakeServer) -> Vec<Arc<dyn Provider>> {
    ProviderKind::ALL
        .iter()
        .map(|k| build(*k, server.settings(k.sim_prefix()), crate::common::client()))
        .collect()
}

/// The status call of every adapter against one canned answer.
async fn status_errors(reply: Reply) -> Vec<ProviderError> {
    let server = FakeServer::fixed(reply).await;
    let mut errors = Vec::new();
    for p in all(&server) {
        errors.push(p.status("job-1").await.expect_err("the answer is an error"));
    }
    errors
}

#[tokio::test]
async fn too_many_requests_with_retry_after_seconds() {
    for err in
        status_errors(Reply::new(429, r#"{"error": "slow down"}"#).header("Retry-After", "7")).await
    {
        assert_eq!(
            err,
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert!(err.is_retryable());
    }
}

#[tokio::test]
async fn too_many_requests_with_retry_after_date() {
    let when = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
    for err in status_errors(Reply::new(429, "").header("Retry-After", &when)).await {
        match err {
            ProviderError::RateLimited {
                retry_after: Some(d),
            } => {
                assert!(
                    d >= Duration::from_secs(27) && d <= Duration::from_secs(30),
                    "{d:?}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
    for err in status_errors(Reply::new(429, "")).await {
        assert_eq!(err, ProviderError::RateLimited { retry_after: None });
    }
}

#[tokio::test]
async fn payment_required_is_insufficient_credits() {
    let body = json!({"error": {"code": "INSUFFICIENT_CREDITS", "message": "Balance 10, need 60", "details": {}}});
    for err in status_errors(Reply::new(402, body.to_string())).await {
        assert!(
            matches!(err, ProviderError::InsufficientCredits(ref m) if m.contains("Balance 10")),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn not_found() {
    for err in status_errors(Reply::new(404, r#"{"detail": "Not found."}"#)).await {
        assert!(
            matches!(err, ProviderError::NotFound(ref m) if m.contains("Not found.")),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn server_errors_are_transient() {
    for status in [500, 502, 504] {
        for err in status_errors(Reply::new(status, "<html>Bad Gateway</html>")).await {
            assert!(
                matches!(err, ProviderError::Transient(_)),
                "{status}: {err:?}"
            );
            assert!(err.is_retryable());
        }
    }
}

#[tokio::test]
async fn malformed_bodies_are_transient() {
    for body in [
        r#"{"data": {"id": "x", "sta"#,
        "",
        "<html></html>",
        "[]",
        "{}",
    ] {
        for err in status_errors(Reply::ok(body)).await {
            assert!(
                matches!(err, ProviderError::Transient(_)),
                "{body:?}: {err:?}"
            );
        }
    }
}

#[tokio::test]
async fn client_errors_are_permanent_with_the_providers_code() {
    let bodies = [
        (
            400,
            json!({"error": {"code": "VALIDATION_ERROR", "message": "segment_count must be <= 10", "details": {"field": "segment_count"}}}),
            "VALIDATION_ERROR",
            "segment_count must be <= 10",
        ),
        (
            422,
            json!({"error_code": "CS-UORC01-002", "error_message": "Unsupported image"}),
            "CS-UORC01-002",
            "Unsupported image",
        ),
        (
            401,
            json!({"success": false, "error": "Invalid API key"}),
            "HTTP_401",
            "Invalid API key",
        ),
        (
            403,
            json!({"error": {"code": "FORBIDDEN", "message": "Workspace suspended"}}),
            "FORBIDDEN",
            "Workspace suspended",
        ),
    ];
    for (status, body, code, message) in bodies {
        for err in status_errors(Reply::new(status, body.to_string())).await {
            assert_eq!(
                err,
                ProviderError::Permanent {
                    code: code.into(),
                    message: message.into()
                },
                "{status}"
            );
            assert!(!err.is_retryable());
        }
    }
    for err in status_errors(Reply::new(401, "Unauthorized")).await {
        assert_eq!(
            err,
            ProviderError::Permanent {
                code: "HTTP_401".into(),
                message: "Unauthorized".into()
            }
        );
    }
}

#[tokio::test]
async fn timeouts_are_transient_and_refused_connections_unavailable() {
    let server = FakeServer::fixed(Reply::ok("{}").delayed(Duration::from_secs(3))).await;
    let client = switchyard_provider::default_client(Duration::from_millis(200)).unwrap();
    for kind in ProviderKind::ALL {
        let p = build(kind, server.settings(kind.sim_prefix()), client.clone());
        let err = p.status("job-1").await.unwrap_err();
        assert!(
            matches!(err, ProviderError::Transient(ref m) if m.contains("timed out")),
            "{kind}: {err:?}"
        );
    }

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    for kind in ProviderKind::ALL {
        let settings = Settings {
            base_url: format!("http://127.0.0.1:{port}{}", kind.sim_prefix()),
            api_key: Some(Secret::new("k")),
            webhook_secret: None,
            ..Default::default()
        };
        let p = build(kind, settings, crate::common::client());
        let err = p.status("job-1").await.unwrap_err();
        assert!(
            matches!(err, ProviderError::Unavailable(_)),
            "a refused connection never reached the provider: {kind}: {err:?}"
        );
    }
}

#[tokio::test]
async fn service_unavailable_means_not_acted_on() {
    for err in status_errors(Reply::new(503, "<html>Service Unavailable</html>")).await {
        assert!(matches!(err, ProviderError::Unavailable(_)), "{err:?}");
    }
}

#[tokio::test]
async fn a_bad_base_url_is_permanent() {
    for kind in ProviderKind::ALL {
        let settings = Settings {
            base_url: "not a url".into(),
            api_key: None,
            webhook_secret: None,
            ..Default::default()
        };
        let p = build(kind, settings, crate::common::client());
        let err = p.status("job-1").await.unwrap_err();
        assert!(
            matches!(err, ProviderError::Permanent { ref code, .. } if code == "invalid_base_url"),
            "{kind}: {err:?}"
        );
    }
}

#[tokio::test]
async fn job_ids_cannot_escape_their_path_segment() {
    let server = FakeServer::fixed(Reply::new(404, "")).await;
    for p in all(&server) {
        let _ = p.status("../../admin?x=1").await;
        let target = server.last().target;
        assert!(target.contains("..%2F..%2Fadmin%3Fx=1"), "{target}");
    }
}
