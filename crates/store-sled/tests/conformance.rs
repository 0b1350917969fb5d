//! The store conformance suite, every case run against `SledStore`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_store::conformance::{self, Backend};
use switchyard_store::Store;
use switchyard_store_sled::SledStore;

/// Each store in a temporary directory of its own, kept until the backend
/// is dropped (at the end of the test).
#[derive(Default)]
struct Sled {
    dirs: Mutex<HashMap<usize, tempfile::TempDir>>,
    /// Directories of stores given up by a crash.
    dead: Mutex<Vec<tempfile::TempDir>>,
}

/// Which directory a handle is on: the handle's address.
fn id(store: &Arc<dyn Store>) -> usize {
    Arc::as_ptr(store) as *const () as usize
}

/// sled locks its directory until the last handle to it is gone, and the
/// group-commit task holds one for a moment after a `sync` returned: the
/// open is retried for a while rather than failing at once.
async fn open_when_free(dir: &std::path::Path) -> Result<SledStore, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match SledStore::open(dir) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => return Err(format!("reopening: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

#[async_trait]
impl Backend for Sled {
    async fn open(&self) -> Result<Arc<dyn Store>, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let store: Arc<dyn Store> =
            Arc::new(SledStore::open(dir.path()).map_err(|e| e.to_string())?);
        self.dirs.lock().unwrap().insert(id(&store), dir);
        Ok(store)
    }

    async fn reopen(&self, old: Arc<dyn Store>) -> Result<Arc<dyn Store>, String> {
        let others = Arc::strong_count(&old) - 1;
        if others > 0 {
            return Err(format!(
                "{others} other handles to the store are still alive: it cannot close"
            ));
        }
        let dir = self
            .dirs
            .lock()
            .unwrap()
            .remove(&id(&old))
            .ok_or("reopen of a store this backend did not open")?;
        drop(old);
        let store: Arc<dyn Store> = Arc::new(open_when_free(dir.path()).await?);
        self.dirs.lock().unwrap().insert(id(&store), dir);
        Ok(store)
    }

    /// A copy of the directory taken while the store is still open is what
    /// a crash at this instant would leave on disk: dropping the handle
    /// instead would let sled flush on close, and hide a `sync` that does
    /// nothing.
    async fn crash(&self, old: Arc<dyn Store>) -> Result<Arc<dyn Store>, String> {
        let src = self
            .dirs
            .lock()
            .unwrap()
            .remove(&id(&old))
            .ok_or("crash of a store this backend did not open")?;
        let dst = tempfile::tempdir().map_err(|e| e.to_string())?;
        copy_dir(src.path(), dst.path()).map_err(|e| format!("copying the store: {e}"))?;
        drop(old);
        // The old directory goes when the backend does: sled may still be
        // closing it.
        self.dead.lock().unwrap().push(src);
        let store: Arc<dyn Store> =
            Arc::new(SledStore::open(dst.path()).map_err(|e| format!("after a crash: {e}"))?);
        self.dirs.lock().unwrap().insert(id(&store), dst);
        Ok(store)
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

macro_rules! sled_cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                if let Err(e) = conformance::$name(&Sled::default()).await {
                    panic!("{}: {e}", stringify!($name));
                }
            }
        )*

    };
}

switchyard_store::conformance_cases!(sled_cases);

/// `run_all` as another backend's test would call it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_passes_on_sled() {
    if let Err(e) = conformance::run_all(&Sled::default()).await {
        panic!("{e}");
    }
}

/// The races refuse a runtime that cannot run tasks in parallel.
#[tokio::test(flavor = "current_thread")]
async fn the_races_need_a_multi_thread_runtime() {
    let e = conformance::budget_holds_under_concurrent_claims(&Sled::default())
        .await
        .unwrap_err();
    assert!(e.contains("multi-thread"), "{e}");
}
