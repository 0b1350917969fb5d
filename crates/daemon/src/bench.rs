//! `switchyard bench ...`: the measurements live with what they measure;
//! this module only gives them a command.

pub use switchyard_core::bench::print;

pub async fn store(
    jobs: usize,
    writers: usize,
    per_writer: usize,
) -> anyhow::Result<switchyard_core::bench::StoreFigures> {
    let tmp = tempfile::tempdir()?;
    Ok(switchyard_core::bench::store(tmp.path(), jobs, writers, per_writer).await?)
}
