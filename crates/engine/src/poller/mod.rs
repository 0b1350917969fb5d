//! Following live jobs: one scheduler task owns a timer queue with an entry
//! per live job and starts a poll when one comes due; a poll task asks the
//! provider and reports back. Webhooks only make a job due sooner.

mod classes;
mod ticks;
mod tracking;

use crate::limits::read;
use crate::record::{By, Leave};
use crate::sched::{LiveReport, Sched};
use crate::{Gen, Shared};
use classes::{estimated_secs, Classes};
use rand::SeedableRng;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::poll::PollPlan;
use switchyard_core::{JobError, JobState};
use switchyard_provider::ProviderError;
use switchyard_store::{Filter, Hint};
use ticks::{coalesced, Policies};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::time::DelayQueue;
use tracking::{elapsed_since, ms_from, Tracked, Tracking, Words};

impl Shared {
    /// One poll of one job in `state`, acknowledged `elapsed` ago; reports
    /// back to the scheduler.
    pub(crate) async fn poll(
        self: Arc<Self>,
        key: String,
        provider: String,
        id: String,
        state: JobState,
        elapsed: Duration,
        gen: Arc<Gen>,
    ) {
        let Some(p) = self.providers.get(&provider).cloned() else {
            return;
        };
        let by = By::Owner(&gen.lease);
        let polled =
            |progress: Option<u8>, done: bool, state: Option<JobState>, live| Sched::Polled {
                key: key.clone(),
                done,
                progress,
                state,
                live,
            };
        let timeout = read(&p.limits).poll.timeout;
        // Rare: read the store rather than trust the schedule's copy.
        let overdue = if elapsed > timeout {
            match self.store.get(&key).await {
                // A user's pause at the provider stops the clock, and the
                // time it was paused is not counted.
                Ok(Some(j)) if j.state.is_live() => (j.paused_at.is_none()
                    && crate::record::since_submitted(&j) > timeout)
                    .then_some(j),
                _ => {
                    let _ = self.sched.send(polled(None, true, None, None));
                    return;
                }
            }
        } else {
            None
        };
        if let Some(job) = overdue {
            if self.wait_fresh(&gen).await && p.permit(&gen.cancel).await {
                let _ = p.adapter.cancel(&id).await;
            }
            let err = JobError::new(
                "timeout",
                format!(
                    "no result within the provider's poll timeout of {}",
                    humantime::format_duration(timeout)
                ),
            );
            self.leave(&p, &key, job.state, Leave::Fail(err), by).await;
            let _ = self.sched.send(polled(None, true, None, None));
            return;
        }
        let turn = tokio::select! {
            turn = p.polls.acquire() => turn,
            _ = gen.cancel.cancelled() => return,
        };
        if !p.permit(&gen.cancel).await {
            return;
        }
        p.counters.polls.fetch_add(1, Ordering::Relaxed);
        let answer = p.adapter.status(&id).await;
        drop(turn);
        match answer {
            Ok(st) => {
                p.ok_answer();
                let progress = st.progress;
                // Nothing the store keeps changed: remember the report with
                // the schedule instead of writing it.
                let to: JobState = st.state.into();
                if to == state
                    && matches!(to, JobState::Pending | JobState::Processing)
                    && st.error.is_none()
                    && st.output_urls.is_empty()
                    && st.provider_job_id == id
                {
                    let live = LiveReport {
                        progress: st.progress,
                        stage: st.stage.map(Arc::from),
                        provider_status: Arc::from(st.raw_status),
                    };
                    let _ = self
                        .sched
                        .send(polled(progress, false, None, Some(Some(live))));
                    self.events.touch(&key);
                    return;
                }
                let new = self.record(&p, &key, state, st, by).await;
                let finished = new.is_none_or(|s| !s.is_live());
                let _ = self.sched.send(polled(progress, finished, new, Some(None)));
            }
            Err(ProviderError::RateLimited { retry_after }) => {
                p.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                self.rate_limited(&p, retry_after).await;
                let _ = self.sched.send(polled(None, false, None, None));
            }
            Err(e) => {
                // A surprise is not a failure: the job stays live and is
                // polled again on its schedule, within `poll.timeout`. An
                // unreadable body still counts as an error, as it always
                // did; an unknown word was a good answer before and is not.
                if !matches!(e, ProviderError::Unexpected { .. }) {
                    p.counters.errors.fetch_add(1, Ordering::Relaxed);
                }
                if let Some((kind, detail)) = e.unexpected_answer() {
                    let excerpt = match &e {
                        ProviderError::Unexpected { excerpt, .. } => excerpt.clone(),
                        other => other.to_string(),
                    };
                    p.counters
                        .unexpected
                        .note(&p.name, &key, "poll", kind, &detail, &excerpt);
                }
                tracing::debug!(%key, "poll failed: {e}");
                let _ = self.sched.send(polled(None, false, None, None));
            }
        }
    }
}

impl Shared {
    /// A webhook named a provider job this daemon does not follow: the
    /// daemon that does is told (through the store) to look at it now.
    pub(crate) async fn pass_on(self: Arc<Self>, provider: String, provider_job_id: String) {
        let mut found = None;
        for state in [JobState::Pending, JobState::Processing] {
            let filter = Filter {
                state: Some(state),
                provider: Some(provider.clone()),
            };
            match self.store.list(&filter).await {
                Ok(jobs) => {
                    found = jobs
                        .into_iter()
                        .find(|j| j.provider_job_id.as_deref() == Some(provider_job_id.as_str()));
                }
                Err(e) => {
                    tracing::warn!(%provider, "looking up a webhook's job: {e}");
                    return;
                }
            }
            if found.is_some() {
                break;
            }
        }
        let Some(job) = found else {
            return;
        };
        if let Err(e) = self.store.hint(Hint::Due { key: job.key }).await {
            tracing::warn!(%provider, "passing a webhook on to the daemon that follows its job: {e}");
        }
    }
}

pub(crate) async fn scheduler(rt: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Sched>) {
    use futures::StreamExt;
    let mut policies = Policies::new(&rt);
    let mut dq: DelayQueue<u32> = DelayQueue::new();
    let mut jobs = Tracking::default();
    let mut words = Words::default();
    let mut classes = Classes::default();
    // What earlier runs learned; without it, polling starts on schedule.
    match rt.store.load_stats().await {
        Ok(saved) => {
            for (key, bytes) in saved {
                if !classes.restore(&key, &bytes, |p| policies.index(p)) {
                    tracing::debug!(%key, "saved poll statistics not used");
                }
            }
        }
        Err(e) => tracing::warn!("learned poll statistics not loaded: {e}"),
    }
    let mut rng = rand::rngs::SmallRng::from_entropy();
    let epoch = Instant::now();
    loop {
        tokio::select! {
            _ = rt.cancel.cancelled() => return,
            msg = rx.recv() => {
                let Some(msg) = msg else { return };
                match msg {
                    Sched::Track { key, provider, provider_job_id, state, elapsed, class } => {
                        let Some(provider) = policies.index(&provider) else { continue };
                        if jobs.slot_of(&key).is_some() {
                            continue;
                        }
                        let class = classes.number(provider, &class);
                        let target = policies.target(&rt, provider);
                        let Some(pol) = policies.get(&rt, provider) else { continue };
                        let learned = classes.plan(class, target);
                        // A learned plan counts from the acknowledgement,
                        // which a job picked up after a restart is past.
                        let first = match learned {
                            Some(_) => PollPlan::new().next_with(pol, elapsed, None, learned, &mut rng),
                            None => PollPlan::first(pol, &mut rng),
                        };
                        rt.metrics.poll_delay.observe(first);
                        let since_ms = ms_from(epoch, Instant::now())
                            .saturating_sub(i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX));
                        let slot = jobs.insert(Tracked::new(&key, provider, &provider_job_id, state, since_ms));
                        if let Some(t) = jobs.get_mut(slot) {
                            t.class = class;
                            t.dq = Some(dq.insert_at(slot, coalesced(epoch, Instant::now(), first)));
                        }
                    }
                    Sched::Due { provider: name, provider_job_id, verified } => {
                        let Some(provider) = policies.index(&name) else { continue };
                        let Some(slot) = jobs.slot_of_id(provider, &provider_job_id) else {
                            // Followed by another daemon, if by any: told
                            // through the store. Only a verified webhook is
                            // passed on (finding its job reads the store,
                            // which an unsigned request must not cause).
                            if rt.fleet && verified {
                                tokio::spawn(rt.clone().pass_on(name, provider_job_id));
                            }
                            continue;
                        };
                        let min_gap = policies.get(&rt, provider).and_then(|p| p.schedule.first().copied()).unwrap_or_default();
                        let Some(t) = jobs.get_mut(slot) else { continue };
                        let since_poll = ms_from(epoch, Instant::now()).saturating_sub(t.last_poll_ms);
                        let recent = u128::try_from(since_poll).is_ok_and(|ms| ms < min_gap.as_millis());
                        if let Some(k) = &t.dq {
                            if verified || !recent {
                                dq.reset(k, Duration::ZERO);
                            }
                        }
                    }
                    Sched::Peek { keys, reply } => {
                        let out = keys.into_iter().filter_map(|k| {
                            let slot = jobs.slot_of(&k)?;
                            let live = words.report(jobs.get_mut(slot)?.live?)?;
                            Some((k, live))
                        }).collect();
                        let _ = reply.send(out);
                    }
                    Sched::Polled { key, done, progress, state, live } => {
                        let Some(slot) = jobs.slot_of(&key) else { continue };
                        if let Some(t) = jobs.get_mut(slot) {
                            if progress.is_some() {
                                classes.progress(t.class);
                            }
                            // Only completions teach how long a job takes
                            // (a failure may come at any time).
                            if done && state == Some(JobState::Completed) {
                                if let Some(secs) = estimated_secs(t.last_poll_ms.saturating_sub(t.since_ms), t.gap_ms) {
                                    classes.finished(t.class, secs, t.plan.polls().saturating_add(1));
                                    let name = policies.name(t.provider).unwrap_or_default();
                                    if let Some((k, v)) = classes.save_due(t.class, ms_from(epoch, Instant::now()), name) {
                                        // Staged: durable with the next group
                                        // commit (a transition's, or the drain's).
                                        let store = rt.store.clone();
                                        rt.tracker.spawn(async move {
                                            if let Err(e) = store.save_stats(&k, v).await {
                                                tracing::warn!(key = %k, "learned poll statistics not saved: {e}");
                                            }
                                        });
                                    }
                                }
                            }
                        }
                        if done {
                            jobs.remove(slot);
                            continue;
                        }
                        let Some(t) = jobs.get_mut(slot) else { continue };
                        // A report that was written to the store supersedes
                        // the one kept here.
                        if let Some(live) = live {
                            t.live = live.and_then(|r| words.compact(&r));
                        }
                        if let Some(state) = state {
                            t.state = state;
                        }
                        let target = policies.target(&rt, t.provider);
                        let learned = classes.plan(t.class, target);
                        let Some(pol) = policies.get(&rt, t.provider) else { continue };
                        let d = t.plan.next_with(pol, elapsed_since(epoch, t.since_ms), progress, learned, &mut rng);
                        rt.metrics.poll_delay.observe(d);
                        t.dq = Some(dq.insert_at(slot, coalesced(epoch, Instant::now(), d)));
                    }
                    Sched::Learned { reply } => {
                        let out = classes.views().into_iter().filter_map(|(p, v)| {
                            Some((policies.name(p)?.to_string(), v))
                        }).collect();
                        let _ = reply.send(out);
                    }
                    Sched::DueKey { key } => {
                        // Passed on by another daemon, which verified the
                        // webhook: poll now.
                        let Some(slot) = jobs.slot_of(&key) else { continue };
                        if let Some(k) = jobs.get_mut(slot).and_then(|t| t.dq.as_ref()) {
                            dq.reset(k, Duration::ZERO);
                        }
                    }
                    Sched::Forget => {
                        jobs = Tracking::default();
                        dq.clear();
                    }
                    Sched::Untrack { key } => {
                        if let Some(t) = jobs.slot_of(&key).and_then(|slot| jobs.remove(slot)) {
                            if let Some(k) = t.dq {
                                dq.try_remove(&k);
                            }
                        }
                    }
                }
            }
            Some(expired) = dq.next(), if !dq.is_empty() => {
                let slot = expired.into_inner();
                let Some(t) = jobs.get_mut(slot) else { continue };
                t.dq = None;
                let now_ms = ms_from(epoch, Instant::now());
                let before = if t.last_poll_ms == i64::MIN { t.since_ms } else { t.last_poll_ms };
                t.gap_ms = u32::try_from(now_ms.saturating_sub(before).max(0)).unwrap_or(u32::MAX);
                t.last_poll_ms = now_ms;
                let Some(provider) = policies.name(t.provider).map(str::to_string) else { continue };
                let (key, id) = (t.key().to_string(), t.id().to_string());
                let (state, elapsed) = (t.state, elapsed_since(epoch, t.since_ms));
                let (rt2, gen) = (rt.clone(), rt.gen());
                let g2 = gen.clone();
                rt.spawn_in(&gen, async move { rt2.poll(key, provider, id, state, elapsed, g2).await });
            }
        }
    }
}
