//! What a change may do: compare-and-swap on the state, legal transitions
//! only, field edits, and the history they leave.

use super::{ensure, ensure_eq, spec, Backend, CaseResult, Handle};
use crate::StoreError;
use std::time::Duration;
use switchyard_core::{
    Attempts, Change, JobError, JobState, LedgerOp, Patch, Refusal, TransitionError,
};

/// Everything a refused change could have touched, to compare before and
/// after.
async fn snapshot(h: &Handle, key: &str) -> Result<impl PartialEq + std::fmt::Debug, String> {
    Ok((
        h.job(key).await?,
        h.history(key).await?,
        h.ledger("p", "total").await?,
        h.counts().await?,
    ))
}

/// A change whose expected state is not the job's is refused as a state
/// mismatch (naming both states) and writes nothing, job, history, ledger
/// or counts; an unknown key is not found.
pub async fn cas_refuses_a_stale_expected_state(b: &dyn Backend) -> CaseResult {
    let h = Handle::open(b).await?;
    h.intake(vec![spec("a", "p", 0)]).await?;
    let before = snapshot(&h, "a").await?;
    let stale = Change::to(JobState::Processing, "stale")
        .ledger(LedgerOp::Reserve {
            period: "total".into(),
            amount: 5,
            limit: None,
        })
        .patch(Patch {
            progress: Some(Some(10)),
            attempts: Some(Attempts::Increment),
            ..Patch::default()
        });
    let e = h.refused("a", JobState::Pending, stale).await?;
    ensure!(e.is_state_mismatch(), "a stale expectation: {e}");
    ensure!(
        matches!(
            &e,
            StoreError::Refused(Refusal::StateMismatch { key, expected: JobState::Pending, actual: JobState::Queued })
                if key == "a"
        ),
        "the mismatch names the key, the expected and the actual state: {e:?}"
    );
    ensure_eq!(
        snapshot(&h, "a").await?,
        before,
        "a refused change writes nothing"
    );

    // The same after a move: the old expectation is stale now.
    h.apply(
        "a",
        JobState::Queued,
        Change::to(JobState::Submitting, "go"),
    )
    .await?;
    let before = snapshot(&h, "a").await?;
    let e = h
        .refused(
            "a",
            JobState::Queued,
            Change::to(JobState::Submitting, "again"),
        )
        .await?;
    ensure!(e.is_state_mismatch(), "a second move from queued: {e}");
    ensure_eq!(
        snapshot(&h, "a").await?,
        before,
        "a refused move writes nothing"
    );
    let e = h
        .refused(
            "a",
            JobState::Queued,
            Change::to(JobState::Queued, "fields"),
        )
        .await?;
    ensure!(
        e.is_state_mismatch(),
        "a field-only change with a stale state: {e}"
    );

    let e = h
        .refused(
            "nobody",
            JobState::Queued,
            Change::to(JobState::Submitting, ""),
        )
        .await?;
    ensure!(
        matches!(&e, StoreError::NotFound(k) if k == "nobody"),
        "a change to an unknown job: {e:?}"
    );
    ensure!(
        h.store
            .get("nobody")
            .await
            .map_err(|e| e.to_string())?
            .is_none(),
        "get of an unknown job"
    );
    Ok(())
}

/// From every state to every state: a legal move is accepted and stored, an
/// illegal one is refused as illegal and writes nothing (its ledger
/// operation included), a change to the same state is a field-only change
/// and accepted.
pub async fn every_transition_follows_the_state_machine(b: &dyn Backend) -> CaseResult {
    let h = Handle::open(b).await?;
    let key = |from: JobState, to: JobState| format!("m-{from}-{to}");
    let mut specs = Vec::new();
    for from in JobState::ALL {
        for to in JobState::ALL {
            specs.push(spec(&key(from, to), "p", 0));
        }
    }
    h.intake(specs).await?;
    for from in JobState::ALL {
        for to in JobState::ALL {
            let k = key(from, to);
            h.drive(&k, from).await?;
            let before = (h.job(&k).await?, h.history(&k).await?);
            let ledger = h.ledger("p", "total").await?;
            // A settle rides along: an illegal move must not charge.
            let change = Change::to(to, "matrix").ledger(LedgerOp::Settle { charged: 0 });
            let legal = from == to || from.can_become(to);
            match h.store.apply(&k, from, change).await {
                Ok(j) if legal => {
                    ensure_eq!(j.state, to, "{from} -> {to}: the returned job");
                    ensure_eq!(h.job(&k).await?.state, to, "{from} -> {to}: the stored job");
                }
                Ok(j) => {
                    return Err(format!(
                        "{}:{}: {from} -> {to} is illegal and was accepted (now {})",
                        file!(),
                        line!(),
                        j.state
                    ))
                }
                Err(e) if legal => {
                    return Err(format!(
                        "{}:{}: {from} -> {to} is legal and was refused: {e}",
                        file!(),
                        line!()
                    ))
                }
                Err(e) => {
                    let named = matches!(
                        &e,
                        StoreError::Refused(Refusal::Illegal(TransitionError { key: ek, from: f, to: t }))
                            if *ek == k && *f == from && *t == to
                    );
                    ensure!(named, "{from} -> {to} must be refused as illegal: {e:?}");
                    ensure_eq!(
                        (h.job(&k).await?, h.history(&k).await?),
                        before,
                        "{from} -> {to}: an illegal move writes nothing"
                    );
                    ensure_eq!(
                        h.ledger("p", "total").await?,
                        ledger,
                        "{from} -> {to}: an illegal move charges nothing"
                    );
                }
            }
        }
    }
    // Spot checks that do not lean on `can_become`.
    for (from, to, legal) in [
        (JobState::Queued, JobState::Completed, false),
        (JobState::Completed, JobState::Queued, false),
        (JobState::Cancelled, JobState::Queued, false),
        (JobState::Failed, JobState::Queued, true),
        (JobState::Submitting, JobState::Uncertain, true),
        (JobState::Uncertain, JobState::Queued, true),
    ] {
        ensure_eq!(
            h.job(&key(from, to)).await?.state,
            if legal { to } else { from },
            "{from} -> {to}"
        );
    }
    Ok(())
}

/// A change to the same state edits fields and writes them, without a
/// history entry; the same edit again changes nothing and rewrites
/// nothing (not even the update time).
pub async fn field_only_changes_write_without_history(b: &dyn Backend) -> CaseResult {
    let h = Handle::open(b).await?;
    h.intake(vec![spec("f", "p", 0)]).await?;
    h.drive("f", JobState::Pending).await?;
    let hist = h.history("f").await?;
    let edit = Patch {
        progress: Some(Some(40)),
        provider_status: Some(Some("running".into())),
        stage: Some(Some("render".into())),
        provider_job_id: Some(Some("prov-1".into())),
        ..Patch::default()
    };
    let first = h
        .apply(
            "f",
            JobState::Pending,
            Change::to(JobState::Pending, "poll").patch(edit.clone()),
        )
        .await?;
    ensure_eq!(
        (
            first.progress,
            first.provider_status.as_deref(),
            first.stage.as_deref()
        ),
        (Some(40), Some("running"), Some("render")),
        "the returned job carries the edit"
    );
    ensure_eq!(h.job("f").await?, first, "the edit is stored as returned");
    ensure_eq!(
        first.state,
        JobState::Pending,
        "a field-only change keeps the state"
    );
    ensure_eq!(
        h.history("f").await?,
        hist,
        "a field-only change adds no history"
    );

    // Timestamps have millisecond resolution: let the clock move first.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = h
        .apply(
            "f",
            JobState::Pending,
            Change::to(JobState::Pending, "poll").patch(edit),
        )
        .await?;
    ensure_eq!(
        again,
        first,
        "an edit that changes nothing returns the job as it was"
    );
    ensure_eq!(
        h.job("f").await?,
        first,
        "an edit that changes nothing rewrites nothing"
    );
    ensure_eq!(
        h.history("f").await?,
        hist,
        "an edit that changes nothing adds no history"
    );

    // Clearing fields and counting attempts are edits too.
    let cleared = h
        .apply(
            "f",
            JobState::Pending,
            Change::to(JobState::Pending, "poll").patch(Patch {
                provider_status: Some(None),
                attempts: Some(Attempts::Set(3)),
                error: Some(Some(JobError::new("E_SLOW", "slow"))),
                ..Patch::default()
            }),
        )
        .await?;
    ensure_eq!(
        (
            cleared.provider_status.clone(),
            cleared.attempts,
            cleared.progress
        ),
        (None, 3, Some(40)),
        "a cleared field is cleared, a set one set, the others kept"
    );
    ensure_eq!(h.job("f").await?, cleared, "the cleared job is stored");
    let down = h
        .apply(
            "f",
            JobState::Pending,
            Change::to(JobState::Pending, "poll").patch(Patch {
                attempts: Some(Attempts::Decrement),
                ..Patch::default()
            }),
        )
        .await?;
    ensure_eq!(down.attempts, 2, "a decremented attempt count");
    ensure_eq!(
        h.history("f").await?,
        hist,
        "field-only changes never add history"
    );
    Ok(())
}

/// Each state change appends exactly one entry (from, to, note, at the
/// job's new update time), in order; the intake entry comes first;
/// field-only changes, same-state ledger operations and refused changes
/// append none.
pub async fn history_records_each_state_change_once(b: &dyn Backend) -> CaseResult {
    let h = Handle::open(b).await?;
    h.intake(vec![spec("h", "p", 0)]).await?;
    let mut want = vec![(None, JobState::Queued)];
    let mut notes = vec![None];
    let steps: [(JobState, JobState, &str); 7] = [
        (JobState::Queued, JobState::Submitting, "dispatched"),
        (JobState::Submitting, JobState::Pending, "created"),
        (JobState::Pending, JobState::Processing, "running"),
        (JobState::Processing, JobState::Failed, "broke"),
        (JobState::Failed, JobState::Queued, "retry"),
        (JobState::Queued, JobState::Submitting, "dispatched again"),
        (JobState::Submitting, JobState::Completed, "done at once"),
    ];
    for (from, to, note) in steps {
        let job = h.apply("h", from, Change::to(to, note)).await?;
        want.push((Some(from), to));
        notes.push(Some(note));
        let hist = h.history("h").await?;
        ensure_eq!(
            hist.len(),
            want.len(),
            "one entry per state change, after {note}"
        );
        let last = &hist[hist.len() - 1];
        ensure_eq!(
            last.at,
            job.updated_at,
            "the entry's time is the job's update time"
        );
        // Noise that must leave no entry.
        h.apply(
            "h",
            to,
            Change::to(to, "poll").patch(Patch {
                progress: Some(Some(want.len() as u8)),
                ..Patch::default()
            }),
        )
        .await?;
        h.refused("h", from, Change::to(to, "stale")).await?;
        if let Some(illegal) = JobState::ALL
            .into_iter()
            .find(|&x| x != to && !to.can_become(x))
        {
            h.refused("h", to, Change::to(illegal, "illegal")).await?;
        }
        ensure_eq!(h.job("h").await?.state, to, "the state after {note}");
    }
    // A same-state ledger operation is not a state change either.
    h.apply(
        "h",
        JobState::Completed,
        Change::to(JobState::Completed, "refund").ledger(LedgerOp::Refund { amount: 1 }),
    )
    .await?;
    let hist = h.history("h").await?;
    let got: Vec<_> = hist.iter().map(|t| (t.from, t.to)).collect();
    ensure_eq!(got, want, "the history's states, in order");
    let got_notes: Vec<Option<&str>> = hist
        .iter()
        .enumerate()
        .map(|(i, t)| (i > 0).then_some(t.note.as_str()))
        .collect();
    ensure_eq!(got_notes, notes, "the history's notes, in order");
    ensure!(
        hist.iter().all(|t| !t.at.is_empty()),
        "every entry has a time: {hist:?}"
    );
    ensure!(
        hist.windows(2).all(|w| w[0].at <= w[1].at),
        "entries in time order: {hist:?}"
    );
    for pair in hist.windows(2) {
        ensure_eq!(
            pair[1].from,
            Some(pair[0].to),
            "each entry starts where the last ended"
        );
    }
    Ok(())
}
