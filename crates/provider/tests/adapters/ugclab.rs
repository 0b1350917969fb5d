use crate::common::{fixtures, FakeServer, Reply, API_KEY};
use serde_json::json;
use switchyard_core::JobError;
use switchyard_provider::ugclab::UgcLab;
use switchyard_provider::{
    Lookup, Provider, ProviderError, RemoteState, RemoteStatus, WebhookCheck,
};

const PREFIX: &str = "/ugclab/api/v1";

async fn adapter(server: &FakeServer) -> UgcLab {
    UgcLab::new(server.settings(PREFIX), crate::common::client())
}

#[tokio::test]
async fn status_example_from_the_seed() {
    let server = FakeServer::fixed(Reply::ok(fixtures::UGCLAB_STATUS)).await;
    let status = adapter(&server).await.status("clxxx...").await.unwrap();
    assert_eq!(
        status,
        RemoteStatus {
            provider_job_id: "clxxx...".into(),
            state: RemoteState::Processing,
            raw_status: "PROCESSING".into(),
            progress: Some(45),
            stage: Some("videoGeneration".into()),
            output_urls: vec![],
            credits_charged: Some(125),
            credits_refunded: Some(0),
            error: None,
        }
    );
    let req = server.last();
    assert_eq!(req.method, "GET");
    assert_eq!(req.target, "/ugclab/api/v1/ugc/clxxx...");
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {API_KEY}").as_str())
    );
}

#[tokio::test]
async fn cancel_example_from_the_seed() {
    let server = FakeServer::fixed(Reply::ok(fixtures::UGCLAB_CANCEL)).await;
    let status = adapter(&server).await.cancel("clxxx123").await.unwrap();
    assert_eq!(status.provider_job_id, "clxxx...");
    assert_eq!(status.state, RemoteState::Cancelled);
    assert_eq!(status.raw_status, "CANCELLED");
    assert_eq!(status.credits_refunded, Some(125));
    let req = server.last();
    assert_eq!(req.method, "DELETE");
    assert_eq!(req.target, "/ugclab/api/v1/ugc/clxxx123");
}

#[tokio::test]
async fn create_sends_params_and_key() {
    let server = FakeServer::fixed(Reply::new(
        201,
        r#"{"data": {"id": "clnew1", "status": "PENDING", "creditsCharged": 125}, "meta": {"requestId": "r"}}"#,
    ))
    .await;
    let params = json!({"script": "Hi, I'm Sarah", "actorId": "clactor123"});
    let status = adapter(&server)
        .await
        .create("job-1", &params)
        .await
        .unwrap();
    assert_eq!(status.provider_job_id, "clnew1");
    assert_eq!(status.state, RemoteState::Pending);
    assert_eq!(status.credits_charged, Some(125));
    let req = server.last();
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("POST", "/ugclab/api/v1/ugc")
    );
    assert_eq!(req.json(), params);
    assert_eq!(req.header("idempotency-key"), Some("job-1"));
}

#[tokio::test]
async fn terminal_states() {
    let completed = r#"{"data": {"id": "c1", "status": "COMPLETED", "progress": 100, "videoUrl": "https://cdn.ugclab.app/v.mp4",
        "processingSteps": {"refineScript": "completed", "refineActions": "skipped", "videoGeneration": "completed"},
        "creditsCharged": 125, "creditsRefunded": 0, "errorMessage": null}, "meta": {}}"#;
    let server = FakeServer::fixed(Reply::ok(completed)).await;
    let s = adapter(&server).await.status("c1").await.unwrap();
    assert_eq!(s.state, RemoteState::Completed);
    assert_eq!(s.output_urls, ["https://cdn.ugclab.app/v.mp4"]);
    assert_eq!(s.stage, None);

    let failed = r#"{"data": {"id": "c2", "status": "FAILED", "progress": 30, "videoUrl": null,
        "processingSteps": {"refineScript": "completed", "refineActions": "failed", "videoGeneration": "pending"},
        "creditsCharged": 125, "creditsRefunded": 125, "errorMessage": "Actor rendering failed"}, "meta": {}}"#;
    let server = FakeServer::fixed(Reply::ok(failed)).await;
    let s = adapter(&server).await.status("c2").await.unwrap();
    assert_eq!(s.state, RemoteState::Failed);
    assert_eq!(s.stage.as_deref(), Some("refineActions"));
    assert_eq!(s.credits_refunded, Some(125));
    assert_eq!(
        s.error,
        Some(JobError::new("job_failed", "Actor rendering failed"))
    );

    let saving = r#"{"data": {"id": "c3", "status": "SAVING", "progress": 95}, "meta": {}}"#;
    let server = FakeServer::fixed(Reply::ok(saving)).await;
    let s = adapter(&server).await.status("c3").await.unwrap();
    assert_eq!(
        (s.state, s.stage.as_deref()),
        (RemoteState::Processing, Some("SAVING"))
    );
}

#[tokio::test]
async fn documented_error_codes() {
    let cases = [
        (400, "UGC_PROCESSING", "Cannot cancel job in progress"),
        (400, "UGC_ALREADY_COMPLETED", "Cannot cancel completed job"),
        (400, "UGC_ALREADY_FAILED", "Cannot cancel failed job"),
        (400, "UGC_ALREADY_CANCELLED", "Job is already cancelled"),
    ];
    for (status, code, message) in cases {
        let body = json!({"error": {"code": code, "message": message}}).to_string();
        let server = FakeServer::fixed(Reply::new(status, body)).await;
        let err = adapter(&server).await.cancel("c1").await.unwrap_err();
        assert_eq!(
            err,
            ProviderError::Conflict {
                code: code.into(),
                message: message.into()
            }
        );
    }
    let body =
        json!({"error": {"code": "UGC_NOT_FOUND", "message": "UGC job not found"}}).to_string();
    let server = FakeServer::fixed(Reply::new(404, body)).await;
    let err = adapter(&server).await.status("nope").await.unwrap_err();
    assert!(
        matches!(err, ProviderError::NotFound(ref m) if m.contains("UGC_NOT_FOUND")),
        "{err:?}"
    );

    let body = json!({"error": {"code": "RATE_LIMIT_EXCEEDED", "message": "Too many requests"}})
        .to_string();
    let server = FakeServer::fixed(Reply::new(429, body).header("Retry-After", "12")).await;
    let err = adapter(&server).await.status("c1").await.unwrap_err();
    assert_eq!(
        err,
        ProviderError::RateLimited {
            retry_after: Some(std::time::Duration::from_secs(12))
        }
    );

    let body = json!({"error": {"code": "INTERNAL_ERROR", "message": "Internal server error"}})
        .to_string();
    let server = FakeServer::fixed(Reply::new(500, body)).await;
    let err = adapter(&server).await.status("c1").await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Transient(ref m) if m.contains("INTERNAL_ERROR")),
        "{err:?}"
    );

    // The same codes in a flat body, should UGC Lab use that shape.
    let body = r#"{"error": "UGC_PROCESSING", "message": "Cannot cancel job in progress"}"#;
    let server = FakeServer::fixed(Reply::new(400, body)).await;
    let err = adapter(&server).await.cancel("c1").await.unwrap_err();
    assert!(matches!(err, ProviderError::Conflict { ref code, .. } if code == "UGC_PROCESSING"));
}

#[tokio::test]
async fn validation_estimate_lookup_and_webhooks() {
    let server = FakeServer::fixed(Reply::ok("{}")).await;
    let a = adapter(&server).await;
    assert!(a.validate(&json!({"script": "Hello"})).is_ok());
    for (params, message) in [
        (json!({}), "is required"),
        (json!({"script": 5}), "must be a string"),
        (json!({"script": "  "}), "must not be empty"),
    ] {
        let problems = a.validate(&params).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "params.script");
        assert!(problems[0].message.contains(message), "{}", problems[0]);
    }
    assert_eq!(a.validate(&json!("script")).unwrap_err()[0].field, "params");
    assert_eq!(a.estimate_credits(&json!({"script": "x"})), 125);
    assert!(!a.idempotent_create());
    assert_eq!(
        a.find_by_key("k", &json!({"script": "x"})).await.unwrap(),
        Lookup::Unsupported
    );

    let headers = reqwest::header::HeaderMap::new();
    let hint = a.verify_webhook(
        &headers,
        br#"{"event": "ugc_completed", "data": {"id": "clxxx123", "status": "COMPLETED"}}"#,
        0,
    );
    assert_eq!(
        hint,
        WebhookCheck::Hint {
            provider_job_id: Some("clxxx123".into()),
            verified: false
        }
    );
    let hint = a.verify_webhook(
        &headers,
        br#"{"event": "ugc_failed", "ugcId": "clxxx9"}"#,
        0,
    );
    assert_eq!(
        hint,
        WebhookCheck::Hint {
            provider_job_id: Some("clxxx9".into()),
            verified: false
        }
    );
    for body in [
        &b"not json"[..],
        br#"{"data": {"id": "has spaces in it"}}"#,
        b"{}",
    ] {
        assert_eq!(
            a.verify_webhook(&headers, body, 0),
            WebhookCheck::Hint {
                provider_job_id: None,
                verified: false
            }
        );
    }
    assert!(server.requests().is_empty());
}
