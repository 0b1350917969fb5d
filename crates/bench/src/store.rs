//! `switchyard bench store`: the store's intake and durable-transition
//! throughput beside raw sled in the same run (`store_sled.rs`), in a
//! scratch directory.

pub use crate::store_sled::{print, StoreFigures};

pub async fn run(jobs: usize, writers: usize, per_writer: usize) -> anyhow::Result<StoreFigures> {
    let tmp = tempfile::tempdir()?;
    Ok(crate::store_sled::store(tmp.path(), jobs, writers, per_writer).await?)
}
