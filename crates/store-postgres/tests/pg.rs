//! What only the PostgreSQL store has: migrations (applied once however
//! many daemons start together; a newer schema refused), the database URL
//! kept secret, the LISTEN connection coming back after it was cut, and
//! counts folded without changing what they say.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use common::TestDb;
use std::time::{Duration, Instant};
use switchyard_core::{Change, JobSpec, JobState};
use switchyard_store::{Hint, Store};
use switchyard_store_postgres::{PgOptions, PgStore, SCHEMA_VERSION};

fn spec(key: &str, provider: &str) -> JobSpec {
    JobSpec {
        key: key.into(),
        provider: provider.into(),
        priority: 0,
        params: serde_json::json!({}),
        ..JobSpec::default()
    }
}

/// Eight daemons start at once on a fresh database: every one connects,
/// and the schema was applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_starts_on_a_fresh_database_migrate_once() {
    let Some(db) = TestDb::create("migrate_once").await else {
        return;
    };
    let url = db.url.clone();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    let starts: Vec<_> = (0..8)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                PgStore::connect(
                    &url,
                    PgOptions {
                        pool_size: 2,
                        ..PgOptions::default()
                    },
                )
                .await
            })
        })
        .collect();
    let mut stores = Vec::new();
    for s in starts {
        stores.push(s.await.unwrap().expect("every daemon connects"));
    }
    let c = db.client().await;
    let versions: Vec<i32> = c
        .query("SELECT version FROM schema_version ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    // And the stores work together.
    stores[0].intake(vec![spec("a", "p")]).await.unwrap();
    assert!(stores[7].get("a").await.unwrap().is_some());
    drop(stores);
    db.drop_db().await;
}

/// A database migrated by a newer switchyard is refused, saying what to
/// do, and left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused() {
    let Some(db) = TestDb::create("newer_schema").await else {
        return;
    };
    drop(db.connect().await.unwrap());
    let c = db.client().await;
    c.execute(
        "INSERT INTO schema_version (version) VALUES ($1)",
        &[&(SCHEMA_VERSION + 1)],
    )
    .await
    .unwrap();
    let e = db.connect().await.unwrap_err();
    let want = format!(
        "database schema is version {}; this switchyard knows up to {SCHEMA_VERSION}: upgrade switchyard",
        SCHEMA_VERSION + 1
    );
    assert!(e.contains(&want), "{e}");
    let n: i64 = c
        .query_one("SELECT count(*) FROM schema_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, i64::from(SCHEMA_VERSION) + 1, "nothing changed");
    db.drop_db().await;
}

/// Neither the URL nor its password appear in an error (a malformed URL,
/// a server that is not there, a database that does not exist) or in the
/// store's `Debug`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_and_its_password_never_show() {
    let Some(db) = TestDb::create("url_secret").await else {
        return;
    };
    let pw = "Sw1tchyard-s3cret";
    let opts = || PgOptions::default();
    let cases = [
        // Nobody listens on port 1.
        format!("postgres://postgres:{pw}@127.0.0.1:1/switchyard"),
        format!("postgres://postgres:{pw}@127.0.0.1:5432/no_such_database_here"),
        format!("postgres://postgres:{pw}@127.0.0.1:notaport/x"),
        format!("postgres://postgres:{pw}@127.0.0.1:5432/x?sslmode=bogus"),
        format!("host=127.0.0.1 password={pw} dbname=x port=bogus"),
    ];
    for url in &cases {
        let e = PgStore::connect(url, opts()).await.unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(!text.contains(pw), "{url}: the password shows in {text}");
        assert!(
            !text.contains(url.as_str()),
            "{url}: the URL shows in {text}"
        );
    }
    // A store that connected with a password: its Debug, and an error
    // from a statement, show neither.
    let url = common::with_password(&db.url, pw);
    assert!(url.contains(pw), "{url}");
    let store = PgStore::connect(&url, opts()).await.unwrap();
    let debug = format!("{store:?}");
    assert!(!debug.contains(pw) && !debug.contains(&url), "{debug}");
    db.client()
        .await
        .batch_execute("DROP TABLE stats")
        .await
        .unwrap();
    let e = store.load_stats().await.unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(text.contains("stats"), "the error says what failed: {text}");
    assert!(!text.contains(pw) && !text.contains(&url), "{text}");
    drop(store);
    db.drop_db().await;
}

/// The LISTEN connection, cut by the server, comes back by itself, and
/// hints are heard again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_come_back_after_the_listen_connection_is_cut() {
    let Some(db) = TestDb::create("listen_cut").await else {
        return;
    };
    let a = db.connect().await.unwrap();
    let b = db.connect().await.unwrap();
    let mut heard = b.hints().unwrap();
    let c = db.client().await;
    let cut: i64 = c
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(cut, 2, "both stores' listeners were cut");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut got = false;
    while !got && Instant::now() < deadline {
        a.hint(Hint::Due { key: "k".into() }).await.unwrap();
        got = matches!(
            tokio::time::timeout(Duration::from_millis(300), heard.recv()).await,
            Ok(Ok(Hint::Due { .. }))
        );
    }
    assert!(got, "no hint heard within 15 s of the cut");
    drop((a, b));
    db.drop_db().await;
}

/// Folding the count changes into the totals changes no count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folding_counts_changes_no_count() {
    let Some(db) = TestDb::create("fold_counts").await else {
        return;
    };
    let s = db.connect().await.unwrap();
    s.intake((0..30).map(|i| spec(&format!("k{i}"), "p")).collect())
        .await
        .unwrap();
    s.fold_counts().await.unwrap();
    for i in 0..10 {
        s.apply(
            &format!("k{i}"),
            JobState::Queued,
            Change::to(JobState::Cancelled, "user"),
        )
        .await
        .unwrap();
    }
    let before = s.counts().await.unwrap();
    s.fold_counts().await.unwrap();
    let deltas: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM count_deltas", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(deltas, 0, "folded away");
    assert_eq!(s.counts().await.unwrap(), before);
    let n = |state| {
        before
            .iter()
            .find(|c| c.state == state)
            .map(|c| c.jobs)
            .unwrap()
    };
    assert_eq!((n(JobState::Queued), n(JobState::Cancelled)), (20, 10));
    drop(s);
    db.drop_db().await;
}
