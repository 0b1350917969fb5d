//! The scenario is the one knob set a test or a demo turns: how long jobs take,
//! how often they fail, how strict each provider's limits are and how hostile
//! its network is. Everything has a default so an empty file (or none) gives a
//! well-behaved simulator; unknown keys are errors so a typo in a test's
//! scenario cannot silently test something else.

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;
use switchyard_core::ProviderKind;

/// Errors from loading a scenario.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// TOML syntax or shape error; the message carries line and column.
    #[error("invalid scenario: {0}")]
    Parse(String),
    /// A value parsed but is out of range; the message names the key.
    #[error("invalid scenario: {0}")]
    Invalid(String),
    #[error("reading scenario {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("in scenario {path}: {source}")]
    InFile {
        path: String,
        #[source]
        source: Box<SimError>,
    },
}

/// A whole simulator run: seed, time scale and per-provider behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Seeds every random choice (job durations, outcomes, injected faults).
    pub seed: u64,
    /// Simulated seconds per real second. Job durations are simulated time.
    pub speedup: f64,
    pub providers: Providers,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            seed: 0,
            speedup: 1.0,
            providers: Providers::default(),
        }
    }
}

/// One optional table per provider kind; an absent table means defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Providers {
    pub ugclab: Option<ProviderScenario>,
    pub ugen: Option<ProviderScenario>,
    pub ulazai: Option<ProviderScenario>,
    pub viggle: Option<ProviderScenario>,
}

impl Providers {
    pub fn get(&self, kind: ProviderKind) -> Option<&ProviderScenario> {
        match kind {
            ProviderKind::Ugclab => self.ugclab.as_ref(),
            ProviderKind::Ugen => self.ugen.as_ref(),
            ProviderKind::Ulazai => self.ulazai.as_ref(),
            ProviderKind::Viggle => self.viggle.as_ref(),
        }
    }

    pub fn get_mut(&mut self, kind: ProviderKind) -> &mut Option<ProviderScenario> {
        match kind {
            ProviderKind::Ugclab => &mut self.ugclab,
            ProviderKind::Ugen => &mut self.ugen,
            ProviderKind::Ulazai => &mut self.ulazai,
            ProviderKind::Viggle => &mut self.viggle,
        }
    }
}

/// How one provider behaves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderScenario {
    /// Simulated time from create to a terminal state.
    pub duration: DurationDist,
    /// Probability that a job not scripted by `x_sim_outcome` fails.
    pub failure_rate: f64,
    /// Absent: unlimited.
    pub rate_limit: Option<RateLimit>,
    /// Account balance; absent: unlimited.
    pub credits: Option<u64>,
    /// When set, requests must carry exactly this key.
    pub api_key: Option<String>,
    pub faults: Faults,
    /// U-Gen (signed) and UGC Lab (unsigned) only.
    pub webhook_url: Option<String>,
    pub webhook_secret: Option<String>,
    /// Answers with a status word no document shows for a while in every
    /// live job's life, as a provider that adds a word would.
    pub unknown_status: Option<UnknownStatus>,
}

/// `unknown_status = { word = "RENDERING_HOLD", from = "5s", until = "20s" }`:
/// between `from` and `until` of a job's simulated life (since its create),
/// its status answers carry `word` instead of the documented one, unless
/// it has finished.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnknownStatus {
    pub word: String,
    pub from: HumanDuration,
    pub until: HumanDuration,
}

impl Default for ProviderScenario {
    fn default() -> Self {
        ProviderScenario {
            duration: DurationDist::default(),
            failure_rate: 0.0,
            rate_limit: None,
            credits: None,
            api_key: None,
            faults: Faults::default(),
            webhook_url: None,
            webhook_secret: None,
            unknown_status: None,
        }
    }
}

/// Job duration: fixed, or log-normal around a median, clamped to [min, max].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawDuration")]
pub enum DurationDist {
    Fixed(Duration),
    LogNormal {
        median: Duration,
        sigma: f64,
        min: Duration,
        max: Duration,
    },
}

impl Default for DurationDist {
    fn default() -> Self {
        DurationDist::LogNormal {
            median: Duration::from_secs(60),
            sigma: 0.5,
            min: Duration::from_secs(5),
            max: Duration::from_secs(30 * 60),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDuration {
    fixed: Option<HumanDuration>,
    median: Option<HumanDuration>,
    sigma: Option<f64>,
    min: Option<HumanDuration>,
    max: Option<HumanDuration>,
}

impl TryFrom<RawDuration> for DurationDist {
    type Error = String;
    fn try_from(r: RawDuration) -> Result<Self, String> {
        match (r.fixed, r.median) {
            (Some(f), None) => {
                if r.sigma.is_some() || r.min.is_some() || r.max.is_some() {
                    return Err("`fixed` cannot be combined with sigma, min or max".into());
                }
                Ok(DurationDist::Fixed(f.0))
            }
            (None, Some(median)) => {
                let sigma = r.sigma.unwrap_or(0.5);
                if !(sigma.is_finite() && sigma >= 0.0) {
                    return Err("sigma must be a finite number >= 0".into());
                }
                let min = r.min.map(|d| d.0).unwrap_or(Duration::ZERO);
                let max = r.max.map(|d| d.0).unwrap_or(Duration::from_secs(24 * 3600));
                if min > max {
                    return Err("min must not exceed max".into());
                }
                Ok(DurationDist::LogNormal {
                    median: median.0,
                    sigma,
                    min,
                    max,
                })
            }
            (Some(_), Some(_)) => Err("give either `fixed` or `median`, not both".into()),
            (None, None) => Err("give `fixed = \"10s\"` or `median = \"90s\"`".into()),
        }
    }
}

/// A quota enforced as GCRA: `per_second` or `per_minute` requests, with a
/// burst that defaults to the per-period count (as governor's quotas do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "RawRateLimit")]
pub struct RateLimit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_second: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<u32>,
    pub burst: u32,
}

impl RateLimit {
    /// The quota period: 1 s or 60 s.
    pub fn period(&self) -> Duration {
        if self.per_minute.is_some() {
            Duration::from_secs(60)
        } else {
            Duration::from_secs(1)
        }
    }

    /// Requests allowed per period.
    pub fn count(&self) -> u32 {
        self.per_second.or(self.per_minute).unwrap_or(1)
    }

    /// Time between two requests at the sustained rate.
    pub fn emission_interval(&self) -> Duration {
        self.period() / self.count().max(1)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    per_second: Option<u32>,
    per_minute: Option<u32>,
    burst: Option<u32>,
}

impl TryFrom<RawRateLimit> for RateLimit {
    type Error = String;
    fn try_from(r: RawRateLimit) -> Result<Self, String> {
        let n = match (r.per_second, r.per_minute) {
            (Some(n), None) | (None, Some(n)) => n,
            (Some(_), Some(_)) => return Err("give per_second or per_minute, not both".into()),
            (None, None) => return Err("give per_second or per_minute".into()),
        };
        if n == 0 {
            return Err("the rate must be at least 1".into());
        }
        let burst = r.burst.unwrap_or(n);
        if burst == 0 {
            return Err("burst must be at least 1".into());
        }
        Ok(RateLimit {
            per_second: r.per_second,
            per_minute: r.per_minute,
            burst,
        })
    }
}

/// Per-request fault probabilities (API requests only, never `/_sim/*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Answer 500 without doing anything.
    pub error_5xx: f64,
    /// Do the work, then send a truncated JSON body.
    pub malformed_json: f64,
    /// Wait `slow_delay` (real time) before answering.
    pub slow: f64,
    pub slow_delay: HumanDuration,
    /// Do the work, then close the connection without a response.
    pub drop: f64,
    /// Which requests the faults hit: `"all"` (default) or `"create"` (the
    /// creates only, so that a job whose create answer was lost can still
    /// be polled, cancelled or adopted).
    pub requests: FaultRequests,
}

/// The requests [`Faults`] apply to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultRequests {
    #[default]
    All,
    Create,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_5xx: 0.0,
            malformed_json: 0.0,
            slow: 0.0,
            slow_delay: HumanDuration(Duration::from_secs(30)),
            drop: 0.0,
            requests: FaultRequests::All,
        }
    }
}

impl Faults {
    pub fn any(&self) -> bool {
        self.error_5xx > 0.0 || self.malformed_json > 0.0 || self.slow > 0.0 || self.drop > 0.0
    }
}

/// A duration written as `"90s"`, `"30m"`, `"1h 30m"` (or a number of seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Int(u64),
            Float(f64),
        }
        match Repr::deserialize(d)? {
            Repr::Text(s) => humantime::parse_duration(s.trim())
                .map(HumanDuration)
                .map_err(|e| serde::de::Error::custom(format!("bad duration {s:?}: {e}"))),
            Repr::Int(n) => Ok(HumanDuration(Duration::from_secs(n))),
            Repr::Float(f) if f.is_finite() && f >= 0.0 => {
                Ok(HumanDuration(Duration::from_secs_f64(f)))
            }
            Repr::Float(f) => Err(serde::de::Error::custom(format!("bad duration {f}"))),
        }
    }
}

impl Scenario {
    /// Parses and checks a scenario; syntax errors name line and column.
    pub fn from_toml_str(s: &str) -> Result<Scenario, SimError> {
        let sc: Scenario = toml::from_str(s).map_err(|e| SimError::Parse(e.to_string()))?;
        sc.validate()?;
        Ok(sc)
    }

    /// Reads and parses a scenario file; errors name the file.
    pub fn from_file(path: &Path) -> Result<Scenario, SimError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Scenario::from_toml_str(&text).map_err(|e| SimError::InFile {
            path: path.display().to_string(),
            source: Box::new(e),
        })
    }

    /// The settings for one provider (defaults when its table is absent).
    pub fn provider(&self, kind: ProviderKind) -> ProviderScenario {
        self.providers.get(kind).cloned().unwrap_or_default()
    }

    /// Range checks serde cannot express; errors name the key.
    pub fn validate(&self) -> Result<(), SimError> {
        if !(self.speedup.is_finite() && self.speedup > 0.0) {
            return Err(SimError::Invalid("speedup must be a number > 0".into()));
        }
        for kind in ProviderKind::ALL {
            let Some(p) = self.providers.get(kind) else {
                continue;
            };
            let probs = [
                ("failure_rate", p.failure_rate),
                ("faults.error_5xx", p.faults.error_5xx),
                ("faults.malformed_json", p.faults.malformed_json),
                ("faults.slow", p.faults.slow),
                ("faults.drop", p.faults.drop),
            ];
            for (key, v) in probs {
                if !(0.0..=1.0).contains(&v) {
                    return Err(SimError::Invalid(format!(
                        "providers.{kind}.{key} must be between 0 and 1 (got {v})"
                    )));
                }
            }
            if p.webhook_url.is_some() && !matches!(kind, ProviderKind::Ugen | ProviderKind::Ugclab)
            {
                return Err(SimError::Invalid(format!(
                    "providers.{kind}.webhook_url: only ugen and ugclab send webhooks"
                )));
            }
            if let Some(url) = &p.webhook_url {
                if !crate::util::is_http_url(url) {
                    return Err(SimError::Invalid(format!(
                        "providers.{kind}.webhook_url must be an http(s) URL"
                    )));
                }
            }
            if let Some(u) = &p.unknown_status {
                if u.word.trim().is_empty() || u.from.0 >= u.until.0 {
                    return Err(SimError::Invalid(format!(
                        "providers.{kind}.unknown_status needs a word and from < until"
                    )));
                }
            }
            if matches!(&p.api_key, Some(k) if k.is_empty()) {
                return Err(SimError::Invalid(format!(
                    "providers.{kind}.api_key must not be empty"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_example_parses() {
        let sc = Scenario::from_toml_str(
            r#"
seed = 42
speedup = 1.0
[providers.ugen]
duration = { median = "90s", sigma = 0.5, min = "5s", max = "30m" }
failure_rate = 0.05
rate_limit = { per_second = 2, burst = 5 }
credits = 100000
api_key = "k"
faults = { error_5xx = 0.0, malformed_json = 0.0, slow = 0.0, slow_delay = "30s", drop = 0.0 }
webhook_url = "http://127.0.0.1:7700/webhooks/ugen"
webhook_secret = "s"
[providers.viggle]
duration = { fixed = "10s" }
rate_limit = { per_minute = 30 }
"#,
        )
        .unwrap();
        assert_eq!(sc.seed, 42);
        let u = sc.provider(ProviderKind::Ugen);
        assert_eq!(u.credits, Some(100000));
        assert_eq!(u.rate_limit.unwrap().burst, 5);
        assert_eq!(
            u.duration,
            DurationDist::LogNormal {
                median: Duration::from_secs(90),
                sigma: 0.5,
                min: Duration::from_secs(5),
                max: Duration::from_secs(1800)
            }
        );
        let v = sc.provider(ProviderKind::Viggle);
        assert_eq!(v.duration, DurationDist::Fixed(Duration::from_secs(10)));
        assert_eq!(v.rate_limit.unwrap().burst, 30);
        assert_eq!(v.rate_limit.unwrap().period(), Duration::from_secs(60));
        assert_eq!(sc.provider(ProviderKind::Ugclab).failure_rate, 0.0);
    }

    #[test]
    fn errors_name_line_and_key() {
        let e = Scenario::from_toml_str("seed = 1\n[providers.ugen]\nfailure_rat = 0.1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("failure_rat"), "{e}");
        let e = Scenario::from_toml_str("[providers.ugen]\nduration = { median = \"x\" }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = Scenario::from_toml_str("[providers.ugen]\nfailure_rate = 2.0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("providers.ugen.failure_rate"), "{e}");
        let e = Scenario::from_toml_str("[providers.x]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1"), "{e}");
        assert!(Scenario::from_toml_str("speedup = 0\n").is_err());
        assert!(Scenario::from_toml_str(
            "[providers.ugen]\nrate_limit = { per_second = 1, per_minute = 1 }\n"
        )
        .is_err());
    }

    #[test]
    fn from_file_names_the_path() {
        let e = Scenario::from_file(Path::new("/nonexistent/x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/x.toml"), "{e}");
    }

    #[test]
    fn shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let demo = Scenario::from_file(&dir.join("demo.toml")).unwrap();
        assert_eq!(demo.speedup, 20.0);
        let faulty = Scenario::from_file(&dir.join("faulty.toml")).unwrap();
        assert!(faulty.provider(ProviderKind::Ugen).faults.any());
    }
}
