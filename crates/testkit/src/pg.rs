//! A PostgreSQL database of a test's (or a benchmark's) own, on the server
//! `SWITCHYARD_TEST_DATABASE_URL` names: created under a unique name and
//! dropped, connections and all, when done. Without the variable a test
//! says `skipped: SWITCHYARD_TEST_DATABASE_URL not set` and passes.

use anyhow::Context;
use std::sync::atomic::{AtomicU64, Ordering};

pub const DATABASE_URL_VAR: &str = "SWITCHYARD_TEST_DATABASE_URL";

/// One database, dropped by [`TestDb::drop_db`] (a `Drop` cannot wait for
/// the server; [`TestDb::drop_db`] is called at the end of every test, and
/// a test that panics leaves a uniquely named database behind).
pub struct TestDb {
    admin: String,
    pub name: String,
    /// The URL of this database: a secret in a daemon's eyes, so handed
    /// to it in an environment variable (`store.url_env`).
    pub url: String,
}

static N: AtomicU64 = AtomicU64::new(0);

/// The URL with its database replaced by `db` (URL form only).
fn with_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let after = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[after..]
        .find('/')
        .map(|i| after + i)
        .unwrap_or(base.len());
    format!("{}/{db}{query}", &base[..host_end])
}

async fn client(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting to the test database server")?;
    tokio::spawn(conn);
    Ok(client)
}

impl TestDb {
    /// A fresh database named after `test`; `None` (after printing the
    /// skip line) without [`DATABASE_URL_VAR`].
    pub async fn create(test: &str) -> anyhow::Result<Option<TestDb>> {
        let Ok(admin) = std::env::var(DATABASE_URL_VAR) else {
            println!("skipped: {DATABASE_URL_VAR} not set");
            return Ok(None);
        };
        TestDb::create_on(&admin, test).await.map(Some)
    }

    /// A fresh database named after `test` on the server `admin` (a URL
    /// whose user may create databases).
    pub async fn create_on(admin: &str, test: &str) -> anyhow::Result<TestDb> {
        let admin = admin.to_string();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let short: String = test
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(24)
            .collect();
        let name = format!(
            "sy_{short}_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
        .to_lowercase();
        client(&admin)
            .await?
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("creating database {name}"))?;
        Ok(TestDb {
            url: with_db(&admin, &name),
            admin,
            name,
        })
    }

    /// A plain client on this database, to look at what the daemons wrote.
    pub async fn client(&self) -> anyhow::Result<tokio_postgres::Client> {
        client(&self.url).await
    }

    pub async fn drop_db(&self) {
        let res = async {
            client(&self.admin)
                .await?
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .await
                .context("dropping")
        }
        .await;
        if let Err(e) = res {
            eprintln!("dropping database {}: {e:#}", self.name);
        }
    }
}
