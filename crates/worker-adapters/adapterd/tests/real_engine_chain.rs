//! The daemon chain with a real engine: orchestratord → worker protocol on a unix socket →
//! `llorch-adapterd --engine llamacpp` (the real binary) → llama-server (supervised, real model).

use std::process::Stdio;
use std::time::{Duration, Instant};

use pool_managerd::policy::RestartConfig;
use pool_managerd::supervisor::{EngineSpec, Phase, Supervisor};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestratord_to_adapterd_to_llama_server() {
    let e = test_fixtures::engine();
    let spec = EngineSpec {
        pool_id: "llm".into(),
        replica_id: "r0".into(),
        kind: pool_managerd::engine_kind::EngineKind::LlamaCpp,
        binary: e.llama_server.clone(),
        model: e.model.clone(),
        model_sha256: Some(e.model_sha256.clone()),
        source: None,
        port: test_fixtures::free_port(),
        slots: 1,
        ctx_per_slot: 512,
        devices: vec![],
        extra_args: vec![],
        env: Default::default(),
        restart: RestartConfig::default(),
        ready_timeout: Duration::from_secs(120),
    };
    let engine_url = spec.base_url();
    let sup = Supervisor::spawn(spec);
    assert!(
        sup.wait_for(Duration::from_secs(120), |s| s.phase == Phase::Ready)
            .await
            .is_some()
    );

    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("adapter.sock");
    let mut adapterd = std::process::Command::new(env!("CARGO_BIN_EXE_llorch-adapterd"))
        .args([
            "--engine",
            "llamacpp",
            "--engine-url",
            &engine_url,
            "--model-ref",
            "smollm2",
        ])
        .arg("--listen")
        .arg(format!("unix:{}", sock.display()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
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
key = "chain-data-key"
tenant = "t"
role = "data"

[[pools]]
id = "llm"
engine = "llamacpp"
model_ref = "smollm2"
ctx_max = 512
allow_cpu_inference = true

[[pools.replicas]]
id = "r0"
slots = 1
endpoint = "unix:{}"
"#,
            sock.display()
        ),
        "chain.toml",
    )
    .unwrap();
    let server = orchestratord::LocalServer::start(cfg, Default::default(), None)
        .await
        .unwrap();
    let base = server.base.clone();

    let body = serde_json::json!({
        "task_id": "chain", "workload": "completion", "model_ref": "smollm2", "ctx": 512,
        "prompt": "Once upon a time, in a small village by the sea,", "max_tokens": 12, "seed": 5
    });
    let events = test_fixtures::api::submit_and_read(&base, "chain-data-key", "chain", &body).await;
    let _ = adapterd.kill();
    let _ = adapterd.wait();
    sup.shutdown().await;
    let tokens = events.iter().filter(|(n, _)| n == "token").count();
    assert!(tokens >= 1, "{events:?}");
    assert_eq!(events.last().unwrap().0, "end", "{events:?}");
}
