//! orchestratord following pool-managerd's replica registry through the real feed (HTTP + SSE
//! over a unix socket), with pool-managerd supervising a real llama-server.
//!
//! orchestratord's replica here is the in-process mock engine with the same pool and replica
//! id as the supervised engine: its adapter probe always answers Ready, so every Unready seen
//! below can only have come from the registry feed.

mod common;

use std::time::{Duration, Instant};

use common::{CONTROL, DATA, register, verify};

use pool_managerd::daemon::PoolManager;

fn keys() -> String {
    test_fixtures::api_keys_toml(&[(DATA, "t", "data"), (CONTROL, "ops", "control")])
}

/// orchestratord's side: pool `llm`, replica `cpu0` on the mock, following `registry`.
fn orch_config(registry: &str) -> config_schema::Config {
    let toml = format!(
        r#"
[pool_manager]
registry_url = "{registry}"
{keys}
[[pools]]
id = "llm"
engine = "mock"
model_ref = "mock:tiny"
ctx_max = 512
allow_cpu_inference = true

[[pools.replicas]]
id = "cpu0"
slots = 2
"#,
        keys = keys()
    );
    config_schema::parse_str(&toml, "orch.toml").unwrap()
}

/// pool-managerd serving its router (registry, feed, catalog) on a unix socket until the
/// returned sender fires.
async fn serve_pool_manager(
    pm: &PoolManager,
    sock: &std::path::Path,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let listener = daemon_kit::Listener::Unix(tokio::net::UnixListener::bind(sock).unwrap());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let router = pm.router(stop_rx.clone());
    let task = tokio::spawn(async move {
        let mut stop = stop_rx;
        let _ = listener
            .serve(router, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
    });
    (stop_tx, task)
}

async fn submit(http: &reqwest::Client, base: &str) -> reqwest::Response {
    http.post(format!("{base}/v1/tasks"))
        .bearer_auth(DATA)
        .json(&serde_json::json!({
            "workload": "completion", "model_ref": "mock:tiny", "ctx": 64,
            "prompt": "hi", "max_tokens": 4
        }))
        .send()
        .await
        .unwrap()
}

async fn replica(http: &reqwest::Client, base: &str) -> api_types::ReplicaSnapshot {
    let h: api_types::PoolHealth = http
        .get(format!("{base}/v1/pools/llm/health"))
        .bearer_auth(CONTROL)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    h.replicas.into_iter().next().unwrap()
}

async fn draining(http: &reqwest::Client, base: &str) -> bool {
    let h: api_types::PoolHealth = http
        .get(format!("{base}/v1/pools/llm/health"))
        .bearer_auth(CONTROL)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    h.draining
}

async fn feed_up(http: &reqwest::Client, base: &str) -> bool {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines().any(|l| l == "llorch_registry_feed_up 1")
}

/// Polls `f` every 20 ms until it holds; fails after `limit`.
async fn until<F, Fut>(what: &str, limit: Duration, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

async fn set_state(http: &reqwest::Client, pm: &str, digest: &str, state: &str) {
    let r = http
        .post(format!("{pm}/v1/catalog/models/sha256:{digest}/state"))
        .bearer_auth(CONTROL)
        .json(&serde_json::json!({ "state": state }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{state}: {}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_feed_drives_placement_and_catalog_lifecycle() {
    let e = test_fixtures::engine();
    let dir = tempfile::tempdir().unwrap();
    let pm_toml = format!(
        "[pool_manager]\nstate_dir = \"{}\"\n{}{}",
        dir.path().join("state").display(),
        keys(),
        test_fixtures::llamacpp_pool_toml(&e, "llm", 512, &[("cpu0", 1)])
    );
    let pm_cfg = config_schema::parse_str(&pm_toml, "pm.toml").unwrap();
    let (pm, _adapters) = PoolManager::start(&pm_cfg).unwrap();
    assert!(pm.engines.wait_preloaded(Duration::from_secs(120)).await);
    let sock = dir.path().join("pm.sock");
    let (pm_stop, pm_task) = serve_pool_manager(&pm, &sock).await;
    // A client for pool-managerd's socket (its catalog API), and one for orchestratord.
    let pm_http = reqwest::Client::builder()
        .unix_socket(sock.clone())
        .build()
        .unwrap();
    let pm_base = "http://pool-managerd";
    let http = reqwest::Client::new();

    let orch = orchestratord::LocalServer::start(
        orch_config(&format!("unix:{}", sock.display())),
        Default::default(),
        None,
    )
    .await
    .unwrap();
    let base = orch.base.clone();

    // Following: the engine build is the real llama-server's, from the registry (the mock
    // adapter would report `mock-…`).
    until(
        "feed up and engine version from the registry",
        Duration::from_secs(10),
        || async {
            feed_up(&http, &base).await
                && replica(&http, &base)
                    .await
                    .engine_version
                    .starts_with("llamacpp-")
        },
    )
    .await;
    assert_eq!(submit(&http, &base).await.status(), 202);

    // Kill the engine: the registry says Unready and orchestratord stops placing there well
    // before its next adapter probe (which, on the mock, would never notice anyway).
    let records: Vec<api_types::ReplicaRecord> = pm_http
        .get(format!("{pm_base}/v1/replicas"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pid = records[0].pid.unwrap();
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let took = until("replica unready", Duration::from_secs(5), || async {
        replica(&http, &base).await.status == api_types::ReplicaStatus::Unready
    })
    .await;
    assert!(
        took < Duration::from_secs(1),
        "took {took:?}: not faster than the 1 s probe"
    );
    let r = submit(&http, &base).await;
    assert_eq!(r.status(), 503);
    let env: api_types::ErrorEnvelope = r.json().await.unwrap();
    assert_eq!(env.code, api_types::ErrorCode::PoolUnready);
    let snap = replica(&http, &base).await;
    assert!(
        snap.last_error
            .as_deref()
            .is_some_and(|e| e.contains("pool-managerd")),
        "{snap:?}"
    );

    // The supervisor restarts it; the registry says Ready, orchestratord probes at once and
    // takes the restart count over.
    until("replica ready again", Duration::from_secs(60), || async {
        let r = replica(&http, &base).await;
        r.status == api_types::ReplicaStatus::Ready && r.restarts == 1
    })
    .await;
    assert_eq!(submit(&http, &base).await.status(), 202);

    // Catalog lifecycle through pool-managerd's API.
    assert_eq!(register(&pm_http, pm_base, &e).await.status(), 201);
    assert_eq!(verify(&pm_http, pm_base, &e).await.status(), 200);
    set_state(&pm_http, pm_base, &e.model_sha256, "active").await;
    assert_eq!(submit(&http, &base).await.status(), 202);

    // Deprecated: new tasks get MODEL_DEPRECATED (410) and the pool drains.
    set_state(&pm_http, pm_base, &e.model_sha256, "deprecated").await;
    until("MODEL_DEPRECATED", Duration::from_secs(5), || async {
        submit(&http, &base).await.status() == 410
    })
    .await;
    let env: api_types::ErrorEnvelope = submit(&http, &base).await.json().await.unwrap();
    assert_eq!(env.code, api_types::ErrorCode::ModelDeprecated);
    until("pool draining", Duration::from_secs(5), || async {
        draining(&http, &base).await
    })
    .await;

    // Active again: the drain the catalog caused is lifted.
    set_state(&pm_http, pm_base, &e.model_sha256, "active").await;
    until("accepting again", Duration::from_secs(5), || async {
        submit(&http, &base).await.status() == 202
    })
    .await;
    assert!(!draining(&http, &base).await);

    // Retired: refused, the replica is unloaded (Unready) and pool-managerd stops its engine.
    set_state(&pm_http, pm_base, &e.model_sha256, "deprecated").await;
    set_state(&pm_http, pm_base, &e.model_sha256, "retired").await;
    until("retired: unready", Duration::from_secs(5), || async {
        replica(&http, &base).await.status == api_types::ReplicaStatus::Unready
    })
    .await;
    let env: api_types::ErrorEnvelope = submit(&http, &base).await.json().await.unwrap();
    assert_eq!(env.code, api_types::ErrorCode::ModelDeprecated);
    // The probe (every second) does not bring it back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let snap = replica(&http, &base).await;
    assert_eq!(snap.status, api_types::ReplicaStatus::Unready, "{snap:?}");
    assert!(snap.last_error.unwrap().contains("retired"));

    // pool-managerd goes away: the feed is down, exported as such.
    let _ = pm_stop.send(true);
    pm_task.await.unwrap();
    until("feed down", Duration::from_secs(5), || async {
        !feed_up(&http, &base).await
    })
    .await;
    orch.stop().await.unwrap();
    pm.engines.shutdown().await;
}

/// Without pool-managerd orchestratord serves on its probes; when pool-managerd appears it
/// connects (backoff ≤ 5 s), and when it goes away it keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_down_falls_back_to_probes_and_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("pm.sock");
    let orch = orchestratord::LocalServer::start(
        orch_config(&format!("unix:{}", sock.display())),
        Default::default(),
        None,
    )
    .await
    .unwrap();
    let base = orch.base.clone();
    let http = reqwest::Client::new();
    assert!(!feed_up(&http, &base).await);
    assert_eq!(submit(&http, &base).await.status(), 202);

    // A pool manager supervising nothing: an empty but real registry.
    let pm_toml = format!(
        "[pool_manager]\nstate_dir = \"{}\"\n{}",
        dir.path().join("state").display(),
        keys()
    );
    let pm_cfg = config_schema::parse_str(&pm_toml, "pm.toml").unwrap();
    let (pm, _) = PoolManager::start(&pm_cfg).unwrap();
    let (pm_stop, pm_task) = serve_pool_manager(&pm, &sock).await;
    until("feed connects", Duration::from_secs(10), || async {
        feed_up(&http, &base).await
    })
    .await;
    // The replica is not in the registry: the probe alone decides, and it is Ready.
    assert_eq!(submit(&http, &base).await.status(), 202);

    let _ = pm_stop.send(true);
    pm_task.await.unwrap();
    until("feed down", Duration::from_secs(5), || async {
        !feed_up(&http, &base).await
    })
    .await;
    assert_eq!(submit(&http, &base).await.status(), 202);
    orch.stop().await.unwrap();
}
