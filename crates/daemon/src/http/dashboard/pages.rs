//! The dashboard's HTML, written with maud so that every job key, note and
//! provider message is escaped by construction. Two kinds: shells (no
//! data, served without the token: the page asks for it) and fragments
//! (data, behind the token), which the page's script fetches and swaps in,
//! again after every change the event stream announces.
//!
//! State is never told by colour alone: every state and status carries a
//! symbol and its word; gauges are `<meter>`/`<progress>` with their figures
//! as text beside them.

use crate::client::enc;
use maud::{html, Markup, DOCTYPE};
use switchyard_api::{JobDetail, ProviderView};
use switchyard_core::limits::RateLimit;
use switchyard_core::{HeldBy, Job, JobState};
use switchyard_engine::paging::{JobQuery, SortKey};
use switchyard_engine::Output;
use switchyard_store::StateCount;

/// A state's symbol (beside its word, never instead of it).
pub(super) fn symbol(s: JobState) -> &'static str {
    match s {
        JobState::Queued => "◷",
        JobState::Submitting => "↑",
        JobState::Pending => "…",
        JobState::Processing => "⟳",
        JobState::Completed => "✓",
        JobState::Failed => "✗",
        JobState::Cancelled => "⊘",
        JobState::Uncertain => "?",
    }
}

fn state_badge(s: JobState) -> Markup {
    html! {
        span class={ "state state-" (s.as_str()) } {
            span aria-hidden="true" { (symbol(s)) " " }
            (s.as_str())
        }
    }
}

fn held(h: HeldBy) -> &'static str {
    match h {
        HeldBy::Budget => "budget",
        HeldBy::Rate => "rate",
        HeldBy::Concurrency => "concurrency",
        HeldBy::Paused => "paused",
    }
}

/// 1234567 as "1,234,567".
pub(super) fn num(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(super) fn job_href(key: &str) -> String {
    format!("/job/{}", enc(key))
}

/// What the user can do about an uncertain job, said where it shows.
const UNCERTAIN_HELP: &str = "Outcome unknown: the daemon stopped between sending this job and hearing back. Look for it in the provider's console. Retry sends it again (it may then exist twice); Cancel gives it up; Adopt records the provider's job id if you found it.";

/// The page around the fragments: header, the token form, empty sections.
pub(super) fn shell(view: &str, key: Option<&str>) -> Markup {
    let title = match key {
        Some(k) => format!("{k} · Switchyard"),
        None => "Switchyard".to_string(),
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                link rel="icon" href="data:,";
                link rel="stylesheet" href="/assets/app.css";
                script type="module" src="/assets/app.js" {}
            }
            body data-view=(view) data-key=[key] {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    p.brand { a href="/" { "Switchyard" } }
                    nav aria-label="Sections" {
                        a href="/#overview" { "Providers" }
                        a href="/#jobs" { "Jobs" }
                    }
                    p #live role="status" aria-live="polite" { "connecting…" }
                }
                main #main tabindex="-1" {
                    (login())
                    @if view == "job" {
                        p { a href="/" { "← All jobs" } }
                        section #job aria-labelledby="job-h" {
                            h1 #job-h { (key.unwrap_or("")) }
                            p #action-msg role="status" aria-live="polite" {}
                            div #job-body data-src=[key.map(|k| format!("/ui/job/{}", enc(k)))] aria-live="off" { "Loading…" }
                        }
                    } @else {
                        h1.visually-hidden { "Switchyard dashboard" }
                        (index_sections())
                    }
                    (confirm_dialog())
                }
            }
        }
    }
}

fn login() -> Markup {
    html! {
        section #login hidden aria-labelledby="login-h" {
            h2 #login-h { "This daemon needs its token" }
            form #login-form {
                p { "Enter the control token (the contents of " code { "daemon.auth_token_file" } "). The page keeps it as a session cookie that scripts cannot read." }
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="current-password" required;
                button type="submit" { "Sign in" }
                p #login-msg role="alert" {}
            }
        }
    }
}

fn index_sections() -> Markup {
    html! {
        section #overview aria-labelledby="overview-h" {
            h2 #overview-h { "Providers" }
            div #overview-body data-src="/ui/overview" { "Loading…" }
        }
        section #fleet hidden aria-labelledby="fleet-h" {
            h2 #fleet-h { "Daemons" }
            ul #fleet-list {}
        }
        section #submit aria-labelledby="submit-h" {
            h2 #submit-h { "Submit a batch" }
            form #upload {
                label #drop for="batch-file" {
                    span { "Drop a batch file (TOML or JSON Lines) here, or choose one: " }
                    input #batch-file type="file" name="batch" accept=".toml,.jsonl,.ndjson,.json,text/plain";
                }
                p.hint { "Every job is checked first; nothing is queued unless all of them are valid." }
            }
            div #upload-result role="status" aria-live="polite" {}
        }
        section #jobs aria-labelledby="jobs-h" {
            h2 #jobs-h { "Jobs" }
            div #filters data-src="/ui/filters" { "Loading…" }
            div.bulk role="group" aria-label="Act on every job the filter matches" {
                button type="button" data-bulk="cancel" { "Cancel all matching…" }
                button type="button" data-bulk="retry" { "Retry all matching…" }
            }
            p #action-msg role="status" aria-live="polite" {}
            div #jobs-body data-src="/ui/jobs" { "Loading…" }
        }
    }
}

fn confirm_dialog() -> Markup {
    html! {
        dialog #confirm aria-labelledby="confirm-h" aria-describedby="confirm-text" {
            form method="dialog" {
                h2 #confirm-h { "Confirm" }
                p #confirm-text {}
                div.buttons {
                    button value="cancel" type="submit" { "Keep them" }
                    button #confirm-ok value="ok" type="submit" { "Confirm" }
                }
            }
        }
    }
}

/// The filter form, with the provider names and the current values.
pub(super) fn filters(providers: &[String], q: &JobQuery) -> Markup {
    html! {
        form #filter-form role="search" aria-label="Filter jobs" {
            div.field {
                label for="f-state" { "State" }
                select #f-state name="state" {
                    option value="" selected[q.state.is_none()] { "any" }
                    @for s in JobState::ALL {
                        option value=(s.as_str()) selected[q.state == Some(s)] { (s.as_str()) }
                    }
                }
            }
            div.field {
                label for="f-provider" { "Provider" }
                select #f-provider name="provider" {
                    option value="" selected[q.provider.is_none()] { "any" }
                    @for p in providers {
                        option value=(p) selected[q.provider.as_deref() == Some(p.as_str())] { (p) }
                    }
                }
            }
            div.field {
                label for="f-q" { "Key, batch or provider id contains" }
                input #f-q type="search" name="q" value=(q.search.as_deref().unwrap_or(""));
            }
            div.field {
                label for="f-sort" { "Sort by" }
                select #f-sort name="sort" {
                    @for k in SortKey::ALL {
                        option value=(k.as_str()) selected[q.sort == k] { (sort_label(k)) }
                    }
                }
            }
            div.field {
                label for="f-dir" { "Order" }
                select #f-dir name="dir" {
                    option value="asc" selected[!q.descending] { "ascending" }
                    option value="desc" selected[q.descending] { "descending" }
                }
            }
            button type="submit" { "Apply" }
        }
    }
}

fn sort_label(k: SortKey) -> &'static str {
    match k {
        SortKey::Seq => "queue order",
        SortKey::Key => "key",
        SortKey::State => "state",
        SortKey::Provider => "provider",
        SortKey::Priority => "priority",
        SortKey::Updated => "last change",
    }
}

/// One page of the jobs table.
pub(super) fn jobs(page: &[Job], total: usize, q: &JobQuery, limit: usize) -> Markup {
    let from = if page.is_empty() { 0 } else { q.offset + 1 };
    let to = q.offset + page.len();
    let prev = q.offset.saturating_sub(limit);
    let next = q.offset + limit;
    html! {
        p #jobs-summary data-total=(total) {
            @if total == 0 {
                "No jobs match."
            } @else {
                "Jobs " (num(from as u64)) "–" (num(to as u64)) " of " (num(total as u64))
            }
        }
        @if !page.is_empty() {
            table.jobs {
                caption.visually-hidden { "Jobs matching the filter" }
                thead {
                    tr {
                        th scope="col" { "Key" }
                        th scope="col" { "Provider" }
                        th scope="col" { "State" }
                        th scope="col" { "Progress" }
                        th scope="col" { "Attempts" }
                        th scope="col" { "Last change" }
                        th scope="col" { "Actions" }
                    }
                }
                tbody {
                    @for j in page {
                        (job_row(j))
                    }
                }
            }
        }
        nav.pager aria-label="Pages of jobs" {
            button type="button" data-offset=(prev) disabled[q.offset == 0] { "← Previous page" }
            button type="button" data-offset=(next) disabled[next >= total] { "Next page →" }
        }
    }
}

/// Rows alone (in a table, so that they parse as rows), for a page that
/// swaps its changed rows in place.
pub(super) fn rows(jobs: &[Job]) -> Markup {
    html! {
        table { tbody { @for j in jobs { (job_row(j)) } } }
    }
}

fn job_row(j: &Job) -> Markup {
    html! {
        tr data-key=(j.key) data-state=(j.state.as_str()) {
            th scope="row" { a href=(job_href(&j.key)) { (j.key) } }
            td { (j.provider) }
            td {
                (state_badge(j.state))
                @if let Some(h) = j.held_by {
                    br; span.held { "held by " (held(h)) }
                }
                @if j.state == JobState::Uncertain {
                    br; span.help { (UNCERTAIN_HELP) }
                }
                @if let Some(e) = &j.error {
                    br; span.error { (e.code) }
                }
            }
            td { (progress(j)) }
            td { (j.attempts) }
            td { time datetime=(j.updated_at) title=(j.updated_at) { (short_time(&j.updated_at)) } }
            td.actions { (actions(j)) }
        }
    }
}

fn progress(j: &Job) -> Markup {
    html! {
        @match j.progress {
            Some(p) => {
                progress max="100" value=(p) aria-label={ "progress of " (j.key) } { (p) "%" }
                " " (p) "%"
            }
            None => @if j.state == JobState::Completed { "100%" } @else { "—" },
        }
        @if let Some(stage) = &j.stage {
            " " span.stage { (stage) }
        }
    }
}

fn actions(j: &Job) -> Markup {
    let cancellable = matches!(
        j.state,
        JobState::Queued | JobState::Uncertain | JobState::Pending | JobState::Processing
    );
    let retriable = matches!(j.state, JobState::Failed | JobState::Uncertain);
    html! {
        @if cancellable {
            button type="button" data-act="cancel" data-key=(j.key) aria-label={ "Cancel " (j.key) } { "Cancel" }
        }
        @if retriable {
            button type="button" data-act="retry" data-key=(j.key) aria-label={ "Retry " (j.key) } { "Retry" }
        }
    }
}

/// `2026-11-30T12:34:56.789Z` as `11-30 12:34:56` (UTC).
fn short_time(at: &str) -> String {
    at.get(5..19).unwrap_or(at).replacen('T', " ", 1)
}

/// A provider's view with what the overview adds to it.
pub(super) struct ProviderCard<'a> {
    pub view: &'a ProviderView,
    pub counts: Vec<(JobState, u64)>,
    pub rate_in_use: Option<f64>,
    /// What this daemon sent lately (requests per second, last 10 s).
    pub rate_sent: Option<f64>,
}

pub(super) fn overview(cards: &[ProviderCard<'_>]) -> Markup {
    html! {
        div.cards {
            @for c in cards {
                (card(c))
            }
        }
    }
}

fn status(v: &ProviderView) -> Markup {
    let by = v.paused_by.as_deref();
    html! {
        @if v.paused {
            span.status.status-paused {
                span aria-hidden="true" { "⏸ " }
                @match by {
                    Some("user") => "paused by a user",
                    Some("credits") | None => "paused: out of credits (402)",
                    Some(other) => { "paused (" (other) ")" }
                }
            }
        } @else if let Some(ms) = v.cooldown_ms {
            span.status.status-cooling {
                span aria-hidden="true" { "⏳ " }
                "cooling down after a 429: "
                span data-countdown-ms=(ms) { (format!("{:.1}", ms as f64 / 1000.0)) }
                " s left"
            }
        } @else {
            span.status.status-ok { span aria-hidden="true" { "▶ " } "dispatching" }
        }
    }
}

fn card(c: &ProviderCard<'_>) -> Markup {
    let v = c.view;
    let id = format!("prov-{}", enc(&v.name).replace('%', "_"));
    let configured = per_second(&v.rate_limit);
    let cap = v.max_in_flight.max(1);
    html! {
        article.card data-provider=(v.name) aria-labelledby=(id) {
            h3 #(id) { (v.name) " " small { "(" (v.kind) ")" } }
            p { (status(v)) }
            dl {
                dt { "In flight" }
                dd {
                    meter min="0" max=(cap) value=(v.in_flight) aria-label={ "in flight at " (v.name) } {}
                    " " (v.in_flight) " / " (v.max_in_flight)
                }
                dt { "Rate" }
                dd {
                    meter min="0" max=(configured) value=(c.rate_sent.unwrap_or(0.0))
                        aria-label={ "rate in use at " (v.name) } {}
                    " "
                    @match c.rate_sent {
                        Some(r) => { (format!("{r:.1}")) " req/s in use (last 10 s)" }
                        None => "—",
                    }
                    " of " (format!("{configured:.2}")) " configured (" (rate_text(&v.rate_limit)) ")"
                    @if let Some(r) = c.rate_in_use {
                        @if r + 1e-9 < configured {
                            " " strong { "(throttled after 429s: held to " (format!("{r:.2}")) " req/s)" }
                        }
                    }
                    br; small { (num(v.requests)) " requests, " (num(v.rate_limited)) " answered 429" }
                }
                dt { "Budget" }
                dd { (budget(v)) }
                dt { "Queued" }
                dd { (num(v.queued)) }
            }
            table.counts {
                caption { "Jobs by state" }
                tbody {
                    @for (s, n) in &c.counts {
                        tr {
                            th scope="row" { (state_badge(*s)) }
                            td { a href={ "/?provider=" (enc(&v.name)) "&state=" (s.as_str()) "#jobs" } { (num(*n)) } }
                        }
                    }
                }
            }
            p.card-actions {
                @if v.paused && v.paused_by.as_deref() == Some("user") {
                    button type="button" data-provider-act="resume" data-provider=(v.name) { "Resume " (v.name) }
                } @else {
                    button type="button" data-provider-act="pause" data-provider=(v.name) disabled[v.paused] { "Pause " (v.name) }
                }
            }
        }
    }
}

/// The configured rate in requests per second (50 when none is set, as
/// the engine runs it).
fn per_second(rl: &RateLimit) -> f64 {
    match (rl.per_second, rl.per_minute) {
        (Some(s), _) => f64::from(s),
        (None, Some(m)) => f64::from(m) / 60.0,
        (None, None) => 50.0,
    }
}

fn rate_text(rl: &RateLimit) -> String {
    let base = match (rl.per_second, rl.per_minute) {
        (Some(s), _) => format!("{s}/s"),
        (None, Some(m)) => format!("{m}/min"),
        (None, None) => "50/s by default".to_string(),
    };
    match rl.burst {
        Some(b) => format!("{base}, burst {b}"),
        None => base,
    }
}

fn budget(v: &ProviderView) -> Markup {
    html! {
        @match v.budget_credits {
            Some(credits) => {
                meter min="0" max=(credits.max(1)) value=(v.budget_used + v.budget_reserved)
                    low=(credits / 2) high=(credits * 9 / 10) optimum="0"
                    aria-label={ "budget of " (v.name) " in use" } {}
                br;
                (num(v.budget_used)) " used, " (num(v.budget_reserved)) " reserved, "
                (num(v.budget_left.unwrap_or(0))) " left of " (num(credits))
                @if let Some(p) = &v.budget_period { " (" (p) ")" }
            }
            None => { "no budget set; " (num(v.budget_used)) " used, " (num(v.budget_reserved)) " reserved" }
        }
    }
}

/// Per provider, its non-zero states in the states' order.
pub(super) fn counts_for(counts: &[StateCount], provider: &str) -> Vec<(JobState, u64)> {
    JobState::ALL
        .into_iter()
        .filter_map(|s| {
            let n = counts
                .iter()
                .find(|c| c.provider == provider && c.state == s)
                .map_or(0, |c| c.jobs);
            (n > 0).then_some((s, n))
        })
        .collect()
}

/// One job: what it is, what happened to it, and its result.
pub(super) fn job(d: &JobDetail, outputs: &[Output]) -> Markup {
    let j = &d.job;
    html! {
        div.job-head {
            p { (state_badge(j.state)) " at " strong { (j.provider) } }
            p.actions { (actions(j)) }
        }
        @if j.state == JobState::Uncertain {
            div.note role="note" {
                p { (UNCERTAIN_HELP) }
                form #adopt-form data-key=(j.key) {
                    label for="adopt-id" { "Provider job id found in its console" }
                    input #adopt-id name="provider_job_id" required;
                    button type="submit" { "Adopt" }
                }
            }
        }
        @if let Some(e) = &j.error {
            div.error-box role="note" {
                h2 { "Error" }
                p { code { (e.code) } ": " (e.message) }
            }
        }
        @if !outputs.is_empty() {
            section.outputs aria-labelledby="outputs-h" {
                h2 #outputs-h { "Result" }
                div.videos {
                    @for (i, o) in outputs.iter().enumerate() {
                        @let label = if i == 0 { "Output" } else if i == 1 && outputs.len() == 2 { "Mask" } else { "Output" };
                        @let src = match &o.file {
                            Some(_) => format!("/v1/jobs/{}/outputs/{i}", enc(&j.key)),
                            None => o.url.clone(),
                        };
                        figure {
                            video controls preload="metadata" src=(src) aria-label={ (label) " video of " (j.key) } data-output=(i) {}
                            figcaption {
                                (label) ": "
                                @if o.file.is_some() { "downloaded copy" } @else { "at the provider" }
                                " · " a href=(src) { "open" }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="facts-h" {
            h2 #facts-h { "Details" }
            dl.facts {
                dt { "Provider job id" } dd { (j.provider_job_id.as_deref().unwrap_or("—")) }
                dt { "Provider status" } dd { (j.provider_status.as_deref().unwrap_or("—")) }
                dt { "Progress" } dd { (progress(j)) }
                dt { "Stage" } dd { (j.stage.as_deref().unwrap_or("—")) }
                dt { "Attempts" } dd { (j.attempts) }
                dt { "Priority" } dd { (j.priority) }
                dt { "Credits" } dd { (num(j.credits_reserved)) " reserved, " (num(j.credits_charged)) " charged"
                    @if let Some(p) = &j.budget_period { " (" (p) ")" } }
                @if let Some(h) = j.held_by { dt { "Held by" } dd { (held(h)) } }
                dt { "Queued at" } dd { (j.created_at) }
                dt { "Acknowledged at" } dd { (j.submitted_at.as_deref().unwrap_or("—")) }
                dt { "Last change" } dd { (j.updated_at) }
            }
        }
        section aria-labelledby="history-h" {
            h2 #history-h { "Timeline" }
            ol.timeline {
                @for t in &d.history {
                    li {
                        time datetime=(t.at) { (t.at) }
                        " "
                        @if let Some(f) = t.from { (f.as_str()) " → " }
                        (state_badge(t.to))
                        @if !t.note.is_empty() { ": " (t.note) }
                    }
                }
            }
        }
        section aria-labelledby="params-h" {
            h2 #params-h { "Params" }
            pre { (serde_json::to_string_pretty(&j.params).unwrap_or_default()) }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use switchyard_core::JobSpec;

    fn view(name: &str) -> ProviderView {
        ProviderView {
            name: name.into(),
            kind: "viggle".into(),
            rate_limit: RateLimit {
                per_second: Some(2),
                per_minute: None,
                burst: Some(5),
            },
            max_in_flight: 10,
            in_flight: 3,
            budget_credits: Some(1000),
            budget_period: Some("2026-12".into()),
            budget_used: 400,
            budget_reserved: 100,
            budget_left: Some(500),
            paused: false,
            paused_by: None,
            cooldown_ms: None,
            health: "ok".into(),
            queued: 7,
            requests: 12,
            rate_limited: 0,
            unexpected_answers: 0,
            poll_classes: vec![],
        }
    }

    fn card_html(v: &ProviderView, rate: Option<f64>) -> String {
        overview(&[ProviderCard {
            view: v,
            counts: vec![(JobState::Queued, 7)],
            rate_in_use: rate,
            rate_sent: Some(1.5),
        }])
        .into_string()
    }

    #[test]
    fn a_provider_says_why_it_waits_in_words() {
        let mut v = view("vg");
        let ok = card_html(&v, Some(2.0));
        assert!(ok.contains("dispatching") && ok.contains("3 / 10"), "{ok}");
        assert!(ok.contains("400 used, 100 reserved, 500 left of 1,000 (2026-12)"));
        assert!(ok.contains("1.5 req/s in use (last 10 s) of 2.00 configured (2/s, burst 5)"));
        assert!(!ok.contains("throttled"));
        assert!(card_html(&v, Some(0.5)).contains("throttled after 429s"));
        v.cooldown_ms = Some(12_300);
        let cooling = card_html(&v, Some(1.0));
        assert!(
            cooling.contains("cooling down after a 429")
                && cooling.contains(r#"data-countdown-ms="12300""#)
                && cooling.contains("12.3"),
            "{cooling}"
        );
        v.cooldown_ms = None;
        v.paused = true;
        v.paused_by = Some("credits".into());
        let broke = card_html(&v, None);
        assert!(broke.contains("out of credits (402)"), "{broke}");
        assert!(broke.contains(r#"data-provider-act="pause""#) && broke.contains("disabled"));
        v.paused_by = Some("user".into());
        let user = card_html(&v, None);
        assert!(
            user.contains("paused by a user") && user.contains("Resume vg"),
            "{user}"
        );
    }

    fn job(key: &str, state: JobState) -> Job {
        let spec = JobSpec {
            key: key.into(),
            provider: "vg".into(),
            priority: 0,
            params: serde_json::json!({}),
            ..JobSpec::default()
        };
        let mut j = Job::from_spec(spec, 1, "2026-12-01T10:00:00.000Z");
        j.state = state;
        j
    }

    #[test]
    fn rows_escape_keys_and_say_what_to_do_about_an_uncertain_job() {
        let mut queued = job("<script>alert(1)</script>", JobState::Queued);
        queued.held_by = Some(HeldBy::Budget);
        let uncertain = job("u-1", JobState::Uncertain);
        let q = JobQuery::default();
        let html = jobs(&[queued, uncertain], 2, &q, 50).into_string();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("/job/%3Cscript%3Ealert%281%29%3C%2Fscript%3E"));
        assert!(html.contains("held by budget"));
        assert!(html.contains("Look for it in the provider's console"));
        // Uncertain: both ways out offered.
        assert!(html.contains(r#"data-act="retry" data-key="u-1""#));
        assert!(html.contains(r#"data-act="cancel" data-key="u-1""#));
        assert!(html.contains("Jobs 1–2 of 2"));
    }

    #[test]
    fn numbers_get_thousands_separators() {
        assert_eq!(num(0), "0");
        assert_eq!(num(999), "999");
        assert_eq!(num(1000), "1,000");
        assert_eq!(num(1234567), "1,234,567");
    }
}
