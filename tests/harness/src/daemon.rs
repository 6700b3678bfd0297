//! One product binary running as a child process: its config in a temporary directory, its
//! output in a log file there (quoted in failures), bound to a free loopback port, stopped with
//! SIGTERM (and killed if it does not stop) — only this child, by its pid.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{HarnessError, Result};

pub struct Daemon {
    what: String,
    child: Child,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |err| HarnessError::Io { what, err }
}

impl Daemon {
    /// `llorch serve --config <toml> --listen 127.0.0.1:<free port>`.
    pub fn llorch_serve(config_toml: &str) -> Result<Daemon> {
        let bin = crate::binary("llorch")?;
        Daemon::spawn("llorch serve", &bin, &["serve"], config_toml)
    }

    /// `orchestratord --config <toml> --listen 127.0.0.1:<free port>`.
    pub fn orchestratord(config_toml: &str) -> Result<Daemon> {
        let bin = crate::binary("orchestratord")?;
        Daemon::spawn("orchestratord", &bin, &[], config_toml)
    }

    fn spawn(what: &str, bin: &Path, args: &[&str], config_toml: &str) -> Result<Daemon> {
        let dir = tempfile::tempdir().map_err(io("creating a temporary directory"))?;
        let cfg = dir.path().join("config.toml");
        std::fs::write(&cfg, config_toml).map_err(io(format!("writing {}", cfg.display())))?;
        let log_path = dir.path().join("daemon.log");
        let log = std::fs::File::create(&log_path).map_err(io("creating the daemon log"))?;
        let log2 = log.try_clone().map_err(io("cloning the daemon log"))?;
        let port = test_fixtures::free_port();
        let child = Command::new(bin)
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(io(format!("starting {}", bin.display())))?;
        Ok(Daemon {
            what: what.into(),
            child,
            dir,
            base: format!("http://127.0.0.1:{port}"),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The daemon's own output so far (last 40 lines), for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("\n--- {} log (tail) ---\n{tail}", self.what)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    /// Waits until `GET /readyz` answers 200 (every replica preloaded and self-tested).
    pub async fn wait_ready(&mut self, within: Duration) -> Result<()> {
        let http = reqwest::Client::new();
        let start = Instant::now();
        loop {
            let answer = http.get(self.url("/readyz")).send().await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(HarnessError::Exited {
                    what: self.what.clone(),
                    status: status.to_string(),
                    log: self.log_tail(),
                });
            }
            if start.elapsed() > within {
                return Err(HarnessError::Timeout {
                    what: format!("{} ready", self.what),
                    secs: within.as_secs(),
                    log: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERM, then waits up to 30 s for a clean exit; Ok(true) when it exited successfully.
    pub async fn stop(mut self) -> Result<bool> {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the pid of our own child, which we have not reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let start = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status.success()),
                Ok(None) if start.elapsed() < Duration::from_secs(30) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(None) => {
                    return Err(HarnessError::Timeout {
                        what: format!("{} exit after SIGTERM", self.what),
                        secs: 30,
                        log: self.log_tail(),
                    });
                }
                Err(err) => return Err(io("waiting for the daemon")(err)),
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A test that failed half-way: do not leave our child (and its engines) running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
