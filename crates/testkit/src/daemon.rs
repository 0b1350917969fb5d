//! The real `switchyard` binary as a child process: started on a written
//! config, waited for until it listens, signalled, waited for (always with
//! a bound), and killed if the caller ends early: a failing test or an
//! aborted benchmark must not leave daemons behind.
//!
//! Waits are blocking (the tests call them from blocking code); async
//! callers run them in `tokio::task::block_in_place` or `spawn_blocking`.

use crate::config::{url_addr, Env, KEY_ENV};
use anyhow::{anyhow, bail, Context};
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How often a wait looks again.
const TICK: Duration = Duration::from_millis(20);

/// A daemon child process that is killed (and reaped) when dropped.
pub struct Guard(pub Option<Child>);

impl Guard {
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("daemon already taken")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The signals a test or benchmark sends a daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
    Hup,
    /// Freezes the process (a stopped machine, a long GC pause) until `Cont`.
    Stop,
    Cont,
}

impl Signal {
    /// The option `kill(1)` takes for it.
    pub fn flag(self) -> &'static str {
        match self {
            Signal::Term => "-TERM",
            Signal::Kill => "-KILL",
            Signal::Hup => "-HUP",
            Signal::Stop => "-STOP",
            Signal::Cont => "-CONT",
        }
    }
}

/// `kill(1)` rather than `libc::kill`: this workspace forbids `unsafe`,
/// and a test sends few enough signals for a process each to cost nothing.
fn send(pid: u32, flag: &str) -> anyhow::Result<()> {
    let st = Command::new("kill")
        .args([flag, &pid.to_string()])
        .status()
        .context("running kill(1)")?;
    if !st.success() {
        bail!("kill {flag} {pid}: {st}");
    }
    Ok(())
}

/// True once an HTTP server answers on `addr` (any status). An accepted
/// connection alone does not prove it: a loopback connect to a free port
/// in the ephemeral range can connect to itself (TCP simultaneous open),
/// and reads back its own request.
fn answers_http(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let limit = Some(Duration::from_secs(2));
    if s.set_read_timeout(limit).is_err() || s.set_write_timeout(limit).is_err() {
        return false;
    }
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 5];
    s.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}

/// Waits until an HTTP server answers on `addr` (true) or `limit` passes
/// (false); `alive` is asked between attempts and ends the wait with its
/// error (the process it waits for has exited).
fn wait_answering(
    addr: SocketAddr,
    limit: Duration,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + limit;
    loop {
        if answers_http(addr) {
            return Ok(true);
        }
        alive()?;
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(TICK);
    }
}

/// Waits (bounded) for `child` to exit; `None` if it did not.
fn exit_within(child: &mut Child, limit: Duration) -> anyhow::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().context("waiting for the daemon")? {
            return Ok(Some(st));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(TICK);
    }
}

/// How to start a daemon: `BIN daemon --config CONFIG`, stdin and stdout
/// closed, [`KEY_ENV`] set, `SWITCHYARD_LOG=warn` unless changed, stderr
/// inherited unless [`DaemonCommand::log_file`] is given.
pub struct DaemonCommand {
    cmd: Command,
    url: String,
    log: Option<PathBuf>,
}

impl DaemonCommand {
    /// Sets a variable in the daemon's environment (later calls win).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn envs(mut self, vars: &[(&str, &str)]) -> Self {
        for (k, v) in vars {
            self.cmd.env(k, v);
        }
        self
    }

    /// Sends the daemon's stderr (its log) to a new file at `path`.
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log = Some(path.into());
        self
    }

    /// Starts the process; does not wait for it to listen.
    pub fn spawn(mut self) -> anyhow::Result<Daemon> {
        let addr = url_addr(&self.url)?;
        match &self.log {
            Some(path) => {
                let f = std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?;
                self.cmd.stderr(Stdio::from(f));
            }
            None => {
                self.cmd.stderr(Stdio::inherit());
            }
        }
        let child = self.cmd.spawn().context("starting the daemon")?;
        Ok(Daemon {
            pid: child.id(),
            guard: Guard(Some(child)),
            url: self.url,
            addr,
            log: self.log,
        })
    }
}

/// A running daemon: its process (in a [`Guard`]), where it listens, and
/// its log file if it has one.
pub struct Daemon {
    pub guard: Guard,
    pid: u32,
    url: String,
    addr: SocketAddr,
    log: Option<PathBuf>,
}

impl Daemon {
    /// The command for the daemon `env` describes, run from `bin`.
    pub fn command(bin: impl AsRef<OsStr>, env: &Env) -> DaemonCommand {
        let mut cmd = Command::new(bin);
        cmd.args(["daemon", "--config"])
            .arg(&env.config)
            .env(KEY_ENV, "test-key")
            .env("SWITCHYARD_LOG", "warn")
            // `--config` wins over it anyway; removed so a run never
            // depends on the caller's environment.
            .env_remove("SWITCHYARD_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        DaemonCommand {
            cmd,
            url: env.url.clone(),
            log: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn child(&mut self) -> &mut Child {
        self.guard.child()
    }

    /// Its exit status if it has exited (without waiting).
    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        let child = self
            .guard
            .0
            .as_mut()
            .ok_or_else(|| anyhow!("the daemon was already taken"))?;
        child.try_wait().context("asking whether the daemon exited")
    }

    /// Waits until its HTTP server answers; an error (with its log's tail)
    /// if it exits first or `limit` passes.
    pub fn wait_listening(&mut self, limit: Duration) -> anyhow::Result<()> {
        let addr = self.addr;
        let listening = wait_answering(addr, limit, || match self.try_wait()? {
            Some(st) => bail!(
                "the daemon exited ({st}) before listening:\n{}",
                self.log_tail(20)
            ),
            None => Ok(()),
        })?;
        if !listening {
            bail!(
                "the daemon did not listen on {addr} within {} s:\n{}",
                limit.as_secs(),
                self.log_tail(20)
            );
        }
        Ok(())
    }

    pub fn signal(&mut self, sig: Signal) -> anyhow::Result<()> {
        // A reaped process's id may belong to another one by now.
        if self.guard.0.is_none() {
            bail!("the daemon was already taken; not sending {}", sig.flag());
        }
        send(self.pid, sig.flag())
    }

    /// Waits (bounded) for it to exit; an error if it did not.
    pub fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        exit_within(self.guard.child(), limit)?.ok_or_else(|| {
            anyhow!(
                "the daemon did not exit within {} s:\n{}",
                limit.as_secs(),
                self.log_tail(20)
            )
        })
    }

    /// SIGTERM, then a bounded wait for exit 0; SIGKILL if it does not
    /// exit in time. Already exited: nothing to do.
    pub fn stop(&mut self, limit: Duration) -> anyhow::Result<()> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        // It may exit between the look and the signal; the wait tells.
        let _ = self.signal(Signal::Term);
        match exit_within(self.guard.child(), limit)? {
            Some(st) if st.success() => Ok(()),
            Some(st) => bail!("the daemon exited with {st}:\n{}", self.log_tail(20)),
            None => {
                let _ = self.kill9();
                bail!(
                    "the daemon did not exit within {} s of SIGTERM",
                    limit.as_secs()
                )
            }
        }
    }

    /// SIGKILL: no drain, no flush beyond what was already durable; reaped.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        let child = self.guard.child();
        child.kill().context("killing the daemon")?;
        child.wait().context("reaping the daemon")?;
        Ok(())
    }

    /// Its log so far (empty if its stderr was not sent to a file).
    pub fn log(&self) -> String {
        self.log
            .as_deref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// The last `lines` lines of [`Daemon::log`].
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The process, for callers that drive it themselves; no longer
    /// killed when this handle is dropped.
    pub fn into_child(mut self) -> Child {
        self.guard.0.take().expect("daemon already taken")
    }
}

/// Starts the daemon for `env` from `bin` with its log on this process's
/// stderr (`SWITCHYARD_LOG` from `E2E_LOG`, default `warn`) and waits until
/// it listens.
pub fn start_daemon(bin: impl AsRef<OsStr>, env: &Env) -> Child {
    let level = std::env::var("E2E_LOG").unwrap_or_else(|_| "warn".into());
    let mut d = Daemon::command(bin, env)
        .env("SWITCHYARD_LOG", &level)
        .spawn()
        .unwrap_or_else(|e| panic!("{e:#}"));
    d.wait_listening(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e:#}"));
    d.into_child()
}

static LOGS: AtomicUsize = AtomicUsize::new(0);

/// Starts the daemon for `env` from `bin` with its log (level `info`, so
/// tests can look for what it said) in a new file in `env.dir`, `vars` set
/// last, and waits until it listens.
pub fn spawn(bin: impl AsRef<OsStr>, env: &Env, vars: &[(&str, &str)]) -> Daemon {
    let log = env.dir.path().join(format!(
        "daemon-{}.log",
        LOGS.fetch_add(1, Ordering::Relaxed)
    ));
    let mut d = Daemon::command(bin, env)
        .env("SWITCHYARD_LOG", "info,sled=warn,hyper=warn")
        .envs(vars)
        .log_file(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{e:#}"));
    d.wait_listening(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e:#}"));
    d
}

/// Waits (up to 20 s) until an HTTP server answers on `url`'s address.
pub fn wait_listening(url: &str) {
    let addr = url_addr(url).unwrap_or_else(|e| panic!("{e:#}"));
    let listening = wait_answering(addr, Duration::from_secs(20), || Ok(())).unwrap();
    assert!(listening, "daemon did not start listening on {url}");
}

/// `bin ARGS --daemon-url URL` with `vars` set; a token file named in this
/// process's own environment does not leak in.
pub fn cli_env(bin: impl AsRef<OsStr>, url: &str, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .args(["--daemon-url", url])
        .env_remove("SWITCHYARD_TOKEN_FILE");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("running the switchyard CLI")
}

pub fn cli(bin: impl AsRef<OsStr>, url: &str, args: &[&str]) -> Output {
    cli_env(bin, url, args, &[])
}

/// Sends `sig` (as `kill(1)` spells it: `-TERM`, `-HUP`, ...).
pub fn signal(child: &Child, sig: &str) {
    send(child.id(), sig).unwrap_or_else(|e| panic!("{e:#}"));
}

/// Sends SIGTERM and waits (bounded) for the exit status.
pub fn sigterm(child: &mut Child) -> ExitStatus {
    signal(child, Signal::Term.flag());
    wait_exit(child, Duration::from_secs(20))
}

pub fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    exit_within(child, limit)
        .unwrap_or_else(|e| panic!("{e:#}"))
        .unwrap_or_else(|| panic!("daemon did not exit"))
}

/// SIGKILL: no drain, no flush beyond what was already durable.
pub fn kill9(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}
