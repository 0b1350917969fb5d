//! Whether the store is keeping up: every durable write that fails is
//! logged and remembered here until one succeeds, and `/healthz` and the
//! systemd watchdog read it, so a failing disk shows instead of being lost
//! in a log.

use crate::limits::lock;
use crate::{Engine, Shared};
use std::sync::Mutex;
use switchyard_store::StoreError;

/// Whether the store has been failing: set by any failed durable write,
/// cleared by the next one that succeeds.
#[derive(Default)]
pub(crate) struct StoreHealth {
    failing: Mutex<Option<String>>,
}

impl StoreHealth {
    pub(crate) fn failed(&self, what: &str, e: &StoreError) {
        *lock(&self.failing) = Some(format!("{what}: {e}"));
    }

    pub(crate) fn ok(&self) {
        let mut f = lock(&self.failing);
        if f.is_some() {
            tracing::info!("the store answers again");
            *f = None;
        }
    }
}

/// The engine's health as `/healthz` and the watchdog see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// The last durable write failed: what, and why.
    StoreFailing(String),
}

impl Shared {
    /// Makes the writes so far durable. On failure: logged, the store
    /// marked failing (health), and false returned so the caller does not
    /// act on the outside world as if it were on disk.
    pub(crate) async fn durable(&self, what: &str) -> bool {
        match self.store.sync().await {
            Ok(()) => {
                self.health.ok();
                true
            }
            Err(e) => {
                self.store_failed(what, &e);
                false
            }
        }
    }

    pub(crate) fn store_failed(&self, what: &str, e: &StoreError) {
        tracing::error!("{what}: the store failed: {e}");
        self.health.failed(what, e);
    }
}

impl Engine {
    /// Ok unless the last durable write failed; asks the store once, so a
    /// wedged store shows as a health check that does not return.
    pub async fn health(&self) -> Health {
        if let Err(e) = self.shared.store.get("").await {
            return Health::StoreFailing(format!("reading: {e}"));
        }
        match lock(&self.shared.health.failing).clone() {
            Some(why) => Health::StoreFailing(why),
            None => Health::Ok,
        }
    }
}
