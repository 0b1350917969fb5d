//! Webhooks are the one thing that cannot be computed lazily: someone has to
//! knock at the client's door when a job ends. One task owns a timer queue of
//! attempt end times (rather than one sleeping task per job, which would not
//! survive 100,000 jobs), re-checks each job when its time comes (it may have
//! been paused, cancelled or retried meanwhile) and hands delivery to a short
//! task. Deliveries are tried three times, then counted as failed.

use crate::state::{lock, Phase, SimState, WebhookDue};
use crate::util;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::ProviderKind;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;

const ATTEMPTS: u32 = 3;
const MAX_CONCURRENT_DELIVERIES: usize = 32;

/// `hex(HMAC-SHA256(secret, timestamp + "." + body))`, as U-Gen signs.
pub fn ugen_signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

pub async fn run(
    sim: Arc<SimState>,
    mut rx: mpsc::UnboundedReceiver<WebhookDue>,
    client: reqwest::Client,
    cancel: CancellationToken,
) {
    let mut queue: DelayQueue<WebhookDue> = DelayQueue::new();
    let limit = Arc::new(Semaphore::new(MAX_CONCURRENT_DELIVERIES));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            msg = rx.recv() => match msg {
                Some(due) => {
                    let wait = due.due_ms.saturating_sub(sim.now_ms());
                    queue.insert(due, Duration::from_millis(wait));
                }
                None => break,
            },
            Some(expired) = std::future::poll_fn(|cx| queue.poll_expired(cx)), if !queue.is_empty() => {
                let due = expired.into_inner();
                if let Some(later) = fire(&sim, &due, &client, &limit, &cancel) {
                    queue.insert(due, later);
                }
            }
        }
    }
}

/// Sends the webhook if the attempt has ended; returns a new delay if the
/// job is still running (its end moved).
fn fire(
    sim: &Arc<SimState>,
    due: &WebhookDue,
    client: &reqwest::Client,
    limit: &Arc<Semaphore>,
    cancel: &CancellationToken,
) -> Option<Duration> {
    let prov = sim.provider(due.kind);
    let now = sim.now_ms();
    enum Act {
        Send(Value, Option<String>),
        Later(u64),
        Skip,
    }
    let act = prov
        .read_mut(&due.job_id, |job| {
            if job.attempt != due.attempt || job.webhook_fired {
                return Act::Skip;
            }
            let v = job.view(now);
            match v.phase {
                Phase::Completed | Phase::Failed => {
                    job.webhook_fired = true;
                    let (body, own_url) = match due.kind {
                        ProviderKind::Ugen => (
                            crate::ugen::webhook_body(sim, job, v),
                            job.params
                                .get("webhook_url")
                                .and_then(Value::as_str)
                                .map(str::to_string),
                        ),
                        _ => (crate::ugclab::webhook_body(sim, job, v), None),
                    };
                    Act::Send(body, own_url)
                }
                Phase::Pending | Phase::Processing => Act::Later(job.end_ms()),
                Phase::Paused | Phase::Cancelled => Act::Skip,
            }
        })
        .unwrap_or(Act::Skip);
    let (body, own_url) = match act {
        Act::Skip => return None,
        Act::Later(end) => return Some(Duration::from_millis(end.saturating_sub(now).max(1))),
        Act::Send(b, u) => (b, u),
    };
    let target = lock(&prov.inner).webhook.clone();
    let secret = target.as_ref().and_then(|t| t.secret.clone());
    let url = own_url.or(target.map(|t| t.url))?;
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let sim = sim.clone();
    let client = client.clone();
    let limit = limit.clone();
    let cancel = cancel.clone();
    let kind = due.kind;
    tokio::spawn(async move {
        let Ok(_permit) = limit.acquire_owned().await else {
            return;
        };
        let ok = tokio::select! {
            ok = deliver(&client, kind, &url, secret.as_deref(), bytes) => ok,
            _ = cancel.cancelled() => false,
        };
        let mut inner = lock(&sim.provider(kind).inner);
        if ok {
            inner.counters.webhooks_sent += 1;
        } else {
            inner.counters.webhooks_failed += 1;
        }
    });
    None
}

async fn deliver(
    client: &reqwest::Client,
    kind: ProviderKind,
    url: &str,
    secret: Option<&str>,
    body: Vec<u8>,
) -> bool {
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
        }
        let mut req = client
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone());
        if kind == ProviderKind::Ugen {
            if let Some(secret) = secret {
                let ts = util::unix_now_secs();
                req = req
                    .header("X-UGen-Timestamp", ts.to_string())
                    .header("X-UGen-Signature", ugen_signature(secret, ts, &body));
            }
        }
        match req.send().await {
            Ok(resp) if resp.status().is_success() => return true,
            Ok(resp) => tracing::debug!(%url, status = %resp.status(), "webhook refused"),
            Err(e) => tracing::debug!(%url, error = %e, "webhook delivery failed"),
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // echo -n '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        let sig = ugen_signature("secret", 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(
            sig,
            "49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }
}
