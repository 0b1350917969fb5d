//! A database of the test's own on the server `SWITCHYARD_TEST_DATABASE_URL`
//! names: created with a unique name, dropped (connections and all) when
//! the test is done.

#![allow(dead_code)] // each test file uses its own part

use std::sync::atomic::{AtomicU64, Ordering};
use switchyard_store_postgres::{PgOptions, PgStore};

pub const URL_VAR: &str = "SWITCHYARD_TEST_DATABASE_URL";

pub struct TestDb {
    admin: String,
    pub name: String,
    pub url: String,
}

/// The URL with its database replaced by `db` (URL form only).
pub fn with_db(url: &str, db: &str) -> String {
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

/// The URL with `pw` as its user's password (URL form, with a user).
pub fn with_password(url: &str, pw: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (userinfo, host) = rest.split_once('@').expect("a URL with a user");
    let user = userinfo.split(':').next().unwrap_or(userinfo);
    format!("{scheme}://{user}:{pw}@{host}")
}

static N: AtomicU64 = AtomicU64::new(0);

pub fn options() -> PgOptions {
    // Tests run side by side on a server with a hundred connections.
    PgOptions {
        pool_size: 6,
        application_name: "switchyard-test".into(),
    }
}

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connecting to SWITCHYARD_TEST_DATABASE_URL");
    tokio::spawn(conn);
    client
}

impl TestDb {
    /// `None` (after saying so) without the variable.
    pub async fn create(test: &str) -> Option<TestDb> {
        let Ok(admin_url) = std::env::var(URL_VAR) else {
            println!("skipped: {URL_VAR} not set");
            return None;
        };
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
        admin(&admin_url)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("creating the test database");
        Some(TestDb {
            url: with_db(&admin_url, &name),
            admin: admin_url,
            name,
        })
    }

    pub async fn connect(&self) -> Result<PgStore, String> {
        PgStore::connect(&self.url, options())
            .await
            .map_err(|e| e.to_string())
    }

    /// A plain client on the test database (to look at it, or break it).
    pub async fn client(&self) -> tokio_postgres::Client {
        admin(&self.url).await
    }

    pub async fn drop_db(&self) {
        let c = admin(&self.admin).await;
        if let Err(e) = c
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
        {
            eprintln!("dropping {}: {e}", self.name);
        }
    }
}

impl Drop for TestDb {
    /// A test that failed drops its database too. From a thread of its
    /// own: a runtime's thread may not block on another runtime.
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let (c, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("dropping {}: {e}", self.name);
        }
    }
}
