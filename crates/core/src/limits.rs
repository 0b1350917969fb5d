//! The limits a provider runs under, as configured: rate, budget and
//! polling. Plain data shared by the config, the engine and the views.

use crate::budget::Period;
use serde::{Deserialize, Deserializer, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: Option<u32>,
    pub per_minute: Option<u32>,
    pub burst: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub credits: u64,
    #[serde(default)]
    pub period: Period,
    /// Where day and month budgets roll over: "+02:00", "-05:00" or "Z"
    /// (default UTC).
    #[serde(default)]
    pub utc_offset: Option<String>,
}

impl Budget {
    /// Seconds east of UTC, or an error naming the bad value.
    pub fn offset_secs(&self) -> Result<i32, String> {
        let Some(raw) = self.utc_offset.as_deref() else {
            return Ok(0);
        };
        if raw == "Z" || raw == "UTC" {
            return Ok(0);
        }
        let bad = || format!("utc_offset {raw:?} is not like \"+02:00\", \"-05:30\" or \"Z\"");
        let (sign, rest) = match raw.as_bytes().first() {
            Some(b'+') => (1, &raw[1..]),
            Some(b'-') => (-1, &raw[1..]),
            _ => return Err(bad()),
        };
        let (h, m) = rest.split_once(':').ok_or_else(bad)?;
        let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if !(0..=14).contains(&h) || !(0..60).contains(&m) {
            return Err(bad());
        }
        Ok(sign * (h * 3600 + m * 60))
    }

    /// The ledger row reservations made now belong to.
    pub fn current_period(&self) -> String {
        self.period.id_at_offset(
            std::time::SystemTime::now(),
            self.offset_secs().unwrap_or(0),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollConfig {
    #[serde(with = "dur_list")]
    pub schedule: Vec<Duration>,
    #[serde(with = "dur")]
    pub max: Duration,
    #[serde(with = "dur")]
    pub timeout: Duration,
    /// The delay from a job's finish to the poll that sees it which the
    /// plan learned from finished jobs keeps for 95 % of jobs.
    #[serde(with = "dur")]
    pub target_delay: Duration,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            schedule: [3, 5, 8, 10].map(Duration::from_secs).to_vec(),
            max: Duration::from_secs(60),
            timeout: Duration::from_secs(2 * 3600),
            target_delay: Duration::from_secs(10),
        }
    }
}

/// Durations as humantime strings ("3s", "2h", "500ms").
pub mod dur {
    use super::*;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
    }
}

pub mod dur_list {
    use super::*;
    pub fn serialize<S: serde::Serializer>(d: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(d.iter().map(|d| humantime::format_duration(*d).to_string()))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.iter()
            .map(|s| {
                humantime::parse_duration(s)
                    .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
            })
            .collect()
    }
}
