//! A `[pools.triton]` replica's `nv_` metrics, scraped from a real tritonserver, appear in the
//! pool manager's engine families (labelled engine "triton" and Triton's version).

use test_fixtures::triton::{self as tt, Children};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triton_pending_requests_fold_into_engine_families() {
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Children::default();
    let triton = tt::serve_bytes_model(dir.path(), &mut procs);
    let cfg = config_schema::parse_str(
        &format!(
            r#"
[pool_manager]
state_dir = "{state}"

[[auth.api_keys]]
key = "pm-triton-data-key"
tenant = "t"
role = "data"

[[pools]]
id = "trt"
engine = "triton"
model_ref = "bytes"
ctx_max = 512
allow_cpu_inference = true
triton = {{ model = "bytes", inputs = "tensorrt_llm", metrics_url = "{metrics}" }}

[[pools.replicas]]
id = "r0"
endpoint = "{base}"
"#,
            state = dir.path().join("state").display(),
            metrics = triton.metrics_url(),
            base = triton.base_url(),
        ),
        "t.toml",
    )
    .unwrap();
    let (pm, adapters) = pool_managerd::daemon::PoolManager::start(&cfg).unwrap();
    assert!(adapters.is_empty(), "Triton replicas are not supervised");
    let text = pm.metrics_text().await;
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("llorch_engine_requests_deferred{") && l.contains("engine=\"triton\"")
        })
        .unwrap_or_else(|| panic!("no Triton engine family:\n{text}"));
    assert!(line.contains("engine_version=\"triton-2.51.0\""), "{line}");
    assert!(
        line.contains("pool_id=\"trt\"") && line.contains("replica_id=\"r0\""),
        "{line}"
    );
    assert!(line.ends_with(" 0"), "{line}");
}
