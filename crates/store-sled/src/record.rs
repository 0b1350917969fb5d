//! How a job is laid out in sled: keys of the one tree, and the record
//! codec (the job and its history in one value).

use sled::IVec;
use switchyard_core::fallback::default_fallback_on;
use switchyard_core::{Alternative, FallbackOn, Job, JobState, Transition, Tried};
use switchyard_store::StoreError;

pub(crate) const P_JOB: u8 = b'j';
pub(crate) const P_IDX: u8 = b'i';
pub(crate) const P_LEDGER: u8 = b'l';
/// Per-provider job counts by state, written with the transitions they
/// count (see `Counts`).
pub(crate) const P_COUNT: u8 = b'c';
/// Statistics the engine keeps (learned job durations), by its own key.
pub(crate) const P_STATS: u8 = b's';
/// A provider's hold after a 429: its deadline (see `gate.rs`).
pub(crate) const P_HOLD: u8 = b'h';
/// A provider a user paused (present: paused).
pub(crate) const P_PAUSE: u8 = b'p';
/// Present once the count rows are authoritative (stores written before
/// counts were kept are recounted once at open).
pub(crate) const COUNTS_MARKER: &[u8] = b"m.counts.v1";
/// Never appears in UTF-8, so it separates user strings unambiguously.
pub(crate) const SEP: u8 = 0xFF;

pub(crate) fn job_key(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(P_JOB);
    k.extend_from_slice(key.as_bytes());
    k
}

/// Higher priority sorts first: flip the sign bit, then invert.
fn prio_bytes(priority: i32) -> [u8; 4] {
    (!((priority as u32) ^ 0x8000_0000)).to_be_bytes()
}

pub(crate) fn idx_prefix(state: JobState, provider: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(provider.len() + 3);
    k.push(P_IDX);
    k.push(state.code());
    k.extend_from_slice(provider.as_bytes());
    k.push(SEP);
    k
}

pub(crate) fn idx_key(job: &Job) -> Vec<u8> {
    let mut k = idx_prefix(job.state, &job.provider);
    k.extend_from_slice(&prio_bytes(job.priority));
    k.extend_from_slice(&job.seq.to_be_bytes());
    k
}

/// The state and provider an index key names.
pub(crate) fn idx_parts(k: &[u8]) -> Option<(JobState, &[u8])> {
    // P_IDX, state, provider, SEP, 4 bytes of priority, 8 of seq.
    let state = JobState::from_code(*k.get(1)?)?;
    let provider = k.get(2..k.len().checked_sub(13)?)?;
    Some((state, provider))
}

pub(crate) fn ledger_key(provider: &str, period: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(provider.len() + period.len() + 2);
    k.push(P_LEDGER);
    k.extend_from_slice(provider.as_bytes());
    k.push(SEP);
    k.extend_from_slice(period.as_bytes());
    k
}

pub(crate) fn stats_key(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(P_STATS);
    k.extend_from_slice(key.as_bytes());
    k
}

pub(crate) fn count_key(provider: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(provider.len() + 1);
    k.push(P_COUNT);
    k.extend_from_slice(provider.as_bytes());
    k
}

pub(crate) fn decode_counts(b: &[u8]) -> [u64; JobState::ALL.len()] {
    let mut out = [0u64; JobState::ALL.len()];
    for (i, chunk) in b.chunks_exact(8).take(out.len()).enumerate() {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        out[i] = u64::from_be_bytes(w);
    }
    out
}

pub(crate) fn encode_counts(c: &[u64; JobState::ALL.len()]) -> IVec {
    let mut v = Vec::with_capacity(c.len() * 8);
    for n in c {
        v.extend_from_slice(&n.to_be_bytes());
    }
    IVec::from(v)
}

/// What is stored under a job's key: the job and its history together.
///
/// Why one record: a transition then costs one sled write for job and
/// history instead of two (sled copies a leaf per write, so writes, not
/// bytes, are what a transition pays for), and the history needs no id.
/// Records of the first format are this struct as JSON.
#[derive(serde::Deserialize)]
pub(crate) struct Record {
    pub(crate) job: Job,
    pub(crate) history: Vec<Transition>,
}

/// First byte of a record in the binary format. JSON records (this
/// project's first format) start with `{`.
const FORMAT_V1: u8 = 1;
/// [`FORMAT_V1`] followed by the job's [`Extra`] fields, as JSON text.
/// Written only for jobs that have any, so that a store of jobs without
/// fallbacks or pauses stays readable by a daemon that predates them.
const FORMAT_V2: u8 = 2;

/// The job fields added after the binary format was fixed (fallbacks, a
/// user's pause at the provider), kept as JSON so that more can be added
/// later with a default, without another format.
#[derive(serde::Serialize, serde::Deserialize)]
struct Extra {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    fallback: Vec<Alternative>,
    #[serde(default = "default_fallback_on")]
    fallback_on: Vec<FallbackOn>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tried: Vec<Tried>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    paused_at: Option<String>,
    #[serde(default)]
    paused_ms: u64,
}

impl Extra {
    fn of(j: &Job) -> Extra {
        Extra {
            fallback: j.fallback.clone(),
            fallback_on: j.fallback_on.clone(),
            tried: j.tried.clone(),
            paused_at: j.paused_at.clone(),
            paused_ms: j.paused_ms,
        }
    }

    fn put_into(self, j: &mut Job) {
        j.fallback = self.fallback;
        j.fallback_on = self.fallback_on;
        j.tried = self.tried;
        j.paused_at = self.paused_at;
        j.paused_ms = self.paused_ms;
    }
}

/// The stored shape of a job: [`Job`] with `params` as JSON text, in
/// postcard's compact binary form (field order and enum variant order are
/// the format: append, never reorder).
///
/// Why binary: JSON spelled out two dozen field names per record. Records
/// less than half the size make sled's log (replayed at every start), its
/// cache and every encode and decode proportionally cheaper.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredJob {
    key: String,
    provider: String,
    priority: i32,
    params: String,
    state: JobState,
    held_by: Option<switchyard_core::HeldBy>,
    provider_job_id: Option<String>,
    provider_status: Option<String>,
    progress: Option<u8>,
    stage: Option<String>,
    output_urls: Vec<String>,
    credits_reserved: u64,
    credits_charged: u64,
    attempts: u32,
    error: Option<switchyard_core::JobError>,
    output_files: Vec<String>,
    seq: u64,
    budget_period: Option<String>,
    submitted_at: Option<String>,
    created_at: String,
    updated_at: String,
}

impl StoredJob {
    fn from_job(j: &Job) -> StoredJob {
        StoredJob {
            key: j.key.clone(),
            provider: j.provider.clone(),
            priority: j.priority,
            params: j.params.to_string(),
            state: j.state,
            held_by: j.held_by,
            provider_job_id: j.provider_job_id.clone(),
            provider_status: j.provider_status.clone(),
            progress: j.progress,
            stage: j.stage.clone(),
            output_urls: j.output_urls.clone(),
            credits_reserved: j.credits_reserved,
            credits_charged: j.credits_charged,
            attempts: j.attempts,
            error: j.error.clone(),
            output_files: j.output_files.clone(),
            seq: j.seq,
            budget_period: j.budget_period.clone(),
            submitted_at: j.submitted_at.clone(),
            created_at: j.created_at.clone(),
            updated_at: j.updated_at.clone(),
        }
    }

    fn into_job(self) -> Result<Job, serde_json::Error> {
        Ok(Job {
            params: serde_json::from_str(&self.params)?,
            key: self.key,
            provider: self.provider,
            priority: self.priority,
            state: self.state,
            held_by: self.held_by,
            provider_job_id: self.provider_job_id,
            provider_status: self.provider_status,
            progress: self.progress,
            stage: self.stage,
            output_urls: self.output_urls,
            credits_reserved: self.credits_reserved,
            credits_charged: self.credits_charged,
            attempts: self.attempts,
            error: self.error,
            output_files: self.output_files,
            seq: self.seq,
            budget_period: self.budget_period,
            submitted_at: self.submitted_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            fallback: Vec::new(),
            fallback_on: default_fallback_on(),
            tried: Vec::new(),
            paused_at: None,
            paused_ms: 0,
        })
    }
}

pub(crate) fn corrupt(key: &[u8], message: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        message: message.to_string(),
    }
}

pub fn encode_record(job: &Job, history: &[Transition]) -> Result<Vec<u8>, StoreError> {
    let encoding = |e: &dyn std::fmt::Display| StoreError::Storage(format!("encoding: {e}"));
    let stored = StoredJob::from_job(job);
    // Checked field by field: the common job has no extras, and a
    // transition should not pay for building them.
    let plain = job.fallback.is_empty()
        && job.tried.is_empty()
        && job.paused_at.is_none()
        && job.paused_ms == 0
        && job.fallback_on == [FallbackOn::Failed];
    let body = if plain {
        postcard::to_stdvec(&(stored, history)).map(|b| (FORMAT_V1, b))
    } else {
        let text = serde_json::to_string(&Extra::of(job)).map_err(|e| encoding(&e))?;
        postcard::to_stdvec(&(stored, history, text)).map(|b| (FORMAT_V2, b))
    };
    let (format, body) = body.map_err(|e| encoding(&e))?;
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(format);
    out.extend_from_slice(&body);
    Ok(out)
}

pub(crate) fn decode_record(key: &[u8], bytes: &[u8]) -> Result<Record, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT_V1, body)) => {
            let (job, history): (StoredJob, Vec<Transition>) =
                postcard::from_bytes(body).map_err(|e| corrupt(key, e))?;
            Ok(Record {
                job: job.into_job().map_err(|e| corrupt(key, e))?,
                history,
            })
        }
        Some((&FORMAT_V2, body)) => {
            let (job, history, extra): (StoredJob, Vec<Transition>, String) =
                postcard::from_bytes(body).map_err(|e| corrupt(key, e))?;
            let mut job = job.into_job().map_err(|e| corrupt(key, e))?;
            let extra: Extra = serde_json::from_str(&extra).map_err(|e| corrupt(key, e))?;
            extra.put_into(&mut job);
            Ok(Record { job, history })
        }
        Some((b'{', _)) => serde_json::from_slice(bytes).map_err(|e| corrupt(key, e)),
        _ => Err(corrupt(key, "unknown record format")),
    }
}

/// The job alone (postcard reads the history too; it is short).
pub(crate) fn decode_job(key: &[u8], bytes: &[u8]) -> Result<Job, StoreError> {
    decode_record(key, bytes).map(|r| r.job)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use switchyard_core::JobSpec;

    fn job() -> Job {
        let spec = JobSpec {
            key: "k".into(),
            provider: "viggle".into(),
            priority: -3,
            params: serde_json::json!({"prompt": "a \"quoted\" word", "n": [1, 2.5, null]}),
            ..JobSpec::default()
        };
        let mut j = Job::from_spec(spec, 7, "2026-11-30T00:00:00.000Z");
        j.state = JobState::Failed;
        j.error = Some(switchyard_core::JobError::new("E1", "broke"));
        j.output_urls = vec!["https://x/y.mp4".into()];
        j
    }

    fn history() -> Vec<Transition> {
        vec![Transition {
            at: "2026-11-30T00:00:00.000Z".into(),
            from: Some(JobState::Processing),
            to: JobState::Failed,
            note: "x".into(),
        }]
    }

    #[test]
    fn binary_records_round_trip() {
        let bytes = encode_record(&job(), &history()).unwrap();
        assert_eq!(bytes[0], FORMAT_V1);
        let r = decode_record(b"jk", &bytes).unwrap();
        assert_eq!(r.job, job());
        assert_eq!(r.history, history());
    }

    #[test]
    fn json_records_of_the_first_format_are_still_read() {
        let bytes =
            serde_json::to_vec(&serde_json::json!({"job": job(), "history": history()})).unwrap();
        let r = decode_record(b"jk", &bytes).unwrap();
        assert_eq!(r.job, job());
        assert_eq!(r.history, history());
        assert!(matches!(
            decode_record(b"jk", &[9, 9]),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_job_with_fallbacks_or_a_pause_round_trips_and_others_keep_the_first_binary_format() {
        assert_eq!(encode_record(&job(), &history()).unwrap()[0], FORMAT_V1);
        let mut j = job();
        j.fallback = vec![Alternative {
            provider: "ulazai".into(),
            params: serde_json::json!({"model_slug": "kling_3_0", "prompt": "p"}),
        }];
        j.fallback_on = vec![FallbackOn::Failed, FallbackOn::Budget];
        j.tried = vec![Tried {
            provider: "ugen".into(),
            why: FallbackOn::Failed,
            provider_job_id: Some("u-1".into()),
            error: Some(switchyard_core::JobError::new("E", "x")),
            credits_charged: 3,
            attempts: 1,
            at: "2026-11-30T00:00:01.000Z".into(),
        }];
        j.paused_at = Some("2026-11-30T00:00:02.000Z".into());
        j.paused_ms = 1500;
        let bytes = encode_record(&j, &history()).unwrap();
        assert_eq!(bytes[0], FORMAT_V2);
        let r = decode_record(b"jk", &bytes).unwrap();
        assert_eq!(r.job, j);
        assert_eq!(r.history, history());
        // Only the fallback order differs from the default: still kept.
        let mut k = job();
        k.fallback_on = vec![FallbackOn::Paused];
        let r = decode_record(b"jk", &encode_record(&k, &[]).unwrap()).unwrap();
        assert_eq!(r.job.fallback_on, vec![FallbackOn::Paused]);
    }

    #[test]
    fn records_written_before_fallbacks_read_with_none() {
        // The first binary format is the job and its history alone (what
        // the previous release wrote), and a JSON record lacks the new
        // fields.
        let old = {
            let mut b = vec![FORMAT_V1];
            b.extend(postcard::to_stdvec(&(StoredJob::from_job(&job()), history())).unwrap());
            b
        };
        let r = decode_record(b"jk", &old).unwrap();
        assert!(r.job.fallback.is_empty() && r.job.tried.is_empty());
        assert_eq!(r.job.fallback_on, vec![FallbackOn::Failed]);
        let mut v = serde_json::to_value(job()).unwrap();
        for f in ["fallback", "fallback_on", "tried", "paused_at", "paused_ms"] {
            v.as_object_mut().unwrap().remove(f);
        }
        let bytes = serde_json::to_vec(&serde_json::json!({"job": v, "history": []})).unwrap();
        let r = decode_record(b"jk", &bytes).unwrap();
        assert_eq!(r.job, job());
    }
}
