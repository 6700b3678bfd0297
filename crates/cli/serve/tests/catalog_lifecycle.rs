//! Under `llorch serve` the catalog lifecycle reaches orchestratord in-process (the same
//! registry snapshots pool-managerd serves as its feed): a Deprecated model's pool refuses
//! new tasks with MODEL_DEPRECATED and drains; a Retired one is unloaded (Unready).

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprecated_refuses_and_drains_retired_unloads() {
    let e = test_fixtures::engine();
    let dir = tempfile::tempdir().unwrap();
    let srv = Serve::start(catalog_config(&e, &dir.path().join("state"))).await;
    let base = srv.base.clone();
    let http = reqwest::Client::new();
    let model = e.model.display().to_string();
    let submit = || {
        http.post(format!("{base}/v1/tasks"))
            .bearer_auth(DATA)
            .json(&serde_json::json!({
                "workload": "completion", "model_ref": model, "ctx": 128,
                "prompt": "Once", "max_tokens": 2
            }))
            .send()
    };
    let health = || async {
        http.get(format!("{base}/v1/pools/llm/health"))
            .bearer_auth(CONTROL)
            .send()
            .await
            .unwrap()
            .json::<api_types::PoolHealth>()
            .await
            .unwrap()
    };
    let set_state = |state: &'static str| {
        http.post(format!(
            "{base}/v1/catalog/models/sha256:{}/state",
            e.model_sha256
        ))
        .bearer_auth(CONTROL)
        .json(&serde_json::json!({ "state": state }))
        .send()
    };

    // Not in the catalog: no lifecycle applies.
    assert_eq!(submit().await.unwrap().status(), 202);
    assert_eq!(register(&http, &base, &e).await.status(), 201);
    assert_eq!(verify(&http, &base, &e).await.status(), 200);
    assert_eq!(set_state("active").await.unwrap().status(), 200);
    assert_eq!(submit().await.unwrap().status(), 202);

    assert_eq!(set_state("deprecated").await.unwrap().status(), 200);
    let start = Instant::now();
    loop {
        let r = submit().await.unwrap();
        if r.status() == 410 {
            let env: api_types::ErrorEnvelope = r.json().await.unwrap();
            assert_eq!(env.code, api_types::ErrorCode::ModelDeprecated);
            assert!(env.message.contains("deprecated"), "{}", env.message);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "still accepting");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start = Instant::now();
    while !health().await.draining {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "pool not draining"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(set_state("retired").await.unwrap().status(), 200);
    let start = Instant::now();
    loop {
        let h = health().await;
        let r = &h.replicas[0];
        if r.status == api_types::ReplicaStatus::Unready {
            assert!(!h.ready);
            assert!(
                r.last_error.as_deref().unwrap().contains("retired"),
                "{r:?}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "retired pool still ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = submit().await.unwrap();
    assert_eq!(r.status(), 410);
    // Retired unloads: the pool manager stops the engine (its GPU memory is given back).
    let start = Instant::now();
    loop {
        let m = http
            .get(format!("{base}/metrics/pool-manager"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if m.lines().any(|l| {
            l.starts_with("llorch_replica_state{")
                && l.contains("state=\"stopped\"")
                && l.ends_with(" 1")
        }) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "engine of a retired model still running:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A bad lifecycle move changes nothing and says why.
    let r = set_state("active").await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(submit().await.unwrap().status(), 410);

    srv.stop().await;
}
