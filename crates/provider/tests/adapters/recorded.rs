//! An adapter driven by a recorded exchange (tests/fixtures/*.jsonl, made
//! with `daemon.record_dir`) played back by the simulator's replay server:
//! what a recording from a real account turns into.

use crate::common::API_KEY;
use serde_json::Value;
use switchyard_core::{ProviderKind, Secret};
use switchyard_provider::ugclab::UgcLab;
use switchyard_provider::{Provider, RemoteState, Settings};
use switchyard_sim::replay::{self, Replay};
use tokio_util::sync::CancellationToken;

const RECORDING: &str = include_str!("../fixtures/recorded_ugclab.jsonl");

#[tokio::test]
async fn a_recorded_ugclab_job_replays_from_create_to_completed() {
    let lines: Vec<Value> = RECORDING
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The recording shows that credentials were sent, never what they were.
    assert!(lines
        .iter()
        .all(|l| l["request"]["headers"]["authorization"] == "[redacted]"));
    let create = &lines[0];
    let key = create["request"]["headers"]["idempotency-key"]
        .as_str()
        .unwrap();
    let params: Value = serde_json::from_str(create["request"]["body"].as_str().unwrap()).unwrap();
    let last: Value =
        serde_json::from_str(lines.last().unwrap()["response"]["body"].as_str().unwrap()).unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let server = tokio::spawn(replay::serve_on(
        listener,
        Replay::from_jsonl(RECORDING).unwrap(),
        cancel.clone(),
    ));
    let settings = Settings {
        base_url: format!("http://{addr}{}", ProviderKind::Ugclab.sim_prefix()),
        api_key: Some(Secret::new(API_KEY)),
        ..Settings::default()
    };
    let p = UgcLab::new(settings, crate::common::client());

    let created = p.create(key, &params).await.unwrap();
    assert_eq!(created.state, RemoteState::Pending);
    let mut progress = 0;
    let mut status = created.clone();
    for _ in 0..lines.len() {
        status = p.status(&created.provider_job_id).await.unwrap();
        let now = status.progress.unwrap_or(0);
        assert!(now >= progress, "progress went back: {progress} -> {now}");
        progress = now;
        if status.state == RemoteState::Completed {
            break;
        }
    }
    assert_eq!(status.state, RemoteState::Completed);
    assert_eq!(
        status.output_urls,
        [last["data"]["videoUrl"].as_str().unwrap()]
    );
    assert_eq!(
        status.credits_charged,
        last["data"]["creditsCharged"].as_u64()
    );
    cancel.cancel();
    server.await.unwrap().unwrap();
}

/// A provider that quotes back the credentials it received, and a U-Gen
/// webhook configuration that carries the secret in its body: the recording
/// has neither, and still says what was exchanged.
#[tokio::test]
async fn recordings_hold_no_secret_even_when_the_provider_echoes_one() {
    use crate::common::{FakeServer, Reply, WEBHOOK_SECRET};
    use switchyard_provider::record::{RecordOptions, Recorder, CURRENT_FILE};
    let server = FakeServer::start(|req| {
        let echoed = format!(
            "{{\"error\": {{\"code\": \"BAD_KEY\", \"message\": \"got {:?} {:?} {}\"}}}}",
            req.header("authorization"),
            req.header("x-api-key"),
            String::from_utf8_lossy(&req.body).replace('"', "'")
        );
        Reply::new(401, echoed)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::start(
        RecordOptions::new(dir.path()),
        vec![Secret::new(API_KEY), Secret::new(WEBHOOK_SECRET)],
    )
    .unwrap();
    let mut settings = server.settings(ProviderKind::Ugen.sim_prefix());
    settings.recorder = Some(recorder.named("ugen-main"));
    let ugen = switchyard_provider::ugen::UGen::new(settings, crate::common::client());
    assert!(ugen
        .configure_webhook("https://example.com/hook")
        .await
        .is_err());
    assert!(ugen.status("job-1").await.is_err());

    let file = dir.path().join(CURRENT_FILE);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let text = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text.lines().count() >= 2 || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        !text.contains(API_KEY) && !text.contains("TOPSECRET"),
        "{text}"
    );
    assert!(!text.contains(WEBHOOK_SECRET), "{text}");
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["provider"], "ugen-main");
    assert_eq!(first["method"], "PUT");
    assert_eq!(first["response"]["status"], 401);
    assert_eq!(first["request"]["headers"]["x-api-key"], "[redacted]");
    let sent: Value = serde_json::from_str(first["request"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["webhook_url"], "https://example.com/hook");
    assert_eq!(sent["webhook_secret"], "[redacted]");
    assert_eq!(recorder.dropped(), 0);
}
