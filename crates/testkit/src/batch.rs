//! Batch files and valid provider params, as a user would write them.

use std::path::{Path, PathBuf};
use switchyard_core::ProviderKind;

/// Writes a TOML batch file of `jobs` (key, provider, params as TOML inline table).
pub fn batch_file(dir: &Path, name: &str, jobs: &[(String, String, String)]) -> PathBuf {
    let mut text = String::new();
    for (key, provider, params) in jobs {
        text.push_str(&format!(
            "[[jobs]]\nkey = \"{key}\"\nprovider = \"{provider}\"\nparams = {params}\n\n"
        ));
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// Valid params for a provider kind, unique per `i`.
pub fn params(kind: ProviderKind, i: usize) -> String {
    match kind {
        ProviderKind::Ugen => format!("{{ product_name = \"Product {i}\", product_image_url = \"https://example.com/{i}.jpg\", segment_count = 1 }}"),
        ProviderKind::Viggle => format!("{{ image_url = \"https://example.com/{i}.png\" }}"),
        ProviderKind::Ugclab => format!("{{ script = \"Script number {i}\" }}"),
        ProviderKind::Ulazai => format!("{{ model_slug = \"kling_3_0\", prompt = \"Prompt number {i}\", duration = 5 }}"),
    }
}
