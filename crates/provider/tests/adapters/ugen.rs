use crate::common::{fixtures, FakeServer, Reply, API_KEY, WEBHOOK_SECRET};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};
use switchyard_core::{JobError, Secret};
use switchyard_provider::ugen::{self, UGen};
use switchyard_provider::{Lookup, Provider, ProviderError, RemoteState, Settings, WebhookCheck};

const PREFIX: &str = "/ugen/api/v1";
const JOB_ID: &str = "550e8400-e29b-41d4-a716-446655440000";

fn adapter(server: &FakeServer) -> UGen {
    UGen::new(server.settings(PREFIX), crate::common::client())
}

fn offline() -> UGen {
    UGen::new(
        Settings {
            base_url: "http://127.0.0.1:9/ugen/api/v1".into(),
            api_key: Some(Secret::new(API_KEY)),
            webhook_secret: Some(Secret::new(WEBHOOK_SECRET)),
            ..Default::default()
        },
        crate::common::client(),
    )
}

fn fields(problems: &[switchyard_provider::ParamProblem]) -> Vec<&str> {
    problems.iter().map(|p| p.field.as_str()).collect()
}

#[test]
fn both_seed_create_examples_are_valid() {
    let a = offline();
    for example in [fixtures::UGEN_CREATE_JOBS_API, fixtures::UGEN_CREATE_SDK] {
        let params = fixtures::json(example);
        assert_eq!(a.validate(&params), Ok(()), "{example}");
        assert_eq!(a.estimate_credits(&params), 60, "3 segments of veo3_fast");
    }
}

#[test]
fn every_rule_alone() {
    let a = offline();
    let base = fixtures::json(fixtures::UGEN_CREATE_JOBS_API);
    let with = |patch: Value| {
        let mut p = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                p.as_object_mut().unwrap().remove(k);
            } else {
                p[k] = v.clone();
            }
        }
        p
    };
    let bad: Vec<(Value, &str)> = vec![
        (json!({"product_name": null}), "params.product_name"),
        (json!({"product_name": ""}), "params.product_name"),
        (json!({"product_name": 7}), "params.product_name"),
        (
            json!({"product_image_url": null}),
            "params.product_image_url",
        ),
        (
            json!({"product_image_url": "headphones.jpg"}),
            "params.product_image_url",
        ),
        (
            json!({"product_image_url": "ftp://example.com/h.jpg"}),
            "params.product_image_url",
        ),
        (json!({"segment_count": null}), "params.segment_count"),
        (json!({"segment_count": 0}), "params.segment_count"),
        (json!({"segment_count": 11}), "params.segment_count"),
        (json!({"segment_count": 2.5}), "params.segment_count"),
        (json!({"segment_count": "3"}), "params.segment_count"),
        (json!({"segment_duration": 6}), "params.segment_duration"),
        (
            json!({"video_model": null, "segment_duration": 5}),
            "params.segment_duration",
        ),
        (
            json!({"video_model": "veo3", "segment_duration": 10}),
            "params.segment_duration",
        ),
        (
            json!({"video_model": "kling_2_1", "segment_duration": 2}),
            "params.segment_duration",
        ),
        (
            json!({"video_model": "kling_2_1", "segment_duration": 11}),
            "params.segment_duration",
        ),
        (json!({"aspect_ratio": "4:3"}), "params.aspect_ratio"),
        (json!({"aspect_ratio": "1:1"}), "params.aspect_ratio"),
        (
            json!({"video_model": null, "aspect_ratio": "1:1"}),
            "params.aspect_ratio",
        ),
        (
            json!({"max_retries_keyframe": 6}),
            "params.max_retries_keyframe",
        ),
        (
            json!({"max_retries_keyframe": -1}),
            "params.max_retries_keyframe",
        ),
        (json!({"max_retries_video": 9}), "params.max_retries_video"),
        (
            json!({"max_retries_video": "1"}),
            "params.max_retries_video",
        ),
        (json!({"video_model": 3}), "params.video_model"),
        (json!({"interaction_mode": true}), "params.interaction_mode"),
        (json!({"idempotency_key": 42}), "params.idempotency_key"),
        (json!({"qai_enabled": "yes"}), "params.qai_enabled"),
        (json!({"music_enabled": 1}), "params.music_enabled"),
        (
            json!({"captions_enabled": "true"}),
            "params.captions_enabled",
        ),
        (json!({"music_volume": "loud"}), "params.music_volume"),
        (
            json!({"key_selling_points": "great sound"}),
            "params.key_selling_points",
        ),
        (
            json!({"key_selling_points": ["great sound", 5]}),
            "params.key_selling_points",
        ),
        (json!({"voice_settings": "calm"}), "params.voice_settings"),
        (
            json!({"custom_caption_options": [1]}),
            "params.custom_caption_options",
        ),
        (
            json!({"human_review_max_rejections": -2}),
            "params.human_review_max_rejections",
        ),
        (json!({"webhook_url": "not a url"}), "params.webhook_url"),
    ];
    for (patch, field) in bad {
        let params = with(patch.clone());
        let problems = a.validate(&params).expect_err(&patch.to_string());
        assert_eq!(fields(&problems), [field], "{patch}: {problems:?}");
    }
    let good = [
        json!({"video_model": "veo3", "segment_duration": 8}),
        json!({"video_model": "kling_2_1", "segment_duration": 3, "aspect_ratio": "1:1"}),
        json!({"video_model": "kling_2_1", "segment_duration": 10}),
        json!({"aspect_ratio": "16:9", "segment_count": 10, "max_retries_keyframe": 5, "max_retries_video": 0}),
        json!({"key_selling_points": ["40h battery", "ANC"], "voice_settings": {"speed": 1.1}, "music_volume": 0.15}),
        json!({"some_future_field": {"anything": true}, "idempotency_key": "mine"}),
        json!({"video_model": "sora_2", "segment_duration": 12}),
        json!({"segment_count": 1, "persona_id": null}),
    ];
    for patch in good {
        assert_eq!(a.validate(&with(patch.clone())), Ok(()), "{patch}");
    }
}

#[test]
fn all_problems_at_once() {
    let params = json!({
        "product_image_url": "nope",
        "segment_count": 20,
        "video_model": "veo3_fast",
        "segment_duration": 5,
        "aspect_ratio": "1:1",
        "max_retries_keyframe": 8,
        "max_retries_video": -1,
        "qai_enabled": "sure",
        "key_selling_points": [1],
    });
    let problems = offline().validate(&params).unwrap_err();
    let mut got = fields(&problems);
    got.sort();
    assert_eq!(
        got,
        [
            "params.aspect_ratio",
            "params.key_selling_points",
            "params.max_retries_keyframe",
            "params.max_retries_video",
            "params.product_image_url",
            "params.product_name",
            "params.qai_enabled",
            "params.segment_count",
            "params.segment_duration",
        ]
    );
}

#[test]
fn local_estimate_table() {
    let a = offline();
    let est = |model: Option<&str>, n: i64| {
        let mut p = json!({"product_name": "x", "product_image_url": "https://e.com/x.jpg", "segment_count": n});
        if let Some(m) = model {
            p["video_model"] = json!(m);
        }
        a.estimate_credits(&p)
    };
    assert_eq!(est(None, 3), 60);
    assert_eq!(est(Some("veo3_fast"), 2), 40);
    assert_eq!(est(Some("veo3"), 3), 120);
    assert_eq!(est(Some("veo2"), 1), 40);
    assert_eq!(est(Some("kling_2_1"), 4), 60);
    assert_eq!(est(Some("something_new"), 5), 100);
    assert_eq!(est(None, 0), 200, "invalid counts estimate high");
    assert!(a.idempotent_create());
}

#[tokio::test]
async fn create_sets_idempotency_key_and_auth() {
    let server = FakeServer::fixed(Reply::new(
        201,
        json!({"job_id": JOB_ID, "status": "pending", "credits_reserved": 60}).to_string(),
    ))
    .await;
    let a = adapter(&server);
    let params = fixtures::json(fixtures::UGEN_CREATE_SDK);
    let status = a.create("headphones-tiktok-01", &params).await.unwrap();
    assert_eq!(status.provider_job_id, JOB_ID);
    assert_eq!(status.state, RemoteState::Pending);
    let req = server.last();
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("POST", "/ugen/api/v1/jobs")
    );
    assert_eq!(req.header("x-api-key"), Some(API_KEY));
    assert_eq!(req.header("authorization"), None);
    assert_eq!(req.header("idempotency-key"), Some("headphones-tiktok-01"));
    let mut expected = params.clone();
    expected["idempotency_key"] = json!("headphones-tiktok-01");
    assert_eq!(req.json(), expected);

    let mut own = params.clone();
    own["idempotency_key"] = json!("their-own-key");
    a.create("headphones-tiktok-01", &own).await.unwrap();
    assert_eq!(server.last().json(), own);
}

fn job(extra: Value) -> String {
    let mut j = json!({"job_id": JOB_ID, "product_name": "Premium Wireless Headphones"});
    for (k, v) in extra.as_object().unwrap() {
        j[k] = v.clone();
    }
    j.to_string()
}

#[tokio::test]
async fn status_normalization() {
    // No response example in the seeds: these use the documented field names.
    let server = FakeServer::fixed(Reply::ok(job(json!({
        "status": "processing", "current_stage": "generation", "progress_percent": 33.4,
        "segments": [{"index": 0, "status": "completed", "video_url": "https://cdn.u-gen.ai/s0.mp4"}],
        "final_video_url": null, "credits_charged": null
    }))))
    .await;
    let s = adapter(&server).status(JOB_ID).await.unwrap();
    assert_eq!(
        (s.state, s.raw_status.as_str()),
        (RemoteState::Processing, "processing")
    );
    assert_eq!(
        (s.progress, s.stage.as_deref()),
        (Some(33), Some("generation"))
    );
    assert_eq!(server.last().target, format!("/ugen/api/v1/jobs/{JOB_ID}"));
    assert_eq!(server.last().header("x-api-key"), Some(API_KEY));

    let cases: Vec<(Value, RemoteState)> = vec![
        (
            json!({"status": "pending", "progress_percent": 0}),
            RemoteState::Pending,
        ),
        (
            json!({"status": "paused", "current_stage": "keyframes"}),
            RemoteState::Processing,
        ),
        (json!({"status": "cancelled"}), RemoteState::Cancelled),
        (json!({"status": "completed"}), RemoteState::Completed),
        (json!({"status": "failed"}), RemoteState::Failed),
    ];
    for (extra, state) in cases {
        let server = FakeServer::fixed(Reply::ok(job(extra.clone()))).await;
        let s = adapter(&server).status(JOB_ID).await.unwrap();
        assert_eq!(s.state, state, "{extra}");
        assert_eq!(s.raw_status, extra["status"].as_str().unwrap());
    }

    let server = FakeServer::fixed(Reply::ok(job(json!({
        "status": "completed", "progress_percent": 100, "current_stage": "delivery",
        "final_video_url": "https://cdn.u-gen.ai/final.mp4", "credits_charged": 60,
        "segments": [{"video_url": "https://cdn.u-gen.ai/s0.mp4"}]
    }))))
    .await;
    let s = adapter(&server).status(JOB_ID).await.unwrap();
    assert_eq!(s.output_urls, ["https://cdn.u-gen.ai/final.mp4"]);
    assert_eq!(s.credits_charged, Some(60));

    let server = FakeServer::fixed(Reply::ok(job(json!({
        "status": "completed", "final_video_url": null,
        "segments": [{"video_url": "https://cdn.u-gen.ai/s0.mp4"}, {"output_url": "https://cdn.u-gen.ai/s1.mp4"}]
    }))))
    .await;
    let s = adapter(&server).status(JOB_ID).await.unwrap();
    assert_eq!(
        s.output_urls,
        ["https://cdn.u-gen.ai/s0.mp4", "https://cdn.u-gen.ai/s1.mp4"]
    );

    let server = FakeServer::fixed(Reply::ok(job(json!({
        "status": "failed", "current_stage": "generation", "credits_charged": 20,
        "error": {"code": "QAI_REJECTED", "message": "Keyframe quality below threshold"}
    }))))
    .await;
    let s = adapter(&server).status(JOB_ID).await.unwrap();
    assert_eq!(
        s.error,
        Some(JobError::new(
            "QAI_REJECTED",
            "Keyframe quality below threshold"
        ))
    );

    let server = FakeServer::fixed(Reply::ok(
        json!({"job": {"job_id": JOB_ID, "status": "pending"}}).to_string(),
    ))
    .await;
    assert_eq!(
        adapter(&server).status(JOB_ID).await.unwrap().state,
        RemoteState::Pending
    );

    let server = FakeServer::fixed(Reply::ok(r#"{"job_id": "x"}"#)).await;
    assert!(matches!(
        adapter(&server).status("x").await,
        Err(ProviderError::Transient(_))
    ));
}

#[tokio::test]
async fn cancel_with_and_without_a_job_body() {
    let server = FakeServer::fixed(Reply::ok(job(json!({"status": "cancelled"})))).await;
    let s = adapter(&server).cancel(JOB_ID).await.unwrap();
    assert_eq!(s.state, RemoteState::Cancelled);
    let req = server.last();
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("DELETE", &*format!("/ugen/api/v1/jobs/{JOB_ID}"))
    );

    let server = FakeServer::fixed(Reply::new(204, "")).await;
    let s = adapter(&server).cancel(JOB_ID).await.unwrap();
    assert_eq!(
        (s.state, s.provider_job_id.as_str()),
        (RemoteState::Cancelled, JOB_ID)
    );

    let body = json!({"error": {"code": "JOB_NOT_CANCELLABLE", "message": "Job already completed", "details": {}}});
    let server = FakeServer::fixed(Reply::new(409, body.to_string())).await;
    let err = adapter(&server).cancel(JOB_ID).await.unwrap_err();
    assert_eq!(
        err,
        ProviderError::Conflict {
            code: "JOB_NOT_CANCELLABLE".into(),
            message: "Job already completed".into()
        }
    );
}

#[tokio::test]
async fn find_by_key_pages_through_the_list() {
    let server = FakeServer::start(|req| {
        let page = |n: u64, items: Value| {
            Reply::ok(json!({"items": items, "total": 3, "page": n, "page_size": 100, "total_pages": 2}).to_string())
        };
        match req.target.as_str() {
            "/ugen/api/v1/jobs?page=1&page_size=100" => page(1, json!([
                {"job_id": "a", "status": "completed", "idempotency_key": "other"},
                {"job_id": "b", "status": "failed"}
            ])),
            "/ugen/api/v1/jobs?page=2&page_size=100" => page(2, json!([
                {"job_id": "c", "status": "processing", "idempotency_key": "wanted"}
            ])),
            "/ugen/api/v1/jobs/c" => Reply::ok(
                json!({"job_id": "c", "status": "processing", "progress_percent": 50, "idempotency_key": "wanted"}).to_string(),
            ),
            _ => Reply::new(404, r#"{"error": {"code": "NOT_FOUND", "message": "no"}}"#),
        }
    })
    .await;
    let a = adapter(&server);
    match a.find_by_key("wanted", &json!({})).await.unwrap() {
        Lookup::Found(s) => {
            assert_eq!((s.provider_job_id.as_str(), s.progress), ("c", Some(50)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        a.find_by_key("missing", &json!({})).await.unwrap(),
        Lookup::NotFound
    );
    // Params that set their own idempotency_key are found by it.
    assert!(matches!(
        a.find_by_key("job-key", &json!({"idempotency_key": "wanted"}))
            .await
            .unwrap(),
        Lookup::Found(_)
    ));
    let listed = a.list(Some("completed"), 1, 10).await;
    assert!(matches!(listed, Err(ProviderError::NotFound(_))));
    assert_eq!(
        server.last().target,
        "/ugen/api/v1/jobs?status=completed&page=1&page_size=10"
    );
}

#[tokio::test]
async fn the_rest_of_the_documented_api() {
    let server = FakeServer::start(|req| {
        Reply::ok(json!({"echo": {"method": req.method, "target": req.target}}).to_string())
    })
    .await;
    let a = adapter(&server);
    let id = JOB_ID;
    let calls: Vec<(Value, &str, String)> = vec![
        (
            a.pause(id).await.unwrap(),
            "POST",
            format!("/ugen/api/v1/jobs/{id}/pause"),
        ),
        (
            a.resume(id).await.unwrap(),
            "POST",
            format!("/ugen/api/v1/jobs/{id}/resume"),
        ),
        (
            a.keyframes(id).await.unwrap(),
            "GET",
            format!("/ugen/api/v1/jobs/{id}/keyframes"),
        ),
        (
            a.videos(id).await.unwrap(),
            "GET",
            format!("/ugen/api/v1/jobs/{id}/videos"),
        ),
    ];
    for (answer, method, target) in calls {
        assert_eq!(answer["echo"]["method"], method);
        assert_eq!(answer["echo"]["target"], target.as_str());
    }

    a.retry(id, Some("generation")).await.unwrap();
    let req = server.last();
    assert_eq!(req.target, format!("/ugen/api/v1/jobs/{id}/retry"));
    assert_eq!(req.json(), fixtures::json(fixtures::UGEN_RETRY));
    a.retry(id, None).await.unwrap();
    assert_eq!(server.last().json(), json!({}));

    let body = fixtures::json(fixtures::UGEN_SUGGEST_FIELDS);
    a.suggest_fields(&body).await.unwrap();
    let req = server.last();
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("POST", "/ugen/api/v1/jobs/suggest-fields")
    );
    assert_eq!(req.json(), body);
    assert_eq!(req.header("x-api-key"), Some(API_KEY));

    let body = fixtures::json(fixtures::UGEN_CREDITS_ESTIMATE);
    a.estimate_credits_remote(&body).await.unwrap();
    let req = server.last();
    assert_eq!(req.target, "/ugen/api/v1/credits/estimate");
    assert_eq!(req.json(), body);

    let example = fixtures::json(fixtures::UGEN_WEBHOOK_CONFIG);
    let with_example_secret = UGen::new(
        Settings {
            base_url: server.url(PREFIX),
            api_key: Some(Secret::new(API_KEY)),
            webhook_secret: Some(Secret::new(example["webhook_secret"].as_str().unwrap())),
            ..Default::default()
        },
        crate::common::client(),
    );
    with_example_secret
        .configure_webhook(example["webhook_url"].as_str().unwrap())
        .await
        .unwrap();
    let req = server.last();
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("PUT", "/ugen/api/v1/tenants/me/webhook")
    );
    assert_eq!(req.json(), example);
}

fn signed(secret: &str, ts: i64, body: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    let sig = ugen::signature(secret, &ts.to_string(), body);
    h.insert("X-UGen-Signature", HeaderValue::from_str(&sig).unwrap());
    h.insert(
        "X-UGen-Timestamp",
        HeaderValue::from_str(&ts.to_string()).unwrap(),
    );
    h
}

#[test]
fn webhook_signatures() {
    let a = offline();
    let now = 1_760_000_000;
    let body = br#"{"event": "job.completed", "job_id": "550e8400-e29b-41d4-a716-446655440000", "status": "completed"}"#;

    let valid = WebhookCheck::Hint {
        provider_job_id: Some(JOB_ID.into()),
        verified: true,
    };
    assert_eq!(
        a.verify_webhook(&signed(WEBHOOK_SECRET, now, body), body, now),
        valid
    );
    assert_eq!(
        a.verify_webhook(&signed(WEBHOOK_SECRET, now - 300, body), body, now),
        valid
    );
    assert_eq!(
        a.verify_webhook(&signed(WEBHOOK_SECRET, now + 300, body), body, now),
        valid
    );

    let mut upper = signed(WEBHOOK_SECRET, now, body);
    let sig = upper["x-ugen-signature"]
        .to_str()
        .unwrap()
        .to_ascii_uppercase();
    upper.insert("X-UGen-Signature", HeaderValue::from_str(&sig).unwrap());
    assert_eq!(a.verify_webhook(&upper, body, now), valid);

    let rejected = |check: WebhookCheck, why: &str| match check {
        WebhookCheck::Rejected(reason) => {
            assert!(reason.contains(why), "{reason:?} should mention {why:?}");
            assert!(!reason.contains(WEBHOOK_SECRET));
        }
        other => panic!("expected a rejection ({why}), got {other:?}"),
    };
    rejected(
        a.verify_webhook(&signed("another-secret", now, body), body, now),
        "does not match",
    );
    rejected(
        a.verify_webhook(
            &signed(WEBHOOK_SECRET, now, body),
            b"{\"job_id\": \"other\"}",
            now,
        ),
        "does not match",
    );
    rejected(
        a.verify_webhook(&signed(WEBHOOK_SECRET, now - 301, body), body, now),
        "window",
    );
    rejected(
        a.verify_webhook(&signed(WEBHOOK_SECRET, now + 301, body), body, now),
        "window",
    );
    // The signature covers the timestamp: moving it breaks the signature.
    let mut moved = signed(WEBHOOK_SECRET, now - 1000, body);
    moved.insert(
        "X-UGen-Timestamp",
        HeaderValue::from_str(&now.to_string()).unwrap(),
    );
    rejected(a.verify_webhook(&moved, body, now), "does not match");

    let mut no_sig = signed(WEBHOOK_SECRET, now, body);
    no_sig.remove("X-UGen-Signature");
    rejected(
        a.verify_webhook(&no_sig, body, now),
        "missing X-UGen-Signature",
    );
    let mut no_ts = signed(WEBHOOK_SECRET, now, body);
    no_ts.remove("X-UGen-Timestamp");
    rejected(
        a.verify_webhook(&no_ts, body, now),
        "missing X-UGen-Timestamp",
    );
    let mut bad_ts = signed(WEBHOOK_SECRET, now, body);
    bad_ts.insert("X-UGen-Timestamp", HeaderValue::from_static("yesterday"));
    rejected(a.verify_webhook(&bad_ts, body, now), "Unix time");
    let mut bad_hex = signed(WEBHOOK_SECRET, now, body);
    bad_hex.insert("X-UGen-Signature", HeaderValue::from_static("zz-not-hex"));
    rejected(a.verify_webhook(&bad_hex, body, now), "not hex");
    let mut short = signed(WEBHOOK_SECRET, now, body);
    short.insert("X-UGen-Signature", HeaderValue::from_static("abcd"));
    rejected(a.verify_webhook(&short, body, now), "does not match");
    rejected(a.verify_webhook(&HeaderMap::new(), body, now), "missing");

    let unconfigured = UGen::new(
        Settings {
            base_url: "http://127.0.0.1:9".into(),
            api_key: None,
            webhook_secret: None,
            ..Default::default()
        },
        crate::common::client(),
    );
    rejected(
        unconfigured.verify_webhook(&signed(WEBHOOK_SECRET, now, body), body, now),
        "no webhook secret",
    );

    // A valid signature over a body without a job id is still accepted.
    let other = br#"{"event": "ping"}"#;
    assert_eq!(
        a.verify_webhook(&signed(WEBHOOK_SECRET, now, other), other, now),
        WebhookCheck::Hint {
            provider_job_id: None,
            verified: true
        }
    );
}

#[test]
fn signature_is_hmac_sha256_over_timestamp_dot_body() {
    // Independent computation of HMAC-SHA256("key", "1.{}") via RFC 2104.
    use sha2::{Digest, Sha256};
    let key = b"key";
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(b"1.{}")
        .finalize();
    let outer = Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize();
    assert_eq!(ugen::signature("key", "1", b"{}"), hex::encode(outer));
}
