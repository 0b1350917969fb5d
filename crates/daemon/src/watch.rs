//! Progress display shared by `watch`, `submit --wait` and `demo`. indicatif
//! draws only on a terminal; elsewhere (CI, pipes) a plain line is printed
//! now and then so logs still show progress.

use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use switchyard_core::Job;

pub fn bar(len: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} finished  {msg}") {
        b.set_style(style);
    }
    b.enable_steady_tick(std::time::Duration::from_millis(200));
    b
}

/// "ugen: 2 processing, 1 completed | viggle: ..."
pub fn summary(jobs: &[Job]) -> String {
    let mut by: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    for j in jobs {
        *by.entry(j.provider.as_str()).or_default().entry(j.state.to_string()).or_default() += 1;
    }
    by.iter()
        .map(|(p, m)| {
            let parts: Vec<String> = m.iter().map(|(s, n)| format!("{n} {s}")).collect();
            format!("{p}: {}", parts.join(", "))
        })
        .collect::<Vec<_>>()
        .join(" | ")
}
