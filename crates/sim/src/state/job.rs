//! The job model: a job's scripted outcome, the phase and pipeline position
//! it is at for any instant, and the status words each provider shows for
//! them. Everything here is a pure function of the job and the clock, which
//! is what lets status reads skip timers and lets tests predict answers.

use super::SimState;
use crate::scenario::{DurationDist, ProviderScenario};
use crate::util;
use rand::rngs::SmallRng;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::ProviderKind;

/// Share of a job's duration spent waiting before processing starts.
pub const PENDING_SHARE: f64 = 0.1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Completed,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Failed => "failed",
        }
    }
}

/// Where a job is, independent of provider vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Processing,
    Paused,
    Completed,
    Failed,
    Cancelled,
}

impl Phase {
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Completed | Phase::Failed | Phase::Cancelled)
    }
}

/// A job's state at one instant: its phase and its position in the pipeline
/// (0.0 = nothing done, 1.0 = all stages done).
#[derive(Debug, Clone, Copy)]
pub struct View {
    pub phase: Phase,
    pub p: f64,
    /// When the current phase began (Unix ms), for `updated_at`.
    pub since_ms: u64,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub id: Arc<str>,
    pub kind: ProviderKind,
    pub seq: u64,
    pub ordinal: u64,
    pub client_key: Option<String>,
    /// The create body (one job's object for UlazAI batches).
    pub params: Value,
    pub forced: Option<Outcome>,
    pub forced_duration: Option<Duration>,
    pub outcome: Outcome,
    /// Pipeline position where the current attempt ends (1.0 on success).
    pub span: f64,
    /// Picks the failure code/message and cosmetic values.
    pub salt: u64,
    pub cost: u64,
    pub created_ms: u64,
    pub attempt: u32,
    /// Start of the current attempt, shifted forward by time spent paused.
    pub t0_ms: u64,
    /// Real duration of the current attempt.
    pub dur_ms: u64,
    pub p_start: f64,
    pub paused_at: Option<u64>,
    pub cancelled: Option<(u64, f64)>,
    /// Credits of the current attempt have been charged or released.
    pub settled: bool,
    pub prior_charged: u64,
    pub prior_released: u64,
    pub webhook_fired: bool,
    /// Last explicit change (pause, resume, retry, cancel).
    pub touched_ms: u64,
}

impl Job {
    pub fn end_ms(&self) -> u64 {
        self.t0_ms + self.dur_ms
    }

    /// When the job will (or did) reach a terminal state, as far as known now.
    pub fn finishes_ms(&self, now: u64) -> u64 {
        if let Some((at, _)) = self.cancelled {
            return at;
        }
        match self.paused_at {
            Some(at) => self.end_ms() + now.saturating_sub(at),
            None => self.end_ms(),
        }
    }

    pub fn view(&self, now: u64) -> View {
        if let Some((at, p)) = self.cancelled {
            return View {
                phase: Phase::Cancelled,
                p,
                since_ms: at,
            };
        }
        let t = self.paused_at.unwrap_or(now);
        let elapsed = t.saturating_sub(self.t0_ms);
        if self.paused_at.is_none() && elapsed >= self.dur_ms {
            let phase = match self.outcome {
                Outcome::Completed => Phase::Completed,
                Outcome::Failed => Phase::Failed,
            };
            return View {
                phase,
                p: self.span,
                since_ms: self.end_ms(),
            };
        }
        let frac = elapsed as f64 / self.dur_ms.max(1) as f64;
        let pending_ms = (self.dur_ms as f64 * PENDING_SHARE) as u64;
        let p = if frac < PENDING_SHARE {
            self.p_start
        } else {
            self.p_start
                + (frac - PENDING_SHARE) / (1.0 - PENDING_SHARE) * (self.span - self.p_start)
        };
        if let Some(at) = self.paused_at {
            return View {
                phase: Phase::Paused,
                p,
                since_ms: at,
            };
        }
        if frac < PENDING_SHARE {
            View {
                phase: Phase::Pending,
                p,
                since_ms: self.t0_ms.max(self.touched_ms),
            }
        } else {
            View {
                phase: Phase::Processing,
                p,
                since_ms: (self.t0_ms + pending_ms).max(self.touched_ms),
            }
        }
    }

    /// Credits held for the current attempt right now.
    pub fn reserved_now(&self, phase: Phase) -> u64 {
        if phase.is_terminal() {
            0
        } else {
            self.cost
        }
    }

    /// Credits consumed so far (completed attempts).
    pub fn charged_now(&self, phase: Phase) -> u64 {
        self.prior_charged
            + if phase == Phase::Completed {
                self.cost
            } else {
                0
            }
    }

    /// Credits given back so far (failed or cancelled attempts).
    pub fn released_now(&self, phase: Phase) -> u64 {
        self.prior_released
            + if matches!(phase, Phase::Failed | Phase::Cancelled) {
                self.cost
            } else {
                0
            }
    }

    /// Starts an attempt: draws its outcome and duration from the job's own
    /// generator, so the result depends only on (seed, provider, ordinal).
    pub fn start_attempt(
        &mut self,
        rng: &mut SmallRng,
        cfg: &ProviderScenario,
        speedup: f64,
        now: u64,
        p_start: f64,
    ) {
        let roll: f64 = rng.gen();
        let fail_at: f64 = rng.gen_range(0.1..0.9);
        self.salt = rng.gen();
        let sim = draw_duration(&cfg.duration, rng);
        self.outcome = self.forced.unwrap_or(if roll < cfg.failure_rate {
            Outcome::Failed
        } else {
            Outcome::Completed
        });
        let sim = self.forced_duration.unwrap_or(sim);
        let remaining = (1.0 - p_start).clamp(0.05, 1.0);
        self.dur_ms = ((sim.as_secs_f64() * 1000.0 * remaining / speedup) as u64).max(1);
        self.t0_ms = now;
        self.p_start = p_start;
        self.span = match self.outcome {
            Outcome::Completed => 1.0,
            Outcome::Failed => p_start + (1.0 - p_start) * fail_at,
        };
        self.paused_at = None;
        self.cancelled = None;
        self.settled = false;
        self.webhook_fired = false;
        self.touched_ms = now;
    }
}

pub fn draw_duration(d: &DurationDist, rng: &mut SmallRng) -> Duration {
    match *d {
        DurationDist::Fixed(f) => f,
        DurationDist::LogNormal {
            median,
            sigma,
            min,
            max,
        } => {
            let z = util::normal(rng);
            let secs = median.as_secs_f64() * (sigma * z).exp();
            let secs = secs.clamp(min.as_secs_f64(), max.as_secs_f64());
            Duration::from_secs_f64(secs)
        }
    }
}

/// The status word a status answer shows: the documented one, or the
/// scenario's `unknown_status` word while a live job is in its window.
pub fn shown_status(sim: &SimState, job: &Job, v: View) -> String {
    let documented = raw_status(job.kind, v);
    let Some(u) = &sim.provider(job.kind).cfg.unknown_status else {
        return documented.to_string();
    };
    if v.phase.is_terminal() {
        return documented.to_string();
    }
    let age_ms = sim.now_ms().saturating_sub(job.created_ms) as f64 * sim.speedup;
    let window = u.from.0.as_secs_f64() * 1000.0..u.until.0.as_secs_f64() * 1000.0;
    if window.contains(&age_ms) {
        u.word.clone()
    } else {
        documented.to_string()
    }
}

/// The provider's own status word for a phase.
pub fn raw_status(kind: ProviderKind, v: View) -> &'static str {
    match kind {
        ProviderKind::Ugclab => match v.phase {
            Phase::Pending => "PENDING",
            Phase::Processing | Phase::Paused if v.p >= crate::ugclab::SAVING_AT => "SAVING",
            Phase::Processing | Phase::Paused => "PROCESSING",
            Phase::Completed => "COMPLETED",
            Phase::Failed => "FAILED",
            Phase::Cancelled => "CANCELLED",
        },
        ProviderKind::Ugen => match v.phase {
            Phase::Pending => "pending",
            Phase::Processing => "processing",
            Phase::Paused => "paused",
            Phase::Completed => "completed",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
        },
        ProviderKind::Ulazai => match v.phase {
            Phase::Pending => "pending",
            Phase::Processing | Phase::Paused => "processing",
            Phase::Completed => "completed",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
        },
        ProviderKind::Viggle => match v.phase {
            Phase::Pending => "queued",
            Phase::Processing | Phase::Paused => "processing",
            Phase::Completed => "complete",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
        },
    }
}
