use crate::common::{fixtures, FakeServer, Reply, API_KEY};
use serde_json::json;
use switchyard_core::JobError;
use switchyard_provider::ulazai::UlazAi;
use switchyard_provider::{
    Lookup, Provider, ProviderError, RemoteState, RemoteStatus, WebhookCheck,
};

const PREFIX: &str = "/ulazai/api/v1/video-studio";

fn adapter(server: &FakeServer) -> UlazAi {
    UlazAi::new(server.settings(PREFIX), crate::common::client())
}

#[tokio::test]
async fn status_example_from_the_seed() {
    let server = FakeServer::fixed(Reply::ok(fixtures::ULAZAI_STATUS)).await;
    let id = "8990f846-f6f0-4ff1-a298-d0a72d49e7ad";
    let s = adapter(&server).status(id).await.unwrap();
    assert_eq!(
        s,
        RemoteStatus {
            provider_job_id: id.into(),
            state: RemoteState::Completed,
            raw_status: "completed".into(),
            progress: None,
            stage: None,
            output_urls: vec![
                "https://media.ulazai.com/video_studio/results/job-8990f846.mp4".into()
            ],
            credits_charged: Some(100),
            credits_refunded: None,
            error: None,
        }
    );
    let req = server.last();
    assert_eq!(req.method, "GET");
    assert_eq!(
        req.target,
        format!("/ulazai/api/v1/video-studio/status/{id}/")
    );
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {API_KEY}").as_str())
    );
}

#[tokio::test]
async fn failure_example_from_the_seed() {
    let server = FakeServer::fixed(Reply::ok(fixtures::ULAZAI_FAILURE)).await;
    let s = adapter(&server)
        .status("b1f74f1f-8a81-410c-a533-4701159ed7ba")
        .await
        .unwrap();
    assert_eq!(s.state, RemoteState::Failed);
    assert_eq!(
        s.error,
        Some(JobError::new(
            "job_failed",
            "Invalid duration for this model"
        ))
    );
    // Refunded in full with no amount given: the net charge is zero.
    assert_eq!((s.credits_charged, s.credits_refunded), (Some(0), Some(0)));

    let refunded = json!({"success": true, "job": {"job_id": "j", "status": "failed", "credits_charged": 100, "credits_refunded": true}});
    let server = FakeServer::fixed(Reply::ok(refunded.to_string())).await;
    let s = adapter(&server).status("j").await.unwrap();
    assert_eq!(
        (s.credits_charged, s.credits_refunded),
        (Some(100), Some(100))
    );
}

#[tokio::test]
async fn create_single_and_multi_answers() {
    let one = json!({"success": true, "job": {"job_id": "j1", "status": "pending", "credits_charged": 100}});
    let server = FakeServer::fixed(Reply::new(201, one.to_string())).await;
    let params = json!({"model_slug": "kling_3_0", "prompt": "A cat surfing", "duration": 5});
    let s = adapter(&server).create("cat-1", &params).await.unwrap();
    assert_eq!(
        (s.provider_job_id.as_str(), s.state, s.credits_charged),
        ("j1", RemoteState::Pending, Some(100))
    );
    let req = server.last();
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("POST", "/ulazai/api/v1/video-studio/generate/")
    );
    assert_eq!(req.json(), params);
    assert_eq!(req.header("idempotency-key"), Some("cat-1"));

    let many = json!({"success": true, "jobs": [{"job_id": "j2", "status": "pending"}, {"job_id": "j3", "status": "pending"}]});
    let server = FakeServer::fixed(Reply::ok(many.to_string())).await;
    let s = adapter(&server).create("cat-2", &params).await.unwrap();
    assert_eq!(s.provider_job_id, "j2");

    let refused = json!({"success": false, "error": "Model not available"});
    let server = FakeServer::fixed(Reply::ok(refused.to_string())).await;
    let err = adapter(&server).create("cat-3", &params).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Permanent { ref message, .. } if message == "Model not available"),
        "{err:?}"
    );

    let server = FakeServer::fixed(Reply::new(400, refused.to_string())).await;
    let err = adapter(&server).create("cat-4", &params).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Permanent { ref message, .. } if message == "Model not available"),
        "{err:?}"
    );
}

#[tokio::test]
async fn history_lookup_by_model_and_prompt() {
    let history = json!({"success": true, "jobs": [
        {"job_id": "h1", "model_slug": "kling_3_0", "prompt": "A cat surfing", "status": "processing"},
        {"job_id": "h2", "model_slug": "kling_3_0", "prompt": "A dog skiing", "status": "completed"},
        {"job_id": "h3", "model_slug": "veo_3", "prompt": "A dog skiing", "status": "completed"},
        {"job_id": "h4", "model_slug": "veo_3", "prompt": "A dog skiing", "status": "failed"}
    ]});
    let server = FakeServer::fixed(Reply::ok(history.to_string())).await;
    let a = adapter(&server);
    match a
        .find_by_key(
            "k",
            &json!({"model_slug": "kling_3_0", "prompt": "A cat surfing"}),
        )
        .await
        .unwrap()
    {
        Lookup::Found(s) => assert_eq!(
            (s.provider_job_id.as_str(), s.state),
            ("h1", RemoteState::Processing)
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(server.last().target, "/ulazai/api/v1/video-studio/history/");
    assert_eq!(
        a.find_by_key(
            "k",
            &json!({"model_slug": "kling_3_0", "prompt": "A horse"})
        )
        .await
        .unwrap(),
        Lookup::NotFound
    );
    // Two candidates cannot be told apart: no guess.
    assert_eq!(
        a.find_by_key(
            "k",
            &json!({"model_slug": "veo_3", "prompt": "A dog skiing"})
        )
        .await
        .unwrap(),
        Lookup::Unsupported
    );
}

#[tokio::test]
async fn cancel_validation_estimate_webhook() {
    let server = FakeServer::fixed(Reply::ok("{}")).await;
    let a = adapter(&server);
    assert_eq!(
        a.cancel("j1").await,
        Err(ProviderError::Unsupported("cancel"))
    );
    assert!(
        server.requests().is_empty(),
        "cancel must not call anything"
    );

    assert!(a
        .validate(&json!({"model_slug": "kling_3_0", "prompt": "x"}))
        .is_ok());
    assert!(a.validate(&json!({"model_slug": "kling_3_0", "prompt": "x", "duration": 10, "mode": "text_to_video"})).is_ok());
    let problems = a
        .validate(&json!({"prompt": 3, "duration": 0}))
        .unwrap_err();
    let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        ["params.model_slug", "params.prompt", "params.duration"]
    );
    assert_eq!(
        a.validate(&json!({"model_slug": "m", "prompt": "p", "duration": 2.5}))
            .unwrap_err()[0]
            .field,
        "params.duration"
    );

    assert_eq!(
        a.estimate_credits(&json!({"model_slug": "m", "prompt": "p"})),
        100
    );
    assert_eq!(
        a.estimate_credits(&json!({"model_slug": "m", "prompt": "p", "duration": 10})),
        200
    );

    let headers = reqwest::header::HeaderMap::new();
    assert_eq!(
        a.verify_webhook(
            &headers,
            br#"{"job": {"job_id": "j9", "status": "completed"}}"#,
            0
        ),
        WebhookCheck::Hint {
            provider_job_id: Some("j9".into()),
            verified: false
        }
    );
}
