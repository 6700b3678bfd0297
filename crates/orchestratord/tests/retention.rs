//! The replay store keeps finished tasks' logs within `server.task_log_*`: the oldest are
//! evicted first, a replay of an evicted task answers 410 TASK_EVICTED (never a hang or a
//! silent 404), the kept ones replay exactly, and the bytes and evictions are exported.

mod common;

use std::time::Duration;

use common::*;

/// A mock pool with room for 4,096-token contexts and `server` settings.
fn start(mock: &str, server: &str) -> Server {
    Server::start(
        &mock_config(1, "", mock, &format!("[server]\n{server}"))
            .replace("ctx_max = 1024", "ctx_max = 4096"),
    )
}

async fn run_to_end(
    s: &Server,
    key: &str,
    id: &str,
    max_tokens: u32,
) -> Vec<(String, serde_json::Value)> {
    let mut body = task(id, max_tokens);
    body["ctx"] = 4096.into();
    let r = s.submit(key, body).await;
    assert_eq!(r.status(), 202, "{id}");
    let evs = read_events(s.stream(key, id).await).await;
    assert_eq!(
        evs.last().map(|e| e.0.as_str()),
        Some("end"),
        "{id}: {evs:?}"
    );
    evs
}

async fn evicted_answer(s: &Server, key: &str, id: &str) -> (u16, String) {
    let r = tokio::time::timeout(Duration::from_secs(5), s.stream(key, id))
        .await
        .expect("a replay of an evicted task must answer, not hang");
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    (
        status,
        body["code"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn counts_evict_oldest_first_and_evicted_replays_get_410() {
    let s = start(
        "",
        "task_log_max_tasks = 3\ntask_log_max_tasks_per_tenant = 2",
    );
    let a1 = run_to_end(&s, DATA_KEY, "a1", 5).await;
    run_to_end(&s, DATA_KEY, "a2", 5).await;
    run_to_end(&s, DATA_KEY_B, "b1", 5).await;
    // tenant-a's third evicts tenant-a's oldest (per-tenant count 2), not tenant-b's.
    run_to_end(&s, DATA_KEY, "a3", 5).await;
    assert_eq!(
        evicted_answer(&s, DATA_KEY, "a1").await,
        (410, "TASK_EVICTED".into())
    );
    // Another tenant cannot learn that the id existed.
    assert_eq!(evicted_answer(&s, DATA_KEY_B, "a1").await.0, 404);
    // Cancel of an evicted task answers the same way.
    let r = s.cancel(DATA_KEY, "a1").await;
    assert_eq!(r.status(), 410);
    // The kept ones replay exactly what was streamed live.
    let again = read_events(s.stream(DATA_KEY, "a2").await).await;
    assert_eq!(again.last().map(|e| e.0.as_str()), Some("end"));
    assert_eq!(again.iter().filter(|e| e.0 == "token").count(), 5);
    // Overall count 3 (a2, b1, a3 kept): b2 evicts the oldest of all, a2.
    run_to_end(&s, DATA_KEY_B, "b2", 5).await;
    assert_eq!(evicted_answer(&s, DATA_KEY, "a2").await.0, 410);
    assert_eq!(evicted_answer(&s, DATA_KEY_B, "b1").await.0, 200);
    let m = s.metrics().await;
    assert_eq!(
        metric_value(&m, "llorch_task_log_evictions_total", &["tenant_tasks"]),
        1.0
    );
    assert_eq!(
        metric_value(&m, "llorch_task_log_evictions_total", &["reason=\"tasks\""]),
        1.0
    );
    assert_eq!(metric_value(&m, "llorch_task_log_tasks", &[]), 3.0);
    assert!(metric_value(&m, "llorch_task_log_bytes", &[]) > 0.0);
    // A replay of a kept task is what the first reader saw.
    assert_eq!(a1.iter().filter(|e| e.0 == "token").count(), 5);
}

#[tokio::test]
async fn the_byte_budget_binds_and_is_exported() {
    // 64 KiB (the minimum); 2,000 tokens are ~20 bytes each in the compact log, ~40 KiB.
    let s = start("tokens_per_second = 0", "task_log_budget_bytes = 65536");
    let live = run_to_end(&s, DATA_KEY, "big1", 2000).await;
    let m = s.metrics().await;
    let one = metric_value(&m, "llorch_task_log_bytes", &[]);
    assert_eq!(
        metric_value(&m, "llorch_task_log_budget_bytes", &[]),
        65536.0
    );
    let per_token = one / 2000.0;
    assert!(
        (10.0..=40.0).contains(&per_token),
        "{one} bytes for 2000 tokens = {per_token} B/token"
    );
    let replay = read_events(s.stream(DATA_KEY, "big1").await).await;
    let tokens = |v: &[(String, serde_json::Value)]| {
        v.iter()
            .filter(|e| e.0 == "token")
            .map(|e| e.1.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        tokens(&replay),
        tokens(&live),
        "replay differs from the live stream"
    );
    run_to_end(&s, DATA_KEY, "big2", 2000).await;
    assert_eq!(
        evicted_answer(&s, DATA_KEY, "big1").await,
        (410, "TASK_EVICTED".into())
    );
    let m = s.metrics().await;
    assert_eq!(
        metric_value(&m, "llorch_task_log_evictions_total", &["bytes"]),
        1.0
    );
    assert!(metric_value(&m, "llorch_task_log_bytes", &[]) <= 65536.0);
}

#[tokio::test]
async fn tasks_past_the_retention_period_are_forgotten() {
    let s = start("", "task_retention_ms = 300");
    run_to_end(&s, DATA_KEY, "t1", 3).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(evicted_answer(&s, DATA_KEY, "t1").await.0, 404);
    eventually("the sweep empties the store", || async {
        metric_value(&s.metrics().await, "llorch_task_log_tasks", &[]) == 0.0
    })
    .await;
}
