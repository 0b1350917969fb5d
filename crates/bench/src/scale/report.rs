//! The report: one table (text, and Markdown for docs/PERFORMANCE.md), a
//! line of details per measurement, and the goals with their verdicts.

use super::{Ceiling, Row, ScaleOpts, RESTART_QUEUED};
use std::time::{Duration, SystemTime};
use switchyard_testkit::procfs;

/// The machine a run was measured on, as the report names it.
pub struct Machine {
    cores: usize,
    mem_mib: u64,
    cpu: String,
    kernel: String,
    tck: f64,
    load: String,
    date: String,
}

impl Machine {
    pub fn read(tck: f64) -> Machine {
        Machine {
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            mem_mib: procfs::mem_total_kib() / 1024,
            cpu: procfs::cpu_model(),
            kernel: procfs::kernel_release(),
            tck,
            load: procfs::loadavg(),
            date: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        }
    }

    pub fn line(&self) -> String {
        format!(
            "{} cores ({}), {} MiB RAM, Linux {}, load {} at start, {}",
            self.cores, self.cpu, self.mem_mib, self.kernel, self.load, self.date
        )
    }
}

pub fn command_line() -> String {
    let mut args = std::env::args();
    let _ = args.next();
    let rest: Vec<String> = args.collect();
    format!("switchyard {}", rest.join(" "))
}

pub struct Report {
    pub machine: Machine,
    pub command: String,
    pub ceiling: Option<Ceiling>,
    pub rows: Vec<Row>,
    pub opts: ScaleOpts,
    pub total: Duration,
}

const HEADERS: [&str; 12] = [
    "jobs",
    "jobs/s",
    "ceiling jobs/s",
    "of ceiling",
    "req/job",
    "hist/job",
    "daemon CPU/job",
    "RSS idle -> live",
    "B/live job",
    "idle CPU",
    "polls in window",
    "restart: first create",
];

impl Report {
    fn cells(&self, r: &Row) -> Vec<String> {
        let dash = || "-".to_string();
        let mut c = vec![fmt_n(r.n)];
        match (&r.thr, &self.ceiling) {
            (Some(t), Some(ce)) => {
                let (ceil, which) = t.ceiling(ce);
                c.push(format!("{:.0}", t.jobs_per_s()));
                c.push(format!("{ceil:.0} ({which})"));
                c.push(format!("{:.0} %", 100.0 * t.jobs_per_s() / ceil.max(1e-9)));
                c.push(format!("{:.2}", t.req_per_job));
                c.push(format!("{:.2}", t.trans_per_job));
                c.push(format!(
                    "{:.0} us",
                    1e6 * t.daemon_cpu_s / t.completed.max(1) as f64
                ));
            }
            _ => c.extend((0..6).map(|_| dash())),
        }
        match &r.mem {
            Some(m) => {
                c.push(format!(
                    "{:.1} -> {:.1} MiB",
                    m.rss_idle_kib as f64 / 1024.0,
                    m.rss_live_kib as f64 / 1024.0
                ));
                c.push(format!("{:.0}", m.bytes_per_job()));
                c.push(format!(
                    "{:.2} % ({:.2} s/min)",
                    m.cpu_pct(),
                    m.idle_cpu_s * 60.0 / m.idle_secs.max(1e-9)
                ));
                c.push(format!(
                    "{} ({:.0} us/poll)",
                    m.polls,
                    1e6 * m.idle_cpu_s / m.polls.max(1) as f64
                ));
            }
            None => c.extend((0..4).map(|_| dash())),
        }
        match &r.restart {
            Some(rs) => c.push(format!("{:.0} ms", rs.first_create_ms)),
            None => c.push(dash()),
        }
        c
    }

    fn table(&self, markdown: bool) -> String {
        let rows: Vec<Vec<String>> = self.rows.iter().map(|r| self.cells(r)).collect();
        let mut w: Vec<usize> = HEADERS.iter().map(|h| h.len()).collect();
        for r in &rows {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:>width$}", width = w[i]))
                .collect();
            if markdown {
                format!("| {} |\n", padded.join(" | "))
            } else {
                format!("  {}\n", padded.join("  "))
            }
        };
        let mut out = line(&HEADERS.map(String::from));
        if markdown {
            out.push('|');
            for n in &w {
                out.push_str(&format!(" {}: |", "-".repeat(n.saturating_sub(1).max(2))));
            }
            out.push('\n');
        }
        for r in &rows {
            out.push_str(&line(r));
        }
        out
    }

    fn details(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(c) = &self.ceiling {
            out.push(format!(
                "ceiling (a), simulator: {:.0} requests/s served to {} keep-alive connections ({} GET status requests of one job, {} errors; load {})",
                c.sim_rps, self.opts.load_conns, c.sim_requests, c.sim_errors, c.load
            ));
            out.push(format!(
                "ceiling (b), store: {:.0} durable transitions/s with group commit ({} transitions, {} flushes, {:.1} per flush; bench store --jobs {} --writers {} --per-writer {})",
                c.store_tps,
                c.store_transitions,
                c.store_flushes,
                c.store_transitions as f64 / c.store_flushes.max(1) as f64,
                self.opts.store_jobs,
                self.opts.store_writers,
                self.opts.store_per_writer
            ));
        }
        for r in &self.rows {
            if let Some(t) = &r.thr {
                let others: Vec<String> = t.other.iter().map(|(s, n)| format!("{n} {s}")).collect();
                out.push(format!(
                    "throughput {}: {} completed{} in {:.2} s (submit to last completion); creates/job {:.2}, duplicate creates {}; CPU: daemon {:.1} s ({:.0} % of a core), bench process (simulator) {:.1} s; load {}",
                    fmt_n(r.n),
                    t.completed,
                    if others.is_empty() { String::new() } else { format!(" ({})", others.join(", ")) },
                    t.secs,
                    t.creates_per_job,
                    t.duplicates,
                    t.daemon_cpu_s,
                    100.0 * t.daemon_cpu_s / t.secs.max(1e-9),
                    t.bench_cpu_s,
                    t.load
                ));
            }
            if let Some(m) = &r.mem {
                out.push(format!(
                    "memory/idle {}: {} live (submitted in batches of {}); VmRSS idle {} KiB, live {} KiB, after the window {} KiB, peak (VmHWM) {} KiB; {} open fds, {} threads when live; CPU {:.2} s over {:.1} s with {} polls; load {}",
                    fmt_n(r.n),
                    m.live,
                    self.opts.memory_batch,
                    m.rss_idle_kib,
                    m.rss_live_kib,
                    m.rss_after_kib,
                    m.hwm_kib,
                    m.fds,
                    m.threads,
                    m.idle_cpu_s,
                    m.idle_secs,
                    m.polls,
                    m.load
                ));
                for v in &m.views {
                    out.push(format!(
                        "views {}: {} with {} jobs live: {:.3} ms of daemon CPU and {:.3} ms wall per call ({} calls)",
                        fmt_n(r.n),
                        v.path,
                        m.live,
                        v.cpu_ms,
                        v.wall_ms,
                        v.calls
                    ));
                }
            }
            if let Some(rs) = &r.restart {
                out.push(format!(
                    "restart {}: store of {} jobs ({} queued, 1 in 50 of the rest failed, others completed) built in {:.1} s; listening {:.0} ms, first create {:.0} ms after spawn, daemon CPU by then {:.0} ms; VmRSS then {} KiB; load {}",
                    fmt_n(r.n),
                    rs.jobs,
                    RESTART_QUEUED.min(rs.jobs),
                    rs.build_s,
                    rs.listening_ms,
                    rs.first_create_ms,
                    rs.cpu_ms,
                    rs.rss_kib,
                    rs.load
                ));
            }
        }
        out
    }

    fn goals(&self) -> Vec<String> {
        let mut out = Vec::new();
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        let largest = |f: &dyn Fn(&Row) -> bool| self.rows.iter().rev().find(|r| f(r));
        if let (Some(r), Some(c)) = (largest(&|r| r.thr.is_some()), &self.ceiling) {
            if let Some(t) = &r.thr {
                let (ceil, _) = t.ceiling(c);
                let ok = t.jobs_per_s() >= ceil / 2.0 && t.jobs_per_s() >= 5_000.0;
                out.push(format!(
                    "1. throughput at {} jobs: {:.0} jobs/s = {:.0} % of the ceiling {:.0} (goal >= 50 % and >= 5,000/s): {}",
                    fmt_n(r.n),
                    t.jobs_per_s(),
                    100.0 * t.jobs_per_s() / ceil.max(1e-9),
                    ceil,
                    verdict(ok)
                ));
            }
        }
        if let Some(m) = largest(&|r| r.mem.is_some()).and_then(|r| r.mem.as_ref()) {
            out.push(format!(
                "2. memory at {} live jobs: {:.0} bytes per live job above the idle baseline (goal < 1,024): {}",
                fmt_n(m.live),
                m.bytes_per_job(),
                verdict(m.bytes_per_job() < 1024.0)
            ));
        }
        let idle_row = self
            .rows
            .iter()
            .find(|r| r.n == 10_000 && r.mem.is_some())
            .or_else(|| largest(&|r| r.mem.is_some()));
        if let Some(m) = idle_row.and_then(|r| r.mem.as_ref()) {
            out.push(format!(
                "3. idle at {} live jobs, a poll per job every {}: {:.2} % of one core ({:.2} s CPU per minute, window {:.0} s) (goal < 1 %): {}",
                fmt_n(m.live),
                humantime::format_duration(self.opts.poll_every),
                m.cpu_pct(),
                m.idle_cpu_s * 60.0 / m.idle_secs.max(1e-9),
                m.idle_secs,
                if m.polls == 0 {
                    "no poll fell in the window (lengthen --idle-secs or shorten --poll-every): not measured"
                } else {
                    verdict(m.cpu_pct() < 1.0)
                }
            ));
        }
        if let Some(rs) = largest(&|r| r.restart.is_some()).and_then(|r| r.restart.as_ref()) {
            out.push(format!(
                "4. restart with {} jobs in the store: first create {:.0} ms after spawn (goal < 1,000 ms): {}",
                fmt_n(rs.jobs),
                rs.first_create_ms,
                verdict(rs.first_create_ms < 1000.0)
            ));
        }
        if let Some(m) = largest(&|r| r.mem.is_some()).and_then(|r| r.mem.as_ref()) {
            for v in &m.views {
                out.push(format!(
                    "5. {} with {} live jobs: {:.3} ms of daemon CPU per call (goal < 1 ms): {}",
                    v.path,
                    fmt_n(m.live),
                    v.cpu_ms,
                    verdict(v.cpu_ms < 1.0)
                ));
            }
        }
        out
    }

    pub fn text(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "\nswitchyard bench scale: {}\n",
            self.machine.line()
        ));
        s.push_str(&format!("command: {}\n\n", self.command));
        s.push_str(&self.table(false));
        s.push('\n');
        for d in self.details() {
            s.push_str(&format!("  {d}\n"));
        }
        s.push_str("\ngoals:\n");
        for g in self.goals() {
            s.push_str(&format!("  {g}\n"));
        }
        s.push_str(&format!("\n(total {:.0} s)\n", self.total.as_secs_f64()));
        s
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "Machine: {}; CPU time from /proc/PID/stat at {} ticks/s.\n\n",
            self.machine.line(),
            self.machine.tck
        ));
        s.push_str(&format!("Command: `{}`\n\n", self.command));
        s.push_str(&self.table(true));
        s.push('\n');
        for d in self.details() {
            s.push_str(&format!("- {d}\n"));
        }
        s.push_str("\nGoals:\n\n");
        for g in self.goals() {
            s.push_str(&format!("{g}\n"));
        }
        s
    }
}

fn fmt_n(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(fmt_n(1_000_000), "1,000,000");
        assert_eq!(fmt_n(999), "999");
        assert_eq!(fmt_n(10_000), "10,000");
    }
}
