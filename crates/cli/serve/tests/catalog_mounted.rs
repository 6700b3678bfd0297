//! `llorch serve` mounts the pool manager's catalog API and metrics beside orchestratord's
//! API on one socket, with the same API keys; the catalog lives in `pool_manager.state_dir`.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_and_pool_manager_metrics_are_served_beside_the_api() {
    let e = test_fixtures::engine();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let srv = Serve::start(catalog_config(&e, &state)).await;
    let base = srv.base.clone();
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
    assert_eq!(register(&http, &base, &e).await.status(), 201);
    let r = verify(&http, &base, &e).await;
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

    srv.stop().await;
}
