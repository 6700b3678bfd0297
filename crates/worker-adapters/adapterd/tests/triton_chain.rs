//! Triton behind orchestratord, both ways, against a real tritonserver streaming a real model
//! (SmolLM2 on llama-server, through the decoupled Python model of test-fixtures):
//! - pool `direct`: a `[pools.triton]` section, the replica's endpoint is Triton itself and
//!   orchestratord runs the Triton adapter in-process (what `llorch serve` does too);
//! - pool `daemon`: the real `llorch-adapterd --engine triton` binary on a unix socket.

use std::process::Stdio;
use std::time::{Duration, Instant};

use test_fixtures::triton::{self as tt, Children, Triton};

async fn run_task(base: &str, key: &str, id: &str, model_ref: &str) -> Vec<(String, String)> {
    let body = serde_json::json!({
        "task_id": id, "workload": "completion", "model_ref": model_ref, "ctx": 512,
        "prompt": "The capital of France is", "max_tokens": 10, "seed": 5
    });
    test_fixtures::api::submit_and_read(base, key, id, &body).await
}

fn text(events: &[(String, String)]) -> String {
    events
        .iter()
        .filter(|(n, _)| n == "token")
        .map(|(_, d)| {
            let v: serde_json::Value = serde_json::from_str(d).unwrap();
            v["t"].as_str().unwrap().to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestratord_to_triton_direct_and_through_adapterd() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("models");
    let mut procs = Children::default();
    let llama_url = tt::spawn_llama_server(&dir.path().join("llama.log"), 2, &mut procs);
    let params = tt::llm_params(&llama_url, dir.path());
    tt::write_model(
        &repo,
        "llm",
        "llm.py",
        tt::VLLM_INPUTS,
        tt::VLLM_OUTPUTS,
        &params,
    );
    tt::write_model(
        &repo,
        "ensemble",
        "llm.py",
        tt::TRTLLM_INPUTS,
        tt::TRTLLM_OUTPUTS,
        &params,
    );
    let triton = Triton::spawn(&repo, &dir.path().join("triton.log"), &mut procs);
    let ready = triton.wait_ready("ensemble", Duration::from_secs(120));
    eprintln!("tritonserver ready in {:.2} s", ready.as_secs_f64());

    let sock = dir.path().join("adapter.sock");
    let adapterd = std::process::Command::new(env!("CARGO_BIN_EXE_llorch-adapterd"))
        .args(["--engine", "triton", "--engine-url", &triton.base_url()])
        .args([
            "--triton-model",
            "ensemble",
            "--triton-inputs",
            "tensorrt-llm",
        ])
        .args(["--triton-metrics-url", &triton.metrics_url()])
        .args([
            "--model-ref",
            "smollm2-daemon",
            "--slots",
            "1",
            "--ctx-max",
            "512",
        ])
        .arg("--listen")
        .arg(format!("unix:{}", sock.display()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    procs.0.push(adapterd);
    let start = Instant::now();
    while !sock.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "adapterd did not bind its socket"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let cfg = config_schema::parse_str(
        &format!(
            r#"
[[auth.api_keys]]
key = "triton-data-key"
tenant = "t"
role = "data"

[[pools]]
id = "direct"
engine = "triton"
model_ref = "smollm2-direct"
ctx_max = 512
allow_cpu_inference = true
triton = {{ model = "llm", inputs = "vllm", metrics_url = "{metrics}" }}

[[pools.replicas]]
id = "r0"
slots = 1
endpoint = "{base}"

[[pools]]
id = "daemon"
engine = "triton"
model_ref = "smollm2-daemon"
ctx_max = 512
allow_cpu_inference = true

[[pools.replicas]]
id = "r0"
slots = 1
endpoint = "unix:{sock}"
"#,
            base = triton.base_url(),
            metrics = triton.metrics_url(),
            sock = sock.display()
        ),
        "triton.toml",
    )
    .unwrap();
    let server = orchestratord::LocalServer::start(cfg, Default::default(), None)
        .await
        .unwrap();
    let base = server.base.clone();

    let direct = run_task(&base, "triton-data-key", "t-direct", "smollm2-direct").await;
    let daemon = run_task(&base, "triton-data-key", "t-daemon", "smollm2-daemon").await;
    for ev in [&direct, &daemon] {
        assert!(
            ev.iter().filter(|(n, _)| n == "token").count() >= 2,
            "{ev:?}"
        );
        assert_eq!(ev.last().unwrap().0, "end", "{ev:?}");
    }
    // Both conventions reach the same greedy model: the same text.
    assert_eq!(text(&direct), text(&daemon));
    eprintln!("through orchestratord: {:?}", text(&direct));
}
