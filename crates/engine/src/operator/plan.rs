//! `plan`: what a batch would cost and how long it would take, per
//! provider, without queueing anything: the estimate (the provider's own
//! where it offers one), the budget left and whether the batch fits it in
//! queue order, the time the rate limit and the in-flight cap take to get
//! it through, the durations learned so far, and the keys already known.

use crate::limits::{configured_interval, read, ProviderRt};
use crate::sched::Sched;
use crate::{Engine, EngineError, Shared};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use switchyard_api::{PlanAnswer, PlanClass, PlanProvider, PollClassView};
use switchyard_core::learn::job_class;
use switchyard_core::{JobSpec, JobState};
use switchyard_store::Filter;

/// Distinct estimate bodies asked of a provider per plan: a batch has few
/// (the price depends on a handful of fields); past this many, the
/// adapter's estimate stands in.
const MAX_ESTIMATE_CALLS: usize = 32;

/// How long a plan waits for a provider's estimates (its rate limit or a
/// cool-down may hold them) before using the adapter's.
const ESTIMATE_WAIT: Duration = Duration::from_secs(10);

/// One job in the queue the plan walks: existing queued ones and the new.
struct Slot<'a> {
    priority: i32,
    /// Existing jobs first at equal priority, then in their order.
    order: (u8, u64),
    /// What dispatch will reserve for it (the adapter's estimate).
    reserve: u64,
    /// What it is expected to cost (the provider's estimate if known).
    cost: u64,
    /// The batch's key, for new jobs.
    new_key: Option<&'a str>,
    class: String,
}

impl Engine {
    /// Plans `jobs` as if submitted now; queues nothing. Invalid jobs are
    /// refused with every problem, as intake would.
    pub async fn plan(&self, jobs: Vec<JobSpec>) -> Result<PlanAnswer, EngineError> {
        let problems = self.check(&jobs);
        if !problems.is_empty() {
            return Err(EngineError::Invalid(problems));
        }
        let s = &self.shared;
        let mut by_provider: BTreeMap<&str, Vec<&JobSpec>> = BTreeMap::new();
        for j in &jobs {
            by_provider.entry(j.provider.as_str()).or_default().push(j);
        }
        let learned = s.learned().await;
        let mut providers = Vec::new();
        for (name, specs) in by_provider {
            let Some(p) = s.providers.get(name) else {
                continue; // refused by the check above
            };
            providers.push(s.plan_provider(p, &specs, &learned).await?);
        }
        Ok(PlanAnswer {
            fits: providers.iter().all(|p| p.fits),
            jobs: jobs.len(),
            providers,
        })
    }
}

impl Shared {
    /// What the poll scheduler learned, by provider name.
    async fn learned(&self) -> Vec<(String, PollClassView)> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        if self.sched.send(Sched::Learned { reply }).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    async fn plan_provider(
        &self,
        p: &ProviderRt,
        specs: &[&JobSpec],
        learned: &[(String, PollClassView)],
    ) -> Result<PlanProvider, EngineError> {
        let mut known_keys = Vec::new();
        let mut new = Vec::new();
        for j in specs {
            match self.store.get(&j.key).await? {
                Some(_) => known_keys.push(j.key.clone()),
                None => new.push(*j),
            }
        }
        let local: Vec<u64> = new
            .iter()
            .map(|j| p.adapter.estimate_credits(&j.params))
            .collect();
        let (remote, remote_error) = remote_estimates(self, p, &new).await;
        let cost: Vec<u64> = local
            .iter()
            .zip(&remote)
            .map(|(l, r)| r.unwrap_or(*l))
            .collect();

        let (rate, max_in_flight, budget) = {
            let l = read(&p.limits);
            (l.rate_limit, l.max_in_flight, l.budget.clone())
        };
        let period = budget
            .as_ref()
            .map(|b| b.current_period())
            .unwrap_or_else(|| "total".into());
        let entry = self.store.ledger(&p.name, &period).await?;
        let left = budget.as_ref().map(|b| entry.headroom(b.credits));

        let queued = self
            .store
            .list(&Filter {
                state: Some(JobState::Queued),
                provider: Some(p.name.clone()),
            })
            .await?;
        let mut slots: Vec<Slot<'_>> = queued
            .iter()
            .map(|j| {
                let reserve = p.adapter.estimate_credits(&j.params);
                Slot {
                    priority: j.priority,
                    order: (0, j.seq),
                    reserve,
                    cost: reserve,
                    new_key: None,
                    class: job_class(&j.params),
                }
            })
            .collect();
        let queued_credits = slots.iter().map(|s| s.reserve).sum();
        for (i, j) in new.iter().enumerate() {
            slots.push(Slot {
                priority: j.priority,
                order: (1, i as u64),
                reserve: local[i],
                cost: cost[i],
                new_key: Some(&j.key),
                class: job_class(&j.params),
            });
        }
        // Dispatch's order: priority, then first come.
        slots.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.order.cmp(&b.order)));
        let waiting_keys = waiting(&slots, left);

        let mine: HashMap<&str, &PollClassView> = learned
            .iter()
            .filter(|(n, _)| *n == p.name)
            .map(|(_, v)| (v.class.as_str(), v))
            .collect();
        let mut classes: BTreeMap<&str, usize> = BTreeMap::new();
        for s in slots.iter().filter(|s| s.new_key.is_some()) {
            *classes.entry(s.class.as_str()).or_default() += 1;
        }
        let durations = classes
            .into_iter()
            .map(|(class, jobs)| {
                let seen = mine.get(class);
                PlanClass {
                    class: class.to_string(),
                    jobs,
                    samples: seen.map_or(0, |v| v.samples),
                    p50_s: seen.and_then(|v| v.p50_s),
                    p90_s: seen.and_then(|v| v.p90_s),
                }
            })
            .collect();
        // Every job through the in-flight cap at its class's median, if
        // every class has one.
        let work: Option<f64> = slots
            .iter()
            .map(|s| mine.get(s.class.as_str()).and_then(|v| v.p50_s))
            .sum();
        let n = slots.len() as u64;
        let burst = u64::from(rate.burst.unwrap_or(1).max(1));
        let drain_by_rate_s =
            configured_interval(&rate).as_secs_f64() * n.saturating_sub(burst) as f64;
        Ok(PlanProvider {
            name: p.name.clone(),
            kind: p.adapter.kind().to_string(),
            jobs: new.len(),
            known_keys,
            estimated_credits: cost.iter().sum(),
            reserved_credits: local.iter().sum(),
            provider_estimated_jobs: remote.iter().filter(|r| r.is_some()).count(),
            provider_estimate_error: remote_error,
            budget_credits: budget.as_ref().map(|b| b.credits),
            budget_period: budget.as_ref().map(|_| period.clone()),
            budget_left: left,
            queued_jobs: queued.len() as u64,
            queued_credits,
            fits: waiting_keys.is_empty(),
            waiting_jobs: waiting_keys.len(),
            waiting_keys,
            drain_by_rate_s,
            max_in_flight,
            drain_by_in_flight_s: work
                .filter(|_| n > 0)
                .map(|w| w / f64::from(max_in_flight.max(1))),
            durations,
            paused_by: p.paused_by().map(str::to_string),
        })
    }
}

/// The new jobs that would wait for credits. Dispatch reserves a job's
/// estimate before sending it and keeps strict queue order, so a job can
/// run once the jobs before it cost what they cost (settled) and its own
/// reservation still fits: the first job for which that fails holds every
/// job behind it. No budget: none waits.
fn waiting<'a>(slots: &[Slot<'a>], left: Option<u64>) -> Vec<String> {
    let Some(left) = left else {
        return Vec::new();
    };
    let mut spent = 0u64;
    let mut held = false;
    let mut out = Vec::new();
    for s in slots {
        if !held && spent.saturating_add(s.reserve) > left {
            held = true;
        }
        spent = spent.saturating_add(s.cost);
        if held {
            out.extend(s.new_key.map(str::to_string));
        }
    }
    out
}

/// The provider's own estimate per new job, where it has an estimate
/// endpoint and answers within [`ESTIMATE_WAIT`]: asked once per distinct
/// body, each request through the rate limit like any other. The error,
/// if the provider could not answer, says why the adapter's were used.
async fn remote_estimates(
    s: &Shared,
    p: &ProviderRt,
    new: &[&JobSpec],
) -> (Vec<Option<u64>>, Option<String>) {
    let bodies: Vec<Option<serde_json::Value>> = new
        .iter()
        .map(|j| p.adapter.remote_estimate_body(&j.params))
        .collect();
    let mut asked: HashMap<String, Option<u64>> = HashMap::new();
    let mut error = None;
    let ask = async {
        for body in bodies.iter().flatten() {
            let k = body.to_string();
            if asked.contains_key(&k) {
                continue;
            }
            if asked.len() >= MAX_ESTIMATE_CALLS {
                error = Some(format!(
                    "more than {MAX_ESTIMATE_CALLS} distinct estimates: the adapter's estimate is used for the rest"
                ));
                break;
            }
            if !p.permit(&s.cancel).await {
                error = Some("the daemon is shutting down".into());
                break;
            }
            match p.adapter.remote_estimate(body).await {
                Ok(n) => {
                    asked.insert(k, Some(n));
                }
                Err(e) => {
                    error = Some(format!(
                        "the provider's estimate failed ({e}): the adapter's estimate is used"
                    ));
                    break;
                }
            }
        }
    };
    if tokio::time::timeout(ESTIMATE_WAIT, ask).await.is_err() {
        error = Some(format!(
            "the provider's estimates took over {}s: the adapter's estimate is used for the rest",
            ESTIMATE_WAIT.as_secs()
        ));
    }
    let out = bodies
        .iter()
        .map(|b| {
            b.as_ref()
                .and_then(|b| asked.get(&b.to_string()).copied().flatten())
        })
        .collect();
    (out, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(priority: i32, reserve: u64, cost: u64, key: Option<&'static str>) -> Slot<'static> {
        Slot {
            priority,
            order: (u8::from(key.is_some()), 0),
            reserve,
            cost,
            new_key: key,
            class: String::new(),
        }
    }

    #[test]
    fn the_first_job_that_does_not_fit_holds_those_behind_it() {
        let slots = [
            slot(0, 40, 40, None),
            slot(0, 50, 30, Some("a")),
            slot(0, 40, 40, Some("b")),
            slot(0, 5, 5, Some("c")),
        ];
        // 40 + 30 spent, then 40 more does not fit in 100: b waits, and c
        // behind it although it would fit alone.
        assert_eq!(waiting(&slots, Some(100)), vec!["b", "c"]);
        // A job's own reservation must fit, not only its cost: with 110
        // left, b needs 70 + 40.
        assert!(waiting(&slots, Some(115)).is_empty());
        assert_eq!(waiting(&slots, Some(109)), vec!["b", "c"]);
        assert!(waiting(&slots, None).is_empty(), "no budget, no wait");
    }
}
