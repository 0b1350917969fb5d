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

        /// A case added to the suite must be added here too.
        #[test]
        fn every_case_of_the_suite_runs_here() {
            let here = [$(stringify!($name)),*];
            let suite: Vec<&str> = conformance::cases().iter().map(|c| c.name).collect();
            assert_eq!(here.to_vec(), suite);
        }
    };
}

pg_cases!(
    intake_is_all_or_nothing_with_dedup,
    concurrent_intakes_accept_each_key_once,
    cas_refuses_a_stale_expected_state,
    every_transition_follows_the_state_machine,
    field_only_changes_write_without_history,
    history_records_each_state_change_once,
    budget_holds_under_concurrent_claims,
    budget_holds_under_concurrent_reservations,
    budget_holds_when_claims_and_reservations_race,
    ledger_arithmetic_settle_release_refund,
    periods_roll_over,
    claim_takes_priority_then_fifo_per_provider,
    claimed_jobs_are_submitting_and_reserved,
    claim_stops_at_the_first_job_over_budget,
    claim_stops_where_admit_refuses,
    concurrent_claims_never_share_a_job,
    synced_writes_survive_a_crash_and_a_reopen,
    unsynced_writes_are_lost_whole_or_kept_whole,
    counts_match_a_recount,
    recover_returns_exactly_the_live_jobs,
    saved_stats_survive_a_sync_and_a_reopen,
    a_fallback_moves_the_job_to_the_next_provider,
    claims_and_permits_never_exceed_the_gate,
    a_hold_stops_permits_and_claims_and_survives_a_reopen,
    pauses_survive_a_reopen,
    claims_keep_to_the_in_flight_cap,
    renew_keeps_a_live_epoch_and_raises_an_expired_one,
    daemons_lists_only_live_leases,
    a_stale_owner_is_fenced_off,
    rescue_takes_only_live_jobs_of_expired_leases,
    hints_reach_the_other_daemons,
);
