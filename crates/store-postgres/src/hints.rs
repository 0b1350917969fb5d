//! Hints between daemons: NOTIFY on one channel, heard on a dedicated
//! LISTEN connection (not a pooled one: a pooled connection is shared,
//! and its notifications would reach whoever holds it) and passed on to
//! subscribers through a broadcast channel. Notifications sent while the
//! listener is disconnected are lost; that is why they are only hints.

use crate::redact::{chain, Redactor};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use switchyard_store::{Hint, StoreError};
use tokio::sync::{broadcast, oneshot};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Socket};
use tokio_util::sync::CancellationToken;

pub(crate) const CHANNEL: &str = "switchyard";

/// A hint as sent. `from` is the sending store's tag (as text: JSON
/// numbers lose precision past 2^53).
#[derive(Serialize, Deserialize)]
struct Wire {
    from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    queued: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    due: Option<String>,
}

/// A tag for this store's hints, different per process and per store.
pub(crate) fn instance_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

pub(crate) fn payload(me: u64, hint: &Hint) -> String {
    let (queued, due) = match hint {
        Hint::Queued { provider } => (Some(provider.clone()), None),
        Hint::Due { key } => (None, Some(key.clone())),
    };
    let wire = Wire {
        from: me.to_string(),
        queued,
        due,
    };
    // A struct of strings always serializes.
    serde_json::to_string(&wire).unwrap_or_default()
}

/// The hint in a notification, unless it is this store's own or not one.
fn parse(me: u64, payload: &str) -> Option<Hint> {
    let w: Wire = serde_json::from_str(payload).ok()?;
    if w.from == me.to_string() {
        return None;
    }
    match (w.queued, w.due) {
        (Some(provider), _) => Some(Hint::Queued { provider }),
        (None, Some(key)) => Some(Hint::Due { key }),
        (None, None) => None,
    }
}

/// Starts the listener and returns once it listens (so that a hint sent
/// after `connect` returned is heard), or with the error of its first
/// attempt.
pub(crate) async fn start<T>(
    mut config: tokio_postgres::Config,
    tls: T,
    tx: broadcast::Sender<Hint>,
    me: u64,
    stop: CancellationToken,
    redact: Arc<Redactor>,
) -> Result<(), StoreError>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    // An idle listener sends nothing: keepalives find a dead server in
    // about half a minute instead of the system's two hours.
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(15))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3);
    let (ready_tx, ready_rx) = oneshot::channel();
    tokio::spawn(run(config, tls, tx, me, stop, redact, ready_tx));
    match ready_rx.await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Closed),
    }
}

async fn run<T>(
    config: tokio_postgres::Config,
    tls: T,
    tx: broadcast::Sender<Hint>,
    me: u64,
    stop: CancellationToken,
    redact: Arc<Redactor>,
    ready: oneshot::Sender<Result<(), StoreError>>,
) where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(100);
    loop {
        let res = listen(&config, tls.clone(), &tx, me, &stop, &mut ready).await;
        if stop.is_cancelled() {
            return;
        }
        let e = match res {
            Ok(()) => "the connection closed".to_string(),
            Err(e) => redact.text(&e),
        };
        if let Some(r) = ready.take() {
            // The first attempt failed: `connect` reports it.
            let _ = r.send(Err(StoreError::Storage(format!(
                "listening for hints: {e}"
            ))));
            return;
        }
        tracing::warn!(error = %e, retry_in = ?backoff, "lost the database connection that hears hints; reconnecting");
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One connection's life: LISTEN, then pass notifications on until it
/// fails (`Err`), ends (`Ok`) or the store stops.
async fn listen<T>(
    config: &tokio_postgres::Config,
    tls: T,
    tx: &broadcast::Sender<Hint>,
    me: u64,
    stop: &CancellationToken,
    ready: &mut Option<oneshot::Sender<Result<(), StoreError>>>,
) -> Result<(), String>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, mut conn) = config.connect(tls).await.map_err(|e| chain(&e))?;
    let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
    let pass_on = |m: AsyncMessage| {
        if let AsyncMessage::Notification(n) = m {
            if let Some(h) = parse(me, n.payload()) {
                // No subscriber now: nobody to wake.
                let _ = tx.send(h);
            }
        }
    };
    {
        // The connection must be driven for LISTEN to be answered.
        let sql = format!("LISTEN {CHANNEL}");
        let listening = client.batch_execute(&sql);
        tokio::pin!(listening);
        loop {
            tokio::select! {
                r = &mut listening => { r.map_err(|e| chain(&e))?; break; }
                m = messages.next() => match m {
                    Some(Ok(m)) => pass_on(m),
                    Some(Err(e)) => return Err(chain(&e)),
                    None => return Ok(()),
                },
            }
        }
    }
    if let Some(r) = ready.take() {
        // `connect` waits for this; if it gave up, nobody needs it.
        let _ = r.send(Ok(()));
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            m = messages.next() => match m {
                Some(Ok(m)) => pass_on(m),
                Some(Err(e)) => return Err(chain(&e)),
                None => return Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_round_trip_and_a_store_does_not_hear_itself() {
        for h in [
            Hint::Queued {
                provider: "ugen".into(),
            },
            Hint::Due {
                key: "a \"key\"".into(),
            },
        ] {
            let p = payload(7, &h);
            assert_eq!(parse(8, &p), Some(h));
            assert_eq!(parse(7, &p), None);
        }
        assert_eq!(parse(8, "not json"), None);
    }
}
