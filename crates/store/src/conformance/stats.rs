//! Statistics records (what the engine learned): the latest per key,
//! staged ones visible at once, all of them kept across a reopen.

use super::{ensure_eq, Backend, CaseResult, Handle};

fn owned(v: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    v.iter().map(|(k, b)| (k.to_string(), b.to_vec())).collect()
}

/// Saved stats are read back before a sync (latest value per key, sorted),
/// and the same after a sync and a reopen.
pub async fn saved_stats_survive_a_sync_and_a_reopen(b: &dyn Backend) -> CaseResult {
    let h = Handle::open(b).await?;
    let load = |h: Handle| async move {
        h.store
            .load_stats()
            .await
            .map_err(|e| format!("load_stats: {e}"))
    };
    ensure_eq!(load(h.clone()).await?, Vec::new(), "a new store's stats");
    let save = |h: Handle, k: &'static str, v: &'static [u8]| async move {
        h.store
            .save_stats(k, v.to_vec())
            .await
            .map_err(|e| format!("save_stats {k}: {e}"))
    };
    save(h.clone(), "ulazai\u{1f}model=a", b"one").await?;
    save(h.clone(), "ugen\u{1f}", b"two").await?;
    h.sync().await?;
    // Written again after a sync: the staged value wins over sled's.
    save(h.clone(), "ulazai\u{1f}model=a", b"three").await?;
    let want = owned(&[("ugen\u{1f}", b"two"), ("ulazai\u{1f}model=a", b"three")]);
    ensure_eq!(load(h.clone()).await?, want, "stats before the sync");
    let h = h.reopen(b).await?;
    ensure_eq!(
        load(h.clone()).await?,
        want,
        "stats after a sync and a reopen"
    );
    Ok(())
}
