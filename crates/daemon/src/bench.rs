//! `switchyard bench ...`: the measurements live with what they measure;
//! this module only gives them a command.

pub use switchyard_store_sled::bench::print;

pub async fn store(
    jobs: usize,
    writers: usize,
    per_writer: usize,
) -> anyhow::Result<switchyard_store_sled::bench::StoreFigures> {
    let tmp = tempfile::tempdir()?;
    Ok(switchyard_store_sled::bench::store(tmp.path(), jobs, writers, per_writer).await?)
}
