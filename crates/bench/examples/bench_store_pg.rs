//! The PostgreSQL store beside the sled store, without building the
//! daemon: `SWITCHYARD_BENCH_DATABASE_URL=postgres://… cargo run --release
//! -p switchyard-bench --example bench_store_pg [JOBS] [DISPATCHERS]`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let arg = |n: usize, default: usize| {
        std::env::args()
            .nth(n)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let url = std::env::var(switchyard_bench::store_pg::URL_VAR)
        .expect("SWITCHYARD_BENCH_DATABASE_URL names the server to measure on");
    let f = switchyard_bench::store_pg::run(&url, arg(1, 20_000), arg(2, 4))
        .await
        .unwrap();
    switchyard_bench::store_pg::print(&f);
}
