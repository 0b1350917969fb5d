//! The control API read straight over HTTP: cheaper than a CLI process
//! per look, for tests that poll.

use std::time::{Duration, Instant};
use switchyard_core::{Job, JobState};

/// `GET /v1/jobs` straight over HTTP (cheaper than a CLI process per poll).
pub async fn jobs(url: &str) -> Vec<Job> {
    let resp = reqwest::get(format!("{url}/v1/jobs")).await.unwrap();
    assert!(resp.status().is_success());
    resp.json().await.unwrap()
}

pub async fn providers(url: &str) -> serde_json::Value {
    reqwest::get(format!("{url}/v1/providers"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub fn settled(j: &Job) -> bool {
    j.state.is_terminal() || j.state == JobState::Uncertain
}

/// Polls the daemon until every one of `n` jobs is settled.
pub async fn wait_settled(url: &str, n: usize, limit: Duration) -> Vec<Job> {
    let deadline = Instant::now() + limit;
    loop {
        let js = jobs(url).await;
        if js.len() == n && js.iter().all(settled) {
            return js;
        }
        if Instant::now() > deadline {
            let mut counts = std::collections::BTreeMap::new();
            for j in &js {
                *counts.entry(j.state.to_string()).or_insert(0) += 1;
            }
            panic!("jobs did not settle within {limit:?}: {counts:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
