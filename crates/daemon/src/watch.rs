//! Progress display shared by `watch`, `submit --wait` and `demo`. indicatif
//! draws only on a terminal; elsewhere (CI, pipes) a plain line is printed
//! now and then so logs still show progress.

use crate::client::Client;
use crate::output::{settled, state_label};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};
use switchyard_api::ProviderView;
use switchyard_core::{Job, JobState};

pub async fn run(client: &Client) -> anyhow::Result<()> {
    let first = client.jobs(None, None).await?;
    let mut watched: BTreeMap<String, Job> = first
        .into_iter()
        .filter(|j| !settled(j.state))
        .map(|j| (j.key.clone(), j))
        .collect();
    if watched.is_empty() {
        println!("the queue is empty");
        return Ok(());
    }
    let mut view: Box<dyn View> = if std::io::stderr().is_terminal() {
        Box::new(Bars::new())
    } else {
        Box::new(Plain::new())
    };
    loop {
        let jobs = client.jobs(None, None).await?;
        let providers = client.providers().await.unwrap_or_default();
        for j in jobs {
            if let Some(old) = watched.get(&j.key) {
                if old.state != j.state {
                    view.changed(old, &j);
                }
            }
            if watched.contains_key(&j.key) || !settled(j.state) {
                watched.insert(j.key.clone(), j);
            }
        }
        let all: Vec<&Job> = watched.values().collect();
        view.draw(&all, &providers);
        if all.iter().all(|j| settled(j.state)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    view.finish();
    let jobs: Vec<Job> = watched.into_values().collect();
    crate::output::print_table(&jobs);
    Ok(())
}

trait View {
    fn changed(&mut self, old: &Job, new: &Job);
    fn draw(&mut self, jobs: &[&Job], providers: &[ProviderView]);
    fn finish(&mut self);
}

fn provider_line(name: &str, jobs: &[&Job], p: Option<&ProviderView>) -> String {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for j in jobs.iter().filter(|j| j.provider == name) {
        *by.entry(state_label(j)).or_default() += 1;
    }
    let mut parts: Vec<String> = by.iter().map(|(s, n)| format!("{n} {s}")).collect();
    if let Some(p) = p {
        parts.push(format!("in flight {}/{}", p.in_flight, p.max_in_flight));
        if let Some(left) = p.budget_left {
            parts.push(format!("budget left {left}"));
        }
        if p.health != "ok" {
            parts.push(p.health.clone());
        }
    }
    parts.join(", ")
}

fn providers_of<'a>(jobs: &[&'a Job]) -> Vec<&'a str> {
    let mut names: Vec<&str> = jobs.iter().map(|j| j.provider.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// indicatif bars on a terminal (stderr).
struct Bars {
    mp: MultiProgress,
    providers: BTreeMap<String, ProgressBar>,
    jobs: BTreeMap<String, ProgressBar>,
}

/// Job lines shown at once; the rest are counted in the provider bars.
const MAX_JOB_LINES: usize = 12;

impl Bars {
    fn new() -> Bars {
        Bars {
            mp: MultiProgress::new(),
            providers: BTreeMap::new(),
            jobs: BTreeMap::new(),
        }
    }
}

impl View for Bars {
    fn changed(&mut self, old: &Job, new: &Job) {
        if settled(new.state) {
            let _ = self
                .mp
                .println(format!("{}: {} -> {}", new.key, old.state, new.state));
        }
    }

    fn draw(&mut self, jobs: &[&Job], providers: &[ProviderView]) {
        for name in providers_of(jobs) {
            let of: Vec<&&Job> = jobs.iter().filter(|j| j.provider == name).collect();
            let done = of.iter().filter(|j| settled(j.state)).count() as u64;
            let bar = self.providers.entry(name.to_string()).or_insert_with(|| {
                let b = self.mp.add(ProgressBar::new(0));
                if let Ok(style) =
                    ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len}  {msg}")
                {
                    b.set_style(style.progress_chars("=> "));
                }
                b.set_prefix(name.to_string());
                b
            });
            bar.set_length(of.len() as u64);
            bar.set_position(done);
            bar.set_message(provider_line(
                name,
                jobs,
                providers.iter().find(|p| p.name == name),
            ));
        }
        let live: Vec<&&Job> = jobs
            .iter()
            .filter(|j| j.state.is_in_flight() || j.state == JobState::Submitting)
            .take(MAX_JOB_LINES)
            .collect();
        let keep: std::collections::HashSet<&str> = live.iter().map(|j| j.key.as_str()).collect();
        self.jobs.retain(|k, b| {
            let stay = keep.contains(k.as_str());
            if !stay {
                b.finish_and_clear();
                self.mp.remove(b);
            }
            stay
        });
        for j in live {
            let bar = self.jobs.entry(j.key.clone()).or_insert_with(|| {
                let b = self.mp.add(ProgressBar::new(100));
                if let Ok(style) =
                    ProgressStyle::with_template("  {prefix:<28} [{bar:20}] {pos:>3}%  {msg}")
                {
                    b.set_style(style.progress_chars("=> "));
                }
                b.set_prefix(j.key.clone());
                b
            });
            bar.set_position(u64::from(j.progress.unwrap_or(0)));
            let stage = j
                .stage
                .as_deref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default();
            bar.set_message(format!("{} {}{stage}", j.provider, j.state));
        }
    }

    fn finish(&mut self) {
        for b in self.jobs.values() {
            b.finish_and_clear();
        }
        for b in self.providers.values() {
            b.finish();
        }
    }
}

/// Plain lines for logs and pipes.
struct Plain {
    started: Instant,
    last: Option<Instant>,
}

impl Plain {
    fn new() -> Plain {
        Plain {
            started: Instant::now(),
            last: None,
        }
    }
}

impl View for Plain {
    fn changed(&mut self, old: &Job, new: &Job) {
        println!(
            "[{:>4}s] {}: {} -> {}",
            self.started.elapsed().as_secs(),
            new.key,
            old.state,
            new.state
        );
    }

    fn draw(&mut self, jobs: &[&Job], providers: &[ProviderView]) {
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_secs(5))
        {
            return;
        }
        self.last = Some(Instant::now());
        let done = jobs.iter().filter(|j| settled(j.state)).count();
        let per: Vec<String> = providers_of(jobs)
            .into_iter()
            .map(|name| {
                format!(
                    "{name}: {}",
                    provider_line(name, jobs, providers.iter().find(|p| p.name == name))
                )
            })
            .collect();
        println!(
            "[{:>4}s] {done}/{} finished | {}",
            self.started.elapsed().as_secs(),
            jobs.len(),
            per.join(" | ")
        );
    }

    fn finish(&mut self) {}
}
