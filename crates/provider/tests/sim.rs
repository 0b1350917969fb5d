//! The adapters against the simulator crate (`switchyard-sim`), which
//! imitates the four providers' wire formats: a cross-check that the two
//! halves agree, beyond the seed fixtures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_core::{ProviderKind, Secret};
use switchyard_provider::{
    build, Lookup, Provider, ProviderError, RemoteState, RemoteStatus, Settings, WebhookCheck,
};
use switchyard_sim::{Scenario, SimServer};

const KEY: &str = "sim-test-key";

async fn sim(toml: &str) -> SimServer {
    let scenario = Scenario::from_toml_str(toml).expect("scenario");
    SimServer::start("127.0.0.1:0".parse().unwrap(), scenario)
        .await
        .expect("sim starts")
}

fn adapter(sim: &SimServer, kind: ProviderKind, key: &str) -> Arc<dyn Provider> {
    let settings = Settings {
        base_url: sim.base_url(kind),
        api_key: Some(Secret::new(key)),
        webhook_secret: Some(Secret::new("hook-secret")),
        ..Default::default()
    };
    build(
        kind,
        settings,
        switchyard_provider::default_client(Duration::from_secs(5)).unwrap(),
    )
}

/// Valid params for each provider, plus the simulator's own knobs.
fn params(kind: ProviderKind, tag: &str, outcome: &str, duration: &str) -> Value {
    let mut p = match kind {
        ProviderKind::Ugclab => json!({"script": format!("Hi, this is {tag}")}),
        ProviderKind::Ugen => json!({
            "product_name": format!("Headphones {tag}"),
            "product_image_url": "https://example.com/headphones.jpg",
            "segment_count": 2,
        }),
        ProviderKind::Ulazai => {
            json!({"model_slug": "kling_3_0", "prompt": format!("A cat surfing, {tag}"), "duration": 5})
        }
        ProviderKind::Viggle => json!({"image_url": "https://example.com/dancer.png"}),
    };
    p["x_sim_outcome"] = json!(outcome);
    p["x_sim_duration"] = json!(duration);
    p
}

async fn until_terminal(p: &dyn Provider, id: &str) -> (RemoteStatus, Vec<RemoteState>) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    loop {
        let s = p.status(id).await.expect("status");
        if seen.last() != Some(&s.state) {
            seen.push(s.state);
        }
        if matches!(
            s.state,
            RemoteState::Completed | RemoteState::Failed | RemoteState::Cancelled
        ) {
            return (s, seen);
        }
        assert!(Instant::now() < deadline, "{id} never finished: {s:?}");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

#[tokio::test]
async fn create_then_poll_to_the_end() {
    let sim = sim("").await;
    // All jobs run at once, each followed by its own poller.
    let mut followers = Vec::new();
    for kind in ProviderKind::ALL {
        let p = adapter(&sim, kind, KEY);
        for outcome in ["completed", "failed"] {
            let params = params(kind, outcome, outcome, "1500ms");
            assert_eq!(p.validate(&params), Ok(()), "{kind}");
            let created = p
                .create(&format!("{kind}-{outcome}"), &params)
                .await
                .expect("create");
            assert_eq!(created.state, RemoteState::Pending, "{kind}: {created:?}");
            assert!(!created.provider_job_id.is_empty());
            let p = p.clone();
            followers.push(tokio::spawn(async move {
                let (last, seen) = until_terminal(p.as_ref(), &created.provider_job_id).await;
                assert_eq!(last.provider_job_id, created.provider_job_id);
                (kind, outcome, last, seen)
            }));
        }
    }
    for follower in followers {
        let (kind, outcome, last, seen) = follower.await.unwrap();
        if outcome == "completed" {
            assert_eq!(last.state, RemoteState::Completed, "{kind}: {last:?}");
            assert!(!last.output_urls.is_empty(), "{kind}: {last:?}");
            assert!(
                last.output_urls.iter().all(|u| u.starts_with("http")),
                "{kind}: {last:?}"
            );
            assert_eq!(last.progress.unwrap_or(100), 100, "{kind}: {last:?}");
            assert_eq!(last.error, None, "{kind}: {last:?}");
        } else {
            assert_eq!(last.state, RemoteState::Failed, "{kind}: {last:?}");
            assert!(last.error.is_some(), "{kind}: {last:?}");
        }
        assert!(
            seen.contains(&RemoteState::Processing),
            "{kind} {outcome}: {seen:?}"
        );
        if kind != ProviderKind::Viggle {
            assert!(
                last.credits_charged.is_some() || last.credits_refunded.is_some(),
                "{kind}: {last:?}"
            );
        }
    }
    let stats = sim.stats();
    for kind in ProviderKind::ALL {
        assert_eq!(stats.provider(kind).creates, 2, "{kind}");
        assert_eq!(stats.provider(kind).auth_failures, 0, "{kind}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn cancel_allowed_and_refused() {
    let sim = sim("").await;
    for kind in ProviderKind::ALL {
        let p = adapter(&sim, kind, KEY);
        let long = p
            .create(
                &format!("{kind}-long"),
                &params(kind, "long", "completed", "1h"),
            )
            .await
            .unwrap();
        let short = p
            .create(
                &format!("{kind}-short"),
                &params(kind, "short", "completed", "300ms"),
            )
            .await
            .unwrap();
        let (done, _) = until_terminal(p.as_ref(), &short.provider_job_id).await;
        assert_eq!(done.state, RemoteState::Completed);

        if kind == ProviderKind::Ulazai {
            assert_eq!(
                p.cancel(&long.provider_job_id).await,
                Err(ProviderError::Unsupported("cancel"))
            );
            continue;
        }
        let cancelled = p
            .cancel(&long.provider_job_id)
            .await
            .expect("a pending job can be cancelled");
        assert_eq!(
            cancelled.state,
            RemoteState::Cancelled,
            "{kind}: {cancelled:?}"
        );
        assert_eq!(
            p.status(&long.provider_job_id).await.unwrap().state,
            RemoteState::Cancelled,
            "{kind}"
        );

        let refused = p.cancel(&short.provider_job_id).await.unwrap_err();
        assert!(
            matches!(refused, ProviderError::Conflict { .. }),
            "{kind}: {refused:?}"
        );
        let again = p.cancel(&long.provider_job_id).await.unwrap_err();
        assert!(
            matches!(again, ProviderError::Conflict { .. }),
            "{kind}: {again:?}"
        );
        let missing = p.cancel("no-such-job").await.unwrap_err();
        assert!(
            matches!(missing, ProviderError::NotFound(_)),
            "{kind}: {missing:?}"
        );
        let missing = p.status("no-such-job").await.unwrap_err();
        assert!(
            matches!(missing, ProviderError::NotFound(_)),
            "{kind}: {missing:?}"
        );
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn ugclab_refuses_to_cancel_a_processing_job() {
    let sim = sim("").await;
    let p = adapter(&sim, ProviderKind::Ugclab, KEY);
    // 10% of the run is PENDING (300 ms of 3 s), the last 10% SAVING.
    let job = p
        .create(
            "ugc-proc",
            &params(ProviderKind::Ugclab, "p", "completed", "3s"),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let s = p.status(&job.provider_job_id).await.unwrap();
    assert_eq!(s.state, RemoteState::Processing, "{s:?}");
    assert!(s.stage.is_some(), "{s:?}");
    assert_eq!(
        p.cancel(&job.provider_job_id).await.unwrap_err(),
        ProviderError::Conflict {
            code: "UGC_PROCESSING".into(),
            message: "Cannot cancel a job that is already processing".into()
        }
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn rate_limited_with_retry_after() {
    let mut toml = String::new();
    for kind in ProviderKind::ALL {
        toml.push_str(&format!(
            "[providers.{kind}]\nrate_limit = {{ per_minute = 1, burst = 1 }}\n"
        ));
    }
    let sim = sim(&toml).await;
    for kind in ProviderKind::ALL {
        let p = adapter(&sim, kind, KEY);
        let created = p
            .create(
                &format!("{kind}-rl"),
                &params(kind, "rl", "completed", "1h"),
            )
            .await
            .unwrap();
        match p.status(&created.provider_job_id).await {
            Err(ProviderError::RateLimited {
                retry_after: Some(d),
            }) => {
                assert!(
                    d > Duration::ZERO && d <= Duration::from_secs(60),
                    "{kind}: {d:?}"
                )
            }
            other => panic!("{kind}: expected 429 with Retry-After, got {other:?}"),
        }
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn insufficient_credits() {
    let mut toml = String::new();
    for kind in ProviderKind::ALL {
        toml.push_str(&format!("[providers.{kind}]\ncredits = 5\n"));
    }
    let sim = sim(&toml).await;
    for kind in ProviderKind::ALL {
        let p = adapter(&sim, kind, KEY);
        let err = p
            .create(
                &format!("{kind}-402"),
                &params(kind, "poor", "completed", "1h"),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProviderError::InsufficientCredits(_)),
            "{kind}: {err:?}"
        );
        assert!(!err.is_retryable());
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn server_errors_and_malformed_bodies_are_transient() {
    for fault in ["error_5xx", "malformed_json"] {
        let mut toml = String::new();
        for kind in ProviderKind::ALL {
            toml.push_str(&format!(
                "[providers.{kind}]\nfaults = {{ {fault} = 1.0 }}\n"
            ));
        }
        let sim = sim(&toml).await;
        for kind in ProviderKind::ALL {
            let p = adapter(&sim, kind, KEY);
            let err = p
                .create(
                    &format!("{kind}-{fault}"),
                    &params(kind, fault, "completed", "1h"),
                )
                .await
                .unwrap_err();
            assert!(
                matches!(err, ProviderError::Transient(_)),
                "{kind} {fault}: {err:?}"
            );
            // A 5xx does nothing; a malformed answer comes after the work,
            // so the job exists and its status is unreadable too.
            let id = sim
                .jobs()
                .into_iter()
                .find(|j| j.provider == kind)
                .map(|j| j.job_id);
            assert_eq!(id.is_some(), fault == "malformed_json", "{kind} {fault}");
            let err = p
                .status(id.as_deref().unwrap_or("whatever"))
                .await
                .unwrap_err();
            assert!(
                matches!(err, ProviderError::Transient(_)),
                "{kind} {fault}: {err:?}"
            );
        }
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn wrong_api_key_is_permanent_and_not_echoed() {
    let mut toml = String::new();
    for kind in ProviderKind::ALL {
        toml.push_str(&format!(
            "[providers.{kind}]\napi_key = \"the-right-key\"\n"
        ));
    }
    let sim = sim(&toml).await;
    for kind in ProviderKind::ALL {
        let p = adapter(&sim, kind, "the-wrong-key");
        let err = p
            .create(
                &format!("{kind}-auth"),
                &params(kind, "auth", "completed", "1h"),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProviderError::Permanent { .. }),
            "{kind}: {err:?}"
        );
        assert!(!format!("{err} {err:?}").contains("the-wrong-key"));
        let ok = adapter(&sim, kind, "the-right-key");
        ok.create(
            &format!("{kind}-auth-ok"),
            &params(kind, "auth", "completed", "1h"),
        )
        .await
        .unwrap();
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn ugen_resend_is_deduplicated_and_findable() {
    let sim = sim("").await;
    let p = adapter(&sim, ProviderKind::Ugen, KEY);
    assert!(p.idempotent_create());
    let params = params(ProviderKind::Ugen, "dedup", "completed", "1h");
    let first = p.create("ugen-dedup", &params).await.unwrap();
    let second = p.create("ugen-dedup", &params).await.unwrap();
    assert_eq!(first.provider_job_id, second.provider_job_id);
    let stats = sim.stats().provider(ProviderKind::Ugen);
    assert_eq!((stats.create_requests, stats.creates), (2, 1));
    match p.find_by_key("ugen-dedup", &params).await.unwrap() {
        Lookup::Found(s) => assert_eq!(s.provider_job_id, first.provider_job_id),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        p.find_by_key("never-sent", &params).await.unwrap(),
        Lookup::NotFound
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn ulazai_history_finds_a_lost_create() {
    let sim = sim("").await;
    let p = adapter(&sim, ProviderKind::Ulazai, KEY);
    let params = params(ProviderKind::Ulazai, "lost-one", "completed", "1h");
    let created = p.create("ulazai-lost", &params).await.unwrap();
    match p.find_by_key("ulazai-lost", &params).await.unwrap() {
        Lookup::Found(s) => assert_eq!(s.provider_job_id, created.provider_job_id),
        other => panic!("{other:?}"),
    }
    let other = params_with(&params, "prompt", "never sent");
    assert_eq!(p.find_by_key("x", &other).await.unwrap(), Lookup::NotFound);
    for kind in [ProviderKind::Ugclab, ProviderKind::Viggle] {
        assert_eq!(
            adapter(&sim, kind, KEY)
                .find_by_key("x", &json!({}))
                .await
                .unwrap(),
            Lookup::Unsupported
        );
    }
    sim.shutdown().await;
}

fn params_with(p: &Value, k: &str, v: &str) -> Value {
    let mut p = p.clone();
    p[k] = json!(v);
    p
}

/// One webhook as received: path, headers, body.
type Delivery = (String, reqwest::header::HeaderMap, Vec<u8>);

/// Receives the simulator's webhooks with the tiny server of the fixture
/// tests' kind, then checks them with the adapters.
#[tokio::test]
async fn simulator_webhooks_verify() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let log = received.clone();
    let server = tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head, body) = loop {
                let n = s.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break (String::new(), Vec::new());
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_string();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    let mut body = buf[i + 4..].to_vec();
                    while body.len() < len {
                        let n = s.read(&mut chunk).await.unwrap();
                        body.extend_from_slice(&chunk[..n]);
                    }
                    break (head, body);
                }
            };
            let mut headers = reqwest::header::HeaderMap::new();
            for (k, v) in head.lines().skip(1).filter_map(|l| l.split_once(':')) {
                if let (Ok(k), Ok(v)) = (
                    reqwest::header::HeaderName::from_bytes(k.trim().as_bytes()),
                    reqwest::header::HeaderValue::from_str(v.trim()),
                ) {
                    headers.insert(k, v);
                }
            }
            let path = head.split(' ').nth(1).unwrap_or_default().to_string();
            log.lock().unwrap().push((path, headers, body));
            let _ = s
                .write_all(
                    b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
        }
    });
    let toml = format!(
        "[providers.ugen]\nwebhook_url = \"http://{addr}/webhooks/ugen\"\nwebhook_secret = \"hook-secret\"\n\
         [providers.ugclab]\nwebhook_url = \"http://{addr}/webhooks/ugclab\"\n"
    );
    let sim = sim(&toml).await;
    let ugen = adapter(&sim, ProviderKind::Ugen, KEY);
    let ugc = adapter(&sim, ProviderKind::Ugclab, KEY);
    let u = ugen
        .create(
            "ugen-hook",
            &params(ProviderKind::Ugen, "hook", "completed", "300ms"),
        )
        .await
        .unwrap();
    let c = ugc
        .create(
            "ugc-hook",
            &params(ProviderKind::Ugclab, "hook", "failed", "300ms"),
        )
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut ugen_ok, mut ugc_ok) = (false, false);
    while !(ugen_ok && ugc_ok) {
        assert!(
            Instant::now() < deadline,
            "webhooks not received: {:?}",
            received.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        for (path, headers, body) in received.lock().unwrap().iter() {
            if path == "/webhooks/ugen" {
                assert_eq!(
                    ugen.verify_webhook(headers, body, now),
                    WebhookCheck::Hint {
                        provider_job_id: Some(u.provider_job_id.clone()),
                        verified: true
                    }
                );
                let mut tampered = body.clone();
                tampered.push(b' ');
                assert!(matches!(
                    ugen.verify_webhook(headers, &tampered, now),
                    WebhookCheck::Rejected(_)
                ));
                assert!(matches!(
                    ugen.verify_webhook(headers, body, now + 301),
                    WebhookCheck::Rejected(_)
                ));
                ugen_ok = true;
            } else if path == "/webhooks/ugclab" {
                assert_eq!(
                    ugc.verify_webhook(headers, body, now),
                    WebhookCheck::Hint {
                        provider_job_id: Some(c.provider_job_id.clone()),
                        verified: false
                    }
                );
                ugc_ok = true;
            }
        }
    }
    sim.shutdown().await;
    server.abort();
}

/// U-Gen's job actions through the trait, as the engine calls them: pause
/// and resume a running job, list its keyframes and segments, retry it from
/// a stage once it failed; a provider without them says so before any
/// request; UGC Lab's steps come as the answer lists them.
#[tokio::test]
async fn job_actions_at_the_provider() {
    use switchyard_provider::Action;
    let sim = sim("").await;
    let ugen = adapter(&sim, ProviderKind::Ugen, KEY);
    let created = ugen
        .create("act-1", &params(ProviderKind::Ugen, "a", "failed", "2s"))
        .await
        .unwrap();
    let id = created.provider_job_id.clone();
    let paused = ugen.pause_job(&id).await.unwrap().expect("the job object");
    assert_eq!(paused.raw_status, "paused");
    assert_eq!(
        paused.state,
        RemoteState::Processing,
        "paused is not finished"
    );
    let resumed = ugen.resume_job(&id).await.unwrap().expect("the job object");
    assert_ne!(resumed.raw_status, "paused");
    let err = ugen.resume_job(&id).await.unwrap_err();
    assert!(matches!(err, ProviderError::Conflict { .. }), "{err:?}");
    let (end, _) = until_terminal(&*ugen, &id).await;
    assert_eq!(end.state, RemoteState::Failed);
    let keyframes = ugen.list_keyframes(&id).await.unwrap();
    assert_eq!(keyframes.len(), 2, "one per segment: {keyframes:?}");
    assert_eq!(keyframes[0].index, Some(0));
    let segments = ugen.list_segments(&id).await.unwrap();
    assert_eq!(segments.len(), 2, "{segments:?}");
    assert_eq!(segments[1].duration_seconds, Some(8.0));
    let err = ugen.retry_job(&id, "nowhere").await.unwrap_err();
    assert!(matches!(err, ProviderError::Permanent { .. }), "{err:?}");
    let again = ugen
        .retry_job(&id, "generation")
        .await
        .unwrap()
        .expect("the job object");
    assert!(
        matches!(again.state, RemoteState::Pending | RemoteState::Processing),
        "{again:?}"
    );
    let seen = sim.stats().provider(ProviderKind::Ugen);
    assert_eq!((seen.pauses, seen.resumes, seen.retries), (1, 1, 1));
    assert_eq!(seen.retries_from_stage.get("generation"), Some(&1));
    for a in [
        Action::PauseJob,
        Action::ResumeJob,
        Action::RetryFromStage,
        Action::Keyframes,
        Action::Segments,
    ] {
        assert!(ugen.supports(a), "{a:?}");
    }

    let viggle = adapter(&sim, ProviderKind::Viggle, KEY);
    assert!(!viggle.supports(Action::PauseJob));
    assert!(matches!(
        viggle.pause_job("x").await,
        Err(ProviderError::Unsupported(_))
    ));

    let ugclab = adapter(&sim, ProviderKind::Ugclab, KEY);
    assert!(ugclab.supports(Action::Steps) && !ugclab.supports(Action::PauseJob));
    let job = ugclab
        .create(
            "act-2",
            &params(ProviderKind::Ugclab, "b", "completed", "1s"),
        )
        .await
        .unwrap();
    let steps = ugclab.list_steps(&job.provider_job_id).await.unwrap();
    // The simulator writes them in key order (its JSON maps are sorted);
    // the adapter keeps whatever order the answer has.
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["refineActions", "refineScript", "videoGeneration"]);
    until_terminal(&*ugclab, &job.provider_job_id).await;
    let steps = ugclab.list_steps(&job.provider_job_id).await.unwrap();
    assert!(steps.iter().all(|s| s.status == "completed"), "{steps:?}");
}
