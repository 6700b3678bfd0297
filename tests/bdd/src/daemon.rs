//! A daemon under test: started the way systemd starts it (the listening socket passed as fd 3
//! with LISTEN_FDS/LISTEN_PID, readiness over NOTIFY_SOCKET), killed when dropped. Its stderr
//! goes to a file that failures quote.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running daemon and its scratch directory (config, notify socket, log, state).
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    dir: tempfile::TempDir,
    name: String,
}

impl Daemon {
    /// Writes `config` to `<dir>/config.toml`, starts `bin args… --config <that>` on a fresh
    /// loopback socket and waits (up to `ready_within`) for READY=1.
    pub async fn start(
        bin: &Path,
        args: &[&str],
        config: &str,
        dir: tempfile::TempDir,
        ready_within: Duration,
    ) -> anyhow::Result<Daemon> {
        let name = bin
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let cfg_path = dir.path().join("config.toml");
        std::fs::write(&cfg_path, config).context("writing the daemon's config")?;
        let notify_path = dir.path().join("notify.sock");
        let notify =
            tokio::net::UnixDatagram::bind(&notify_path).context("binding the notify socket")?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a port")?;
        let base = format!("http://{}", listener.local_addr()?);
        let log = std::fs::File::create(dir.path().join("stderr.log"))?;
        let cfg_arg = cfg_path.to_string_lossy().to_string();
        let mut all_args: Vec<&str> = args.to_vec();
        all_args.extend(["--config", &cfg_arg]);
        let program = bin.to_string_lossy().to_string();
        let child = daemon_kit::testing::spawn_socket_activated(
            &program,
            &all_args,
            listener.as_raw_fd(),
            |cmd| {
                cmd.env("NOTIFY_SOCKET", &notify_path)
                    .env("RUST_LOG", "info")
                    .env_remove("LLORCH_CONFIG")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::from(log));
            },
        )
        .with_context(|| format!("spawning {program}"))?;
        drop(listener);
        let mut d = Daemon {
            child,
            base,
            dir,
            name,
        };
        d.wait_ready(&notify, ready_within).await?;
        Ok(d)
    }

    async fn wait_ready(
        &mut self,
        notify: &tokio::net::UnixDatagram,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        while start.elapsed() < limit {
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(100), notify.recv(&mut buf)).await
                && String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == "READY=1")
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before READY=1:\n{}",
                    self.name,
                    self.stderr_log()
                );
            }
        }
        bail!(
            "{} sent no READY=1 within {limit:?}:\n{}",
            self.name,
            self.stderr_log()
        )
    }

    /// The daemon's stderr so far.
    pub fn stderr_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
