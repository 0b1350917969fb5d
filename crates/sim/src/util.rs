//! Small deterministic helpers. Randomness is derived by hashing
//! (seed, provider, ordinal) rather than drawn from one shared generator, so
//! that a job's fate does not depend on how many status polls happened before
//! it was created: the same seed and the same creates give the same jobs.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// SplitMix64 finalizer: a cheap, well-mixed 64-bit hash step.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Stream identifiers so jobs and requests never share random numbers.
pub const STREAM_JOB: u64 = 1;
pub const STREAM_REQUEST: u64 = 2;

/// A generator for one (seed, provider, stream, ordinal, attempt) tuple.
pub fn rng_for(seed: u64, provider: u64, stream: u64, ordinal: u64, attempt: u64) -> SmallRng {
    let h = mix64(seed ^ mix64(provider ^ mix64(stream ^ mix64(ordinal ^ mix64(attempt)))));
    SmallRng::seed_from_u64(h)
}

/// A standard normal variate (Box-Muller), so no extra crate is needed.
pub fn normal(rng: &mut SmallRng) -> f64 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A v4-shaped UUID from the generator.
pub fn uuid(rng: &mut SmallRng) -> String {
    let mut b: [u8; 16] = rng.gen();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `len` lowercase alphanumerics.
pub fn alnum(rng: &mut SmallRng, len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

/// The simulator's clock: monotonic, but expressed as Unix milliseconds so
/// that timestamps it hands out line up with the client's wall clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    base_ms: u64,
}

impl Clock {
    pub fn new() -> Clock {
        let base_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            start: Instant::now(),
            base_ms,
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.base_ms + self.start.elapsed().as_millis() as u64
    }

    /// Nanoseconds since the clock started (for rate limiting).
    pub fn mono_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn uptime_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

fn system_time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// `2025-01-15T10:30:00.000Z` (UGC Lab, U-Gen).
pub fn iso_millis(ms: u64) -> String {
    humantime::format_rfc3339_millis(system_time(ms)).to_string()
}

/// `2026-02-20T12:40:01.123456+00:00` (UlazAI's Python-style timestamps).
pub fn iso_micros_offset(ms: u64) -> String {
    let s = humantime::format_rfc3339_micros(system_time(ms)).to_string();
    match s.strip_suffix('Z') {
        Some(head) => format!("{head}+00:00"),
        None => s,
    }
}

/// `2023-11-07T05:31:56Z` (Viggle).
pub fn iso_seconds(ms: u64) -> String {
    humantime::format_rfc3339_seconds(system_time(ms)).to_string()
}

/// Unix seconds of the real wall clock (webhook timestamps must match the
/// receiver's clock, whatever the speedup).
pub fn unix_now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An absolute http(s) URL with a host; enough to catch what a provider
/// would reject without pulling in a URL parser.
pub fn is_http_url(s: &str) -> bool {
    let rest = if let Some(r) = s.strip_prefix("https://") {
        r
    } else if let Some(r) = s.strip_prefix("http://") {
        r
    } else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    !host.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(is_http_url("https://example.com/h.jpg"));
        assert!(is_http_url("http://127.0.0.1:8080"));
        assert!(!is_http_url("ftp://example.com"));
        assert!(!is_http_url("https:///x"));
        assert!(!is_http_url("https://exa mple.com"));
        assert!(!is_http_url("example.com"));
    }

    #[test]
    fn timestamps() {
        assert_eq!(iso_millis(1_736_937_000_000), "2025-01-15T10:30:00.000Z");
        assert_eq!(
            iso_micros_offset(1_736_937_000_123),
            "2025-01-15T10:30:00.123000+00:00"
        );
        assert_eq!(iso_seconds(1_736_937_000_999), "2025-01-15T10:30:00Z");
    }

    #[test]
    fn ids_are_deterministic() {
        let a = uuid(&mut rng_for(1, 2, STREAM_JOB, 3, 0));
        let b = uuid(&mut rng_for(1, 2, STREAM_JOB, 3, 0));
        let c = uuid(&mut rng_for(1, 2, STREAM_JOB, 4, 0));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
