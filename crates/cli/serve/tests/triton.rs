//! `llorch serve` with a Triton pool: the replica's endpoint is a real tritonserver, reached by
//! the in-process Triton adapter (`[pools.triton]`); text cut inside multi-byte characters by
//! the engine reaches the client whole, and the pool manager's metrics page carries Triton's
//! engine families.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use test_fixtures::triton::{self as tt, Children};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llorch_serve_streams_from_triton() {
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Children::default();
    let triton = tt::serve_bytes_model(dir.path(), &mut procs);
    let toml = format!(
        r#"[pool_manager]
state_dir = "{state}"
{keys}
[[pools]]
id = "echo"
engine = "triton"
model_ref = "triton-bytes"
ctx_max = 512
allow_cpu_inference = true
triton = {{ model = "bytes", inputs = "tensorrt_llm", metrics_url = "{metrics}" }}

[[pools.replicas]]
id = "r0"
slots = 2
endpoint = "{base}"
"#,
        state = dir.path().join("state").display(),
        keys = test_fixtures::api_keys_toml(&[(DATA, "t", "data")]),
        metrics = triton.metrics_url(),
        base = triton.base_url(),
    );
    let srv = Serve::start(config_schema::parse_str(&toml, "serve.toml").unwrap()).await;
    let http = reqwest::Client::new();
    let prompt = "café 🦀 naïve 日本語 €𝄞";
    let body = serde_json::json!({
        "task_id": "tri", "workload": "completion", "model_ref": "triton-bytes", "ctx": 256,
        "prompt": prompt, "max_tokens": 64, "seed": 3
    });
    let r = http
        .post(format!("{}/v1/tasks", srv.base))
        .bearer_auth(DATA)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
    use eventsource_stream::Eventsource;
    let events: Vec<(String, String)> = tokio::time::timeout(
        Duration::from_secs(60),
        http.get(format!("{}/v1/tasks/tri/stream", srv.base))
            .bearer_auth(DATA)
            .send()
            .await
            .unwrap()
            .bytes_stream()
            .eventsource()
            .map(|e| {
                let e = e.unwrap();
                (e.event, e.data)
            })
            .collect(),
    )
    .await
    .unwrap();
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "token")
        .map(|(_, d)| {
            let v: serde_json::Value = serde_json::from_str(d).unwrap();
            v["t"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(text, prompt, "{events:?}");
    assert_eq!(events.last().unwrap().0, "end", "{events:?}");
    let pm = http
        .get(format!(
            "{}{}",
            srv.base,
            llorch_serve::POOL_MANAGER_METRICS_PATH
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        pm.contains("engine=\"triton\"") && pm.contains("engine_version=\"triton-2.51.0\""),
        "{pm}"
    );
    srv.stop().await;
}
