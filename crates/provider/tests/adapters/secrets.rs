//! The API key and the webhook secret never leave through Debug or errors.

use crate::common::{FakeServer, Recorded, Reply, API_KEY, WEBHOOK_SECRET};
use std::sync::Arc;
use switchyard_core::ProviderKind;
use switchyard_provider::{build, Provider, ProviderError};

fn leaks(text: &str) -> bool {
    text.contains(API_KEY) || text.contains(WEBHOOK_SECRET) || text.contains("TOPSECRET")
}

#[tokio::test]
async fn debug_never_shows_the_key() {
    let server = FakeServer::fixed(Reply::ok("{}")).await;
    for kind in ProviderKind::ALL {
        let p = build(
            kind,
            server.settings(kind.sim_prefix()),
            crate::common::client(),
        );
        let debug = format!("{p:?} {:#?}", p);
        assert!(!leaks(&debug), "{kind}: {debug}");
        assert!(debug.contains("<redacted>"), "{kind}: {debug}");
    }
}

/// A hostile provider that quotes the credentials it received in its errors.
fn echo_credentials(status: u16) -> impl Fn(&Recorded) -> Reply {
    move |req: &Recorded| {
        let creds = format!(
            "auth={:?} key={:?}",
            req.header("authorization"),
            req.header("x-api-key")
        );
        let body = serde_json::json!({
            "error": {"code": format!("BAD_{API_KEY}"), "message": format!("rejected {creds} {WEBHOOK_SECRET}")},
        });
        Reply::new(status, body.to_string())
    }
}

#[tokio::test]
async fn errors_never_show_the_key_even_when_the_provider_echoes_it() {
    for status in [400, 401, 402, 403, 404, 409, 422, 500, 503] {
        let server = FakeServer::start(echo_credentials(status)).await;
        for kind in ProviderKind::ALL {
            let p: Arc<dyn Provider> = build(
                kind,
                server.settings(kind.sim_prefix()),
                crate::common::client(),
            );
            let params = serde_json::json!({"script": "x", "product_name": "x", "product_image_url": "https://e.com/x.jpg",
                "segment_count": 1, "model_slug": "m", "prompt": "p", "image_url": "https://e.com/x.png"});
            let mut errors: Vec<ProviderError> = vec![
                p.create("key-1", &params).await.unwrap_err(),
                p.status("job-1").await.unwrap_err(),
            ];
            if let Err(e) = p.cancel("job-1").await {
                errors.push(e);
            }
            if let Err(e) = p.find_by_key("key-1", &params).await {
                errors.push(e);
            }
            for e in errors {
                let text = format!("{e} {e:?}");
                assert!(!leaks(&text), "{kind} {status}: {text}");
            }
        }
        // The key did reach the provider, so the test above is meaningful.
        assert!(server.requests().iter().any(|r| {
            r.header("authorization")
                .is_some_and(|v| v.contains(API_KEY))
                || r.header("x-api-key") == Some(API_KEY)
        }));
    }
}

#[tokio::test]
async fn webhook_rejections_never_show_the_secret() {
    let server = FakeServer::fixed(Reply::ok("{}")).await;
    let p = build(
        ProviderKind::Ugen,
        server.settings("/ugen/api/v1"),
        crate::common::client(),
    );
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("X-UGen-Timestamp", "100".parse().unwrap());
    headers.insert("X-UGen-Signature", "00".parse().unwrap());
    for now in [100, 100_000] {
        match p.verify_webhook(&headers, b"{}", now) {
            switchyard_provider::WebhookCheck::Rejected(reason) => {
                assert!(!leaks(&reason), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }
}
