//! The dashboard as a user meets it: the real daemon (a child process)
//! against the simulator, the page in headless Chromium driven over
//! WebDriver. Without chromium/chromedriver the browser tests print
//! `skipped: chromium/chromedriver not found` and pass; `.ci/run` installs
//! them. The HTTP-only tests run everywhere.
//!
//! Screenshots go to `target/dashboard-screenshots/` (look at them).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use common::{sim, spawn, Daemon, Env, P};
use fantoccini::Locator;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use switchyard_core::{Job, JobState, ProviderKind};
use switchyard_sim::SimServer;
use switchyard_testkit::browser::Browser;

const SCENARIO: &str = r#"
seed = 11
speedup = 10.0
[providers.ugen]
duration = { median = "40s", sigma = 0.2, min = "30s", max = "60s" }
failure_rate = 0.0
[providers.viggle]
duration = { median = "40s", sigma = 0.2, min = "30s", max = "60s" }
failure_rate = 0.0
[providers.ugclab]
duration = { median = "40s", sigma = 0.2, min = "30s", max = "60s" }
failure_rate = 0.0
[providers.ulazai]
duration = { median = "40s", sigma = 0.2, min = "30s", max = "60s" }
failure_rate = 0.0
"#;

const EXTRA: &str = "max_in_flight = 50\npoll = { schedule = [\"300ms\", \"500ms\"], max = \"1s\", timeout = \"10m\" }\nbudget = { credits = 100000, period = \"month\" }";

fn config(sim: &SimServer, daemon_extra: &str) -> Env {
    let providers: Vec<P<'_>> = ProviderKind::ALL
        .iter()
        .map(|k| P {
            name: k.as_str(),
            kind: *k,
            extra: EXTRA,
        })
        .collect();
    let env = Env::new().unwrap();
    let out = env.dir.path().join("out");
    let extra = format!("output_dir = \"{}\"\n{daemon_extra}", out.display());
    env.write(sim, &providers, &extra).unwrap();
    env
}

fn example_batch() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/examples/batch.toml")
}

fn shots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard-screenshots")
}

async fn jobs(url: &str) -> Vec<Job> {
    common::jobs(url).await
}

/// Clicks the element `css` finds; found again if the live page replaced
/// it between the find and the click (as it may, under a user's pointer).
async fn click(c: &fantoccini::Client, css: &str) {
    for _ in 0..5 {
        let el = c.find(Locator::Css(css)).await.unwrap();
        match el.click().await {
            Ok(()) => return,
            Err(fantoccini::error::CmdError::Standard(e))
                if e.error == fantoccini::error::ErrorStatus::StaleElementReference =>
            {
                continue
            }
            Err(e) => panic!("clicking {css}: {e}"),
        }
    }
    panic!("{css} kept being replaced");
}

async fn browser() -> Option<Browser> {
    Browser::start().await.unwrap_or_else(|e| panic!("{e:#}"))
}

/// Records, for every row of the jobs table, each state it was shown in
/// (so a test can tell that a row changed without the page reloading).
const WATCH_ROWS: &str = r#"
window.__noReload = true;
window.__seen = {};
const note = () => {
  for (const tr of document.querySelectorAll('#jobs-body tr[data-key]')) {
    const k = tr.dataset.key, s = tr.dataset.state;
    const list = (window.__seen[k] = window.__seen[k] || []);
    if (list[list.length - 1] !== s) list.push(s);
  }
};
new MutationObserver(note).observe(document.getElementById('jobs-body'), { childList: true, subtree: true });
note();
return true;
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_follows_a_batch_and_acts_on_jobs() {
    let sim = sim(SCENARIO).await;
    let env = config(&sim, "");
    let d = spawn(&env, &[]);
    let Some(b) = browser().await else { return };
    let url = d.url().to_string();
    let c = &b.client;

    // The example batch, uploaded through the file input.
    c.goto(&format!("{url}/")).await.unwrap();
    b.wait_for(
        "the jobs table",
        "return !!document.querySelector('#jobs-summary')",
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    b.eval(WATCH_ROWS).await.unwrap();
    let input = c.find(Locator::Css("#batch-file")).await.unwrap();
    input
        .send_keys(example_batch().canonicalize().unwrap().to_str().unwrap())
        .await
        .unwrap();
    b.wait_for(
        "the upload's answer",
        "return document.querySelector('#upload-result').innerText.includes('8 job(s) queued')",
        Duration::from_secs(20),
    )
    .await
    .unwrap();

    // Rows change state live, without a reload, until every job settled.
    b.wait_for(
        "every row settled",
        "const rows = [...document.querySelectorAll('#jobs-body tr[data-key]')];\
         return rows.length === 8 && rows.every(r => ['completed', 'failed'].includes(r.dataset.state));",
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    let seen = b
        .eval("return window.__noReload ? window.__seen : null")
        .await
        .unwrap();
    assert!(seen.is_object(), "the page reloaded");
    let changed_live = seen
        .as_object()
        .unwrap()
        .values()
        .filter(|v| {
            let v = v.as_array().unwrap();
            v.len() >= 2 && v.last().unwrap() == "completed"
        })
        .count();
    assert!(
        changed_live >= 3,
        "rows should be seen changing to completed in place: {seen}"
    );
    b.screenshot_page(&shots().join("overview.png"))
        .await
        .unwrap();
    // Every control can be reached by the keyboard and has a name; no
    // state is told by colour alone (each badge carries its word).
    let unnamed = b
        .eval(
            "const bad = [];\
             for (const el of document.querySelectorAll('button, input, select, a[href]')) {\
               if (el.closest('[hidden]')) continue;\
               const name = (el.labels && el.labels.length ? el.labels[0].innerText : '')\
                 || el.getAttribute('aria-label') || el.innerText;\
               if (!name.trim() || el.tabIndex < 0) bad.push(el.outerHTML.slice(0, 120));\
             }\
             for (const s of document.querySelectorAll('.state')) {\
               if (!/[a-z]{4,}/.test(s.innerText)) bad.push(s.outerHTML.slice(0, 120));\
             }\
             return bad;",
        )
        .await
        .unwrap();
    assert_eq!(unnamed, serde_json::json!([]), "controls without a name");
    // Nothing was fetched from anywhere but the daemon.
    let fetched = b
        .eval("return performance.getEntriesByType('resource').map(e => e.name)")
        .await
        .unwrap();
    let fetched: Vec<String> = serde_json::from_value(fetched).unwrap();
    assert!(
        fetched.iter().any(|n| n.ends_with("/assets/app.js")),
        "{fetched:?}"
    );
    let elsewhere: Vec<&String> = fetched
        .iter()
        .filter(|n| !n.starts_with(&format!("{url}/")))
        .collect();
    assert!(elsewhere.is_empty(), "outside requests: {elsewhere:?}");

    // One job: its timeline and its result, a video the daemon serves.
    c.goto(&format!("{url}/job/sneaker-dance-transparent"))
        .await
        .unwrap();
    b.wait_for(
        "the downloaded video and mask, playable",
        "const v = [...document.querySelectorAll('video')];\
         return v.length === 2 && v.every(x => x.getAttribute('src').startsWith('/v1/jobs/sneaker-dance-transparent/outputs/')\
           && x.readyState >= 1 && !x.error);",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let timeline = b
        .eval("return [...document.querySelectorAll('ol.timeline li')].map(l => l.innerText)")
        .await
        .unwrap();
    let timeline: Vec<String> = serde_json::from_value(timeline).unwrap();
    assert!(
        timeline.len() >= 4 && timeline.last().unwrap().contains("completed"),
        "{timeline:?}"
    );
    let facts = b
        .eval("return document.querySelector('dl.facts').innerText")
        .await
        .unwrap();
    assert!(facts.as_str().unwrap().contains("charged"), "{facts}");
    b.screenshot_page(&shots().join("job.png")).await.unwrap();

    // One cancel, of a job still running at the provider.
    let long = serde_json::json!({"jobs": [{"key": "long-1", "provider": "viggle",
        "params": {"image_url": "https://example.com/l.png", "x_sim_duration": "10m"}}]});
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/jobs"))
        .json(&long)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    c.goto(&format!("{url}/?q=long-1")).await.unwrap();
    b.wait_for(
        "long-1 running",
        "const r = document.querySelector('#jobs-body tr[data-key=\"long-1\"]');\
         return !!r && ['pending', 'processing'].includes(r.dataset.state);",
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    click(c, "button[data-act='cancel'][data-key='long-1']").await;
    b.wait_for(
        "long-1 cancelled",
        "const r = document.querySelector('#jobs-body tr[data-key=\"long-1\"]');\
         return !!r && r.dataset.state === 'cancelled';",
        Duration::from_secs(20),
    )
    .await
    .unwrap();

    // A bulk retry of every failed job, after a confirmation with the count.
    c.goto(&format!("{url}/?state=failed")).await.unwrap();
    b.wait_for(
        "the failed job listed",
        "return document.querySelectorAll('#jobs-body tr[data-key]').length === 1",
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    click(c, "button[data-bulk='retry']").await;
    b.wait_for(
        "the confirmation",
        "return document.querySelector('#confirm').open",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let ask = b
        .eval("return document.querySelector('#confirm-text').innerText")
        .await
        .unwrap();
    assert!(
        ask.as_str().unwrap().starts_with("Retry 1 job?"),
        "the confirmation states the count: {ask}"
    );
    b.screenshot(&shots().join("bulk-confirm.png"))
        .await
        .unwrap();
    click(c, "#confirm-ok").await;
    b.wait_for(
        "the bulk answer",
        "return document.querySelector('#action-msg').innerText.includes('1 of 1 done')",
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    let retried: serde_json::Value =
        reqwest::get(format!("{url}/v1/jobs/sneaker-dance-broken-image"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let notes: Vec<&str> = retried["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["note"].as_str().unwrap())
        .collect();
    assert!(notes.contains(&"retried by user"), "{notes:?}");

    // A bad batch: problems by line, nothing queued.
    let bad = env.dir.path().join("bad-batch.toml");
    std::fs::write(
        &bad,
        "[[jobs]]\nkey = \"fine-1\"\nprovider = \"viggle\"\nparams = { image_url = \"https://example.com/a.png\" }\n\n\
         [[jobs]]\nkey = \"no-image\"\nprovider = \"viggle\"\nparams = { }\n\n\
         [[jobs]]\nkey = \"elsewhere\"\nprovider = \"nosuch\"\nparams = { image_url = \"https://example.com/b.png\" }\n",
    )
    .unwrap();
    c.goto(&format!("{url}/")).await.unwrap();
    b.wait_for(
        "the page",
        "return !!document.querySelector('#jobs-summary')",
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    let before = jobs(&url).await.len();
    // Dropped on the page, as a user drags a file from their desktop.
    let text = std::fs::read_to_string(&bad).unwrap();
    c.execute(
        "const dt = new DataTransfer();\
         dt.items.add(new File([arguments[0]], 'bad-batch.toml', { type: 'text/plain' }));\
         document.querySelector('#drop').dispatchEvent(\
           new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));\
         return true;",
        vec![serde_json::json!(text)],
    )
    .await
    .unwrap();
    b.wait_for(
        "the problems",
        "return document.querySelectorAll('#upload-result li').length >= 2",
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    let problems = b
        .eval("return [...document.querySelectorAll('#upload-result li')].map(l => l.innerText)")
        .await
        .unwrap();
    let problems: Vec<String> = serde_json::from_value(problems).unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("line 6") && p.contains("no-image")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("line 11") && p.contains("nosuch")),
        "{problems:?}"
    );
    b.screenshot_page(&shots().join("bad-upload.png"))
        .await
        .unwrap();
    let after = jobs(&url).await;
    assert_eq!(after.len(), before, "a bad batch queues nothing");
    assert!(after.iter().all(|j| j.key != "fine-1"));

    // Pause and resume a provider from its card.
    click(
        c,
        "button[data-provider-act='pause'][data-provider='ugclab']",
    )
    .await;
    b.wait_for(
        "ugclab paused by a user",
        "const c = document.querySelector('article.card[data-provider=\"ugclab\"]');\
         return !!c && c.innerText.includes('paused by a user');",
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    let v = common::providers(&url).await;
    let ugclab = v
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "ugclab")
        .unwrap();
    assert_eq!(ugclab["paused_by"], "user", "{ugclab}");
    click(
        c,
        "button[data-provider-act='resume'][data-provider='ugclab']",
    )
    .await;
    b.wait_for(
        "ugclab dispatching again",
        "const c = document.querySelector('article.card[data-provider=\"ugclab\"]');\
         return !!c && c.innerText.includes('dispatching');",
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    b.close().await;
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_page_refuses_until_given_it() {
    let sim = sim(SCENARIO).await;
    let token = "dash-test-token-5f2c";
    let pre = Env::new().unwrap();
    let token_file = pre.dir.path().join("token");
    std::fs::write(&token_file, token).unwrap();
    let env = config(
        &sim,
        &format!("auth_token_file = \"{}\"", token_file.display()),
    );
    let d = spawn(&env, &[]);
    let url = d.url().to_string();
    session_rules(&url, token).await;

    let Some(b) = browser().await else { return };
    let c = &b.client;
    c.goto(&format!("{url}/")).await.unwrap();
    b.wait_for(
        "the token form",
        "return !document.querySelector('#login').hidden && document.querySelector('#jobs').hidden",
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    let status = b
        .eval("return fetch('/v1/jobs').then(r => r.status)")
        .await
        .unwrap();
    assert_eq!(status, 401);
    b.screenshot(&shots().join("token.png")).await.unwrap();
    let field = c.find(Locator::Css("#token")).await.unwrap();
    field.send_keys("not-it").await.unwrap();
    click(c, "#login-form button").await;
    b.wait_for(
        "the refusal",
        "return document.querySelector('#login-msg').innerText.includes('not the daemon')",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    field.clear().await.unwrap();
    field.send_keys(token).await.unwrap();
    click(c, "#login-form button").await;
    b.wait_for(
        "the providers, live",
        "return !!document.querySelector('article.card[data-provider=\"viggle\"]')\
         && document.querySelector('#live').innerText.includes('live')",
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    let cookie = b.eval("return document.cookie").await.unwrap();
    assert_eq!(cookie, "", "the session cookie is HttpOnly");
    b.close().await;
    drop(d);
}

/// The session cookie over plain HTTP: what it is, what it opens, and
/// that it never authorizes a change another site's page could send.
async fn session_rules(url: &str, token: &str) {
    let http = reqwest::Client::new();
    let shell = http.get(format!("{url}/")).send().await.unwrap();
    assert_eq!(shell.status(), 200, "the page shell needs no token");
    assert_eq!(
        http.get(format!("{url}/ui/jobs"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let wrong = http
        .post(format!("{url}/v1/session"))
        .json(&serde_json::json!({"token": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let ok = http
        .post(format!("{url}/v1/session"))
        .json(&serde_json::json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let set = ok.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(!set.contains(token), "the cookie is not the token: {set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let with = |rb: reqwest::RequestBuilder| rb.header("cookie", cookie.clone());
    let r = with(http.get(format!("{url}/v1/jobs")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the cookie opens reads");
    let port = url.rsplit(':').next().unwrap();
    assert!(
        cookie.starts_with(&format!("switchyard_session_{port}=")),
        "{cookie}"
    );
    // The same value under another daemon's (port's) name does not.
    let value = cookie.split_once('=').unwrap().1;
    let r = http
        .get(format!("{url}/v1/jobs"))
        .header("cookie", format!("switchyard_session_1={value}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A change with the cookie but a content type any page can send.
    let r = with(http.post(format!("{url}/v1/bulk/retry")))
        .header("content-type", "text/plain")
        .body(r#"{"count":0}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // From another site's page.
    let r = with(http.post(format!("{url}/v1/bulk/retry")))
        .header("origin", "http://evil.example")
        .json(&serde_json::json!({"count": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = with(http.post(format!("{url}/v1/bulk/retry")))
        .header("sec-fetch-site", "cross-site")
        .json(&serde_json::json!({"count": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The page's own call.
    let r = with(http.post(format!("{url}/v1/bulk/retry")))
        .header("origin", url)
        .header("sec-fetch-site", "same-origin")
        .json(&serde_json::json!({"count": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// Submits `n` viggle jobs named `prefix-NNN` over HTTP.
async fn submit(url: &str, prefix: &str, n: usize, extra: serde_json::Value) {
    let jobs: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let mut params = serde_json::json!({"image_url": format!("https://example.com/{i}.png")});
            for (k, v) in extra.as_object().unwrap() {
                params[k] = v.clone();
            }
            serde_json::json!({"key": format!("{prefix}-{i:03}"), "provider": "viggle", "params": params})
        })
        .collect();
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/jobs"))
        .json(&serde_json::json!({ "jobs": jobs }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_paged_searched_and_bulk_actions_need_the_count() {
    let sim = sim(SCENARIO).await;
    let env = config(&sim, "");
    let d: Daemon = spawn(&env, &[]);
    let url = d.url().to_string();
    let http = reqwest::Client::new();

    // The event stream tells of new jobs.
    let mut events = http.get(format!("{url}/v1/events")).send().await.unwrap();
    assert_eq!(events.status(), 200);
    assert!(events.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    submit(
        &url,
        "slow",
        30,
        serde_json::json!({"x_sim_duration": "10m"}),
    )
    .await;
    submit(
        &url,
        "doomed",
        5,
        serde_json::json!({"x_sim_outcome": "failed"}),
    )
    .await;
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains("slow-000") && Instant::now() < deadline {
        let chunk = tokio::time::timeout(Duration::from_secs(5), events.chunk())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        seen.contains("event: jobs") && seen.contains("slow-000"),
        "{seen}"
    );
    drop(events);

    // Pages: the total in a header, the rows sorted and sliced on the server.
    let page = http
        .get(format!(
            "{url}/v1/jobs?q=SLOW-&sort=key&dir=desc&offset=5&limit=10"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(page.headers()["x-total-count"], "30");
    let rows: Vec<Job> = page.json().await.unwrap();
    let keys: Vec<&str> = rows.iter().map(|j| j.key.as_str()).collect();
    let want: Vec<String> = (15..25).rev().map(|i| format!("slow-{i:03}")).collect();
    assert_eq!(keys, want);
    let bad = http
        .get(format!("{url}/v1/jobs?sort=colour"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // Bulk retry: the count, then the action only with that count.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let failed = jobs(&url)
            .await
            .into_iter()
            .filter(|j| j.state == JobState::Failed)
            .count();
        if failed == 5 {
            break;
        }
        assert!(Instant::now() < deadline, "doomed jobs did not fail");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let preview: serde_json::Value = http
        .get(format!("{url}/v1/bulk/retry?q=doomed"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(preview["count"], 5);
    let stale = http
        .post(format!("{url}/v1/bulk/retry"))
        .json(&serde_json::json!({"q": "doomed", "count": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 409);
    let body: serde_json::Value = stale.json().await.unwrap();
    assert_eq!(body["error"]["code"], "count_changed");
    let still_failed = jobs(&url)
        .await
        .into_iter()
        .filter(|j| j.state == JobState::Failed)
        .count();
    assert_eq!(still_failed, 5, "a refused bulk action changes nothing");
    let done: serde_json::Value = http
        .post(format!("{url}/v1/bulk/retry"))
        .json(&serde_json::json!({"q": "doomed", "count": 5}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(done["done"], 5, "{done}");

    // Bulk cancel of the slow ones: everything matching, not one page.
    let n: serde_json::Value = http
        .get(format!("{url}/v1/bulk/cancel?q=slow"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(n["count"], 30);
    let done: serde_json::Value = http
        .post(format!("{url}/v1/bulk/cancel"))
        .json(&serde_json::json!({"q": "slow", "count": 30}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(done["done"], 30, "{done}");
    // A cancel the provider accepted while a poll moved the job shows at
    // the job's next poll.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let cancelled = jobs(&url)
            .await
            .into_iter()
            .filter(|j| j.key.starts_with("slow") && j.state == JobState::Cancelled)
            .count();
        if cancelled == 30 {
            break;
        }
        assert!(Instant::now() < deadline, "{cancelled} of 30 cancelled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A job's outputs are served only when downloaded.
    let none = http
        .get(format!("{url}/v1/jobs/slow-000/outputs/0"))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 404);
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_says_when_the_stream_drops_and_catches_up_after() {
    let sim = sim(SCENARIO).await;
    let env = config(&sim, "");
    let mut d = spawn(&env, &[]);
    let Some(b) = browser().await else { return };
    let url = d.url().to_string();
    b.client.goto(&format!("{url}/")).await.unwrap();
    b.wait_for(
        "the stream",
        "return document.querySelector('#live').innerText.includes('live')",
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    b.eval("window.__noReload = true; return true")
        .await
        .unwrap();
    d.stop(Duration::from_secs(20)).unwrap();
    b.wait_for(
        "the page to say the stream is down",
        "return document.querySelector('#live').innerText.includes('stream down')",
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    let d2 = spawn(&env, &[]);
    submit(d2.url(), "after-restart", 1, serde_json::json!({})).await;
    b.wait_for(
        "the new job's row, and the stream back",
        "return !!document.querySelector('#jobs-body tr[data-key=\"after-restart-000\"]')\
         && document.querySelector('#live').innerText.includes('live')",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let same = b.eval("return window.__noReload === true").await.unwrap();
    assert_eq!(same, true, "the page caught up without a reload");
    b.close().await;
    drop(d2);
}
