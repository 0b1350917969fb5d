//! The store conformance suite, every case against `PgStore`, each on a
//! database of its own (created for the case, dropped after it).
//!
//! Needs `SWITCHYARD_TEST_DATABASE_URL` (a server where the user may
//! create databases); without it every test says it was skipped, and
//! passes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use async_trait::async_trait;
use common::TestDb;
use std::sync::Arc;
use switchyard_store::conformance::{self, Backend};
use switchyard_store::Store;

/// Every store a case opens is on the case's one database: a reopen, a
/// crash and a peer all find the same data.
struct Pg {
    db: TestDb,
}

#[async_trait]
impl Backend for Pg {
    async fn open(&self) -> Result<Arc<dyn Store>, String> {
        Ok(Arc::new(self.db.connect().await?))
    }

    async fn reopen(&self, old: Arc<dyn Store>) -> Result<Arc<dyn Store>, String> {
        let others = Arc::strong_count(&old) - 1;
        if others > 0 {
            return Err(format!(
                "{others} other handles to the store are still alive: it cannot close"
            ));
        }
        drop(old);
        Ok(Arc::new(self.db.connect().await?))
    }

    // A crash keeps what was committed, and every accepted write was
    // committed before its call returned: the default (a reopen) is what
    // a crash leaves.

    async fn peer(&self, _of: &Arc<dyn Store>) -> Option<Result<Arc<dyn Store>, String>> {
        Some(
            self.db
                .connect()
                .await
                .map(|s| Arc::new(s) as Arc<dyn Store>),
        )
    }
}

macro_rules! pg_cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let Some(db) = TestDb::create(stringify!($name)).await else {
                    return;
                };
                let backend = Pg { db };
                let res = conformance::$name(&backend).await;
                backend.db.drop_db().await;
                if let Err(e) = res {
                    panic!("{}: {e}", stringify!($name));
                }
            }
        )*

    };
}

switchyard_store::conformance_cases!(pg_cases);
