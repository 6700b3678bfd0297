//! Contract completeness as an existing OrchQueue v1 client sees it (issue 14, item 6):
//! errors name the engine wherever the pool is known, task and queue metrics carry the engine
//! labels, and a model's catalog lifecycle stops
//! new tasks on every pool serving it — mock pools included, not only supervised ones.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::json;

async fn envelope(r: reqwest::Response) -> (u16, serde_json::Value) {
    let status = r.status().as_u16();
    (status, r.json().await.expect("error envelope"))
}

/// ORCH-2006: 429 (queue full), 503 (pool draining) and stream `error` events (a queued task
/// canceled, a running one canceled) all carry `engine` beside `pool_id`.
#[tokio::test]
async fn orch_2006_errors_name_the_engine_where_the_pool_is_known() {
    let s = Server::start(&mock_config(
        1,
        "capacity = 1, full_policy = \"reject\"",
        "stall_after_tokens = 1",
        "",
    ));
    assert_eq!(s.submit(DATA_KEY, task("run", 5)).await.status(), 202);
    eventually("run holds the slot", || async {
        s.pool_health().await["replicas"][0]["slots_busy"] == 1
    })
    .await;
    assert_eq!(s.submit(DATA_KEY, task("wait", 5)).await.status(), 202);
    let (status, env) = envelope(s.submit(DATA_KEY, task("over", 5)).await).await;
    assert_eq!(
        (status, env["code"].as_str()),
        (429, Some("ADMISSION_REJECT"))
    );
    assert_eq!(env["engine"], "mock", "{env}");
    assert_eq!(env["pool_id"], "p", "{env}");
    // SPEC §7: queue and admission metrics carry the engine (and the queue its version).
    let m = s.metrics().await;
    let q = ["pool_id=\"p\"", "engine=\"mock\"", "engine_version=\"mock-"];
    assert_eq!(metric_value(&m, "llorch_queue_depth", &q), 1.0, "{m}");
    let rej = ["engine=\"mock\"", "reason=\"ADMISSION_REJECT\""];
    assert_eq!(metric_value(&m, "llorch_tasks_rejected_total", &rej), 1.0);
    let enq = ["engine=\"mock\"", "priority=\"interactive\""];
    assert_eq!(metric_value(&m, "llorch_tasks_enqueued_total", &enq), 2.0);

    // Stream errors: a queued task and a running one, both canceled.
    for id in ["wait", "run"] {
        assert_eq!(s.cancel(DATA_KEY, id).await.status(), 204);
        let evs = read_events(s.stream(DATA_KEY, id).await).await;
        let (name, data) = evs.last().expect("events");
        assert_eq!(name, "error");
        assert_eq!(data["code"], "CANCELED");
        assert_eq!(data["engine"], "mock", "{id}: {data}");
    }
    let canceled = [
        "engine=\"mock\"",
        "engine_version=\"mock-",
        "reason=\"client_request\"",
    ];
    assert_eq!(
        s.metric("llorch_tasks_canceled_total", &canceled).await,
        2.0
    );

    // 503 while the pool drains.
    let r = s
        .http
        .post(s.url("/v1/pools/p/drain"))
        .bearer_auth(CONTROL_KEY)
        .json(&json!({"deadline_ms": 1000}))
        .send()
        .await
        .expect("drain");
    assert_eq!(r.status(), 202);
    let (status, env) = envelope(s.submit(DATA_KEY, task("late", 5)).await).await;
    assert_eq!(
        (status, env["code"].as_str()),
        (503, Some("POOL_UNAVAILABLE"))
    );
    assert_eq!(env["engine"], "mock", "{env}");
    assert_eq!(env["pool_id"], "p", "{env}");
}

/// A stand-in for pool-managerd's registry (`GET /v1/replicas` and the `snapshot` feed)
/// whose records can be changed by the test. Returns its URL and the records.
async fn fake_registry() -> (String, Arc<Mutex<serde_json::Value>>) {
    use axum::response::sse::{Event, Sse};
    let records = Arc::new(Mutex::new(json!([])));
    let (list, watch) = (records.clone(), records.clone());
    let app = axum::Router::new()
        .route(
            "/v1/replicas",
            axum::routing::get(move || {
                let list = list.clone();
                async move { axum::Json(list.lock().expect("lock").clone()) }
            }),
        )
        .route(
            "/v1/replicas/watch",
            axum::routing::get(move || {
                let watch = watch.clone();
                async move {
                    let ticks = futures::stream::unfold(watch, |w| async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let data = w.lock().expect("lock").to_string();
                        let ev = Event::default().event("snapshot").data(data);
                        Some((Ok::<_, std::convert::Infallible>(ev), w))
                    });
                    Sse::new(ticks)
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, records)
}

/// A record of a pool orchestratord does not have (pool-managerd supervises it elsewhere)
/// serving `model_ref` in catalog `state`.
fn record(model_ref: &str, state: &str) -> serde_json::Value {
    json!([{
        "pool_id": "supervised-elsewhere", "replica_id": "r0", "engine": "llamacpp",
        "engine_url": "http://127.0.0.1:1", "phase": "ready", "ready": true, "restarts": 0,
        "circuit_open": false, "cpu": true, "model_ref": model_ref,
        "model_digest": "ab".repeat(32), "model_state": state
    }])
}

/// ORCH-3037: marking a model Deprecated stops new tasks on every pool serving it — here a
/// mock pool pool-managerd does not supervise, which learns the state from another pool's
/// record of the same model — with MODEL_DEPRECATED naming the engine; Active lifts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orch_3037_deprecated_model_stops_new_tasks_on_a_mock_pool_too() {
    let (registry, records) = fake_registry().await;
    let s = Server::start(&mock_config(
        1,
        "",
        "",
        &format!("[pool_manager]\nregistry_url = \"{registry}\""),
    ));
    assert_eq!(s.submit(DATA_KEY, task("before", 2)).await.status(), 202);
    *records.lock().expect("lock") = record("mock:tiny", "deprecated");
    let n = std::sync::atomic::AtomicU32::new(0);
    let fresh = || format!("t{}", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    eventually("MODEL_DEPRECATED on the mock pool", || async {
        s.submit(DATA_KEY, task(&fresh(), 2)).await.status() == 410
    })
    .await;
    let (status, env) = envelope(s.submit(DATA_KEY, task("y", 2)).await).await;
    assert_eq!(
        (status, env["code"].as_str()),
        (410, Some("MODEL_DEPRECATED"))
    );
    assert_eq!(env["engine"], "mock", "{env}");
    assert_eq!(env["pool_id"], "p", "{env}");
    // Another model's record says nothing about this pool.
    *records.lock().expect("lock") = record("other-model.gguf", "active");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.submit(DATA_KEY, task("z", 2)).await.status(), 410);
    // Active again: the catalog's drain is lifted.
    *records.lock().expect("lock") = record("mock:tiny", "active");
    eventually("accepting again", || async {
        s.submit(DATA_KEY, task(&fresh(), 2)).await.status() == 202
    })
    .await;
}

/// ORCH-3095, 3096: `GET /v1/capabilities` lists per engine its ctx_max and limits;
/// `GET /v1/replicasets` and pool health report the pool's load (slots total/free, queue) and
/// service figures (predicted start, first token, decode speed, deadlines met), measured.
#[tokio::test]
async fn orch_3095_capabilities_replicasets_and_health_carry_limits_load_and_slo() {
    let s = Server::start(&mock_config(
        2,
        "capacity = 7",
        "tokens_per_second = 200",
        "",
    ));
    let caps: serde_json::Value = s
        .get(DATA_KEY, "/v1/capabilities")
        .await
        .json()
        .await
        .unwrap();
    let mock = &caps["engine_limits"][0];
    assert_eq!(mock["engine"], "mock", "{caps}");
    assert_eq!(mock["ctx_max"], 1024);
    assert_eq!(mock["pools"], json!(["p"]));
    assert_eq!(mock["models"], json!(["mock:tiny"]));
    assert_eq!(mock["slots_total"], 2);
    assert_eq!(mock["queue_capacity"], 7);
    assert_eq!(mock["cpu"], true);
    assert_eq!(caps["engine_limits"].as_array().map(Vec::len), Some(1));

    // Nothing measured yet: load only, no service figures.
    let sets: serde_json::Value = s
        .get(CONTROL_KEY, "/v1/replicasets")
        .await
        .json()
        .await
        .unwrap();
    let set = &sets[0];
    assert_eq!(set["load"]["slots_total"], 2, "{set}");
    assert_eq!(set["load"]["slots_free"], 2);
    assert_eq!(set["load"]["replicas_ready"], 1);
    assert!(
        set["slo"].get("decode_tokens_per_second").is_none(),
        "{set}"
    );

    // One task running (long), one with a deadline done: load and measured figures move.
    let mut d = task("deadline", 10);
    d["deadline_ms"] = json!(60_000);
    assert_eq!(s.submit(DATA_KEY, d).await.status(), 202);
    let evs = read_events(s.stream(DATA_KEY, "deadline").await).await;
    assert_eq!(evs.last().unwrap().0, "end");
    assert_eq!(s.submit(DATA_KEY, task("long", 400)).await.status(), 202);
    eventually("long runs", || async {
        s.pool_health().await["load"]["slots_free"] == 1
    })
    .await;
    let h = s.pool_health().await;
    assert_eq!(h["load"]["slots_busy"], 1, "{h}");
    assert_eq!(h["load"]["queue_capacity"], 7);
    let slo = &h["slo"];
    let tps = slo["decode_tokens_per_second"]
        .as_f64()
        .expect("measured decode speed");
    // A loaded machine slows the mock's timers (never speeds them): the bound below is loose.
    assert!(
        (20.0..400.0).contains(&tps),
        "mock at 200 tokens/s measured {tps}: {slo}"
    );
    assert!(slo["first_token_ms"].as_u64().is_some(), "{slo}");
    assert!(
        slo["mean_service_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{slo}"
    );
    assert_eq!(slo["deadline_tasks"], 1);
    assert_eq!(slo["deadlines_met_ratio"], 1.0);
    let sets: serde_json::Value = s
        .get(CONTROL_KEY, "/v1/replicasets")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(sets[0]["load"]["slots_free"], 1, "{sets}");
    assert_eq!(sets[0]["slo"]["deadline_tasks"], 1);
    assert_eq!(s.cancel(DATA_KEY, "long").await.status(), 204);
}
