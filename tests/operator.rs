//! The operator commands through the real daemon and CLI, against the
//! simulator over loopback: pausing a provider (held across a restart
//! while its live jobs finish), planning a batch (its figures against what
//! the run then charges; `--require-fit` over budget; bad files), adopting
//! an uncertain job, and webhooks: the daemon registers its URL with U-Gen
//! and U-Gen's signed webhooks then make jobs due; each of UGC Lab's four
//! unsigned events makes its job due.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use common::{cli_async as cli, text};

use common::{sim, spawn, P};
use std::process::Output;
use std::time::{Duration, Instant};
use switchyard_core::{HeldBy, Job, JobState, ProviderKind};

/// Runs the CLI off the async workers (the simulator shares them).
fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}",
        out.status.code(),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn json(out: &Output, what: &str) -> serde_json::Value {
    let s = ok(out, what);
    serde_json::from_str(&s)
        .unwrap_or_else(|e| panic!("{what}: stdout is not one JSON document ({e}): {s:?}"))
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn job(url: &str, key: &str) -> Job {
    common::jobs(url)
        .await
        .into_iter()
        .find(|j| j.key == key)
        .unwrap_or_else(|| panic!("no job {key}"))
}

fn view<'a>(providers: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    providers
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("no provider {name} in {providers}"))
}

fn count(jobs: &[Job], state: JobState) -> usize {
    jobs.iter().filter(|j| j.state == state).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_holds_dispatch_across_a_restart_while_live_jobs_finish_and_resume_dispatches() {
    let sim =
        sim("seed = 3\n[providers.viggle]\nduration = { fixed = \"6s\" }\nfailure_rate = 0.0\n")
            .await;
    let extra =
        "max_in_flight = 2\npoll = { schedule = [\"300ms\"], max = \"500ms\", timeout = \"5m\" }";
    let env = common::write_config(
        &sim,
        &[P {
            name: "viggle",
            kind: ProviderKind::Viggle,
            extra,
        }],
        "",
    );
    let jobs: Vec<_> = (0..6)
        .map(|i| {
            (
                format!("held-{i}"),
                "viggle".to_string(),
                common::params(ProviderKind::Viggle, i),
            )
        })
        .collect();
    let batch = common::batch_file(env.dir.path(), "batch.toml", &jobs);
    let mut daemon = spawn(&env, &[]);
    let url = env.url.clone();
    ok(
        &cli(&url, &["submit", batch.to_str().unwrap()]).await,
        "submit",
    );
    // Two in flight, four waiting for a slot.
    wait_for("two live jobs", Duration::from_secs(10), || async {
        count(&common::jobs(&url).await, JobState::Pending)
            + count(&common::jobs(&url).await, JobState::Processing)
            == 2
    })
    .await;

    let out = cli(&url, &["pause", "viggle"]).await;
    assert!(
        ok(&out, "pause").contains("paused"),
        "{}",
        text(&out.stdout)
    );
    let jobs = common::jobs(&url).await;
    for j in jobs.iter().filter(|j| j.state == JobState::Queued) {
        assert_eq!(j.held_by, Some(HeldBy::Paused), "{}", j.key);
    }
    let providers = json(&cli(&url, &["providers", "--json"]).await, "providers");
    let v = view(&providers, "viggle");
    assert_eq!(v["paused"], true, "{v}");
    assert_eq!(v["paused_by"], "user", "{v}");
    let table = ok(&cli(&url, &["providers"]).await, "providers");
    assert!(table.contains("paused by user"), "{table}");

    // A restart while the two are still running: they are followed to
    // the end, and nothing new is sent.
    daemon.stop(Duration::from_secs(20)).unwrap();
    let _daemon = spawn(&env, &[]);
    let providers = common::providers(&url).await;
    assert_eq!(view(&providers, "viggle")["paused_by"], "user");
    wait_for(
        "the live jobs to finish",
        Duration::from_secs(30),
        || async { count(&common::jobs(&url).await, JobState::Completed) == 2 },
    )
    .await;
    // Time for a dispatch that should not happen (the loop runs each second).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let jobs = common::jobs(&url).await;
    assert_eq!(count(&jobs, JobState::Queued), 4, "{jobs:?}");
    assert!(jobs
        .iter()
        .filter(|j| j.state == JobState::Queued)
        .all(|j| j.held_by == Some(HeldBy::Paused)));
    assert_eq!(sim.stats().provider(ProviderKind::Viggle).creates, 2);

    // An unknown provider: 404 with the names that are configured.
    let out = cli(&url, &["pause", "nosuch"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no provider named \"nosuch\"")
            && text(&out.stderr).contains("viggle"),
        "{}",
        text(&out.stderr)
    );
    let resp = reqwest::Client::new()
        .post(format!("{url}/v1/providers/nosuch/resume"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found", "{body}");

    let out = cli(&url, &["resume", "viggle", "--json"]).await;
    let v = json(&out, "resume");
    assert_eq!(v["paused"], false, "{v}");
    let done = common::wait_settled(&url, 6, Duration::from_secs(60)).await;
    assert_eq!(count(&done, JobState::Completed), 6, "{done:?}");
    assert_eq!(sim.stats().provider(ProviderKind::Viggle).creates, 6);
}

/// U-Gen jobs of three models and sizes (three distinct estimates, one of
/// them twice), and two jobs of each other provider.
fn mixed_batch() -> Vec<(String, String, String)> {
    // The last costs what the first does: U-Gen is asked once for both.
    let ugen = [
        ("veo3_fast", 1, 8),
        ("veo3", 2, 8),
        ("kling_2", 3, 5),
        ("veo3_fast", 1, 8),
    ];
    let mut out: Vec<_> = ugen
        .iter()
        .enumerate()
        .map(|(i, (model, segments, seconds))| {
            (
                format!("mixed-ugen-{i}"),
                "ugen".to_string(),
                format!("{{ product_name = \"P{i}\", product_image_url = \"https://example.com/{i}.jpg\", segment_count = {segments}, video_model = \"{model}\", segment_duration = {seconds} }}"),
            )
        })
        .collect();
    for (name, kind) in [
        ("ulazai", ProviderKind::Ulazai),
        ("viggle", ProviderKind::Viggle),
        ("ugclab", ProviderKind::Ugclab),
    ] {
        for i in 0..2 {
            out.push((
                format!("mixed-{name}-{i}"),
                name.to_string(),
                common::params(kind, i),
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_figures_match_what_the_run_charges_and_require_fit_fails_over_budget() {
    let sim = sim("seed = 4\nspeedup = 10.0\n[providers.ugen]\nduration = { fixed = \"2s\" }\nfailure_rate = 0.0\n[providers.ulazai]\nduration = { fixed = \"2s\" }\nfailure_rate = 0.0\n[providers.viggle]\nduration = { fixed = \"2s\" }\nfailure_rate = 0.0\n[providers.ugclab]\nduration = { fixed = \"2s\" }\nfailure_rate = 0.0\n").await;
    let poll = "poll = { schedule = [\"200ms\"], max = \"500ms\", timeout = \"5m\" }";
    let ugen = format!("{poll}\nbudget = {{ credits = 220, period = \"total\" }}\nrate_limit = {{ per_second = 2, burst = 2 }}");
    let providers = [
        P {
            name: "ugen",
            kind: ProviderKind::Ugen,
            extra: &ugen,
        },
        P {
            name: "ulazai",
            kind: ProviderKind::Ulazai,
            extra: poll,
        },
        P {
            name: "viggle",
            kind: ProviderKind::Viggle,
            extra: poll,
        },
        P {
            name: "ugclab",
            kind: ProviderKind::Ugclab,
            extra: poll,
        },
    ];
    let env = common::write_config(&sim, &providers, "");
    let batch = common::batch_file(env.dir.path(), "mixed.toml", &mixed_batch());
    let _daemon = spawn(&env, &[]);
    let url = env.url.clone();
    let path = batch.to_str().unwrap();

    let plan = json(&cli(&url, &["plan", path, "--json"]).await, "plan");
    assert_eq!(plan["fits"], true, "{plan:#}");
    assert_eq!(plan["jobs"], 10);
    assert!(common::jobs(&url).await.is_empty(), "plan queued nothing");
    let ugen_plan = view(&plan["providers"], "ugen").clone();
    // veo3_fast 1 x 20 (twice), veo3 2 x 40, kling 3 x 15, as U-Gen
    // itself said, asked once per distinct body (the simulator's estimate
    // and the adapter's agree, so the count of requests tells them apart).
    assert_eq!(ugen_plan["jobs"], 4, "{ugen_plan:#}");
    assert_eq!(
        ugen_plan["estimated_credits"],
        20 + 80 + 45 + 20,
        "{ugen_plan:#}"
    );
    assert_eq!(ugen_plan["provider_estimated_jobs"], 4, "{ugen_plan:#}");
    let asked = sim.stats().provider(ProviderKind::Ugen);
    assert_eq!((asked.requests, asked.creates), (3, 0), "{asked:?}");
    assert_eq!(ugen_plan["budget_left"], 220);
    assert_eq!(ugen_plan["max_in_flight"], 10);
    // Four creates at 2/s with a burst of 2: two intervals.
    assert_eq!(ugen_plan["drain_by_rate_s"], 1.0, "{ugen_plan:#}");
    // The table for people says the same.
    let table = ok(&cli(&url, &["plan", path]).await, "plan");
    assert!(table.contains("165 (provider)"), "{table}");
    assert!(table.contains("nothing queued"), "{table}");

    ok(&cli(&url, &["submit", path]).await, "submit");
    let done = common::wait_settled(&url, 10, Duration::from_secs(60)).await;
    assert_eq!(count(&done, JobState::Completed), 10, "{done:?}");
    let views = common::providers(&url).await;
    for p in plan["providers"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let used = view(&views, name)["budget_used"].as_u64().unwrap();
        let estimated = p["estimated_credits"].as_u64().unwrap();
        let reserved = p["reserved_credits"].as_u64().unwrap();
        // What the run charged is what the plan estimated, within the
        // adapter's (upper) estimate that dispatch reserves.
        assert!(
            used > 0 && used <= reserved,
            "{name}: charged {used}, plan {p:#}"
        );
        if name == "ugen" {
            assert_eq!(used, estimated, "{p:#}");
        }
        let charged: u64 = done
            .iter()
            .filter(|j| j.provider == name)
            .map(|j| j.credits_charged)
            .sum();
        assert_eq!(charged, used, "{name}");
    }

    // Planned again: every key is known and costs nothing more.
    let again = json(&cli(&url, &["plan", path, "--json"]).await, "plan");
    let u = view(&again["providers"], "ugen");
    assert_eq!(u["jobs"], 0, "{u:#}");
    assert_eq!(u["known_keys"].as_array().unwrap().len(), 4, "{u:#}");
    assert_eq!(u["estimated_credits"], 0);

    // 55 credits left: two 20-credit jobs fit, the third waits.
    let more: Vec<_> = (0..3)
        .map(|i| {
            (
                format!("over-{i}"),
                "ugen".to_string(),
                common::params(ProviderKind::Ugen, 10 + i),
            )
        })
        .collect();
    let over = common::batch_file(env.dir.path(), "over.toml", &more);
    let over = over.to_str().unwrap();
    let out = cli(&url, &["plan", over, "--json", "--require-fit"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let u = view(&p["providers"], "ugen");
    assert_eq!(p["fits"], false);
    assert_eq!(u["budget_left"], 55, "{u:#}");
    assert_eq!(u["waiting_keys"], serde_json::json!(["over-2"]), "{u:#}");
    assert!(
        text(&out.stderr).contains("does not fit"),
        "{}",
        text(&out.stderr)
    );
    // Without the flag the same plan is only information.
    let out = cli(&url, &["plan", over]).await;
    assert!(ok(&out, "plan").contains("would wait for credits: over-2"));

    // Bad files: every problem with its file and line, exit 2, nothing queued.
    let bad_params = common::batch_file(
        env.dir.path(),
        "bad-params.toml",
        &[(
            "bad-1".into(),
            "ugen".into(),
            "{ product_name = \"x\", product_image_url = \"https://e.com/x.jpg\", segment_count = 11 }".into(),
        )],
    );
    let bad_provider = common::batch_file(
        env.dir.path(),
        "bad-provider.toml",
        &[
            (
                "fine".into(),
                "viggle".into(),
                common::params(ProviderKind::Viggle, 7),
            ),
            ("bad-2".into(), "nosuch".into(), "{ a = 1 }".into()),
        ],
    );
    let (a, b) = (bad_params.to_str().unwrap(), bad_provider.to_str().unwrap());
    let out = cli(&url, &["plan", a, b]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{a}:1: job \"bad-1\"")) && err.contains("segment_count"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{b}:6: job \"bad-2\"")) && err.contains("nosuch"),
        "{err}"
    );
    assert_eq!(common::jobs(&url).await.len(), 10, "nothing queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopt_follows_an_uncertain_job_to_completed() {
    // Viggle takes the create and the answer is lost: nobody can ask it
    // which job it made, so the job is uncertain. Its polls are answered.
    // The job runs 6 s (real): still running when it is adopted.
    let sim = sim("seed = 5\nspeedup = 10.0\n[providers.viggle]\nduration = { fixed = \"60s\" }\nfailure_rate = 0.0\nfaults = { drop = 1.0, requests = \"create\" }\n[providers.ugclab]\nduration = { fixed = \"1s\" }\nfailure_rate = 0.0\n").await;
    let poll = "poll = { schedule = [\"200ms\"], max = \"500ms\", timeout = \"5m\" }";
    let viggle = format!("{poll}\nbudget = {{ credits = 1000, period = \"total\" }}");
    let env = common::write_config(
        &sim,
        &[
            P {
                name: "viggle",
                kind: ProviderKind::Viggle,
                extra: &viggle,
            },
            P {
                name: "ugclab",
                kind: ProviderKind::Ugclab,
                extra: poll,
            },
        ],
        "",
    );
    let batch = common::batch_file(
        env.dir.path(),
        "b.toml",
        &[
            (
                "lost".into(),
                "viggle".into(),
                common::params(ProviderKind::Viggle, 1),
            ),
            (
                "plain".into(),
                "ugclab".into(),
                common::params(ProviderKind::Ugclab, 1),
            ),
        ],
    );
    let _daemon = spawn(&env, &[]);
    let url = env.url.clone();
    ok(
        &cli(&url, &["submit", batch.to_str().unwrap()]).await,
        "submit",
    );
    let done = common::wait_settled(&url, 2, Duration::from_secs(30)).await;
    let lost = done.iter().find(|j| j.key == "lost").unwrap();
    assert_eq!(lost.state, JobState::Uncertain, "{lost:?}");
    let reserved = lost.credits_reserved;
    assert!(reserved > 0);
    let id = sim
        .jobs()
        .into_iter()
        .find(|j| j.client_key.as_deref() == Some("lost"))
        .expect("the simulator made the job")
        .job_id;

    // Only uncertain jobs; only ids the provider knows; nothing changes otherwise.
    let out = cli(&url, &["adopt", "plain", "whatever"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("only uncertain jobs"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(&url, &["adopt", "lost", "no-such-render"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("has no job"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(job(&url, "lost").await.state, JobState::Uncertain);
    let resp = reqwest::Client::new()
        .post(format!("{url}/v1/jobs/lost/adopt"))
        .json(&serde_json::json!({"id": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    let v = json(&cli(&url, &["adopt", "lost", &id, "--json"]).await, "adopt");
    assert_eq!(v["provider_job_id"], id.as_str(), "{v:#}");
    assert!(
        v["state"] == "pending" || v["state"] == "processing",
        "{v:#}"
    );
    assert_eq!(
        v["credits_reserved"], reserved,
        "the estimate is reserved at once"
    );
    assert_eq!(
        view(&common::providers(&url).await, "viggle")["budget_reserved"],
        reserved
    );
    wait_for(
        "the adopted job to complete",
        Duration::from_secs(30),
        || async { job(&url, "lost").await.state == JobState::Completed },
    )
    .await;
    let j = job(&url, "lost").await;
    assert!(!j.output_urls.is_empty(), "{j:?}");
    assert_eq!(j.credits_reserved, 0);
    let charged = sim.stats().provider(ProviderKind::Viggle).credits_charged;
    assert_eq!(
        j.credits_charged, charged,
        "settled at the provider's charge"
    );
    let shown = json(&cli(&url, &["show", "lost", "--json"]).await, "show");
    let notes: Vec<&str> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["note"].as_str())
        .collect();
    assert!(
        notes.iter().any(|n| n.contains("adopted by user")),
        "{notes:?}"
    );
    // Created once: adopting never sends a create.
    assert_eq!(sim.stats().provider(ProviderKind::Viggle).creates, 1);
}

const HOOK_SECRET: &str = "operator-test-webhook-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_url_is_registered_with_ugen_and_its_signed_webhooks_make_jobs_due() {
    let sim =
        sim("seed = 6\n[providers.ugen]\nduration = { fixed = \"2s\" }\nfailure_rate = 0.0\n")
            .await;
    let env = common::Env::new().unwrap();
    let hook = format!("{}/webhooks/ugen", env.url);
    // Polls a minute apart: only a webhook can tell the daemon sooner.
    let extra = format!("poll = {{ schedule = [\"60s\"], max = \"60s\", timeout = \"10m\" }}\nwebhook_secret_env = \"E2E_HOOK\"\nwebhook_public_url = \"{hook}\"");
    let providers = [P {
        name: "ugen",
        kind: ProviderKind::Ugen,
        extra: &extra,
    }];
    env.write(&sim, &providers, "").unwrap();
    let mut daemon = spawn(&env, &[("E2E_HOOK", HOOK_SECRET)]);
    wait_for("the registration", Duration::from_secs(15), || async {
        sim.stats()
            .provider(ProviderKind::Ugen)
            .webhook_url
            .as_deref()
            == Some(hook.as_str())
    })
    .await;
    assert!(sim.stats().provider(ProviderKind::Ugen).webhook_secret_set);
    let url = env.url.clone();
    let jobs: Vec<_> = (0..2)
        .map(|i| {
            (
                format!("hooked-{i}"),
                "ugen".to_string(),
                common::params(ProviderKind::Ugen, i),
            )
        })
        .collect();
    let batch = common::batch_file(env.dir.path(), "b.toml", &jobs);
    let started = Instant::now();
    ok(
        &cli(&url, &["submit", batch.to_str().unwrap()]).await,
        "submit",
    );
    let done = common::wait_settled(&url, 2, Duration::from_secs(30)).await;
    assert_eq!(count(&done, JobState::Completed), 2, "{done:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "known in {:?}: well before the first poll (60 s)",
        started.elapsed()
    );
    assert!(sim.stats().provider(ProviderKind::Ugen).webhooks_sent >= 2);
    let log = daemon.log();
    assert!(log.contains("webhook URL registered"), "{log}");
    assert!(!log.contains(HOOK_SECRET), "the secret reached the log");

    // SIGHUP registers again (here a new URL; its query is not logged).
    let moved = format!("{hook}?from=reload");
    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace(&format!("\"{hook}\""), &format!("\"{moved}\""));
    std::fs::write(&env.config, text).unwrap();
    daemon.signal(common::Signal::Hup).unwrap();
    wait_for(
        "the second registration",
        Duration::from_secs(15),
        || async {
            sim.stats()
                .provider(ProviderKind::Ugen)
                .webhook_url
                .as_deref()
                == Some(moved.as_str())
        },
    )
    .await;
    assert_eq!(
        sim.stats()
            .provider(ProviderKind::Ugen)
            .webhook_registrations,
        2
    );
    let log = daemon.log();
    assert!(!log.contains("from=reload"), "{log}");
    assert!(!log.contains(HOOK_SECRET));
    daemon.stop(Duration::from_secs(20)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_of_ugc_labs_four_events_makes_its_job_due() {
    let sim =
        sim("seed = 7\n[providers.ugclab]\nduration = { fixed = \"20m\" }\nfailure_rate = 0.0\n")
            .await;
    let extra = "poll = { schedule = [\"60s\"], max = \"60s\", timeout = \"1h\" }";
    let env = common::write_config(
        &sim,
        &[P {
            name: "ugclab",
            kind: ProviderKind::Ugclab,
            extra,
        }],
        "",
    );
    // Each event with a job in the state it announces (simulated times).
    let jobs = [
        ("ugc_created", "x_sim_duration = \"20m\""),
        ("ugc_processing", "x_sim_duration = \"40s\""),
        ("ugc_completed", "x_sim_duration = \"1s\""),
        (
            "ugc_failed",
            "x_sim_duration = \"1s\", x_sim_outcome = \"failed\"",
        ),
    ];
    let specs: Vec<_> = jobs
        .iter()
        .map(|(event, script)| {
            (
                event.to_string(),
                "ugclab".to_string(),
                format!("{{ script = \"for {event}\", {script} }}"),
            )
        })
        .collect();
    let batch = common::batch_file(env.dir.path(), "b.toml", &specs);
    let _daemon = spawn(&env, &[]);
    let url = env.url.clone();
    ok(
        &cli(&url, &["submit", batch.to_str().unwrap()]).await,
        "submit",
    );
    wait_for(
        "four acknowledged jobs",
        Duration::from_secs(10),
        || async {
            let js = common::jobs(&url).await;
            js.len() == 4 && js.iter().all(|j| j.provider_job_id.is_some())
        },
    )
    .await;
    // The processing one is past its pending tenth (4 s), the short ones done.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let expect = [
        ("ugc_created", JobState::Pending, "PENDING"),
        ("ugc_processing", JobState::Processing, "PROCESSING"),
        ("ugc_completed", JobState::Completed, "COMPLETED"),
        ("ugc_failed", JobState::Failed, "FAILED"),
    ];
    let http = reqwest::Client::new();
    for (event, state, word) in expect {
        let id = job(&url, event).await.provider_job_id.unwrap();
        let polls = sim.stats().provider(ProviderKind::Ugclab).status_requests;
        let body = serde_json::json!({"event": event, "data": {"id": id, "status": word}});
        let resp = http
            .post(format!("{url}/webhooks/ugclab"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202, "{event}");
        wait_for(
            &format!("the poll after {event}"),
            Duration::from_secs(10),
            || async { sim.stats().provider(ProviderKind::Ugclab).status_requests > polls },
        )
        .await;
        wait_for(
            &format!("{event} to show {word}"),
            Duration::from_secs(10),
            || async {
                let j = job(&url, event).await;
                j.state == state && j.provider_status.as_deref() == Some(word)
            },
        )
        .await;
    }
    // One poll per event: nothing else was due within the minute.
    assert_eq!(
        sim.stats().provider(ProviderKind::Ugclab).status_requests,
        4
    );
}

#[test]
fn check_refuses_a_webhook_url_it_could_not_register() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let cfg = "[daemon]\ndata_dir = \"data\"\n\n\
[providers.ugen]\nkind = \"ugen\"\napi_key_required = false\n\
webhook_public_url = \"hooks.example.com/webhooks/ugen\"\n\n\
[providers.viggle]\nkind = \"viggle\"\napi_key_required = false\n\
webhook_secret_env = \"X\"\nwebhook_public_url = \"https://hooks.example.com/webhooks/viggle\"\n";
    std::fs::write(&config, cfg).unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("check")
        .arg(&config)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    let at = config.display().to_string();
    // Each at the line of its key: a URL that is not one, no secret to
    // sign with, a provider that takes no URL through its API.
    assert!(err.contains(&format!("{at}:7:1: providers.ugen.webhook_public_url: \"hooks.example.com/webhooks/ugen\" is not an http(s) URL")), "{err}");
    assert!(
        err.contains(&format!(
            "{at}:7:1: providers.ugen.webhook_public_url: needs webhook_secret_env"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{at}:13:1: providers.viggle.webhook_public_url: only U-Gen"
        )),
        "{err}"
    );
}
