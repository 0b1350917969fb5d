//! `switchyard bench store`: the measurement lives with what it measures
//! (`switchyard_core::bench`); this gives it a command and a scratch
//! directory.

pub use switchyard_core::bench::{print, StoreFigures};

pub async fn run(jobs: usize, writers: usize, per_writer: usize) -> anyhow::Result<StoreFigures> {
    let tmp = tempfile::tempdir()?;
    Ok(switchyard_core::bench::store(tmp.path(), jobs, writers, per_writer).await?)
}
