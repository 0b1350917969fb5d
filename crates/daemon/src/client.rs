//! The CLI's side of the control API. Output for people is a table; `--json`
//! prints the daemon's JSON and nothing else on stdout.

use crate::batch::{self, Problem};
use crate::output::{print_table, settled};
use crate::Invalid;
use anyhow::{anyhow, bail, Context};
use std::path::PathBuf;
use std::time::Duration;
use switchyard_api::{BatchAnswer, BatchBody, ProviderView};
use switchyard_core::{Job, Secret};

#[derive(Clone)]
pub struct Client {
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    token: Option<Secret>,
}

impl Client {
    pub fn new(base: &str) -> anyhow::Result<Client> {
        Client::with_token(base, None)
    }

    /// A client that sends `Authorization: Bearer <token>` with every call.
    pub fn with_token(base: &str, token: Option<Secret>) -> anyhow::Result<Client> {
        let url =
            reqwest::Url::parse(base).map_err(|e| Invalid(anyhow!("daemon URL {base:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Invalid(anyhow!("daemon URL {base:?}: not an http(s) URL")).into());
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .context("building HTTP client")?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            http,
            token,
        })
    }

    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t.expose()),
            None => req,
        }
    }

    /// Sends a request; an error answer becomes an error with the daemon's
    /// message (exit 2 for the caller's mistakes: 400, 401, 404).
    pub(crate) async fn call(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value)> {
        let resp = self
            .authorized(req)
            .send()
            .await
            .map_err(|e| anyhow!("cannot reach the daemon at {}: {e}", self.base))?;
        let status = resp.status();
        let v: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
        if status.is_success() || status.as_u16() == 422 {
            return Ok((status, v));
        }
        let msg = v["error"]["message"]
            .as_str()
            .unwrap_or("no details")
            .to_string();
        match status.as_u16() {
            401 => Err(Invalid(anyhow!(
                "the daemon refused the request ({msg}): it needs a bearer token; pass --token-file FILE or set SWITCHYARD_TOKEN_FILE"
            ))
            .into()),
            400 | 404 => Err(Invalid(anyhow!("{msg}")).into()),
            _ => bail!("daemon answered {status}: {msg}"),
        }
    }

    pub(crate) async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<serde_json::Value> {
        let (status, v) = self.call(req).await?;
        if status.as_u16() == 422 {
            bail!(
                "daemon answered {status}: {}",
                v["error"]["message"].as_str().unwrap_or("no details")
            );
        }
        Ok(v)
    }

    pub async fn submit(
        &self,
        jobs: Vec<switchyard_core::JobSpec>,
    ) -> anyhow::Result<Result<BatchAnswer, Vec<Problem>>> {
        let (status, v) = self
            .call(
                self.http
                    .post(format!("{}/v1/jobs", self.base))
                    .json(&BatchBody { jobs }),
            )
            .await?;
        if status.as_u16() == 422 {
            let problems: Vec<Problem> =
                serde_json::from_value(v["error"]["problems"].clone()).unwrap_or_default();
            return Ok(Err(problems));
        }
        Ok(Ok(
            serde_json::from_value(v).context("reading the daemon's answer")?
        ))
    }

    pub async fn jobs(
        &self,
        state: Option<&str>,
        provider: Option<&str>,
    ) -> anyhow::Result<Vec<Job>> {
        let mut q = vec![];
        if let Some(s) = state {
            q.push(("state", s));
        }
        if let Some(p) = provider {
            q.push(("provider", p));
        }
        let v = self
            .send(self.http.get(format!("{}/v1/jobs", self.base)).query(&q))
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    /// `/v1/jobs/{key}` with the key as one path segment. A key no job can
    /// have is refused here, with the rule, rather than sent as a URL that
    /// would name another resource (`..` is "the parent").
    pub(crate) fn job_url(&self, key: &str, tail: &str) -> anyhow::Result<String> {
        switchyard_core::check_key(key).map_err(|e| Invalid(anyhow!("{key:?}: {e}")))?;
        Ok(format!("{}/v1/jobs/{}{tail}", self.base, enc(key)))
    }

    pub async fn job(&self, key: &str) -> anyhow::Result<serde_json::Value> {
        self.send(self.http.get(self.job_url(key, "")?)).await
    }

    pub async fn cancel(&self, key: &str) -> anyhow::Result<serde_json::Value> {
        self.send(self.http.delete(self.job_url(key, "")?)).await
    }

    /// Sent as JSON (an empty object): the daemon refuses a POST without a
    /// JSON content type, which is what a web page could send across sites.
    pub async fn retry(&self, key: &str) -> anyhow::Result<serde_json::Value> {
        self.send(
            self.http
                .post(self.job_url(key, "/retry")?)
                .json(&serde_json::json!({})),
        )
        .await
    }

    /// `show --detail`: the job with what its provider shows of it.
    pub async fn job_detail(&self, key: &str) -> anyhow::Result<serde_json::Value> {
        self.send(self.http.get(self.job_url(key, "/detail")?))
            .await
    }

    /// A retry at the provider from `stage` (U-Gen).
    pub async fn retry_from(&self, key: &str, stage: &str) -> anyhow::Result<serde_json::Value> {
        self.send(
            self.http
                .post(self.job_url(key, "/retry")?)
                .json(&serde_json::json!({ "from_stage": stage })),
        )
        .await
    }

    /// `job-pause` / `job-resume`: `action` is `pause` or `resume`. Sent as
    /// JSON, like every change.
    pub async fn job_action(&self, key: &str, action: &str) -> anyhow::Result<serde_json::Value> {
        self.send(
            self.http
                .post(self.job_url(key, &format!("/{action}"))?)
                .json(&serde_json::json!({})),
        )
        .await
    }

    pub async fn providers(&self) -> anyhow::Result<Vec<ProviderView>> {
        let v = self
            .send(self.http.get(format!("{}/v1/providers", self.base)))
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    /// The fleet's live daemons (one, on sled).
    pub async fn daemons(&self) -> anyhow::Result<Vec<switchyard_api::DaemonView>> {
        let v = self
            .send(self.http.get(format!("{}/v1/daemons", self.base)))
            .await?;
        Ok(serde_json::from_value(v)?)
    }
}

/// Percent-encodes a job key as one path segment: every byte but the
/// unreserved ones (letters, digits, `-_.~`), so `/`, `?`, `#`, `%`, spaces
/// and non-ASCII text reach the daemon as written.
pub(crate) fn enc(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads batch files, reporting every problem with file and line; what
/// can be checked without the daemon (keys, an empty batch) is, for every
/// file, before any is sent.
pub fn read_batches(files: &[PathBuf]) -> anyhow::Result<Vec<(String, batch::Batch)>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        let name = f.display().to_string();
        match batch::read(f) {
            Ok(b) => {
                let problems = batch::check_local(&b);
                if problems.is_empty() {
                    out.push((name, b));
                } else {
                    errors.extend(problems.iter().map(|p| p.render(&name)));
                }
            }
            Err(problems) => errors.extend(problems.iter().map(|p| p.render(&name))),
        }
    }
    if !errors.is_empty() {
        return Err(Invalid(anyhow!(errors.join("\n"))).into());
    }
    Ok(out)
}

pub async fn submit(
    client: &Client,
    files: &[PathBuf],
    wait: bool,
    json: bool,
) -> anyhow::Result<()> {
    let batches = read_batches(files)?;
    let mut keys = Vec::new();
    let mut answers = Vec::new();
    for (name, b) in batches {
        let n = b.jobs.len();
        match client.submit(b.jobs.clone()).await? {
            Ok(a) => {
                if !json {
                    println!(
                        "{name}: {n} jobs: {} accepted, {} already known",
                        a.accepted, a.already_known
                    );
                }
                keys.extend(b.jobs.iter().map(|j| j.key.clone()));
                answers.push(serde_json::json!({"file": name, "accepted": a.accepted, "already_known": a.already_known}));
            }
            Err(mut problems) => {
                batch::locate(&mut problems, &b);
                let lines: Vec<String> = problems.iter().map(|p| p.render(&name)).collect();
                return Err(Invalid(anyhow!(
                    "{name}: batch rejected whole ({} problem(s)):\n{}",
                    lines.len(),
                    lines.join("\n")
                ))
                .into());
            }
        }
    }
    if json && !wait {
        println!("{}", serde_json::to_string_pretty(&answers)?);
    }
    if wait {
        let jobs = wait_for(client, &keys, !json).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&jobs)?);
        } else {
            print_table(&jobs);
        }
    }
    Ok(())
}

/// Follows jobs until each is terminal or uncertain.
pub async fn wait_for(client: &Client, keys: &[String], show: bool) -> anyhow::Result<Vec<Job>> {
    let set: std::collections::HashSet<&String> = keys.iter().collect();
    let bar = show.then(|| crate::output::bar(keys.len() as u64));
    loop {
        let jobs: Vec<Job> = client
            .jobs(None, None)
            .await?
            .into_iter()
            .filter(|j| set.contains(&j.key))
            .collect();
        let done = jobs.iter().filter(|j| settled(j.state)).count();
        if let Some(b) = &bar {
            b.set_position(done as u64);
            b.set_message(crate::output::summary(&jobs));
        }
        if done == jobs.len() {
            if let Some(b) = &bar {
                b.finish();
            }
            return Ok(jobs);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
