//! Headless Chromium driven over WebDriver (chromedriver), for the
//! dashboard's tests. fantoccini speaks the W3C protocol, so a test reads
//! like what a user does (find, click, type, wait) and nothing here knows
//! Chromium's own DevTools protocol.
//!
//! Debian's `chromium` and `chromium-driver` packages provide both
//! programs (`.ci/run` installs them); where either is missing,
//! [`Browser::start`] says so and the caller skips.

use anyhow::{anyhow, Context};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The flags every run uses: no sandbox (containers), no GPU, nothing
/// fetched from the network on its own, a fresh profile.
pub const CHROMIUM_FLAGS: [&str; 6] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
];

/// Beside [`CHROMIUM_FLAGS`]: no crash reporter, whose handler processes
/// leave the process group (they start a session of their own) and would
/// outlive a failed test.
const QUIET_FLAGS: [&str; 3] = [
    "--disable-sync",
    "--disable-crash-reporter",
    "--disable-breakpad",
];

fn find(names: &[&str]) -> Option<PathBuf> {
    for n in names {
        let p = Path::new(n);
        if p.is_absolute() {
            if p.exists() {
                return Some(p.to_path_buf());
            }
            continue;
        }
        if let Some(paths) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&paths) {
                let c = dir.join(n);
                if c.exists() {
                    return Some(c);
                }
            }
        }
    }
    None
}

/// A chromedriver process (killed on drop), a Chromium session in it and
/// the session's profile directory.
pub struct Browser {
    pub client: fantoccini::Client,
    /// `None` once ended (its process group id may belong to another
    /// process by then).
    driver: Option<Child>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// `None` (after printing `skipped: chromium/chromedriver not found`)
    /// when either program is missing.
    pub async fn start() -> anyhow::Result<Option<Browser>> {
        let chromium = find(&["/usr/bin/chromium", "chromium", "chromium-browser"]);
        let driver = find(&["/usr/bin/chromedriver", "chromedriver"]);
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            println!("skipped: chromium/chromedriver not found");
            return Ok(None);
        };
        let port = crate::free_port();
        // Its own process group, which the Chromium it starts joins: a test
        // that fails before `close` still ends every browser process (a
        // killed chromedriver alone leaves its browser running).
        let mut child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", driver.display()))?;
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline || child.try_wait()?.is_some() {
                kill_group(&mut child);
                return Err(anyhow!("chromedriver did not listen on {url}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().context("creating a browser profile directory")?;
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.extend(QUIET_FLAGS.iter().map(|s| s.to_string()));
        args.push("--window-size=1400,1000".into());
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": chromium, "args": args }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = fantoccini::ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&url)
            .await;
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                kill_group(&mut child);
                return Err(anyhow!("starting a Chromium session: {e}"));
            }
        };
        Ok(Some(Browser {
            client,
            driver: Some(child),
            _profile: profile,
        }))
    }

    /// Evaluates `js` (a function body: `return ...;`) in the page.
    pub async fn eval(&self, js: &str) -> anyhow::Result<serde_json::Value> {
        self.client
            .execute(js, vec![])
            .await
            .map_err(|e| anyhow!("running script in the page: {e}"))
    }

    /// Waits (up to `limit`) until `js` returns true; the last value seen
    /// is in the error.
    pub async fn wait_for(&self, what: &str, js: &str, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.eval(js).await?;
            if v == serde_json::Value::Bool(true) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let text = self
                    .eval("return document.body ? document.body.innerText.slice(0, 3000) : ''")
                    .await
                    .unwrap_or_default();
                return Err(anyhow!(
                    "waited {} s for {what}; the page says:\n{}",
                    limit.as_secs(),
                    text.as_str().unwrap_or("")
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Writes a PNG of the window to `path` (its directory is created).
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let png = self
            .client
            .screenshot()
            .await
            .map_err(|e| anyhow!("taking a screenshot: {e}"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// A PNG of the whole page, however long: the window is grown to the
    /// page's height for the picture, then put back.
    pub async fn screenshot_page(&self, path: &Path) -> anyhow::Result<()> {
        let (w, h) = self
            .client
            .get_window_size()
            .await
            .map_err(|e| anyhow!("reading the window size: {e}"))?;
        let tall = self
            .eval("return document.documentElement.scrollHeight")
            .await?
            .as_u64()
            .unwrap_or(h);
        let grow = |h: u64| self.client.set_window_size(w as u32, h as u32);
        grow(tall.clamp(400, 6000) + 140)
            .await
            .map_err(|e| anyhow!("growing the window: {e}"))?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let shot = self.screenshot(path).await;
        grow(h)
            .await
            .map_err(|e| anyhow!("restoring the window: {e}"))?;
        shot
    }

    /// Ends the session and the driver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        if let Some(mut d) = self.driver.take() {
            kill_group(&mut d);
        }
    }
}

/// SIGKILL to the driver's process group (kill(1): this workspace forbids
/// `unsafe`), then the driver reaped.
fn kill_group(driver: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", driver.id())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = driver.kill();
    let _ = driver.wait();
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(mut d) = self.driver.take() {
            kill_group(&mut d);
        }
    }
}
