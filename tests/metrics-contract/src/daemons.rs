//! Starts the real daemon binaries the way systemd does (socket activation on a loopback port
//! the test binds, READY=1 over a NOTIFY_SOCKET it owns), from outside their packages.
//!
//! `env!("CARGO_BIN_EXE_…")` exists only inside a binary's own package, so [`binary`] builds
//! the binaries with the same cargo, profile and target directory as this test (a no-op when
//! `cargo test --workspace` has built them already) and returns their path.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The packages whose binaries the contract test runs.
const PACKAGES: [&str; 2] = ["orchestratord", "pool-managerd"];

/// `target/<profile>` of the running test executable (`target/<profile>/deps/<test>`).
fn profile_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .ok_or_else(|| format!("{} is not under target/<profile>/deps", exe.display()))
}

fn build_binaries() -> Result<PathBuf, String> {
    let dir = profile_dir()?;
    let target = dir
        .parent()
        .ok_or("profile dir has no parent")?
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--bins"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    for p in PACKAGES {
        cmd.args(["-p", p]);
    }
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .map_err(|e| format!("running cargo build: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build of {PACKAGES:?} failed: {status}"));
    }
    Ok(dir)
}

/// Path of a binary of orchestratord or pool-managerd, built if needed (once per test run).
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(build_binaries)
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join(name);
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// A running daemon; killed when dropped.
pub struct Daemon {
    pub name: &'static str,
    pub child: Child,
    pub base: String,
    pub dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `binary args… --config <dir>/config.toml` socket-activated and waits (up to
    /// `ready_within`) for READY=1. `env` is added to its environment.
    pub fn start(
        name: &'static str,
        args: &[&str],
        config: &str,
        env: &[(&str, &str)],
        ready_within: Duration,
    ) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("config.toml");
        std::fs::write(&cfg, config).expect("write config");
        let notify_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
        notify
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("socket timeout");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let log = std::fs::File::create(dir.path().join("stderr.log")).expect("log file");
        let cfg_arg = cfg.display().to_string();
        let mut all_args: Vec<&str> = args.to_vec();
        all_args.extend(["--config", &cfg_arg]);
        let bin = binary(name);
        let child = daemon_kit::testing::spawn_socket_activated(
            &bin.display().to_string(),
            &all_args,
            listener.as_raw_fd(),
            |cmd| {
                cmd.env("NOTIFY_SOCKET", &notify_path)
                    .env("RUST_LOG", "info")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::from(log));
                for (k, v) in env {
                    cmd.env(k, v);
                }
            },
        )
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        drop(listener);
        let d = Daemon {
            name,
            child,
            base,
            dir,
        };
        if !daemon_kit::testing::wait_notify(&notify, "READY=1", ready_within) {
            panic!(
                "no READY=1 from {name} within {ready_within:?}; its log:\n{}",
                d.log()
            );
        }
        d
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM first so that pool-managerd stops its engines; then make sure.
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
