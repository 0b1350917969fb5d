//! The front door of every provider API: counts the request, enforces the
//! quota and injects faults, before and after the handler runs. Faults that
//! lose the answer (truncated JSON, dropped connection) happen *after* the
//! work is done, because that is the case a client cannot tell apart from
//! success and must survive without creating a job twice.

use crate::common;
use crate::state::{kind_index, lock, SimState};
use crate::util::{self, STREAM_REQUEST};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use rand::Rng;
use std::collections::VecDeque;
use std::sync::Arc;
use switchyard_core::ProviderKind;

#[derive(Clone)]
pub struct Gate {
    pub sim: Arc<SimState>,
    pub kind: ProviderKind,
}

enum Decision {
    Limited {
        retry_after_secs: u64,
    },
    Pass {
        drop: bool,
        error_5xx: bool,
        malformed: bool,
        slow: bool,
    },
}

/// Pushes `now` and returns how many events fall in the window ending now.
fn bump(q: &mut VecDeque<u64>, now: u64, window_ns: u64) -> u64 {
    q.push_back(now);
    while let Some(&front) = q.front() {
        if front + window_ns <= now {
            q.pop_front();
        } else {
            break;
        }
    }
    q.len() as u64
}

/// Whether a request is the provider's create call (its one `POST` to the
/// create route; U-Gen also takes other `POST`s).
fn is_create(kind: ProviderKind, req: &Request) -> bool {
    let create = match kind {
        ProviderKind::Ugclab => "/ugc",
        ProviderKind::Ugen => "/jobs",
        ProviderKind::Ulazai => "/generate/",
        ProviderKind::Viggle => "/render",
    };
    req.method() == axum::http::Method::POST && req.uri().path().ends_with(create)
}

fn decide(sim: &SimState, kind: ProviderKind, create: bool) -> Decision {
    let prov = sim.provider(kind);
    let now = sim.clock.mono_ns();
    let window_ns = prov.window().as_nanos() as u64;
    let mut inner = lock(&prov.inner);
    let ordinal = inner.req_ordinal;
    inner.req_ordinal += 1;
    inner.counters.requests += 1;
    let n = bump(&mut inner.win_all, now, window_ns);
    inner.counters.peak_all = inner.counters.peak_all.max(n);

    if let Some(rl) = prov.cfg.rate_limit {
        // GCRA: admit when the theoretical arrival time is at most
        // (burst - 1) emission intervals ahead of now.
        let t = rl.emission_interval().as_nanos() as u64;
        let tau = t.saturating_mul(u64::from(rl.burst.saturating_sub(1)));
        let tat = inner.tat_ns.max(now);
        if tat - now > tau {
            inner.counters.rate_limited += 1;
            let wait_ns = tat - now - tau;
            let secs = wait_ns.div_ceil(1_000_000_000).max(1);
            return Decision::Limited {
                retry_after_secs: secs,
            };
        }
        inner.tat_ns = tat + t;
    }
    let n = bump(&mut inner.win_admitted, now, window_ns);
    inner.counters.peak_admitted = inner.counters.peak_admitted.max(n);

    let f = &prov.cfg.faults;
    let aimed = match f.requests {
        crate::scenario::FaultRequests::All => true,
        crate::scenario::FaultRequests::Create => create,
    };
    if !f.any() || !aimed {
        return Decision::Pass {
            drop: false,
            error_5xx: false,
            malformed: false,
            slow: false,
        };
    }
    let mut rng = util::rng_for(
        sim.seed,
        kind_index(kind) as u64,
        STREAM_REQUEST,
        ordinal,
        0,
    );
    let (a, b, c, d): (f64, f64, f64, f64) = (rng.gen(), rng.gen(), rng.gen(), rng.gen());
    let drop = a < f.drop;
    let error_5xx = !drop && b < f.error_5xx;
    let malformed = !drop && !error_5xx && c < f.malformed_json;
    let slow = d < f.slow;
    let fc = &mut inner.counters.faults;
    fc.drop += u64::from(drop);
    fc.error_5xx += u64::from(error_5xx);
    fc.malformed_json += u64::from(malformed);
    fc.slow += u64::from(slow);
    Decision::Pass {
        drop,
        error_5xx,
        malformed,
        slow,
    }
}

pub async fn gate(State(g): State<Gate>, req: Request, next: Next) -> Response {
    let create = is_create(g.kind, &req);
    let (drop, error_5xx, malformed, slow) = match decide(&g.sim, g.kind, create) {
        Decision::Limited { retry_after_secs } => {
            return common::rate_limited(&g.sim, g.kind, retry_after_secs)
        }
        Decision::Pass {
            drop,
            error_5xx,
            malformed,
            slow,
        } => (drop, error_5xx, malformed, slow),
    };
    if slow {
        let delay = g.sim.provider(g.kind).cfg.faults.slow_delay.0;
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = g.sim.shutdown.cancelled() => {}
        }
    }
    if error_5xx {
        return common::internal_error(&g.sim, g.kind);
    }
    let resp = next.run(req).await;
    if drop {
        // The body fails before hyper flushes the head, so the client sees
        // the connection close with no response at all.
        let failing = futures::stream::once(async {
            Err::<Bytes, std::io::Error>(std::io::Error::other("simulated connection drop"))
        });
        return Response::new(Body::from_stream(failing));
    }
    if malformed {
        let (mut parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        let cut = (bytes.len() / 2).max(1).min(bytes.len());
        let truncated = if bytes.is_empty() {
            Bytes::from_static(b"{")
        } else {
            bytes.slice(..cut)
        };
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        return Response::from_parts(parts, Body::from(truncated));
    }
    resp
}
