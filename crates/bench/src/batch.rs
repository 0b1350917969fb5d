//! `switchyard bench batch`: peak resident memory of `switchyard check` on a
//! large batch file, as a multiple of the file's size, for JSON Lines and
//! TOML. A batch of that size is what a script generates for a catalogue;
//! `check` must not need many times the file in memory to read it.
//!
//! `check` runs as a child process (`current_exe() check`, or `--exe` to
//! measure another build, e.g. an older commit's, in the same run), so the
//! figure is that process alone. Its peak is the kernel's high-water mark
//! (`VmHWM` in `/proc/PID/status`), read every 0.2 ms until the child exits:
//! the mark only grows, so the last reading before the exit misses at most
//! what the child allocated in its last 0.2 ms. Beside each figure, the same
//! child checking a one-job file: what the binary needs before any batch.

use anyhow::{bail, Context};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use switchyard_core::ProviderKind;

#[derive(Debug, Clone, clap::Args)]
pub struct BatchOpts {
    /// Size of each generated batch file, in MiB.
    #[arg(long, default_value_t = 50)]
    pub mb: u64,
    /// The `switchyard` binary to measure (default: this one).
    #[arg(long, value_name = "PATH")]
    pub exe: Option<PathBuf>,
    /// Measure only this format (default: both).
    #[arg(long, value_enum)]
    pub only: Option<Format>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Jsonl,
    Toml,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Toml => "toml",
        }
    }
}

struct Figure {
    format: Format,
    file_bytes: u64,
    jobs: u64,
    peak_kib: u64,
    elapsed: Duration,
}

pub fn run(opts: BatchOpts) -> anyhow::Result<()> {
    let exe = match opts.exe {
        Some(p) => p,
        None => std::env::current_exe().context("finding this executable")?,
    };
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let config = tmp.path().join("switchyard.toml");
    let mut cfg = String::new();
    for k in ProviderKind::ALL {
        cfg.push_str(&format!("[providers.{k}]\nkind = \"{k}\"\n"));
    }
    std::fs::write(&config, cfg)?;
    let target = opts.mb.max(1) * 1024 * 1024;
    println!(
        "peak resident memory of `{} check` (VmHWM), {} MiB batches",
        exe.display(),
        opts.mb
    );
    let mut rows = Vec::new();
    for format in [Format::Jsonl, Format::Toml] {
        if opts.only.is_some_and(|o| o != format) {
            continue;
        }
        let small = tmp.path().join(format!("one.{}", format.name()));
        write_batch(&small, format, 1)?;
        // A one-job check lasts a few ms and may end between two readings:
        // the highest of a few runs.
        let mut base = measure(&exe, &config, &small, format)?;
        for _ in 0..9 {
            let again = measure(&exe, &config, &small, format)?;
            base.peak_kib = base.peak_kib.max(again.peak_kib);
        }
        let file = tmp.path().join(format!("batch.{}", format.name()));
        let (bytes, jobs) = write_batch(&file, format, target)?;
        let mut fig = measure(&exe, &config, &file, format)?;
        fig.file_bytes = bytes;
        fig.jobs = jobs;
        std::fs::remove_file(&file)?;
        rows.push((base, fig));
    }
    println!(
        "\n| format | file | jobs | peak RSS | peak / file | one-job file | (peak - one-job) / file | time |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (base, f) in &rows {
        if f.peak_kib == 0 {
            bail!("could not read VmHWM of the child from /proc (not Linux?)");
        }
        let file_mib = f.file_bytes as f64 / (1024.0 * 1024.0);
        let peak_mib = f.peak_kib as f64 / 1024.0;
        let base_mib = base.peak_kib as f64 / 1024.0;
        println!(
            "| {} | {file_mib:.1} MiB | {} | {peak_mib:.1} MiB | {:.2}x | {base_mib:.1} MiB | {:.2}x | {:.2} s |",
            f.format.name(),
            f.jobs,
            peak_mib / file_mib,
            (peak_mib - base_mib).max(0.0) / file_mib,
            f.elapsed.as_secs_f64(),
        );
    }
    Ok(())
}

/// Writes jobs until the file holds at least `target` bytes; returns its
/// size and the number of jobs. Every job is valid, spread over the four
/// providers, so `check` goes through parsing and every provider's rules.
fn write_batch(path: &Path, format: Format, target: u64) -> anyhow::Result<(u64, u64)> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let (mut bytes, mut jobs) = (0u64, 0u64);
    while bytes < target {
        let i = jobs;
        let kind = ProviderKind::ALL[(i % 4) as usize];
        let params = match kind {
            ProviderKind::Ugen => {
                serde_json::json!({"product_name": format!("Product {i}"), "product_image_url": format!("https://example.com/p/{i}.jpg"), "segment_count": 1})
            }
            ProviderKind::Viggle => {
                serde_json::json!({"image_url": format!("https://example.com/v/{i}.png")})
            }
            ProviderKind::Ugclab => {
                serde_json::json!({"script": format!("A short script for product number {i}.")})
            }
            ProviderKind::Ulazai => {
                serde_json::json!({"model_slug": "kling_3_0", "prompt": format!("Prompt number {i}"), "duration": 5})
            }
        };
        let key = format!("bench-{i:09}");
        let text = match format {
            Format::Jsonl => format!(
                "{}\n",
                serde_json::json!({"key": key, "provider": kind.as_str(), "priority": 0, "params": params})
            ),
            Format::Toml => {
                // Inline table: the same object, written as TOML.
                let table: toml::Table = serde_json::from_value(params)?;
                let inline = toml::Value::Table(table).to_string();
                let inline = inline.trim();
                format!(
                    "[[jobs]]\nkey = \"{key}\"\nprovider = \"{kind}\"\npriority = 0\nparams = {inline}\n\n"
                )
            }
        };
        out.write_all(text.as_bytes())?;
        bytes += text.len() as u64;
        jobs += 1;
    }
    out.flush()?;
    Ok((bytes, jobs))
}

/// Runs `exe check --config CONFIG FILE` and follows its high-water mark.
fn measure(exe: &Path, config: &Path, file: &Path, format: Format) -> anyhow::Result<Figure> {
    // A file, not a pipe: a child with many problems to report must not
    // block on a full pipe while it is being watched.
    let err_path = file.with_extension("stderr");
    let err_file = std::fs::File::create(&err_path)?;
    let started = Instant::now();
    let mut child = Command::new(exe)
        .arg("check")
        .arg("--config")
        .arg(config)
        .arg(file)
        .env_remove("SWITCHYARD_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(err_file))
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        if let Some(kib) = vm_hwm(pid) {
            peak = peak.max(kib);
        }
        if let Some(st) = child.try_wait()? {
            break st;
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let elapsed = started.elapsed();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    if !status.success() {
        bail!(
            "check of {} failed ({status}): {}",
            file.display(),
            err.lines().take(5).collect::<Vec<_>>().join("\n")
        );
    }
    Ok(Figure {
        format,
        file_bytes: 0,
        jobs: 0,
        peak_kib: peak,
        elapsed,
    })
}

/// `VmHWM` of a process in KiB; `None` once it has exited (a zombie has no
/// memory left to report) or where /proc is missing.
fn vm_hwm(pid: u32) -> Option<u64> {
    switchyard_testkit::procfs::proc_status_field(pid, "VmHWM:").ok()
}
