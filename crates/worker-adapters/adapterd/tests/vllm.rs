//! `llorch-adapterd --engine vllm`: the vLLM adapter behind the worker protocol. A vLLM that
//! is not listening yet (it serves HTTP only once the engine is up) reads as Loading through
//! the daemon. And end to end with a REAL vLLM (`cargo xtask fetch-engine --engine vllm`):
//! one orchestratord with two `engine = "vllm"` pools on the same `vllm serve`, one through
//! the daemon (`endpoint` = the daemon's unix socket), one in-process (`engine_url`); a task
//! on each through the public API. Missing vLLM fails loudly unless `LLORCH_SKIP_VLLM=1`.

use std::time::Duration;

use test_fixtures::vllm::{VllmServer, install};

mod common;

fn adapterd(sock: &std::path::Path, engine_url: &str, extra: &[&str]) -> common::Kill {
    common::adapterd("vllm", "smollm2-vllm", engine_url, sock, extra)
}

#[tokio::test]
async fn vllm_engine_not_listening_is_loading() {
    common::engine_not_listening_is_loading("vllm").await;
}

#[test]
fn vllm_engine_needs_an_engine_url() {
    common::engine_needs_an_engine_url("vllm");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestratord_serves_vllm_pools_via_daemon_and_in_process() {
    let Some(i) = install("orchestratord_serves_vllm_pools_via_daemon_and_in_process") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = VllmServer::spawn(&i, &dir.path().join("vllm"), &[]);
    let ready = tokio::task::block_in_place(|| server.wait_ready(Duration::from_secs(600)));
    eprintln!("vllm serve ready after {:.1} s", ready.as_secs_f64());
    let url = server.base_url();
    let sock = dir.path().join("vllm.sock");
    let _d = adapterd(
        &sock,
        &url,
        &["--served-model-name", &i.served_model_name, "--slots", "2"],
    );
    let start = std::time::Instant::now();
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
key = "vllm-key"
tenant = "t"
role = "data"

[[pools]]
id = "vllm-daemon"
engine = "vllm"
model_ref = "smollm2-vllm"
ctx_max = 2048
allow_cpu_inference = true

[[pools.replicas]]
id = "d0"
slots = 2
endpoint = "unix:{sock}"

[[pools]]
id = "vllm-direct"
engine = "vllm"
model_ref = "smollm2-vllm-direct"
ctx_max = 2048
allow_cpu_inference = true

[[pools.replicas]]
id = "v0"
slots = 2
engine_url = "{url}"
"#,
            sock = sock.display()
        ),
        "vllm-e2e.toml",
    )
    .unwrap();
    let orch = orchestratord::LocalServer::start(cfg, Default::default(), None)
        .await
        .unwrap();
    let mut texts = Vec::new();
    for (task, model) in [
        ("via-daemon", "smollm2-vllm"),
        ("in-process", "smollm2-vllm-direct"),
    ] {
        let body = serde_json::json!({
            "task_id": task, "workload": "completion", "model_ref": model, "ctx": 1024,
            "prompt": "The capital of France is", "max_tokens": 8, "seed": 5,
            "engine": "vllm"
        });
        let events = test_fixtures::api::submit_and_read(&orch.base, "vllm-key", task, &body).await;
        let (last, data) = events.last().unwrap();
        assert_eq!(last, "end", "{task}: {events:?}");
        assert!(data.contains("\"tokens_out\":"), "{data}");
        let text: String = events
            .iter()
            .filter(|(n, _)| n == "token")
            .map(|(_, d)| {
                let v: serde_json::Value = serde_json::from_str(d).unwrap();
                v["t"].as_str().unwrap_or_default().to_string()
            })
            .collect();
        assert!(!text.is_empty(), "{task}: {events:?}");
        texts.push(text);
    }
    // Same engine, same seed and settings, one request at a time: the same text both ways.
    assert_eq!(texts[0], texts[1]);
    eprintln!("vllm via orchestratord: {:?}", texts[0]);
    server.stop();
}
