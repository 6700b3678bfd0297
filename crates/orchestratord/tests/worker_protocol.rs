//! orchestratord reaching a replica over the worker protocol on a unix socket (the path real
//! engines take through llorch-adapterd), with the adapter server running the mock engine.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mock_adapter::{MockAdapter, MockBehaviour};

// Multi-threaded: the harness blocks while waiting for READY=1 and the worker must keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_flow_over_the_unix_socket_worker_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("worker.sock");
    let mock = Arc::new(MockAdapter::new(
        "mock:tiny",
        MockBehaviour {
            slots: 2,
            tokens_per_second: 200,
            ..Default::default()
        },
    ));
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let app = adapter_api::server::router(mock.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let cfg = format!(
        r#"{auth}
[[pools]]
id = "p"
engine = "llamacpp"
model_ref = "mock:tiny"
ctx_max = 1024
allow_cpu_inference = true

[[pools.replicas]]
id = "r0"
slots = 2
endpoint = "unix:{sock}"
"#,
        auth = auth_toml(),
        sock = sock.display()
    );
    let s = Server::start(&cfg);
    assert_eq!(s.submit(DATA_KEY, task("w1", 5)).await.status(), 202);
    let evs = read_events(s.stream(DATA_KEY, "w1").await).await;
    let tokens: Vec<_> = evs.iter().filter(|(n, _)| n == "token").collect();
    assert_eq!(tokens.len(), 5);
    assert_eq!(evs.last().unwrap().0, "end");
    let h = s.pool_health().await;
    assert_eq!(
        h["replicas"][0]["engine_version"],
        mock_adapter::ENGINE_VERSION
    );

    // Cancel crosses the protocol and frees the engine's slot, not only ours.
    assert_eq!(s.submit(DATA_KEY, task("w2", 400)).await.status(), 202);
    let (_, open) = read_n_events(s.stream(DATA_KEY, "w2").await, 4).await;
    assert_eq!(mock.slots_busy(), 1);
    assert_eq!(s.cancel(DATA_KEY, "w2").await.status(), 204);
    assert_eq!(
        mock.slots_busy(),
        0,
        "engine slot still busy after cancel returned"
    );
    drop(open);

    // A worker that goes away turns the replica Unready; submissions get POOL_UNREADY.
    drop(s);
    let _ = std::fs::remove_file(&sock);
    let s = Server::start(&cfg);
    let r = s.submit(DATA_KEY, task("w3", 5)).await;
    assert_eq!(r.status(), 503);
    let env: serde_json::Value = r.json().await.unwrap();
    assert_eq!(env["code"], "POOL_UNREADY");
    assert!(r_is_retriable(&env));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        s.http.get(s.url("/readyz")).send().await.unwrap().status(),
        503
    );
}

fn r_is_retriable(env: &serde_json::Value) -> bool {
    env["retriable"] == true && env["retry_after_ms"].as_u64().is_some()
}
