//! The rate gate, holds and pauses of one sled store.
//!
//! The gate's state lives in memory only: writing it per permit would cost
//! a write per request, and a kill -9 loses what sled has not flushed
//! anyway. So a store that opens does not know what the process before it
//! sent, and starts every gate as if a whole burst had just been used
//! ([`Gate::unknown_past`]): the two processes together never exceed the
//! rate, at the price of one interval's wait after a start. Holds (a 429's
//! Retry-After) and a user's pauses are rare and must outlive a restart:
//! they are written and flushed before the call returns, as wall-clock
//! deadlines.

use crate::record::{P_HOLD, P_PAUSE};
use crate::{lock, storage};
use sled::IVec;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use switchyard_core::Gate;
use switchyard_store::StoreError;

pub(crate) struct Gates {
    /// The clock gates count on.
    base: Instant,
    /// When this store opened, on `base`'s clock.
    opened: u64,
    tat: Mutex<HashMap<String, u64>>,
    /// Deadlines of holds, in microseconds since the Unix epoch.
    holds: Mutex<HashMap<String, u64>>,
    paused: Mutex<BTreeSet<String>>,
}

/// One holder's turn at a gate (see [`Gates::with`]).
pub(crate) struct Turn<'a> {
    tat: &'a mut u64,
    gate: Gate,
    hold: Option<Duration>,
    gates: &'a Gates,
}

impl Turn<'_> {
    /// Whether a permit is there now: the gate's next state if taken, or
    /// how long until one.
    pub(crate) fn peek(&self) -> Result<u64, Duration> {
        if let Some(h) = self.hold {
            return Err(h);
        }
        self.gate.take(*self.tat, self.gates.now())
    }

    /// Takes the permit `peek` offered.
    pub(crate) fn commit(&mut self, next: u64) {
        *self.tat = next;
    }
}

pub(crate) fn prefixed(prefix: u8, provider: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(provider.len() + 1);
    k.push(prefix);
    k.extend_from_slice(provider.as_bytes());
    k
}

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Gates {
    pub(crate) fn load(tree: &sled::Tree) -> Result<Gates, StoreError> {
        let mut holds = HashMap::new();
        for kv in tree.scan_prefix([P_HOLD]) {
            let (k, v) = kv.map_err(storage)?;
            let provider = String::from_utf8_lossy(&k[1..]).into_owned();
            let until = <[u8; 8]>::try_from(&*v)
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            holds.insert(provider, until);
        }
        let mut paused = BTreeSet::new();
        for kv in tree.scan_prefix([P_PAUSE]) {
            let (k, _) = kv.map_err(storage)?;
            paused.insert(String::from_utf8_lossy(&k[1..]).into_owned());
        }
        Ok(Gates {
            base: Instant::now(),
            opened: 0,
            tat: Mutex::new(HashMap::new()),
            holds: Mutex::new(holds),
            paused: Mutex::new(paused),
        })
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }

    /// What is left of `provider`'s hold.
    pub(crate) fn held(&self, provider: &str) -> Option<Duration> {
        let until = *lock(&self.holds).get(provider)?;
        let now = wall_us();
        (until > now).then(|| Duration::from_micros(until - now))
    }

    /// Runs `f` with the gate of `provider` locked for one claim or one
    /// permit, so that a permit is counted exactly when `f` commits it.
    pub(crate) fn with<R>(
        &self,
        provider: &str,
        gate: Gate,
        f: impl FnOnce(&mut Turn<'_>) -> R,
    ) -> R {
        let mut tats = lock(&self.tat);
        let start = gate.unknown_past(self.opened);
        let tat = tats.entry(provider.to_string()).or_insert(start);
        let mut turn = Turn {
            tat,
            gate,
            hold: self.held(provider),
            gates: self,
        };
        f(&mut turn)
    }

    /// The key and value that record a hold of `wait` from now, unless a
    /// longer one is already set.
    pub(crate) fn hold(&self, provider: &str, wait: Duration) -> Option<(Vec<u8>, IVec)> {
        let until = wall_us().saturating_add(wait.as_micros() as u64);
        let mut holds = lock(&self.holds);
        if holds.get(provider).is_some_and(|&u| u >= until) {
            return None;
        }
        holds.insert(provider.to_string(), until);
        Some((prefixed(P_HOLD, provider), IVec::from(&until.to_be_bytes())))
    }

    /// Records a pause or its end; true when it changed anything.
    pub(crate) fn set_paused(&self, provider: &str, paused: bool) -> bool {
        let mut set = lock(&self.paused);
        if paused {
            set.insert(provider.to_string())
        } else {
            set.remove(provider)
        }
    }

    pub(crate) fn paused(&self) -> Vec<String> {
        lock(&self.paused).iter().cloned().collect()
    }
}
