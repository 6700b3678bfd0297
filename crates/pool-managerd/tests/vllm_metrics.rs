//! An `engine = "vllm"` replica's `vllm:` metrics appear in the pool manager's engine families
//! (labelled engine "vllm" and vLLM's version), served here by a stand-in answering `/version`
//! and `/metrics` with lines captured from a real vLLM 0.32.0 (shared/engines/vllm-here.md);
//! the adapter's parsing of a live vLLM's `/metrics` is proven in
//! crates/worker-adapters/vllm-http/tests/real_vllm.rs.

use axum::Router;
use axum::routing::get;

const METRICS: &str = "# TYPE vllm:num_requests_running gauge\n\
vllm:num_requests_running{engine=\"0\",model_name=\"smollm2-135m\"} 1.0\n\
vllm:num_requests_waiting{engine=\"0\",model_name=\"smollm2-135m\"} 2.0\n\
vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"smollm2-135m\"} 0.00275\n\
vllm:prompt_tokens_total{engine=\"0\",model_name=\"smollm2-135m\"} 41.0\n\
vllm:generation_tokens_total{engine=\"0\",model_name=\"smollm2-135m\"} 2135.0\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vllm_metrics_fold_into_engine_families() {
    let app = Router::new()
        .route("/version", get(|| async { r#"{"version":"0.32.0"}"# }))
        .route("/metrics", get(|| async { METRICS }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_schema::parse_str(
        &format!(
            r#"
[pool_manager]
state_dir = "{state}"

[[auth.api_keys]]
key = "pm-vllm-data-key"
tenant = "t"
role = "data"

[[pools]]
id = "v"
engine = "vllm"
model_ref = "smollm2"
ctx_max = 2048
allow_cpu_inference = true

[[pools.replicas]]
id = "r0"
engine_url = "{url}"
"#,
            state = dir.path().join("state").display(),
        ),
        "v.toml",
    )
    .unwrap();
    let (pm, adapters) = pool_managerd::daemon::PoolManager::start(&cfg).unwrap();
    assert!(adapters.is_empty(), "vLLM replicas are not supervised");
    let text = pm.metrics_text().await;
    let line = |family: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{family}{{")) && l.contains("engine=\"vllm\""))
            .unwrap_or_else(|| panic!("no vLLM {family}:\n{text}"))
            .to_string()
    };
    let running = line("llorch_engine_requests_processing");
    assert!(
        running.contains("engine_version=\"vllm-0.32.0\""),
        "{running}"
    );
    assert!(
        running.contains("pool_id=\"v\"") && running.contains("replica_id=\"r0\""),
        "{running}"
    );
    assert!(running.ends_with(" 1"), "{running}");
    assert!(line("llorch_engine_requests_deferred").ends_with(" 2"));
    assert!(line("llorch_kv_cache_usage_ratio").ends_with(" 0.00275"));
    assert!(line("llorch_engine_prompt_tokens_total").ends_with(" 41"));
    assert!(line("llorch_engine_generated_tokens_total").ends_with(" 2135"));
}
