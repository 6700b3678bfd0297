//! One orchestratord process under test: its config (a mock pool, loopback listener), the
//! process itself, its RSS read from `/proc/PID/status`, and its metrics.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub const DATA_KEY: &str = "soak-data-key-0001";
pub const TENANTS: usize = 4;

/// The data key of tenant `i` (keys are `soak-data-key-000<i+1>`).
pub fn data_key(i: usize) -> String {
    format!("soak-data-key-{:04}", i % TENANTS + 1)
}

/// Settings of the pool and the replay store the run uses.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    pub slots: u32,
    pub queue_capacity: u32,
    /// Mock tokens per second per stream; 0 = full speed.
    pub tokens_per_second: u32,
    /// `server.task_log_budget_bytes`; `None` keeps the default (derived).
    pub log_budget: Option<u64>,
    pub retention_ms: Option<u64>,
    pub ctx_max: u32,
}

pub fn config_toml(p: &PoolSpec) -> String {
    let mut keys: Vec<(String, String)> = (0..TENANTS)
        .map(|i| (data_key(i), format!("tenant-{i}")))
        .collect();
    keys.sort();
    let keys: Vec<(&str, &str, &str)> = keys
        .iter()
        .map(|(k, t)| (k.as_str(), t.as_str(), "data"))
        .collect();
    let mut server = String::from("[server]\nsse_keepalive_ms = 15000\n");
    if let Some(b) = p.log_budget {
        server.push_str(&format!("task_log_budget_bytes = {b}\n"));
    }
    if let Some(r) = p.retention_ms {
        server.push_str(&format!("task_retention_ms = {r}\n"));
    }
    format!(
        r#"{server}
{auth}
[timeouts]
queue_ms = 3600000

[[pools]]
id = "p"
engine = "mock"
model_ref = "mock:tiny"
ctx_max = {ctx}
allow_cpu_inference = true
queue = {{ capacity = {cap} }}

[[pools.replicas]]
id = "r0"
slots = {slots}
mock = {{ tokens_per_second = {tps} }}
"#,
        auth = test_fixtures::api_keys_toml(&keys),
        ctx = p.ctx_max,
        cap = p.queue_capacity,
        slots = p.slots,
        tps = p.tokens_per_second,
    )
}

pub struct Orchestratord {
    pub child: Child,
    pub base: String,
    pub pid: u32,
    _dir: tempfile::TempDir,
}

impl Orchestratord {
    /// Starts `bin` with the config for `pool` on a free loopback port; returns once
    /// `/readyz` answers 200.
    pub async fn start(bin: &Path, pool: &PoolSpec, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let cfg = dir.path().join("orch.toml");
        std::fs::write(&cfg, config_toml(pool))?;
        let port = test_fixtures::free_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(&cfg)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        // The server dies with the soak, however the soak ends.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        let mut me = Orchestratord {
            child,
            base,
            pid,
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{}/readyz", me.base)).send().await
                && r.status().is_success()
            {
                return Ok(me);
            }
            if let Ok(Some(st)) = me.child.try_wait() {
                bail!("orchestratord exited before it was ready: {st}");
            }
            if Instant::now() > until {
                bail!("orchestratord not ready within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Resident set size in bytes (VmRSS).
    pub fn rss(&self) -> anyhow::Result<u64> {
        rss_of(self.pid)
    }

    /// The sum of a metric family's samples (all label sets), from `/metrics`.
    pub async fn metric(&self, http: &reqwest::Client, name: &str) -> anyhow::Result<f64> {
        let text = http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }
}

impl Drop for Orchestratord {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn rss_of(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    Ok(kb * 1024)
}

/// Raises this process's open-file limit to its hard limit (children inherit it).
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        r.rlim_cur
    }
}
