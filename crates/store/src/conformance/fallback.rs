//! Fallbacks: a change that moves a job to another provider moves its
//! index entry and counts there, keeps the ledger rows where the credits
//! were taken, and survives a restart.

use super::{ensure, ensure_eq, spec, tally, Backend, CaseResult, Handle};
use crate::Filter;
use switchyard_core::{Alternative, Change, FallbackOn, JobState, LedgerEntry, LedgerOp};

/// A job that fails at `p` with a fallback to `q`, in one change: failed
/// at `p` (its charge settled in `p`'s ledger), then queued at `q`, where
/// the next claim of `q` takes it (and reserves in `q`'s ledger); counts,
/// listings and history agree, before and after a restart.
pub async fn a_fallback_moves_the_job_to_the_next_provider(b: &dyn Backend) -> CaseResult {
    let h = Handle::open(b).await?;
    let mut f = spec("f", "p", 0);
    f.fallback = vec![Alternative {
        provider: "q".into(),
        params: serde_json::json!({"prompt": "at q"}),
    }];
    h.intake(vec![f, spec("g", "p", 0)]).await?;
    let c = h.claim("p", 10, "total", Some(100), 5).await?;
    ensure_eq!(c.jobs.len(), 2, "both jobs of p claimed");
    let change = Change::to(JobState::Failed, "failed at p")
        .ledger(LedgerOp::Settle { charged: 2 })
        .fallback(FallbackOn::Failed);
    let j = h.apply("f", JobState::Submitting, change).await?;
    ensure_eq!(
        (j.provider.as_str(), j.state),
        ("q", JobState::Queued),
        "the returned job is queued at q"
    );
    ensure_eq!(
        (j.credits_reserved, j.credits_charged, j.attempts),
        (0, 0, 0),
        "nothing reserved, charged or attempted at q yet"
    );
    ensure_eq!(
        j.params,
        serde_json::json!({"prompt": "at q"}),
        "q's params"
    );
    ensure_eq!(
        (
            j.tried.len(),
            j.tried[0].provider.as_str(),
            j.tried[0].credits_charged
        ),
        (1, "p", 2),
        "what happened at p is kept"
    );
    ensure!(
        j.fallback.is_empty(),
        "no alternative left: {:?}",
        j.fallback
    );
    after_the_hop(&h).await?;
    let h = h.restart(b).await?;
    after_the_hop(&h).await?;
    let c = h.claim("q", 10, "total", Some(100), 3).await?;
    ensure_eq!(c.jobs.len(), 1, "the claim of q takes it");
    ensure_eq!(
        h.ledger("q", "total").await?,
        LedgerEntry {
            reserved: 3,
            charged: 0
        },
        "reserved in q's own ledger"
    );
    Ok(())
}

async fn after_the_hop(h: &Handle) -> CaseResult {
    {
        ensure_eq!(
            h.ledger("p", "total").await?,
            LedgerEntry {
                reserved: 5,
                charged: 2
            },
            "p's ledger: g's reservation and f's charge"
        );
        ensure_eq!(
            h.ledger("q", "total").await?,
            LedgerEntry::default(),
            "q's ledger: nothing yet"
        );
        let counts = h.counts().await?;
        ensure_eq!(counts, tally(&h.all().await?), "counts after the hop");
        ensure_eq!(
            counts.get(&("q".to_string(), JobState::Queued)).copied(),
            Some(1),
            "counted queued at q: {counts:?}"
        );
        ensure!(
            !counts.contains_key(&("p".to_string(), JobState::Failed)),
            "not counted failed at p: {counts:?}"
        );
        let at_q = h
            .list(&Filter {
                state: Some(JobState::Queued),
                provider: Some("q".into()),
            })
            .await?;
        ensure_eq!(at_q.len(), 1, "listed queued at q");
        let at_p = h
            .list(&Filter {
                state: Some(JobState::Queued),
                provider: Some("p".into()),
            })
            .await?;
        ensure!(at_p.is_empty(), "not listed queued at p: {at_p:?}");
        let moves: Vec<_> = h
            .history("f")
            .await?
            .iter()
            .map(|t| (t.from, t.to))
            .collect();
        ensure_eq!(
            moves,
            vec![
                (None, JobState::Queued),
                (Some(JobState::Queued), JobState::Submitting),
                (Some(JobState::Submitting), JobState::Failed),
                (Some(JobState::Failed), JobState::Queued),
            ],
            "the failure and the hop, each in the history"
        );
        let job = h.job("f").await?;
        ensure_eq!(
            (job.provider.as_str(), job.tried.len()),
            ("q", 1),
            "the stored job"
        );
    }
    Ok(())
}
