//! A real NVIDIA Triton Inference Server for tests: `tritonserver` 2.51.0 from the
//! `nvidia-pytriton` wheel, provisioned by `cargo xtask fetch-engine` into a venv recorded in
//! `<cache>/llama-orch/triton.json`, run directly (CPU) on a model repository of decoupled Python
//! models written by the test. The models live in `crates/test-fixtures/triton/`:
//! `llm.py` streams a real model from a llama-server (either input convention), `failing.py`
//! errors mid-stream, `bytes.py` cuts multi-byte text at byte boundaries.
//!
//! A missing install panics with the command that provides it: never a silent skip.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct TritonInstall {
    pub venv: PathBuf,
    pub server: PathBuf,
    pub backends: PathBuf,
}

/// The provisioned tritonserver (env `LLORCH_TRITON_RECORD` overrides the record's path).
pub fn install() -> TritonInstall {
    let record = std::env::var_os("LLORCH_TRITON_RECORD")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::cache_dir().join("triton.json"));
    let v: serde_json::Value = std::fs::read_to_string(&record)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_else(|| {
            panic!(
                "{} missing: real-Triton tests need tritonserver; run `cargo xtask fetch-engine` \
                 (or `cargo xtask fetch-engine --engine triton`) first",
                record.display()
            )
        });
    let path = |k: &str| PathBuf::from(v[k].as_str().unwrap_or_default());
    let i = TritonInstall {
        venv: path("venv"),
        server: path("tritonserver"),
        backends: path("backends"),
    };
    assert!(
        i.server.is_file() && i.venv.join("bin/python").exists(),
        "{} is missing: run `cargo xtask fetch-engine --engine triton`",
        i.server.display()
    );
    i
}

/// Where the test models' `model.py` files are.
pub fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("triton")
}

/// Child processes stopped (SIGTERM, then SIGKILL after 10 s) when this is dropped, also
/// when a test panics.
#[derive(Default)]
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // SIGTERM first: tritonserver then stops its Python stubs and frees /dev/shm.
            let _ = Command::new("kill").arg(c.id().to_string()).status();
        }
        for c in &mut self.0 {
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Inputs of a vLLM-backend-style model (`sampling_parameters` JSON string).
pub const VLLM_INPUTS: &str = r#"
  { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "stream" data_type: TYPE_BOOL dims: [ 1 ] optional: true },
  { name: "sampling_parameters" data_type: TYPE_STRING dims: [ 1 ] optional: true },
  { name: "exclude_input_in_output" data_type: TYPE_BOOL dims: [ 1 ] optional: true },
  { name: "return_finish_reason" data_type: TYPE_BOOL dims: [ 1 ] optional: true },
  { name: "return_num_input_tokens" data_type: TYPE_BOOL dims: [ 1 ] optional: true },
  { name: "return_num_output_tokens" data_type: TYPE_BOOL dims: [ 1 ] optional: true }"#;

/// Inputs of a TensorRT-LLM-ensemble-style model (one input per parameter).
pub const TRTLLM_INPUTS: &str = r#"
  { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "max_tokens" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "seed" data_type: TYPE_UINT64 dims: [ 1 ] optional: true },
  { name: "temperature" data_type: TYPE_FP32 dims: [ 1 ] optional: true },
  { name: "top_k" data_type: TYPE_INT32 dims: [ 1 ] optional: true },
  { name: "top_p" data_type: TYPE_FP32 dims: [ 1 ] optional: true },
  { name: "repetition_penalty" data_type: TYPE_FP32 dims: [ 1 ] optional: true },
  { name: "stop_words" data_type: TYPE_STRING dims: [ -1 ] optional: true },
  { name: "stream" data_type: TYPE_BOOL dims: [ 1 ] optional: true },
  { name: "exclude_input_in_output" data_type: TYPE_BOOL dims: [ 1 ] optional: true },
  { name: "return_num_input_tokens" data_type: TYPE_BOOL dims: [ 1 ] optional: true },
  { name: "return_num_output_tokens" data_type: TYPE_BOOL dims: [ 1 ] optional: true }"#;

pub const TEXT_OUTPUT: &str = r#"
  { name: "text_output" data_type: TYPE_STRING dims: [ 1 ] }"#;

/// Outputs of the vLLM-style `llm.py` model.
pub const VLLM_OUTPUTS: &str = r#"
  { name: "text_output" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "finish_reason" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "num_input_tokens" data_type: TYPE_UINT32 dims: [ 1 ] },
  { name: "num_output_tokens" data_type: TYPE_UINT32 dims: [ 1 ] }"#;

/// Outputs of the TensorRT-LLM-style `llm.py` model.
pub const TRTLLM_OUTPUTS: &str = r#"
  { name: "text_output" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "num_input_tokens" data_type: TYPE_UINT32 dims: [ 1 ] },
  { name: "num_output_tokens" data_type: TYPE_UINT32 dims: [ 1 ] }"#;

/// The `parameters` of an `llm.py` model: the llama-server it streams from, and the directory
/// where it writes `cancelled-<request id>` when Triton reports a request cancelled.
pub fn llm_params(llama_url: &str, marker_dir: &Path) -> String {
    format!(
        r#"parameters {{ key: "llama_url" value: {{ string_value: "{llama_url}" }} }}
parameters {{ key: "marker_dir" value: {{ string_value: "{}" }} }}"#,
        marker_dir.display()
    )
}

/// Writes the `llm` model: `llm.py` with the vLLM-backend inputs, streaming from the
/// llama-server at `llama_url` and marking cancelled requests in `marker_dir`.
pub fn write_llm_model(repo: &Path, llama_url: &str, marker_dir: &Path) {
    write_model(
        repo,
        "llm",
        "llm.py",
        VLLM_INPUTS,
        VLLM_OUTPUTS,
        &llm_params(llama_url, marker_dir),
    );
}

/// Writes `repo/<name>/config.pbtxt` (decoupled Python backend, CPU) and
/// `repo/<name>/1/model.py` (a copy of `models_dir()/<py>`).
pub fn write_model(repo: &Path, name: &str, py: &str, inputs: &str, outputs: &str, params: &str) {
    let dir = repo.join(name);
    std::fs::create_dir_all(dir.join("1")).expect("model dir");
    std::fs::copy(models_dir().join(py), dir.join("1/model.py")).expect("copy model.py");
    let config = format!(
        r#"name: "{name}"
backend: "python"
max_batch_size: 0
model_transaction_policy {{ decoupled: true }}
input [{inputs}
]
output [{outputs}
]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
{params}
"#
    );
    std::fs::write(dir.join("config.pbtxt"), config).expect("config.pbtxt");
}

/// Status code of `GET http://127.0.0.1:{port}{path}`, None when nothing answers.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Last lines of a log file, for failure messages.
pub fn tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A started tritonserver (its process is in the [`Children`] passed to [`Triton::spawn`]).
#[derive(Debug, Clone)]
pub struct Triton {
    pub http_port: u16,
    pub metrics_port: u16,
    pub log: PathBuf,
    pub started: Instant,
}

impl Triton {
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics_port)
    }

    /// Starts tritonserver on `repo` on free loopback ports (gRPC off), logging to
    /// `log`; returns at once (poll readiness yourself, or use [`Triton::wait_ready`]).
    pub fn spawn(repo: &Path, log: &Path, children: &mut Children) -> Triton {
        let install = install();
        let (http, grpc, metrics) = (crate::free_port(), crate::free_port(), crate::free_port());
        let out = std::fs::File::create(log).expect("triton log");
        // The Python backend stub takes its interpreter (and numpy) from the first python3 on
        // PATH: the venv's.
        let path = format!(
            "{}:{}",
            install.venv.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let started = Instant::now();
        let child = Command::new(&install.server)
            .arg(format!("--model-repository={}", repo.display()))
            .arg(format!(
                "--backend-directory={}",
                install.backends.display()
            ))
            .arg("--http-address=127.0.0.1")
            .arg(format!("--http-port={http}"))
            .arg(format!("--grpc-port={grpc}"))
            .arg("--allow-grpc=false")
            .arg(format!("--metrics-port={metrics}"))
            // Idle, it still takes ~4-5 s to stop its Python stubs; do not wait the default 30 s.
            .arg("--exit-timeout-secs=5")
            .env("PATH", path)
            .stdout(Stdio::from(out.try_clone().expect("log fd")))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("spawn tritonserver");
        children.0.push(child);
        Triton {
            http_port: http,
            metrics_port: metrics,
            log: log.to_path_buf(),
            started,
        }
    }

    /// Waits until `/v2/models/{model}/ready` answers 200; panics with the log's tail after
    /// `timeout`. Returns the time from spawn to ready.
    pub fn wait_ready(&self, model: &str, timeout: Duration) -> Duration {
        loop {
            if http_status(self.http_port, &format!("/v2/models/{model}/ready")) == Some(200) {
                return self.started.elapsed();
            }
            assert!(
                self.started.elapsed() < timeout,
                "tritonserver not ready in {timeout:?}:\n{}",
                tail(&self.log)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A tritonserver serving only the `bytes` model (it echoes its prompt, cut at byte
/// boundaries inside characters), from a repository under `dir`; returns once it is ready.
pub fn serve_bytes_model(dir: &Path, children: &mut Children) -> Triton {
    let repo = dir.join("models");
    write_model(&repo, "bytes", "bytes.py", TRTLLM_INPUTS, TEXT_OUTPUT, "");
    let triton = Triton::spawn(&repo, &dir.join("triton.log"), children);
    triton.wait_ready("bytes", Duration::from_secs(120));
    triton
}

/// Starts the provisioned llama-server with the test model on a free port and waits for its
/// `/health`; returns its base URL.
pub fn spawn_llama_server(log: &Path, slots: u32, children: &mut Children) -> String {
    let e = crate::engine();
    let port = crate::free_port();
    let out = std::fs::File::create(log).expect("llama log");
    let child = Command::new(&e.llama_server)
        .arg("-m")
        .arg(&e.model)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["-np", &slots.to_string(), "-c", &(1024 * slots).to_string()])
        .stdout(Stdio::from(out.try_clone().expect("log fd")))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("spawn llama-server");
    children.0.push(child);
    let t = Instant::now();
    while http_status(port, "/health") != Some(200) {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "llama-server not healthy in 120 s:\n{}",
            tail(log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    format!("http://127.0.0.1:{port}")
}
