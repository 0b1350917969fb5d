//! Budgets are enforced where reservations are written (inside the store's
//! transaction, by the rules of [`crate::change`]), so the invariant `reserved + charged <= limit` cannot be
//! broken by two dispatchers racing, by a restart, or by a lowered limit: a
//! lowered limit only stops new reservations, it never forgets a charge.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

/// How long a budget lasts before it starts again from zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    #[default]
    Total,
    Day,
    Month,
}

impl Period {
    /// The ledger row a reservation made at `at` belongs to (UTC).
    pub fn id_at(self, at: SystemTime) -> String {
        self.id_at_offset(at, 0)
    }

    /// The ledger row for `at` in a time zone `offset_secs` east of UTC, so
    /// a daily budget can roll over at local midnight.
    pub fn id_at_offset(self, at: SystemTime, offset_secs: i32) -> String {
        let shifted = if offset_secs >= 0 {
            at.checked_add(std::time::Duration::from_secs(offset_secs as u64))
        } else {
            at.checked_sub(std::time::Duration::from_secs(
                offset_secs.unsigned_abs() as u64
            ))
        }
        .unwrap_or(at);
        // "2026-11-23T23:05:07Z": the date and month are fixed-width prefixes.
        let stamp = humantime::format_rfc3339_seconds(shifted).to_string();
        match self {
            Period::Total => "total".to_string(),
            Period::Day => stamp[..10].to_string(),
            Period::Month => stamp[..7].to_string(),
        }
    }

    pub fn current_id(self) -> String {
        self.id_at(SystemTime::now())
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Period::Total => "total",
            Period::Day => "day",
            Period::Month => "month",
        })
    }
}

impl FromStr for Period {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "total" => Ok(Period::Total),
            "day" => Ok(Period::Day),
            "month" => Ok(Period::Month),
            other => Err(format!(
                "unknown budget period {other:?} (expected total, day or month)"
            )),
        }
    }
}

/// One ledger row: a provider's credits in one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub reserved: u64,
    pub charged: u64,
}

impl LedgerEntry {
    pub fn used(&self) -> u64 {
        self.reserved.saturating_add(self.charged)
    }

    pub fn headroom(&self, limit: u64) -> u64 {
        limit.saturating_sub(self.used())
    }

    pub fn to_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.reserved.to_be_bytes());
        out[8..].copy_from_slice(&self.charged.to_be_bytes());
        out
    }

    pub fn from_bytes(b: &[u8]) -> LedgerEntry {
        let mut r = [0u8; 8];
        let mut c = [0u8; 8];
        if b.len() == 16 {
            r.copy_from_slice(&b[..8]);
            c.copy_from_slice(&b[8..]);
        }
        LedgerEntry {
            reserved: u64::from_be_bytes(r),
            charged: u64::from_be_bytes(c),
        }
    }
}

/// What a transition does to the credit ledger, applied in the same
/// transaction as the state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerOp {
    None,
    /// Reserve `amount` in `period`, refusing if `limit` would be exceeded.
    Reserve {
        period: String,
        amount: u64,
        limit: Option<u64>,
    },
    /// The provider reported its charge: the job's reservation is replaced by
    /// `charged` (which may exceed the estimate; the charge is a fact).
    Settle {
        charged: u64,
    },
    /// Nothing was (or will be) charged: drop the job's reservation.
    Release,
    /// The provider refunded `amount` of an earlier charge.
    Refund {
        amount: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn period_ids_roll_over_at_utc_midnight_and_month_start() {
        // 2026-11-30T23:59:59Z and one second later.
        let before = UNIX_EPOCH + Duration::from_secs(1_796_083_199);
        let after = before + Duration::from_secs(1);
        assert_eq!(Period::Day.id_at(before), "2026-11-30");
        assert_eq!(Period::Day.id_at(after), "2026-12-01");
        assert_eq!(Period::Month.id_at(before), "2026-11");
        assert_eq!(Period::Month.id_at(after), "2026-12");
        assert_eq!(Period::Total.id_at(after), "total");
    }

    #[test]
    fn an_offset_moves_the_rollover_to_local_midnight() {
        // 2026-11-30T23:30:00Z is already December 1st at UTC+02:00 and still
        // November 30th at UTC-05:00.
        let at = UNIX_EPOCH + Duration::from_secs(1_796_081_400);
        assert_eq!(Period::Day.id_at_offset(at, 0), "2026-11-30");
        assert_eq!(Period::Day.id_at_offset(at, 2 * 3600), "2026-12-01");
        assert_eq!(Period::Month.id_at_offset(at, 2 * 3600), "2026-12");
        assert_eq!(Period::Day.id_at_offset(at, -5 * 3600), "2026-11-30");
    }
}
