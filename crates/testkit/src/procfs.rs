//! What Linux's `/proc` says about a process (CPU time, resident memory,
//! threads, open files) and about the machine, read the way the
//! benchmarks report it. Errors name the file and field.

use anyhow::{anyhow, Context};

/// Clock ticks per second for /proc/PID/stat (`getconf CLK_TCK`; 100, the
/// Linux default, if that cannot be run).
pub fn clk_tck() -> f64 {
    let got = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|v| *v > 0.0);
    match got {
        Some(v) => v,
        None => {
            eprintln!("getconf CLK_TCK failed: assuming 100 clock ticks per second");
            100.0
        }
    }
}

/// utime + stime of a process (all its threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    stat_ticks(&format!("/proc/{pid}/stat"))
}

/// [`cpu_ticks`] of this process.
pub fn cpu_ticks_self() -> anyhow::Result<u64> {
    stat_ticks("/proc/self/stat")
}

fn stat_ticks(path: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    // Fields after the command name (which may hold spaces and parentheses):
    // state is field 3, utime 14, stime 15.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("{path}: unexpected format"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| anyhow!("{path}: field {} missing", i + 3))
    };
    Ok(num(11)? + num(12)?)
}

/// (VmRSS, VmHWM) of a process: resident memory now and at its peak, KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    Ok((
        proc_status_field(pid, "VmRSS:")?,
        proc_status_field(pid, "VmHWM:")?,
    ))
}

/// A numeric field of /proc/PID/status (the first number after `name`,
/// e.g. `"Threads:"`).
pub fn proc_status_field(pid: u32, name: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| anyhow!("{path}: no {name}"))
}

/// Open file descriptors of a process (0 if they cannot be listed).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|r| r.count())
        .unwrap_or(0)
}

/// The 1-, 5- and 15-minute load averages ("?" if unreadable).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

/// The machine's memory, KiB (0 if unreadable).
pub fn mem_total_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
}

/// The first CPU's model name ("?" if unreadable).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "?".into())
}

/// The kernel's release (empty if unreadable).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_of_self_reads() {
        assert!(cpu_ticks_self().is_ok());
        assert!(rss_kib(std::process::id()).unwrap().0 > 0);
    }
}
