//! Real daemon processes: where the workspace's binaries are, starting them socket-activated
//! with a NOTIFY_SOCKET of ours, signals, and what `/proc` says about them (RSS, children).

use std::os::fd::RawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// `target/<profile>/<name>`: the binaries `cargo test --workspace` builds beside this test.
/// A missing binary is a failure with the command that builds it, never a skip.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/chaos-<hash> → target/debug
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the daemons first with `cargo build --bins -p orchestratord \
         -p pool-managerd -p llorch-adapterd -p llama-orch-cli` (or run `cargo test --workspace`)",
        path.display()
    );
    path
}

/// One daemon process, started the systemd way, killed (SIGKILL) when dropped.
pub struct Daemon {
    pub name: String,
    pub child: Child,
    notify: UnixDatagram,
    pub log: PathBuf,
}

/// A last say over a daemon's `Command`.
pub type Customize<'a> = Box<dyn FnOnce(&mut std::process::Command) + 'a>;

/// How to start a [`Daemon`].
pub struct Spawn<'a> {
    pub name: &'a str,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// A listening socket to pass as fd 3 with LISTEN_FDS=1 (socket activation).
    pub listen_fd: Option<RawFd>,
    pub env: Vec<(String, String)>,
    /// Where the notify socket and the log go.
    pub dir: &'a Path,
    /// Extra setup of the command (e.g. rlimits).
    pub customize: Option<Customize<'a>>,
}

impl<'a> Spawn<'a> {
    pub fn new(name: &'a str, program: PathBuf, dir: &'a Path) -> Spawn<'a> {
        Spawn {
            name,
            program,
            args: Vec::new(),
            listen_fd: None,
            env: Vec::new(),
            dir,
            customize: None,
        }
    }
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
    pub fn listen_fd(mut self, fd: RawFd) -> Self {
        self.listen_fd = Some(fd);
        self
    }
    pub fn env(mut self, k: &str, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Starts it; does not wait for READY=1 (see [`Daemon::wait_ready`]).
    pub fn start(self) -> Daemon {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let notify_path = self.dir.join(format!("notify-{}-{n}.sock", self.name));
        let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
        notify
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("notify timeout");
        let log = self.dir.join(format!("{}.log", self.name));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("daemon log");
        let configure = |cmd: &mut std::process::Command| {
            cmd.env("NOTIFY_SOCKET", &notify_path)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(out));
            for (k, v) in &self.env {
                cmd.env(k, v);
            }
            if let Some(c) = self.customize {
                c(cmd);
            }
        };
        let program = self.program.to_string_lossy().to_string();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let child = match self.listen_fd {
            Some(fd) => daemon_kit::testing::spawn_socket_activated(&program, &args, fd, |cmd| {
                configure(cmd)
            }),
            None => {
                let mut cmd = std::process::Command::new(&program);
                cmd.args(&args).env_remove("LISTEN_FDS");
                configure(&mut cmd);
                cmd.spawn()
            }
        }
        .unwrap_or_else(|e| panic!("spawn {}: {e}", self.name));
        Daemon {
            name: self.name.to_string(),
            child,
            notify,
            log,
        }
    }
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits for READY=1 on its notify socket; panics with its log when it exits or times out.
    pub fn wait_ready(&mut self, limit: Duration) -> Duration {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        while start.elapsed() < limit {
            if let Ok(n) = self.notify.recv(&mut buf)
                && String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == "READY=1")
            {
                return start.elapsed();
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "{} exited ({st}) before READY=1:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
        }
        panic!(
            "{}: no READY=1 within {limit:?}:\n{}",
            self.name,
            self.log_tail()
        );
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for the exit (SIGKILL after `limit`); returns the exit status.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            if start.elapsed() > limit {
                self.kill9();
                panic!(
                    "{} did not exit within {limit:?} of SIGTERM:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last 40 lines of its stderr.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kb(&self) -> u64 {
        rss_kb(self.pid()).unwrap_or_else(|| panic!("{} has no /proc entry", self.name))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// VmRSS of `pid` in KiB.
pub fn rss_kb(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Number of open file descriptors of `pid`.
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Pids of the live children of `parent` whose command name (`/proc/PID/comm`) is `comm`.
pub fn children_named(parent: i32, comm: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // "pid (comm) state ppid …": comm may contain spaces, so split after the last ')'.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                return false;
            };
            let name = &stat[open + 1..close];
            let mut rest = stat[close + 1..].split_whitespace();
            let state = rest.next();
            let ppid = rest.next().and_then(|p| p.parse::<i32>().ok());
            name == comm && ppid == Some(parent) && state != Some("Z")
        })
        .collect()
}

/// Raises this process's soft RLIMIT_NOFILE to the hard limit (children inherit it); returns
/// the new soft limit.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// A loopback TCP listener for socket activation and its base URL.
pub fn tcp_listener() -> (std::net::TcpListener, String) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let base = format!("http://{}", l.local_addr().expect("local addr"));
    (l, base)
}
