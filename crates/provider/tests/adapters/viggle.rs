use crate::common::{fixtures, FakeServer, Reply, API_KEY};
use serde_json::json;
use switchyard_core::JobError;
use switchyard_provider::viggle::Viggle;
use switchyard_provider::{Lookup, Provider, RemoteState, RemoteStatus, WebhookCheck};

const PREFIX: &str = "/viggle/api";

fn adapter(server: &FakeServer) -> Viggle {
    Viggle::new(server.settings(PREFIX), crate::common::client())
}

#[tokio::test]
async fn status_example_from_the_seed() {
    let server = FakeServer::fixed(Reply::ok(fixtures::VIGGLE_STATUS)).await;
    let s = adapter(&server).status("job_abc123xyz").await.unwrap();
    assert_eq!(
        s,
        RemoteStatus {
            provider_job_id: "job_abc123xyz".into(),
            state: RemoteState::Pending,
            raw_status: "queued".into(),
            progress: Some(60),
            stage: Some("<string>".into()),
            output_urls: vec!["<string>".into(), "<string>".into()],
            credits_charged: None,
            credits_refunded: None,
            error: Some(JobError::new("<string>", "<string>")),
        }
    );
    let req = server.last();
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("GET", "/viggle/api/render/job_abc123xyz")
    );
    assert_eq!(
        req.header("authorization"),
        None,
        "polling is documented as needing no key"
    );
}

#[tokio::test]
async fn status_vocabulary_and_outputs() {
    let cases = [
        (
            json!({"status": "processing", "checkpoint": "dri_done", "progress_pct": 44.5}),
            RemoteState::Processing,
        ),
        (
            json!({"status": "failed", "error_code": "CS-UORC01-009", "error_message": "No person detected"}),
            RemoteState::Failed,
        ),
        (json!({"status": "cancelled"}), RemoteState::Cancelled),
        (
            json!({"status": "complete", "cdn_url": "https://cdn.viggle.ai/v.mp4", "mask_cdn_url": null, "progress_pct": 100}),
            RemoteState::Completed,
        ),
    ];
    for (mut body, state) in cases {
        body["job_id"] = json!("job_1");
        let server = FakeServer::fixed(Reply::ok(body.to_string())).await;
        let s = adapter(&server).status("job_1").await.unwrap();
        assert_eq!(s.state, state, "{body}");
        match state {
            RemoteState::Processing => {
                assert_eq!(
                    (s.progress, s.stage.as_deref()),
                    (Some(45), Some("dri_done"))
                );
            }
            RemoteState::Failed => {
                assert_eq!(
                    s.error,
                    Some(JobError::new("CS-UORC01-009", "No person detected"))
                );
            }
            RemoteState::Completed => {
                assert_eq!(s.output_urls, ["https://cdn.viggle.ai/v.mp4"]);
                assert_eq!(s.error, None);
            }
            _ => {}
        }
    }
    let both = json!({"job_id": "j", "status": "complete", "cdn_url": "https://cdn.viggle.ai/v.mp4",
        "mask_cdn_url": "https://cdn.viggle.ai/m.mp4", "progress_pct": 180});
    let server = FakeServer::fixed(Reply::ok(both.to_string())).await;
    let s = adapter(&server).status("j").await.unwrap();
    assert_eq!(
        s.output_urls,
        ["https://cdn.viggle.ai/v.mp4", "https://cdn.viggle.ai/m.mp4"]
    );
    assert_eq!(s.progress, Some(100));
}

#[tokio::test]
async fn create_and_cancel() {
    let server = FakeServer::start(|req| match req.method.as_str() {
        "POST" => Reply::new(201, r#"{"job_id": "job_new", "status": "queued"}"#),
        _ => Reply::new(204, ""),
    })
    .await;
    let a = adapter(&server);
    let params = json!({"image_url": "https://example.com/dancer.png", "mode": "fast"});
    let s = a.create("dance-1", &params).await.unwrap();
    assert_eq!(
        (s.provider_job_id.as_str(), s.state),
        ("job_new", RemoteState::Pending)
    );
    let req = server.last();
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("POST", "/viggle/api/render")
    );
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    assert_eq!(req.header("idempotency-key"), Some("dance-1"));
    assert_eq!(req.json(), params);

    let s = a.cancel("job_new").await.unwrap();
    assert_eq!(
        (s.provider_job_id.as_str(), s.state),
        ("job_new", RemoteState::Cancelled)
    );
    let req = server.last();
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("DELETE", "/viggle/api/render/job_new")
    );
    assert!(req.header("authorization").is_some());

    let server =
        FakeServer::fixed(Reply::ok(r#"{"job_id": "job_new", "status": "cancelled"}"#)).await;
    assert_eq!(
        adapter(&server).cancel("job_new").await.unwrap().raw_status,
        "cancelled"
    );
}

#[tokio::test]
async fn validation_estimate_lookup_webhook() {
    let server = FakeServer::fixed(Reply::ok("{}")).await;
    let a = adapter(&server);
    assert!(a
        .validate(&json!({"image_url": "https://example.com/a.png", "video_url": "anything"}))
        .is_ok());
    for params in [
        json!({}),
        json!({"image_url": "a.png"}),
        json!({"image_url": 1}),
    ] {
        assert_eq!(
            a.validate(&params).unwrap_err()[0].field,
            "params.image_url",
            "{params}"
        );
    }
    assert_eq!(
        a.estimate_credits(&json!({"image_url": "https://e.com/a.png"})),
        10
    );
    assert_eq!(
        a.find_by_key("k", &json!({})).await.unwrap(),
        Lookup::Unsupported
    );
    assert_eq!(
        a.verify_webhook(
            &reqwest::header::HeaderMap::new(),
            br#"{"job_id": "job_1", "status": "complete"}"#,
            0
        ),
        WebhookCheck::Hint {
            provider_job_id: Some("job_1".into()),
            verified: false
        }
    );
}
