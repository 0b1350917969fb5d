//! `switchyard bench store`: the store's intake and durable-transition
//! throughput beside raw sled in the same run (`store_sled.rs`), in a
//! scratch directory; and, when `SWITCHYARD_BENCH_DATABASE_URL` is set,
//! the PostgreSQL store beside the sled store (`store_pg.rs`), in a
//! scratch database.

use crate::store_pg::{self, PgFigures};
pub use crate::store_sled::StoreFigures;

/// Jobs of the PostgreSQL lifecycle run, and its dispatchers.
const PG_JOBS: usize = 20_000;
const PG_WORKERS: usize = 4;

pub struct Figures {
    pub sled: StoreFigures,
    pub pg: Option<PgFigures>,
}

pub async fn run(jobs: usize, writers: usize, per_writer: usize) -> anyhow::Result<Figures> {
    let tmp = tempfile::tempdir()?;
    let sled = crate::store_sled::store(tmp.path(), jobs, writers, per_writer).await?;
    drop(tmp);
    let pg = match std::env::var(store_pg::URL_VAR) {
        Ok(url) => Some(store_pg::run(&url, PG_JOBS, PG_WORKERS).await?),
        Err(_) => None,
    };
    Ok(Figures { sled, pg })
}

pub fn print(f: &Figures) {
    crate::store_sled::print(&f.sled);
    match &f.pg {
        Some(pg) => store_pg::print(pg),
        None => println!(
            "PostgreSQL store: not measured (set {} to a server where a database may be created)",
            store_pg::URL_VAR
        ),
    }
}
