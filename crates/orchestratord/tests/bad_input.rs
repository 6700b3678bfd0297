//! Every bad input gets its typed error envelope and changes nothing (ORCH-2006, 3014, 3015,
//! 3035, 3036).

mod common;

use common::*;
use serde_json::json;

async fn expect_error(resp: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(resp.status().as_u16(), status, "expected {code}");
    let cid = resp.headers()["x-correlation-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let env: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(env["code"], code, "{env}");
    assert_eq!(env["correlation_id"], cid.as_str());
    assert!(!env["message"].as_str().unwrap().is_empty());
    env
}

/// Bad requests get the typed error envelope and change nothing (ORCH-2006, 3093); a missing
/// or unknown key gets 401, a key of the wrong role 403 on either plane (ORCH-3035).
#[tokio::test]
async fn bad_requests_get_typed_errors_and_change_nothing() {
    let s = Server::start(&mock_config(1, "", "", "[server]\nmax_body_bytes = 2048"));
    let raw = |body: &'static str, ctype: &'static str| {
        s.http
            .post(s.url("/v1/tasks"))
            .bearer_auth(DATA_KEY)
            .header("content-type", ctype)
            .body(body)
            .send()
    };
    // Malformed JSON, unknown field, wrong type, missing field, wrong content type.
    expect_error(
        raw("{\"workload\":", "application/json").await.unwrap(),
        400,
        "INVALID_PARAMS",
    )
    .await;
    let mut b = task("x", 5);
    b["temprature"] = json!(0.5);
    let env = expect_error(s.submit(DATA_KEY, b).await, 400, "INVALID_PARAMS").await;
    assert!(env["message"].as_str().unwrap().contains("temprature"));
    let mut b = task("x", 5);
    b["max_tokens"] = json!("many");
    expect_error(s.submit(DATA_KEY, b).await, 400, "INVALID_PARAMS").await;
    let mut b = task("x", 5);
    b.as_object_mut().unwrap().remove("model_ref");
    expect_error(s.submit(DATA_KEY, b).await, 400, "INVALID_PARAMS").await;
    expect_error(
        raw("{}", "text/plain").await.unwrap(),
        415,
        "INVALID_PARAMS",
    )
    .await;
    // Body over the size limit.
    let mut b = task("x", 5);
    b["prompt"] = json!("y".repeat(4096));
    expect_error(s.submit(DATA_KEY, b).await, 413, "INVALID_PARAMS").await;
    // ctx over the model limit (ORCH-3014) and prompt + max_tokens over ctx (ORCH-3015).
    let mut b = task("x", 5);
    b["ctx"] = json!(8192);
    let env = expect_error(s.submit(DATA_KEY, b).await, 400, "INVALID_PARAMS").await;
    assert_eq!(env["pool_id"], "p");
    let mut b = task("x", 600);
    b["ctx"] = json!(512);
    expect_error(s.submit(DATA_KEY, b).await, 400, "INVALID_PARAMS").await;
    let mut b = task("x", 0);
    b["ctx"] = json!(512);
    expect_error(s.submit(DATA_KEY, b).await, 400, "INVALID_PARAMS").await;
    // Unknown model / engine without a pool, unsupported workload, missing prompt.
    let mut b = task("x", 5);
    b["model_ref"] = json!("hf:nope/nope");
    expect_error(s.submit(DATA_KEY, b).await, 400, "INVALID_PARAMS").await;
    let mut b = task("x", 5);
    b["engine"] = json!("vllm");
    expect_error(s.submit(DATA_KEY, b).await, 400, "INVALID_PARAMS").await;
    let mut b = task("x", 5);
    b["workload"] = json!("embedding");
    expect_error(s.submit(DATA_KEY, b).await, 400, "INVALID_PARAMS").await;
    let mut b = task("x", 5);
    b.as_object_mut().unwrap().remove("prompt");
    expect_error(s.submit(DATA_KEY, b).await, 400, "INVALID_PARAMS").await;
    // Bad ids, and a tenant field that is not the key's.
    expect_error(
        s.submit(DATA_KEY, task("bad id/..", 5)).await,
        400,
        "INVALID_PARAMS",
    )
    .await;
    let mut b = task("x", 5);
    b["tenant"] = json!("tenant-b");
    expect_error(s.submit(DATA_KEY, b).await, 400, "INVALID_PARAMS").await;
    // Infeasible deadline.
    let mut b = task("x", 5);
    b["deadline_ms"] = json!(0);
    expect_error(s.submit(DATA_KEY, b).await, 400, "DEADLINE_UNMET").await;
    // Auth: missing key, unknown key, control key on the data plane.
    let r = s
        .http
        .post(s.url("/v1/tasks"))
        .json(&task("x", 5))
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "UNAUTHENTICATED").await;
    expect_error(
        s.submit("wrong-key-123", task("x", 5)).await,
        401,
        "UNAUTHENTICATED",
    )
    .await;
    expect_error(s.submit(CONTROL_KEY, task("x", 5)).await, 403, "FORBIDDEN").await;
    let r = s.get(DATA_KEY, "/v1/replicasets").await;
    expect_error(r, 403, "FORBIDDEN").await;
    // Unknown route.
    let r = s.http.get(s.url("/v2/tasks")).send().await.unwrap();
    expect_error(r, 404, "NOT_FOUND").await;

    // Nothing was admitted, queued or kept.
    let m = s.metrics().await;
    assert_eq!(metric_value(&m, "llorch_tasks_enqueued_total", &[]), 0.0);
    assert_eq!(metric_value(&m, "llorch_queue_depth", &[]), 0.0);
    assert_eq!(metric_value(&m, "llorch_tasks_started_total", &[]), 0.0);
    assert!(
        metric_value(
            &m,
            "llorch_tasks_rejected_total",
            &["reason=\"INVALID_PARAMS\""]
        ) >= 9.0
    );
    assert_eq!(s.stream(DATA_KEY, "x").await.status(), 404);
    // And the server still works.
    assert_eq!(s.submit(DATA_KEY, task("x", 3)).await.status(), 202);
    let evs = read_events(s.stream(DATA_KEY, "x").await).await;
    assert_eq!(evs.last().unwrap().0, "end");
    let env = expect_error(
        s.submit(DATA_KEY, task("x", 3)).await,
        400,
        "INVALID_PARAMS",
    )
    .await;
    assert!(env["message"].as_str().unwrap().contains("already in use"));
}

/// A tenant cannot see, stream or cancel another tenant's task (ORCH-3036).
#[tokio::test]
async fn orch_3036_tenants_are_isolated() {
    let s = Server::start(&mock_config(1, "", "stall_after_tokens = 1", ""));
    assert_eq!(s.submit(DATA_KEY, task("mine", 5)).await.status(), 202);
    expect_error(s.stream(DATA_KEY_B, "mine").await, 404, "NOT_FOUND").await;
    expect_error(s.cancel(DATA_KEY_B, "mine").await, 404, "NOT_FOUND").await;
    // Still running for its owner.
    assert_eq!(s.pool_health().await["replicas"][0]["slots_busy"], 1);
    assert_eq!(s.cancel(DATA_KEY, "mine").await.status(), 204);
}

/// Malformed correlation ids are replaced, well-formed ones echoed.
#[tokio::test]
async fn correlation_ids() {
    let s = Server::start(&mock_config(1, "", "", ""));
    let r = s
        .http
        .get(s.url("/healthz"))
        .header("x-correlation-id", "bad id\twith junk")
        .send()
        .await
        .unwrap();
    let cid = r.headers()["x-correlation-id"].to_str().unwrap();
    assert_ne!(cid, "bad id\twith junk");
    assert_eq!(cid.len(), 36);
}
