//! `llorch serve` mounts the pool manager's catalog API and metrics beside orchestratord's
//! API on one socket, with the same API keys; the catalog lives in `pool_manager.state_dir`.

use std::time::Duration;

const DATA: &str = "srv-data-key";
const CONTROL: &str = "srv-control-key";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_and_pool_manager_metrics_are_served_beside_the_api() {
    let e = test_fixtures::engine();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let toml = format!(
        "[pool_manager]\nstate_dir = \"{}\"\n{}{}",
        state.display(),
        test_fixtures::api_keys_toml(&[(DATA, "t", "data"), (CONTROL, "ops", "control")]),
        test_fixtures::llamacpp_pool_toml(&e, "llm", 512, &[("cpu0", 1)])
    );
    let cfg = config_schema::parse_str(&toml, "serve.toml").unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", tcp.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(llorch_serve::serve_on(
        daemon_kit::Listener::Tcp(tcp),
        cfg,
        async move {
            let _ = stop_rx.await;
        },
        move || {
            let _ = ready_tx.send(());
        },
        || {},
    ));
    tokio::time::timeout(Duration::from_secs(120), ready_rx)
        .await
        .expect("llorch serve did not become ready")
        .unwrap();
    let http = reqwest::Client::new();

    // orchestratord's API is there …
    let caps = http
        .get(format!("{base}/v1/capabilities"))
        .bearer_auth(DATA)
        .send()
        .await
        .unwrap();
    assert_eq!(caps.status(), 200);
    // … and the catalog, behind the control key.
    let body =
        serde_json::json!({"model_ref": e.model.display().to_string(), "sha256": e.model_sha256});
    let r = http
        .post(format!("{base}/v1/catalog/models"))
        .bearer_auth(DATA)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .post(format!("{base}/v1/catalog/models"))
        .bearer_auth(CONTROL)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .post(format!(
            "{base}/v1/catalog/models/sha256:{}/verify",
            e.model_sha256
        ))
        .bearer_auth(CONTROL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let entry: api_types::CatalogEntry = r.json().await.unwrap();
    assert_eq!(
        entry.verification.unwrap().result,
        api_types::VerificationResult::Passed
    );
    assert!(state.join(pool_managerd::catalog::DB_FILE).is_file());
    // Two metrics pages: orchestratord's and the pool manager's.
    let pm = http
        .get(format!("{base}{}", llorch_serve::POOL_MANAGER_METRICS_PATH))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        pm.contains("llorch_catalog_verifications_total{result=\"passed\"} 1"),
        "{pm}"
    );
    assert!(pm.contains("llorch_engine_generated_tokens_total{"), "{pm}");
    let orch = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(orch.contains("llorch_sessions_active"), "{orch}");
    assert!(!orch.contains("llorch_catalog_verifications_total"));
    // Unknown routes still get orchestratord's envelope.
    let r = http.get(format!("{base}/v1/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("llorch serve did not stop")
        .unwrap()
        .unwrap();
}
