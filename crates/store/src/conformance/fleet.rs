//! What daemons on one store share: the rate gate (in claims and per
//! permit), holds and pauses that outlive a restart, the in-flight cap,
//! leases and their epochs, fencing of a stale owner's writes, rescue of
//! an expired owner's live jobs, and hints. Cases that need a second
//! daemon open one with [`Backend::peer`]; a single-process backend has
//! none, and those cases (or their fleet parts) are skipped there.

use super::{
    ensure, ensure_eq, join_all, require_parallel, spec, Backend, CaseResult, Handle, CLAIMED,
};
use crate::{Claim, Claimed, Hint, Lease, Owner, Permit, StoreError};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use switchyard_core::{Change, Gate, Job, JobState, LedgerOp};

const SKIPPED: &str = "skipped for a single-process backend";

fn skipped(case: &str) -> CaseResult {
    println!("{case}: {SKIPPED}");
    Ok(())
}

impl Handle {
    /// The same data opened by another daemon, if the backend has such a
    /// thing.
    pub(crate) async fn peer(&self, b: &dyn Backend) -> Result<Option<Handle>, String> {
        match b.peer(&self.store).await {
            None => Ok(None),
            Some(Ok(store)) => Ok(Some(Handle { store })),
            Some(Err(e)) => Err(format!("opening a peer store: {e}")),
        }
    }

    pub(crate) async fn lease_as(&self, owner: &str, ttl: Duration) -> Result<Lease, String> {
        self.store
            .renew(&Owner(owner.into()), ttl)
            .await
            .map_err(|e| format!("renew {owner}: {e}"))
    }

    /// A claim of one credit a job, with the gate and cap given.
    pub(crate) async fn claim_gated(
        &self,
        lease: &Lease,
        provider: &str,
        limit: usize,
        gate: Option<Gate>,
        max_in_flight: Option<u32>,
    ) -> Result<Claimed, String> {
        self.store
            .claim(Claim {
                lease,
                provider,
                limit,
                period: "total",
                budget: None,
                admit: &|_: &Job| Some(1),
                note: CLAIMED,
                gate,
                max_in_flight,
            })
            .await
            .map_err(|e| format!("claim of {provider}: {e}"))
    }

    async fn permit(&self, provider: &str, gate: Gate) -> Result<Permit, String> {
        self.store
            .permit(provider, gate)
            .await
            .map_err(|e| format!("permit of {provider}: {e}"))
    }

    async fn held(&self, provider: &str) -> Result<Option<Duration>, String> {
        self.store
            .held(provider)
            .await
            .map_err(|e| format!("held of {provider}: {e}"))
    }

    async fn paused(&self) -> Result<Vec<String>, String> {
        self.store
            .paused()
            .await
            .map_err(|e| format!("paused: {e}"))
    }

    async fn owned(
        &self,
        lease: &Lease,
        key: &str,
        expect: JobState,
        change: Change,
    ) -> Result<Result<Job, StoreError>, String> {
        Ok(self.store.apply_owned(lease, key, expect, change).await)
    }
}

async fn intake_n(h: &Handle, prefix: &str, provider: &str, n: usize) -> Result<(), String> {
    h.intake(
        (0..n)
            .map(|i| spec(&format!("{prefix}-{i:03}"), provider, 0))
            .collect(),
    )
    .await
    .map(|_| ())
}

/// Claims and permits in a tight loop, from every daemon there is, never
/// get more grants than the gate allows (its burst, then one per
/// interval); a claim stopped by the gate says so, and says how long to
/// wait.
pub async fn claims_and_permits_never_exceed_the_gate(b: &dyn Backend) -> CaseResult {
    const QUEUED: usize = 400;
    let h = Handle::open(b).await?;
    intake_n(&h, "g", "g", QUEUED).await?;
    let peer = h.peer(b).await?;
    let gate = Gate {
        interval: Duration::from_millis(25),
        burst: 4,
    };
    let lease = h.lease().await?;
    let run = Duration::from_millis(800);
    let start = Instant::now();
    let mut granted = 0u32;
    let mut claimed = 0;
    let mut i = 0u32;
    while start.elapsed() < run {
        i += 1;
        let on = match &peer {
            Some(p) if i % 2 == 0 => p,
            _ => &h,
        };
        if i % 3 == 0 {
            if on.permit("g", gate).await? == Permit::Granted {
                granted += 1;
            }
            continue;
        }
        let c = on.claim_gated(&lease, "g", 3, Some(gate), None).await?;
        granted += c.jobs.len() as u32;
        claimed += c.jobs.len();
        if c.jobs.len() < 3 && claimed < QUEUED {
            let wait = c.gate_wait.ok_or_else(|| {
                format!(
                    "a claim that took {} of 3 from a queue with jobs left must say it waited for the gate: {c:?}",
                    c.jobs.len()
                )
            })?;
            ensure!(
                wait > Duration::ZERO && wait <= gate.interval * gate.burst,
                "the wait a claim reports is within the gate's reach: {wait:?}"
            );
        }
    }
    let elapsed = start.elapsed();
    let most = gate.burst + (elapsed.as_micros() / gate.interval.as_micros()) as u32 + 1;
    ensure!(
        granted <= most,
        "{granted} grants in {elapsed:?} from a gate of {} per {:?} with a burst of {} (at most {most})",
        1,
        gate.interval,
        gate.burst
    );
    ensure!(
        granted >= 4,
        "the gate granted only {granted} in {elapsed:?}: it must grant its rate"
    );
    let submitting = h
        .list(&crate::Filter {
            state: Some(JobState::Submitting),
            provider: Some("g".into()),
        })
        .await?;
    ensure!(
        submitting.len() as u32 <= granted,
        "every claimed job took a permit"
    );
    Ok(())
}

/// A hold (a 429's Retry-After) stops permits and gated claims for every
/// daemon, a shorter one does not shorten it, and it survives a reopen.
pub async fn a_hold_stops_permits_and_claims_and_survives_a_reopen(b: &dyn Backend) -> CaseResult {
    let h = Handle::open(b).await?;
    intake_n(&h, "h", "h", 5).await?;
    let gate = Gate {
        interval: Duration::from_millis(1),
        burst: 100,
    };
    ensure_eq!(h.held("h").await?, None, "no hold at first");
    h.store
        .hold("h", Duration::from_secs(4))
        .await
        .map_err(|e| format!("hold: {e}"))?;
    h.store
        .hold("h", Duration::from_millis(100))
        .await
        .map_err(|e| format!("hold: {e}"))?;
    let left = h.held("h").await?.ok_or("held after a hold")?;
    ensure!(
        left > Duration::from_secs(3) && left <= Duration::from_secs(4),
        "a shorter hold leaves the longer one: {left:?} left"
    );
    ensure_eq!(h.held("other").await?, None, "a hold is per provider");
    match h.permit("h", gate).await? {
        Permit::Wait(w) if w > Duration::from_secs(3) => {}
        p => return Err(format!("a permit during a hold must wait it out: {p:?}")),
    }
    let lease = h.lease().await?;
    let c = h.claim_gated(&lease, "h", 5, Some(gate), None).await?;
    ensure!(
        c.jobs.is_empty() && c.gate_wait.is_some_and(|w| w > Duration::from_secs(3)),
        "a gated claim during a hold takes nothing and says how long: {c:?}"
    );
    if let Some(p) = h.peer(b).await? {
        ensure!(p.held("h").await?.is_some(), "another daemon sees the hold");
        ensure!(
            matches!(p.permit("h", gate).await?, Permit::Wait(_)),
            "another daemon's permit waits too"
        );
    }
    let h = h.reopen(b).await?;
    let left = h.held("h").await?.ok_or("the hold after a reopen")?;
    ensure!(
        left > Duration::from_secs(2),
        "the hold survives a reopen: {left:?} left"
    );
    Ok(())
}

/// A user's pauses are kept per provider, survive a reopen, and every
/// daemon sees them.
pub async fn pauses_survive_a_reopen(b: &dyn Backend) -> CaseResult {
    let h = Handle::open(b).await?;
    ensure_eq!(
        h.paused().await?,
        Vec::<String>::new(),
        "nothing paused at first"
    );
    for (p, on) in [
        ("b", true),
        ("a", true),
        ("c", true),
        ("a", false),
        ("c", true),
    ] {
        h.store
            .set_paused(p, on)
            .await
            .map_err(|e| format!("set_paused {p} {on}: {e}"))?;
    }
    ensure_eq!(h.paused().await?, ["b", "c"], "paused, sorted");
    if let Some(p) = h.peer(b).await? {
        ensure_eq!(p.paused().await?, ["b", "c"], "another daemon's view");
        p.store
            .set_paused("c", false)
            .await
            .map_err(|e| format!("set_paused on the peer: {e}"))?;
        ensure_eq!(h.paused().await?, ["b"], "a resume by another daemon");
    } else {
        h.store
            .set_paused("c", false)
            .await
            .map_err(|e| format!("set_paused: {e}"))?;
    }
    let h = h.reopen(b).await?;
    ensure_eq!(h.paused().await?, ["b"], "pauses after a reopen");
    Ok(())
}

/// Jobs in `submitting` never exceed the cap, however many claims race
/// (from however many daemons); the claim the cap stopped says so.
pub async fn claims_keep_to_the_in_flight_cap(b: &dyn Backend) -> CaseResult {
    require_parallel()?;
    let h = Handle::open(b).await?;
    intake_n(&h, "f", "f", 40).await?;
    let peer = h.peer(b).await?;
    let lease = h.lease().await?;
    let c = h.claim_gated(&lease, "f", 10, None, Some(4)).await?;
    ensure_eq!(c.jobs.len(), 4, "a claim takes up to the cap");
    ensure!(c.at_cap, "the claim the cap stopped says so: {c:?}");
    let c = h.claim_gated(&lease, "f", 10, None, Some(4)).await?;
    ensure!(c.jobs.is_empty() && c.at_cap, "at the cap: nothing: {c:?}");
    let c = h.claim_gated(&lease, "f", 2, None, Some(10)).await?;
    ensure!(
        c.jobs.len() == 2 && !c.at_cap,
        "a claim under the cap is not stopped by it: {c:?}"
    );
    // Two leave `submitting`: two places free, for whoever claims first.
    let submitting = h
        .list(&crate::Filter {
            state: Some(JobState::Submitting),
            provider: Some("f".into()),
        })
        .await?;
    for j in submitting.iter().take(2) {
        h.apply(
            &j.key,
            JobState::Submitting,
            Change::to(JobState::Pending, "created"),
        )
        .await?;
    }
    let cap = 8u32;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let on = match &peer {
                Some(p) if i % 2 == 1 => p.clone(),
                _ => h.clone(),
            };
            let lease = lease.clone();
            tokio::spawn(async move {
                let mut got = 0;
                for _ in 0..5 {
                    got += on
                        .claim_gated(&lease, "f", 3, None, Some(cap))
                        .await?
                        .jobs
                        .len();
                }
                Ok(got)
            })
        })
        .collect();
    let raced: usize = join_all(tasks).await?.into_iter().sum();
    let now = h
        .list(&crate::Filter {
            state: Some(JobState::Submitting),
            provider: Some("f".into()),
        })
        .await?;
    ensure_eq!(
        now.len(),
        cap as usize,
        "racing claims fill the cap and no more ({raced} taken by the race)"
    );
    ensure_eq!(
        raced,
        cap as usize - 4,
        "the race took exactly the free places"
    );
    Ok(())
}

/// A live lease keeps its epoch when renewed; one that expired, or was
/// released, comes back with a higher one.
pub async fn renew_keeps_a_live_epoch_and_raises_an_expired_one(b: &dyn Backend) -> CaseResult {
    let h = Handle::open(b).await?;
    let ttl = Duration::from_millis(300);
    let first = h.lease_as("r", ttl).await?;
    let again = h.lease_as("r", ttl).await?;
    ensure_eq!(
        again.epoch,
        first.epoch,
        "a live lease renewed keeps its epoch"
    );
    ensure_eq!(again.ttl, ttl, "the lease has the ttl asked for");
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    let later = h.lease_as("r", ttl).await?;
    ensure!(
        later.epoch > first.epoch,
        "an expired lease comes back with a higher epoch: {} then {}",
        first.epoch,
        later.epoch
    );
    h.store
        .release(&later)
        .await
        .map_err(|e| format!("release: {e}"))?;
    let after = h.lease_as("r", ttl).await?;
    ensure!(
        after.epoch > later.epoch,
        "a released lease comes back with a higher epoch: {} then {}",
        later.epoch,
        after.epoch
    );
    let other = h.lease_as("someone-else", ttl).await?;
    ensure!(other.epoch >= 1, "a new owner's lease: {other:?}");
    Ok(())
}

/// `daemons` lists exactly the live leases: not an expired one, not a
/// released one.
pub async fn daemons_lists_only_live_leases(b: &dyn Backend) -> CaseResult {
    let h = Handle::open(b).await?;
    let owners = |h: Handle| async move {
        let d = h
            .store
            .daemons()
            .await
            .map_err(|e| format!("daemons: {e}"))?;
        Ok::<_, String>(
            d.into_iter()
                .map(|d| (d.owner.0, d.epoch))
                .collect::<Vec<_>>(),
        )
    };
    let short = h.lease_as("d-short", Duration::from_millis(300)).await?;
    ensure_eq!(
        owners(h.clone()).await?,
        [("d-short".to_string(), short.epoch)],
        "a live lease is listed"
    );
    let info = h.store.daemons().await.map_err(|e| e.to_string())?;
    ensure!(
        info.iter()
            .all(|d| d.expires_in <= Duration::from_millis(300)),
        "expires_in counts down from the ttl: {info:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure_eq!(
        owners(h.clone()).await?,
        Vec::<(String, u64)>::new(),
        "an expired lease is not listed"
    );
    let long = h.lease_as("d-long", Duration::from_secs(30)).await?;
    h.store
        .release(&long)
        .await
        .map_err(|e| format!("release: {e}"))?;
    ensure_eq!(
        owners(h.clone()).await?,
        Vec::<(String, u64)>::new(),
        "a released lease is not listed"
    );
    let Some(p) = h.peer(b).await? else {
        return skipped("daemons_lists_only_live_leases (two daemons)");
    };
    let a = h.lease_as("d-a", Duration::from_secs(30)).await?;
    let bl = p.lease_as("d-b", Duration::from_millis(300)).await?;
    let both = owners(p.clone()).await?;
    ensure_eq!(
        both,
        [("d-a".to_string(), a.epoch), ("d-b".to_string(), bl.epoch)],
        "both daemons, seen from either"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure_eq!(
        owners(h).await?,
        [("d-a".to_string(), a.epoch)],
        "only the live one once the other expired"
    );
    Ok(())
}

/// Daemon A claims a job and its lease expires (it was stopped); B
/// rescues the job. A's writes as its owner are refused and change
/// nothing, even after A renews; B's go through.
pub async fn a_stale_owner_is_fenced_off(b: &dyn Backend) -> CaseResult {
    let a = Handle::open(b).await?;
    let Some(bd) = a.peer(b).await? else {
        return skipped("a_stale_owner_is_fenced_off");
    };
    a.intake(vec![spec("fj", "fp", 0), spec("fk", "fp", 0)])
        .await?;
    let ttl = Duration::from_millis(300);
    let la = a.lease_as("fence-a", ttl).await?;
    let c = a.claim_gated(&la, "fp", 2, None, None).await?;
    ensure_eq!(c.jobs.len(), 2, "A claimed both");
    let created = |id: &str| {
        Change::to(JobState::Pending, "created").patch(switchyard_core::Patch {
            provider_job_id: Some(Some(id.into())),
            ..Default::default()
        })
    };
    a.owned(&la, "fk", JobState::Submitting, created("a-1"))
        .await?
        .map_err(|e| format!("A's write while its lease is live: {e}"))?;
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    let lb = bd.lease_as("fence-b", Duration::from_secs(30)).await?;
    let rescued = bd
        .store
        .rescue(&lb)
        .await
        .map_err(|e| format!("rescue: {e}"))?;
    let keys: BTreeSet<&str> = rescued.iter().map(|j| j.key.as_str()).collect();
    ensure_eq!(
        keys,
        BTreeSet::from(["fj", "fk"]),
        "B took over A's live jobs"
    );
    let before = (a.job("fj").await?, a.history("fj").await?);
    match a
        .owned(&la, "fj", JobState::Submitting, created("a-2"))
        .await?
    {
        Err(StoreError::LeaseLost { owner }) if owner == "fence-a" => {}
        other => {
            return Err(format!(
                "A's write after the takeover must be LeaseLost: {other:?}"
            ))
        }
    }
    ensure_eq!(
        (a.job("fj").await?, a.history("fj").await?),
        before,
        "a fenced write changes nothing"
    );
    let la2 = a.lease_as("fence-a", ttl).await?;
    ensure!(la2.epoch > la.epoch, "A's lease came back with a new epoch");
    ensure!(
        matches!(
            a.owned(
                &la2,
                "fk",
                JobState::Pending,
                Change::to(JobState::Processing, "x")
            )
            .await?,
            Err(StoreError::LeaseLost { .. })
        ),
        "A's renewed lease does not get back a job B took"
    );
    let j = bd
        .owned(&lb, "fj", JobState::Submitting, created("b-1"))
        .await?
        .map_err(|e| format!("B's write as the new owner: {e}"))?;
    ensure_eq!(
        (j.state, j.provider_job_id.as_deref()),
        (JobState::Pending, Some("b-1")),
        "B's write"
    );
    bd.owned(
        &lb,
        "fk",
        JobState::Pending,
        Change::to(JobState::Completed, "done").ledger(LedgerOp::Settle { charged: 1 }),
    )
    .await?
    .map_err(|e| format!("B finishes A's job: {e}"))?;
    // A job that is not live is not fenced: anyone's user command works.
    a.owned(
        &la2,
        "fk",
        JobState::Completed,
        Change::to(JobState::Completed, "x"),
    )
    .await?
    .map_err(|e| format!("an ended job is not fenced: {e}"))?;
    Ok(())
}

/// Rescue takes exactly the live jobs (`submitting`, `pending`,
/// `processing`) of leases that expired: never a queued or ended job,
/// never a job of a live lease, never one twice.
pub async fn rescue_takes_only_live_jobs_of_expired_leases(b: &dyn Backend) -> CaseResult {
    const RACED: usize = 120;
    const RESCUERS: usize = 6;
    require_parallel()?;
    let dead = Handle::open(b).await?;
    let Some(alive) = dead.peer(b).await? else {
        return skipped("rescue_takes_only_live_jobs_of_expired_leases");
    };
    let mut specs = Vec::new();
    for state in JobState::ALL {
        for n in 0..2 {
            specs.push(spec(&format!("x-{state}-{n}"), "x", 0));
            specs.push(spec(&format!("y-{state}-{n}"), "y", 0));
        }
    }
    // Many live jobs in one state too, so that racing rescuers overlap.
    for n in 0..RACED {
        specs.push(spec(&format!("z-{n:03}"), "z", 0));
    }
    dead.intake(specs).await?;
    let ld = dead
        .lease_as("rescue-dead", Duration::from_millis(400))
        .await?;
    let c = dead.claim_gated(&ld, "z", RACED, None, None).await?;
    ensure_eq!(c.jobs.len(), RACED, "z's jobs claimed");
    let la = alive
        .lease_as("rescue-alive", Duration::from_secs(30))
        .await?;
    // x's jobs are the dead daemon's, y's the live one's: each claims its
    // provider's queue, then takes each job where it belongs.
    for (h, l, p) in [(&dead, &ld, "x"), (&alive, &la, "y")] {
        let c = h.claim_gated(l, p, 100, None, None).await?;
        ensure_eq!(c.jobs.len(), 16, "{p}'s jobs claimed");
        for state in JobState::ALL {
            for n in 0..2 {
                let key = format!("{p}-{state}-{n}");
                let path: &[JobState] = match state {
                    JobState::Queued => &[JobState::Queued],
                    JobState::Cancelled => &[JobState::Failed],
                    s => &super::path_to(s)[1..],
                };
                let mut at = JobState::Submitting;
                for &next in path {
                    let j = h
                        .owned(
                            l,
                            &key,
                            at,
                            Change::to(next, "step").ledger(LedgerOp::Release),
                        )
                        .await?
                        .map_err(|e| format!("{key} to {next}: {e}"))?;
                    at = j.state;
                }
            }
        }
    }
    let live_of_x: BTreeSet<String> = [
        JobState::Submitting,
        JobState::Pending,
        JobState::Processing,
    ]
    .iter()
    .flat_map(|s| (0..2).map(move |n| format!("x-{s}-{n}")))
    .chain((0..RACED).map(|n| format!("z-{n:03}")))
    .collect();
    ensure!(
        alive
            .store
            .rescue(&la)
            .await
            .map_err(|e| format!("rescue: {e}"))?
            .is_empty(),
        "nothing to rescue while every lease is live"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Rescuers race (the live daemon and others): between them each job
    // is taken once.
    let mut leases = vec![la.clone()];
    for i in 0..RESCUERS - 1 {
        leases.push(
            alive
                .lease_as(&format!("rescue-other-{i}"), Duration::from_secs(30))
                .await?,
        );
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(RESCUERS));
    let racers = leases
        .into_iter()
        .map(|l| {
            let (h, barrier) = (alive.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                h.store.rescue(&l).await.map_err(|e| e.to_string())
            })
        })
        .collect();
    let got = join_all(racers).await?;
    let taken: Vec<&Job> = got.iter().flatten().collect();
    let keys: BTreeSet<String> = taken.iter().map(|j| j.key.clone()).collect();
    ensure_eq!(keys.len(), taken.len(), "no job rescued twice");
    ensure_eq!(keys, live_of_x, "exactly the expired lease's live jobs");
    for j in &taken {
        ensure!(
            matches!(
                j.state,
                JobState::Submitting | JobState::Pending | JobState::Processing
            ),
            "{} rescued in state {}",
            j.key,
            j.state
        );
        ensure_eq!(&alive.job(&j.key).await?, *j, "{} rescued as stored", j.key);
    }
    ensure!(
        alive
            .store
            .rescue(&la)
            .await
            .map_err(|e| format!("rescue: {e}"))?
            .is_empty(),
        "a second rescue finds nothing"
    );
    match dead.store.rescue(&ld).await {
        Err(StoreError::LeaseLost { .. }) => {}
        other => {
            return Err(format!(
                "an expired lease cannot rescue (it would only orphan the jobs again): {other:?}"
            ))
        }
    }
    let recovered = alive
        .store
        .recover(&la)
        .await
        .map_err(|e| format!("recover: {e}"))?;
    ensure!(
        recovered
            .iter()
            .all(|j| j.key.starts_with("y-") || keys.contains(&j.key)),
        "recover returns the lease's own live jobs and those it took over"
    );
    Ok(())
}

/// A hint sent by one daemon, and an intake on it, reach another daemon;
/// a daemon does not hear its own.
pub async fn hints_reach_the_other_daemons(b: &dyn Backend) -> CaseResult {
    let a = Handle::open(b).await?;
    let Some(p) = a.peer(b).await? else {
        ensure!(
            a.store.hints().is_none(),
            "a single-process backend has no hints"
        );
        return skipped("hints_reach_the_other_daemons");
    };
    let mut heard = p.store.hints().ok_or("a fleet backend has hints")?;
    let mut own = a.store.hints().ok_or("a fleet backend has hints")?;
    a.store
        .hint(Hint::Due { key: "k-1".into() })
        .await
        .map_err(|e| format!("hint: {e}"))?;
    a.intake(vec![spec("hq", "hp", 0)]).await?;
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 2 && Instant::now() < deadline {
        if let Ok(Ok(h)) = tokio::time::timeout(Duration::from_millis(200), heard.recv()).await {
            got.push(h);
        }
    }
    ensure!(
        got.contains(&Hint::Due { key: "k-1".into() }),
        "the other daemon hears the hint: {got:?}"
    );
    ensure!(
        got.contains(&Hint::Queued {
            provider: "hp".into()
        }),
        "an intake wakes the other daemons: {got:?}"
    );
    ensure!(
        own.try_recv().is_err(),
        "a daemon does not hear its own hints"
    );
    Ok(())
}
