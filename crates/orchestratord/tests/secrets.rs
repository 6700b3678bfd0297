//! API keys never appear in logs (ORCH-3027), at the most verbose log level, on the paths that
//! handle them: accepted data and control keys, an unknown key, a key of the wrong role, a
//! malformed Authorization header, a tenant mismatch in the body.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn api_keys_never_appear_in_logs() {
    const UNKNOWN: &str = "unknown-key-Zq8xWv3tPq";
    let s = Server::start_with_env(
        &mock_config(2, "", "tokens_per_second = 0", ""),
        &[("RUST_LOG", "trace")],
    );
    // Accepted data key: submit, stream to the end, cancel a finished task.
    assert_eq!(s.submit(DATA_KEY, task("t1", 4)).await.status(), 202);
    let evs = read_events(s.stream(DATA_KEY, "t1").await).await;
    assert_eq!(evs.last().unwrap().0, "end", "{evs:?}");
    assert_eq!(s.cancel(DATA_KEY, "t1").await.status(), 409);
    // Another tenant's task: not found.
    assert_eq!(s.cancel(DATA_KEY_B, "t1").await.status(), 404);
    // Tenant in the body differs from the key's.
    let mut t = task("t2", 1);
    t["tenant"] = json!("tenant-b");
    assert_eq!(s.submit(DATA_KEY, t).await.status(), 400);
    // Unknown key, wrong role, malformed header.
    assert_eq!(s.submit(UNKNOWN, task("t3", 1)).await.status(), 401);
    assert_eq!(s.submit(CONTROL_KEY, task("t4", 1)).await.status(), 403);
    let r = s
        .http
        .get(s.url("/v1/replicasets"))
        .header("Authorization", format!("Basic {UNKNOWN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Accepted control key.
    let r = s.get(CONTROL_KEY, "/v1/replicasets").await;
    assert_eq!(r.status(), 200);

    let log = s.stderr_log();
    // The log really is verbose: requests were traced, so an absence below means something.
    assert!(log.contains("TRACE") || log.contains("DEBUG"), "{log}");
    assert!(log.contains("t1"), "task ids are logged:\n{log}");
    for key in [DATA_KEY, DATA_KEY_B, CONTROL_KEY, UNKNOWN] {
        assert!(!log.contains(key), "API key `{key}` in the log:\n{log}");
    }
}
