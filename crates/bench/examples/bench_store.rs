//! The store benchmark without building the daemon:
//! `cargo run --release -p switchyard-bench --example bench_store [JOBS]`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

/// As in the daemon: the store's allocation pattern (sled clones a leaf per
/// write) is where glibc's malloc loses most.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let jobs = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let writers = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let per_writer = 102_400 / writers;
    let f = switchyard_bench::store::run(jobs, writers, per_writer)
        .await
        .unwrap();
    switchyard_bench::store::print(&f);
}
