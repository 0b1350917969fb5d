//! What a provider shows of one job beyond its status (`show KEY --detail`):
//! U-Gen's keyframes with their quality scores and its video segments,
//! UGC Lab's processing steps. Read from the provider when asked, never
//! stored: a view, shaped once here for the adapters that fill it and the
//! API that shows it.

use serde::{Deserialize, Serialize};

/// One keyframe image (U-Gen), with its QAI score when scored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Keyframe {
    pub index: Option<u64>,
    pub status: Option<String>,
    pub image_url: Option<String>,
    pub qai_score: Option<f64>,
}

/// One video segment (U-Gen).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub index: Option<u64>,
    pub status: Option<String>,
    pub video_url: Option<String>,
    pub duration_seconds: Option<f64>,
}

/// One processing step (UGC Lab), in the provider's order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    /// pending, completed, skipped or failed (as the provider says).
    pub status: String,
}

/// Everything the provider showed; a list the provider does not have is
/// empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProviderDetail {
    /// The provider table name the detail comes from.
    pub provider: String,
    pub provider_job_id: String,
    #[serde(default)]
    pub keyframes: Vec<Keyframe>,
    #[serde(default)]
    pub segments: Vec<Segment>,
    #[serde(default)]
    pub steps: Vec<Step>,
}
