//! The scheduler's bookkeeping of live jobs: a compact entry per job in a
//! slab, found by key or by provider id, and the live reports' words kept
//! once. Measured for 100,000 live jobs: every byte here is paid per job.

use crate::sched::LiveReport;
use hashbrown::HashTable;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::poll::PollPlan;
use switchyard_core::JobState;
use tokio::time::Instant;
use tokio_util::time::delay_queue;

/// A live job as the scheduler keeps it. One per live job (100,000 of them
/// is a use this is measured for), so kept small: the key and the
/// provider's id share one allocation, the provider is an index, times are
/// milliseconds from the scheduler's start, the live report's words are
/// numbers into [`Words`], and the delay queue points at the entry by slot.
pub(crate) struct Tracked {
    /// The job key followed by the provider's id; `split` is where the id
    /// starts.
    names: Box<str>,
    split: u32,
    pub(crate) dq: Option<delay_queue::Key>,
    pub(crate) plan: PollPlan,
    /// When the provider acknowledged the job (before a restart, too, so
    /// it may be negative).
    pub(crate) since_ms: i64,
    /// When the last poll went out; `i64::MIN`: not yet.
    pub(crate) last_poll_ms: i64,
    pub(crate) live: Option<Live>,
    pub(crate) provider: u16,
    /// The job's class in [`super::classes::Classes`].
    pub(crate) class: u16,
    /// Milliseconds between the last two polls (the first: since the
    /// acknowledgement), to place the finish between them.
    pub(crate) gap_ms: u32,
    /// The state the store last reported, so that a poll needs no store
    /// read (a stale one is caught by the compare-and-swap on write).
    pub(crate) state: JobState,
}

impl Tracked {
    pub(crate) fn new(key: &str, provider: u16, id: &str, state: JobState, since_ms: i64) -> Self {
        Tracked {
            names: format!("{key}{id}").into_boxed_str(),
            // Fewer than 4 GiB of key.
            split: key.len() as u32,
            dq: None,
            plan: PollPlan::new(),
            since_ms,
            last_poll_ms: i64::MIN,
            live: None,
            provider,
            class: super::classes::UNLEARNED,
            gap_ms: 0,
            state,
        }
    }

    pub(crate) fn key(&self) -> &str {
        self.names.get(..self.split as usize).unwrap_or_default()
    }

    pub(crate) fn id(&self) -> &str {
        self.names.get(self.split as usize..).unwrap_or_default()
    }
}

/// Milliseconds between the scheduler's start and `at` (negative before).
pub(crate) fn ms_from(epoch: Instant, at: Instant) -> i64 {
    if at >= epoch {
        i64::try_from((at - epoch).as_millis()).unwrap_or(i64::MAX)
    } else {
        i64::try_from((epoch - at).as_millis()).map_or(i64::MIN + 1, |ms| -ms)
    }
}

/// Time since `since_ms` (a [`ms_from`] stamp).
pub(crate) fn elapsed_since(epoch: Instant, since_ms: i64) -> Duration {
    let ms = ms_from(epoch, Instant::now()).saturating_sub(since_ms);
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A [`LiveReport`] as kept per job: its words by number.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Live {
    pub(crate) progress: Option<u8>,
    pub(crate) stage: Option<u16>,
    pub(crate) status: u16,
}

/// The scheduler's jobs: a slab of entries, found by key or by provider id
/// through tables that hold only slot numbers and hash the strings stored
/// in the entry.
///
/// Why: with 100,000 live jobs, maps keyed by their own copies of the key
/// and the provider id were ~120 B per job on top of the entries.
#[derive(Default)]
pub(crate) struct Tracking {
    slots: Vec<Option<Tracked>>,
    free: Vec<u32>,
    by_key: HashTable<u32>,
    by_id: HashTable<u32>,
    hasher: std::hash::RandomState,
}

impl Tracking {
    fn key_hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    fn id_hash(&self, provider: u16, id: &str) -> u64 {
        self.hasher.hash_one((provider, id))
    }

    fn entry(slots: &[Option<Tracked>], slot: u32) -> Option<&Tracked> {
        slots.get(slot as usize)?.as_ref()
    }

    pub(crate) fn insert(&mut self, t: Tracked) -> u32 {
        let (kh, ih) = (self.key_hash(t.key()), self.id_hash(t.provider, t.id()));
        let slot = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(t);
                i
            }
            None => {
                self.slots.push(Some(t));
                // Fewer than 2^32 jobs are ever live at once.
                (self.slots.len() - 1) as u32
            }
        };
        let Tracking {
            slots,
            by_key,
            by_id,
            hasher,
            ..
        } = self;
        by_key.insert_unique(kh, slot, |s| {
            Self::entry(slots, *s).map_or(0, |t| hasher.hash_one(t.key()))
        });
        by_id.insert_unique(ih, slot, |s| {
            Self::entry(slots, *s).map_or(0, |t| hasher.hash_one((t.provider, t.id())))
        });
        slot
    }

    pub(crate) fn get_mut(&mut self, slot: u32) -> Option<&mut Tracked> {
        self.slots.get_mut(slot as usize)?.as_mut()
    }

    pub(crate) fn slot_of(&self, key: &str) -> Option<u32> {
        let slots = &self.slots;
        self.by_key
            .find(self.key_hash(key), |s| {
                Self::entry(slots, *s).is_some_and(|t| t.key() == key)
            })
            .copied()
    }

    pub(crate) fn slot_of_id(&self, provider: u16, id: &str) -> Option<u32> {
        let slots = &self.slots;
        self.by_id
            .find(self.id_hash(provider, id), |s| {
                Self::entry(slots, *s).is_some_and(|t| t.provider == provider && t.id() == id)
            })
            .copied()
    }

    pub(crate) fn remove(&mut self, slot: u32) -> Option<Tracked> {
        let t = self.slots.get_mut(slot as usize)?.take()?;
        let (kh, ih) = (self.key_hash(t.key()), self.id_hash(t.provider, t.id()));
        if let Ok(e) = self.by_key.find_entry(kh, |s| *s == slot) {
            e.remove();
        }
        if let Ok(e) = self.by_id.find_entry(ih, |s| *s == slot) {
            e.remove();
        }
        self.free.push(slot);
        Some(t)
    }
}

/// The words of live reports (a provider's status and stage names), each
/// kept once and referred to by number: 100,000 jobs in `processing` need
/// one copy of the word.
#[derive(Default)]
pub(crate) struct Words {
    words: Vec<Arc<str>>,
    index: HashMap<Arc<str>, u16>,
}

impl Words {
    /// The number of `w`; `None` once 65,536 different words were seen (a
    /// provider that sends free text): such a report is then not kept, and
    /// the job shows what the store last recorded.
    pub(crate) fn number(&mut self, w: &str) -> Option<u16> {
        if let Some(n) = self.index.get(w) {
            return Some(*n);
        }
        let n = u16::try_from(self.words.len()).ok()?;
        let w: Arc<str> = Arc::from(w);
        self.words.push(w.clone());
        self.index.insert(w, n);
        Some(n)
    }

    pub(crate) fn compact(&mut self, r: &LiveReport) -> Option<Live> {
        let stage = match &r.stage {
            Some(s) => Some(self.number(s)?),
            None => None,
        };
        Some(Live {
            progress: r.progress,
            stage,
            status: self.number(&r.provider_status)?,
        })
    }

    pub(crate) fn report(&self, l: Live) -> Option<LiveReport> {
        let word = |n: u16| self.words.get(n as usize).cloned();
        Some(LiveReport {
            progress: l.progress,
            stage: match l.stage {
                Some(n) => Some(word(n)?),
                None => None,
            },
            provider_status: word(l.status)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracked_jobs_are_found_by_key_and_by_provider_id_until_removed() {
        let mut jobs = Tracking::default();
        let a = jobs.insert(Tracked::new("job-a", 0, "id-1", JobState::Pending, 0));
        // Same provider id at another provider, and a key that is the
        // other's key + id run together: still told apart.
        let b = jobs.insert(Tracked::new("job-b", 1, "id-1", JobState::Pending, 0));
        let c = jobs.insert(Tracked::new("job-aid", 0, "-1", JobState::Pending, 0));
        assert_eq!(jobs.slot_of("job-a"), Some(a));
        assert_eq!(jobs.slot_of("job-aid"), Some(c));
        assert_eq!(jobs.slot_of_id(0, "id-1"), Some(a));
        assert_eq!(jobs.slot_of_id(1, "id-1"), Some(b));
        assert_eq!(jobs.slot_of_id(0, "-1"), Some(c));
        let t = jobs
            .remove(a)
            .map(|t| (t.key().to_string(), t.id().to_string()));
        assert_eq!(t, Some(("job-a".into(), "id-1".into())));
        assert_eq!(jobs.slot_of("job-a"), None);
        assert_eq!(jobs.slot_of_id(0, "id-1"), None);
        assert_eq!(
            jobs.slot_of_id(1, "id-1"),
            Some(b),
            "the other provider's job stays"
        );
        // The freed slot is reused, and many inserts (table growth) keep
        // every job findable.
        let d = jobs.insert(Tracked::new("job-d", 0, "id-9", JobState::Processing, 0));
        assert_eq!(d, a);
        for i in 0..5_000 {
            jobs.insert(Tracked::new(
                &format!("k{i}"),
                2,
                &format!("p{i}"),
                JobState::Pending,
                0,
            ));
        }
        for i in (0..5_000).step_by(7) {
            let slot = jobs.slot_of(&format!("k{i}")).expect("found by key");
            assert_eq!(jobs.slot_of_id(2, &format!("p{i}")), Some(slot));
        }
        assert_eq!(jobs.slot_of("job-d"), Some(d));
    }

    #[test]
    fn live_reports_keep_their_words_and_jobs_share_them() {
        let mut words = Words::default();
        let report = |status: &str, stage: Option<&str>| LiveReport {
            progress: Some(40),
            stage: stage.map(Arc::from),
            provider_status: Arc::from(status),
        };
        let r1 = report("processing", Some("rendering"));
        let l1 = words.compact(&r1).expect("kept");
        let l2 = words.compact(&report("processing", None)).expect("kept");
        assert_eq!(words.report(l1), Some(r1));
        assert_eq!(l1.status, l2.status, "one number for one word");
        assert_eq!(words.words.len(), 2);
        // One entry per live job: this is what 100,000 of them cost.
        assert!(
            std::mem::size_of::<Tracked>() <= 176,
            "Tracked grew to {} bytes",
            std::mem::size_of::<Tracked>()
        );
    }
}
