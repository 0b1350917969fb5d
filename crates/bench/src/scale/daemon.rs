//! The daemon under measurement: its config (one Viggle provider on the
//! simulator), its process (the test kit's, run from this executable), and
//! the few control-API reads the parts make, each cheap enough not to
//! disturb what is measured.

use super::{KIND, PROVIDER};
use anyhow::{anyhow, bail, Context};
use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::Duration;
use switchyard_core::{Job, JobSpec, JobState};
use switchyard_sim::SimServer;
use switchyard_testkit::{Env, P};

/// The knobs a part turns in the provider's table.
pub struct DaemonCfg {
    pub rate_per_second: u32,
    pub max_in_flight: u32,
    /// TOML array items of `poll.schedule`.
    pub poll: String,
    pub poll_max: String,
}

impl DaemonCfg {
    /// Writes `env`'s config: the daemon, and the provider on `sim`.
    pub fn write(&self, env: &Env, sim: &SimServer) -> anyhow::Result<()> {
        self.write_with(env, sim, "")
    }

    /// [`DaemonCfg::write`] with `daemon_extra` lines in `[daemon]`.
    pub fn write_with(&self, env: &Env, sim: &SimServer, daemon_extra: &str) -> anyhow::Result<()> {
        let extra = format!(
            "max_in_flight = {}\nrate_limit = {{ per_second = {}, burst = {} }}\n\
             poll = {{ schedule = [{}], max = \"{}\", timeout = \"2h\" }}",
            self.max_in_flight,
            self.rate_per_second,
            self.rate_per_second,
            self.poll,
            self.poll_max,
        );
        let provider = P {
            name: PROVIDER,
            kind: KIND,
            extra: &extra,
        };
        env.write(sim, &[provider], daemon_extra)
    }
}

/// The real binary as a child process (killed if dropped while running),
/// with an HTTP client for its control API.
pub struct Daemon {
    process: switchyard_testkit::Daemon,
    http: reqwest::Client,
}

impl Daemon {
    /// Writes the config, starts the daemon and waits until it answers.
    pub async fn spawn(env: &Env, sim: &SimServer, c: &DaemonCfg) -> anyhow::Result<Daemon> {
        c.write(env, sim)?;
        Daemon::spawn_written(env, &[]).await
    }

    /// Starts the daemon on the config `env` already has, with `vars`,
    /// and waits until it answers.
    pub async fn spawn_written(env: &Env, vars: &[(&str, &str)]) -> anyhow::Result<Daemon> {
        let mut d = Daemon::start_child_with(env, vars)?;
        // Blocking waits: `block_in_place` keeps the simulator's tasks,
        // which share this runtime, running meanwhile.
        let ready =
            tokio::task::block_in_place(|| d.process.wait_listening(Duration::from_secs(30)));
        if let Err(e) = ready {
            let _ = d.stop().await;
            return Err(e);
        }
        Ok(d)
    }

    /// Starts `current_exe() daemon --config` on `env`'s config, its log
    /// in `daemon.log` there; does not wait.
    pub fn start_child(env: &Env) -> anyhow::Result<Daemon> {
        Daemon::start_child_with(env, &[])
    }

    /// [`Daemon::start_child`] with `vars` in its environment.
    pub fn start_child_with(env: &Env, vars: &[(&str, &str)]) -> anyhow::Result<Daemon> {
        let exe = std::env::current_exe().context("finding this executable")?;
        let process = switchyard_testkit::Daemon::command(exe, env)
            .envs(vars)
            .log_file(env.dir.path().join("daemon.log"))
            .spawn()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()?;
        Ok(Daemon { process, http })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn addr(&self) -> SocketAddr {
        self.process.addr()
    }

    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        self.process.try_wait()
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail(20)
    }

    pub async fn submit(&self, jobs: &[JobSpec]) -> anyhow::Result<()> {
        let r = self
            .http
            .post(format!("{}/v1/jobs", self.process.url()))
            .json(&serde_json::json!({ "jobs": jobs }))
            .send()
            .await
            .context("POST /v1/jobs")?;
        let status = r.status();
        if !status.is_success() {
            let body = r.text().await.unwrap_or_default();
            bail!(
                "POST /v1/jobs: {status}: {}",
                body.chars().take(500).collect::<String>()
            );
        }
        let v: serde_json::Value = r.json().await?;
        let accepted = v["accepted"].as_u64().unwrap_or(0) as usize;
        if accepted != jobs.len() {
            bail!("POST /v1/jobs accepted {accepted} of {} jobs", jobs.len());
        }
        Ok(())
    }

    /// The answer to a GET of `path`, or its error status.
    async fn get(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .http
            .get(format!("{}{path}", self.process.url()))
            .send()
            .await?
            .error_for_status()?)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        Ok(self.get(path).await?.json().await?)
    }

    /// One GET of `path`, its body read whole (to measure what a view
    /// costs the daemon).
    pub async fn fetch(&self, path: &str) -> anyhow::Result<usize> {
        Ok(self.get(path).await?.bytes().await?.len())
    }

    /// (queued, in flight) of the provider, from `GET /v1/providers`.
    pub async fn queue(&self) -> anyhow::Result<(u64, usize)> {
        let v: serde_json::Value = self.get_json("/v1/providers").await?;
        let p = v
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == PROVIDER))
            .ok_or_else(|| anyhow!("provider {PROVIDER} missing from /v1/providers"))?;
        Ok((
            p["queued"].as_u64().unwrap_or(0),
            p["in_flight"].as_u64().unwrap_or(0) as usize,
        ))
    }

    pub async fn jobs(&self, state: Option<JobState>) -> anyhow::Result<Vec<Job>> {
        match state {
            Some(s) => self.get_json(&format!("/v1/jobs?state={s}")).await,
            None => self.get_json("/v1/jobs").await,
        }
    }

    pub async fn state_of(&self, key: &str) -> anyhow::Result<JobState> {
        let v: serde_json::Value = self.get_json(&format!("/v1/jobs/{key}")).await?;
        let s = v["state"].as_str().unwrap_or_default();
        s.parse::<JobState>()
            .map_err(|e| anyhow!("job {key}: state {s:?}: {e}"))
    }

    /// True when no job is submitting, pending or processing.
    pub async fn none_live(&self) -> anyhow::Result<bool> {
        for state in [
            JobState::Submitting,
            JobState::Pending,
            JobState::Processing,
        ] {
            if self.count(state).await? > 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Jobs of the provider in `state`, from `/metrics` (the store's live
    /// counts: no job is read or rendered).
    pub async fn count(&self, state: JobState) -> anyhow::Result<usize> {
        let text = self.get("/metrics").await?.text().await?;
        let series = format!("switchyard_jobs{{provider=\"{PROVIDER}\",state=\"{state}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .ok_or_else(|| anyhow!("/metrics has no {series}"))
    }

    pub async fn history_len(&self, key: &str) -> anyhow::Result<usize> {
        let v: serde_json::Value = self.get_json(&format!("/v1/jobs/{key}")).await?;
        Ok(v["history"].as_array().map_or(0, Vec::len))
    }

    /// SIGTERM, then a bounded wait; SIGKILL if it does not exit.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        tokio::task::block_in_place(|| self.process.stop(Duration::from_secs(30)))
    }
}
