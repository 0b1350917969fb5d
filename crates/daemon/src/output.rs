//! What the CLI prints for people: job tables, provider tables, progress
//! bars and one-line summaries. Used by `submit --wait`, `jobs`,
//! `providers`, `watch` and the demo; it calls no daemon.

use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use switchyard_api::ProviderView;
use switchyard_core::{Job, JobState};

pub fn bar(len: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} finished  {msg}",
    ) {
        b.set_style(style);
    }
    b.enable_steady_tick(std::time::Duration::from_millis(200));
    b
}

/// "ugen: 2 processing, 1 completed | viggle: ..."
pub fn summary(jobs: &[Job]) -> String {
    let mut by: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    for j in jobs {
        *by.entry(j.provider.as_str())
            .or_default()
            .entry(j.state.to_string())
            .or_default() += 1;
    }
    by.iter()
        .map(|(p, m)| {
            let parts: Vec<String> = m.iter().map(|(s, n)| format!("{n} {s}")).collect();
            format!("{p}: {}", parts.join(", "))
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// `switchyard watch`: one bar per provider (finished of watched) and one
/// line per job in flight, until every job that was live (or that appears
/// meanwhile) has ended; then the table of those jobs. Not on a terminal,
/// a plain status line every few seconds and a line per state change.
/// A job's state as people read it: a queued job says what holds it.
pub fn state_label(j: &Job) -> String {
    match (j.state, j.held_by) {
        (JobState::Queued, Some(h)) => format!(
            "queued ({})",
            serde_json::to_value(h)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        ),
        (s, _) => s.to_string(),
    }
}

pub fn settled(s: JobState) -> bool {
    s.is_terminal() || s == JobState::Uncertain
}

pub fn print_table(jobs: &[Job]) {
    let rows: Vec<[String; 7]> = jobs
        .iter()
        .map(|j| {
            let credits = if j.credits_charged > 0 || j.credits_reserved == 0 {
                j.credits_charged.to_string()
            } else {
                format!("{} reserved", j.credits_reserved)
            };
            let state = state_label(j);
            [
                j.key.clone(),
                j.provider.clone(),
                state,
                j.provider_job_id.clone().unwrap_or_else(|| "-".into()),
                j.progress
                    .map(|p| format!("{p}%"))
                    .unwrap_or_else(|| "-".into()),
                credits,
                j.output_urls
                    .first()
                    .cloned()
                    .or_else(|| {
                        j.error
                            .as_ref()
                            .map(|e| format!("error {}: {}", e.code, e.message))
                    })
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let head = [
        "KEY",
        "PROVIDER",
        "STATE",
        "PROVIDER JOB",
        "PROGRESS",
        "CREDITS",
        "OUTPUT / ERROR",
    ];
    let mut w = head.map(|h| h.len());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: [&str; 7]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == 6 {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(head);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5], &r[6]]);
    }
}

pub fn print_providers(views: &[ProviderView]) {
    println!(
        "{:<10} {:<8} {:<16} {:>9} {:>7} {:>22} HEALTH",
        "PROVIDER", "KIND", "RATE", "IN FLIGHT", "QUEUED", "BUDGET used/res/left"
    );
    for v in views {
        let rate = match (v.rate_limit.per_second, v.rate_limit.per_minute) {
            (Some(s), _) => format!("{s}/s burst {}", v.rate_limit.burst.unwrap_or(1)),
            (None, Some(m)) => format!("{m}/min burst {}", v.rate_limit.burst.unwrap_or(1)),
            _ => "default".into(),
        };
        let budget = match v.budget_left {
            Some(left) => format!("{}/{}/{}", v.budget_used, v.budget_reserved, left),
            None => format!("{}/{}/unlimited", v.budget_used, v.budget_reserved),
        };
        // Answers no document shows leave jobs live; the count says a
        // provider has changed something worth a look.
        let health = match v.unexpected_answers {
            0 => v.health.clone(),
            n => format!("{}, {n} unexpected answer(s)", v.health),
        };
        println!(
            "{:<10} {:<8} {:<16} {:>4}/{:<4} {:>7} {:>22} {}",
            v.name, v.kind, rate, v.in_flight, v.max_in_flight, v.queued, budget, health
        );
    }
    print_poll_classes(views);
}

/// The daemons sharing the store, below the providers.
pub fn print_daemons(daemons: &[switchyard_api::DaemonView]) {
    println!();
    println!("{:<48} {:>6} {:>12}", "DAEMON", "EPOCH", "LEASE LEFT");
    for d in daemons {
        let name = if d.this {
            format!("{} (this one)", d.owner)
        } else {
            d.owner.clone()
        };
        println!(
            "{:<48} {:>6} {:>11.1}s",
            name,
            d.epoch,
            d.expires_in_ms as f64 / 1000.0
        );
    }
}

/// What polling learned per class, when anything finished yet.
fn print_poll_classes(views: &[ProviderView]) {
    if views.iter().all(|v| v.poll_classes.is_empty()) {
        return;
    }
    let secs = |x: Option<f64>| x.map_or("-".to_string(), |s| format!("{s:.1}s"));
    println!();
    println!(
        "{:<10} {:<32} {:>7} {:>8} {:>8} {:>9} {:>10} POLLING",
        "PROVIDER", "CLASS", "SEEN", "P50", "P90", "POLLS/JOB", "P95 DELAY"
    );
    for v in views {
        for c in &v.poll_classes {
            let class = if c.class.is_empty() {
                "(any)"
            } else {
                &c.class
            };
            let polls = c.polls_per_job.map_or("-".into(), |p| format!("{p:.1}"));
            let how = if c.learned { "learned" } else { "schedule" };
            println!(
                "{:<10} {:<32} {:>7} {:>8} {:>8} {:>9} {:>10} {how}",
                v.name,
                class,
                c.samples,
                secs(c.p50_s),
                secs(c.p90_s),
                polls,
                secs(c.p95_delay_s)
            );
        }
    }
}

/// `switchyard show`: the job's row, where it has been (its fallbacks),
/// its history and, when asked for, what its provider shows of it.
pub fn print_job(d: &switchyard_api::JobDetail) {
    let j = &d.job;
    print_table(std::slice::from_ref(j));
    if !j.tried.is_empty() || !j.fallback.is_empty() {
        let mut chain: Vec<String> = j
            .tried
            .iter()
            .map(|t| {
                let why = match &t.error {
                    Some(e) => format!("{}: {} {}", t.why, e.code, e.message),
                    None => t.why.to_string(),
                };
                format!("{} ({why}, {} credits)", t.provider, t.credits_charged)
            })
            .collect();
        chain.push(format!("{} ({})", j.provider, state_label(j)));
        chain.extend(
            j.fallback
                .iter()
                .map(|a| format!("{} (not tried)", a.provider)),
        );
        let on: Vec<&str> = j.fallback_on.iter().map(|w| w.as_str()).collect();
        println!("\nproviders: {}", chain.join(" -> "));
        println!("fallback on: {}", on.join(", "));
    }
    if let Some(at) = &j.paused_at {
        println!("\npaused at the provider since {at}");
    }
    println!("\nhistory:");
    for h in &d.history {
        println!(
            "  {}  {:>10} -> {:<10} {}",
            h.at,
            h.from.map_or("-".to_string(), |s| s.to_string()),
            h.to,
            h.note
        );
    }
    let Some(detail) = &d.detail else {
        return;
    };
    let opt = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    let num = |n: Option<u64>| n.map_or("-".to_string(), |n| n.to_string());
    println!("\nat {} (job {}):", detail.provider, detail.provider_job_id);
    if !detail.keyframes.is_empty() {
        println!("  keyframes:");
        for k in &detail.keyframes {
            let score = k.qai_score.map_or("-".to_string(), |s| format!("{s:.2}"));
            println!(
                "    #{:<3} {:<10} QAI {:<5} {}",
                num(k.index),
                opt(&k.status),
                score,
                opt(&k.image_url)
            );
        }
    }
    if !detail.segments.is_empty() {
        println!("  video segments:");
        for s in &detail.segments {
            let secs = s
                .duration_seconds
                .map_or("-".to_string(), |d| format!("{d}s"));
            println!(
                "    #{:<3} {:<10} {:<5} {}",
                num(s.index),
                opt(&s.status),
                secs,
                opt(&s.video_url)
            );
        }
    }
    if !detail.steps.is_empty() {
        println!("  processing steps:");
        for s in &detail.steps {
            println!("    {:<20} {}", s.name, s.status);
        }
    }
    if detail.keyframes.is_empty() && detail.segments.is_empty() && detail.steps.is_empty() {
        println!("  (nothing listed yet)");
    }
}
