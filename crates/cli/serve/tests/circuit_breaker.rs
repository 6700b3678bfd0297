//! A replica whose engine keeps crashing: restarts back off, then the circuit breaker opens,
//! and both are visible in pool health and in Prometheus (ORCH-3038, 3053).

use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_opens_the_breaker_visibly() {
    let e = test_fixtures::engine();
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.gguf");
    std::fs::write(&broken, b"GGUF but not a model").unwrap();
    let pool = test_fixtures::llamacpp_pool_toml(&e, "llm", 512, &[("cpu0", 1)])
        .replace(
            &e.model.display().to_string(),
            &broken.display().to_string(),
        )
        .replace(&format!("model_sha256 = \"{}\"\n", e.model_sha256), "");
    let toml = format!(
        "{}{pool}",
        test_fixtures::api_keys_toml(&[
            ("cb-data-key", "t", "data"),
            ("cb-control-key", "ops", "control")
        ])
    );
    let cfg = config_schema::parse_str(&toml, "cb.toml").unwrap();
    let (engines, overrides) = llorch_serve::Engines::start(&cfg).unwrap();
    assert!(
        !engines.wait_preloaded(Duration::from_secs(60)).await,
        "a broken model cannot become Ready"
    );
    let server = orchestratord::LocalServer::start(
        cfg,
        overrides,
        Some(llorch_serve::controller(engines.clone())),
    )
    .await
    .unwrap();
    let base = server.base.clone();
    let http = reqwest::Client::new();
    let start = Instant::now();
    let health = loop {
        let h: serde_json::Value = http
            .get(format!("{base}/v1/pools/llm/health"))
            .bearer_auth("cb-control-key")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if h["replicas"][0]["circuit_open"] == true {
            break h;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "breaker never opened: {h}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(health["ready"], false);
    assert_eq!(health["replicas"][0]["status"], "unready");
    assert!(
        health["replicas"][0]["restarts"].as_u64().unwrap() >= 4,
        "{health}"
    );
    assert!(
        health["replicas"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("exited"),
        "{health}"
    );
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "llorch_replica_circuit_open{engine=\"llamacpp\",pool_id=\"llm\",replica_id=\"cpu0\"} 1"
        ),
        "{metrics}"
    );
    let restarts: f64 = metrics
        .lines()
        .find(|l| l.starts_with("llorch_replica_restarts_total{"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    assert!(restarts >= 4.0);
    // The breaker holds: no restart storm while it is open.
    let before = engines.statuses().await[0].2.restarts;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(engines.statuses().await[0].2.restarts, before);
    // Submissions get a typed, retriable refusal.
    let body = serde_json::json!({"workload": "completion", "model_ref": broken.display().to_string(), "ctx": 512, "prompt": "x", "max_tokens": 1});
    let r = http
        .post(format!("{base}/v1/tasks"))
        .bearer_auth("cb-data-key")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    engines.shutdown().await;
}
