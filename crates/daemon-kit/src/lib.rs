//! What every llama-orch daemon (orchestratord, llorch-adapterd, pool-managerd) does the same
//! way under systemd: take the listening socket from systemd or bind one (socket activation),
//! serve an axum router on it with graceful shutdown, speak sd_notify (READY, WATCHDOG,
//! STOPPING), log to journald when the journal is stderr, and wait for SIGTERM/SIGINT.
//!
//! Knows nothing about tasks, engines or configs; must not depend on other llama-orch crates.

use std::future::Future;
use std::path::PathBuf;

use axum::Router;
use axum::serve::ListenerExt;
use sd_notify::NotifyState;

/// A stream socket to serve on: TCP or unix, passed by systemd or bound here.
pub enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
    /// `inner`, also serving `extra` routes beside whatever router it is given: how a process
    /// that embeds a server it does not build (`llorch serve` around orchestratord) adds its
    /// own APIs on the same socket. `extra` must not set a fallback.
    Mounted {
        inner: Box<Listener>,
        extra: Router,
    },
}

impl Listener {
    /// The first socket passed by the service manager (LISTEN_FDS), if any.
    pub fn from_systemd() -> anyhow::Result<Option<Listener>> {
        let mut fds = listenfd::ListenFd::from_env();
        if fds.len() == 0 {
            return Ok(None);
        }
        // listenfd refuses (with an error) to take a socket of the other family, so look first.
        const SD_LISTEN_FDS_START: std::os::fd::RawFd = 3;
        // SAFETY: getsockopt on an fd we own by the LISTEN_FDS protocol; writes one c_int.
        let domain = unsafe {
            let mut domain: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            let rc = libc::getsockopt(
                SD_LISTEN_FDS_START,
                libc::SOL_SOCKET,
                libc::SO_DOMAIN,
                (&mut domain as *mut libc::c_int).cast(),
                &mut len,
            );
            if rc == 0 { Some(domain) } else { None }
        };
        if domain == Some(libc::AF_UNIX) {
            if let Some(l) = fds.take_unix_listener(0)? {
                l.set_nonblocking(true)?;
                return Ok(Some(Listener::Unix(tokio::net::UnixListener::from_std(l)?)));
            }
        } else if let Some(l) = fds.take_tcp_listener(0)? {
            l.set_nonblocking(true)?;
            return Ok(Some(Listener::Tcp(tokio::net::TcpListener::from_std(l)?)));
        }
        anyhow::bail!("LISTEN_FDS passed a socket that is neither a TCP nor a unix stream listener")
    }

    /// Binds `unix:/abs/path.sock` (replacing a stale socket file) or `IP:port`.
    pub async fn bind(spec: &str) -> anyhow::Result<Listener> {
        if let Some(path) = spec.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            if path.exists() {
                std::fs::remove_file(&path)?;
            }
            return Ok(Listener::Unix(tokio::net::UnixListener::bind(&path)?));
        }
        Ok(Listener::Tcp(tokio::net::TcpListener::bind(spec).await?))
    }

    /// The systemd socket if one was passed, else `spec` bound here.
    pub async fn from_systemd_or_bind(spec: &str) -> anyhow::Result<Listener> {
        match Self::from_systemd()? {
            Some(l) => {
                tracing::info!("using socket passed by systemd");
                Ok(l)
            }
            None => Self::bind(spec).await,
        }
    }

    /// This listener, also serving `extra` (see [`Listener::Mounted`]).
    pub fn mount(self, extra: Router) -> Listener {
        Listener::Mounted {
            inner: Box::new(self),
            extra,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Listener::Mounted { inner, .. } => inner.describe(),
            Listener::Tcp(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            Listener::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
                .unwrap_or_else(|| "unix".into()),
        }
    }

    /// Serves `router` until `shutdown` resolves, then until open connections finish.
    pub async fn serve(
        self,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        match self {
            Listener::Mounted { inner, extra } => {
                Box::pin(inner.serve(router.merge(extra), shutdown)).await
            }
            Listener::Tcp(l) => {
                // Streams are many small writes: without TCP_NODELAY, Nagle + delayed ACK hold
                // each back by up to 40 ms (measured by llorch-bench: 5.7k → 300k tokens/s).
                let l = l.tap_io(|tcp| {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "TCP_NODELAY not set");
                    }
                });
                let (l, shutdown) = StopAccepting::staged(l, shutdown);
                axum::serve(l, router)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            Listener::Unix(l) => {
                let (l, shutdown) = StopAccepting::staged(l, shutdown);
                axum::serve(l, router)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        }
    }
}

/// How long a stopping daemon keeps serving the connections it already accepted before it
/// shuts them down gracefully. Shutting down at once would close a connection accepted just
/// before the signal, whose first request has not been read yet (hyper treats it as idle), so
/// that client's request would fail although systemd holds the socket for the next instance
/// (found by tests/chaos `orchestratord_restart_socket_activated`).
pub const FIRST_REQUEST_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// A listener that stops accepting as soon as shutdown begins, while axum's graceful
/// shutdown of the accepted connections starts only [`FIRST_REQUEST_GRACE`] later.
/// Connections that arrive meanwhile wait in the (systemd-held) socket's backlog.
struct StopAccepting<L> {
    inner: L,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl<L> StopAccepting<L> {
    /// `inner` plus the shutdown future to give axum: `shutdown`, then stop accepting, then
    /// the grace.
    fn staged(
        inner: L,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> (StopAccepting<L>, impl Future<Output = ()> + Send + 'static) {
        let (tx, stop) = tokio::sync::watch::channel(false);
        let staged = async move {
            shutdown.await;
            let _ = tx.send(true);
            tokio::time::sleep(FIRST_REQUEST_GRACE).await;
        };
        (StopAccepting { inner, stop }, staged)
    }
}

impl<L: axum::serve::Listener> axum::serve::Listener for StopAccepting<L> {
    type Io = L::Io;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        if !*self.stop.borrow() {
            tokio::select! {
                conn = self.inner.accept() => return conn,
                _ = self.stop.wait_for(|s| *s) => {}
            }
        }
        std::future::pending().await
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Logs to journald when systemd connected stderr to the journal (JOURNAL_STREAM), so that
/// structured fields stay queryable; to stderr otherwise. `RUST_LOG` filters (default info).
pub fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(layer) = tracing_journald::layer()
    {
        // tracing-journald prefixes every field with `F_` by default; operators query the
        // names SPEC §7 gives (`journalctl JOB_ID=…`, `POOL_ID=…`), so no prefix. Our field
        // names never start with `_` (journald's trusted fields), so none can be spoofed.
        tracing_subscriber::registry()
            .with(filter)
            .with(layer.with_field_prefix(None))
            .init();
        return;
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
}

/// READY=1 (no-op outside systemd).
pub fn notify_ready(status: &str) {
    let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// STOPPING=1 (no-op outside systemd).
pub fn notify_stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

/// Pings the watchdog at half its period when WATCHDOG_USEC is set. The pings come from the
/// runtime's own timer, so a wedged runtime stops them and systemd restarts the daemon.
pub fn spawn_watchdog() {
    if let Some(period) = sd_notify::watchdog_enabled() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period / 2);
            loop {
                tick.tick().await;
                let _ = sd_notify::notify(&[NotifyState::Watchdog]);
            }
        });
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}

/// Helpers for tests that run a daemon the way systemd does.
pub mod testing {
    use std::os::fd::RawFd;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command};

    /// Waits for an sd_notify datagram with a line equal to `needle` on `sock` (bound by the
    /// test and passed as NOTIFY_SOCKET); false after `limit`. `sock` needs a read timeout.
    pub fn wait_notify(
        sock: &std::os::unix::net::UnixDatagram,
        needle: &str,
        limit: std::time::Duration,
    ) -> bool {
        let start = std::time::Instant::now();
        let mut buf = [0u8; 4096];
        while start.elapsed() < limit {
            if let Ok(n) = sock.recv(&mut buf)
                && String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == needle)
            {
                return true;
            }
        }
        false
    }

    /// Spawns `program args…` with `fd` as its fd 3 and LISTEN_FDS=1, LISTEN_PID=<its pid>
    /// (set by an `exec`ing shell, so it is the daemon's own pid), like systemd's socket
    /// activation. `configure` adds env, stdio and the like.
    pub fn spawn_socket_activated(
        program: &str,
        args: &[&str],
        fd: RawFd,
        configure: impl FnOnce(&mut Command),
    ) -> std::io::Result<Child> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("LISTEN_PID=$$ exec \"$0\" \"$@\"")
            .arg(program)
            .args(args)
            .env("LISTEN_FDS", "1");
        configure(&mut cmd);
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if fd == 3 {
                    let flags = libc::fcntl(3, libc::F_GETFD);
                    libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn()
    }
}
