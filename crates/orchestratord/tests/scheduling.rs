//! Scheduling under overload through the real binary (SPEC §3, issue 4): tenant quotas with
//! honest Retry-After, deadline feasibility, hard preemption, session budgets and KV warmth,
//! the wall-clock watchdog, fair shares and zero priority inversion, and no slot leaked by a
//! storm of cancels, disconnects and evictions.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn batch(id: &str, max_tokens: u32) -> serde_json::Value {
    let mut t = task(id, max_tokens);
    t["priority"] = json!("batch");
    t
}

async fn error_body(r: reqwest::Response) -> (u16, Option<u64>, serde_json::Value) {
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (status, retry, r.json().await.unwrap())
}

/// ORCH-3077: max_concurrent counts admitted, unfinished tasks of one tenant; the refusal is a
/// typed 429 with Retry-After; another tenant is unaffected; finishing frees the quota.
#[tokio::test]
async fn orch_3077_max_concurrent_quota() {
    let s = Server::start(&mock_config(
        4,
        "",
        "stall_after_tokens = 1",
        "[[tenants]]\nid = \"tenant-a\"\nmax_concurrent = 2\n",
    ));
    for id in ["a1", "a2"] {
        assert_eq!(s.submit(DATA_KEY, task(id, 5)).await.status(), 202);
    }
    let (status, retry, body) = error_body(s.submit(DATA_KEY, task("a3", 5)).await).await;
    assert_eq!(status, 429);
    assert!(retry.is_some_and(|r| r >= 1), "Retry-After present");
    assert_eq!(body["code"], "ADMISSION_REJECT");
    assert!(
        body["message"].as_str().unwrap().contains("max_concurrent"),
        "{body}"
    );
    assert_eq!(
        s.submit(DATA_KEY_B, task("b1", 5)).await.status(),
        202,
        "other tenants have their own quota"
    );
    assert_eq!(
        s.metric(
            "llorch_quota_rejections_total",
            &["tenant=\"tenant-a\"", "quota=\"max_concurrent\""]
        )
        .await,
        1.0
    );
    assert_eq!(s.cancel(DATA_KEY, "a1").await.status(), 204);
    assert_eq!(s.submit(DATA_KEY, task("a4", 5)).await.status(), 202);
}

/// ORCH-3077: the request rate is a token bucket with burst; Retry-After says when the next
/// request passes, and it does pass then.
#[tokio::test]
async fn orch_3077_request_rate_quota_has_honest_retry_after() {
    let s = Server::start(&mock_config(
        4,
        "",
        "",
        "[[tenants]]\nid = \"tenant-a\"\nrequests_per_second = 2.0\nburst = 2\n",
    ));
    for id in ["r1", "r2"] {
        assert_eq!(s.submit(DATA_KEY, task(id, 1)).await.status(), 202);
    }
    let t0 = Instant::now();
    let r = s.submit(DATA_KEY, task("r3", 1)).await;
    let backoff_ms: u64 = r.headers()["x-backoff-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let (status, retry, body) = error_body(r).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry, Some(1));
    assert!(backoff_ms > 0 && backoff_ms <= 500, "{backoff_ms}");
    tokio::time::sleep(Duration::from_millis(backoff_ms + 20).saturating_sub(t0.elapsed())).await;
    assert_eq!(
        s.submit(DATA_KEY, task("r3", 1)).await.status(),
        202,
        "passes once the advertised backoff has elapsed"
    );
}

/// ORCH-3077: a token budget per minute; a request larger than the whole budget is a 400
/// (no retry can pass), one that merely exceeds what is left is a 429.
#[tokio::test]
async fn orch_3077_token_budget_quota() {
    let s = Server::start(&mock_config(
        4,
        "",
        "stall_after_tokens = 1",
        "[[tenants]]\nid = \"tenant-a\"\ntokens_per_minute = 100\n",
    ));
    let (status, _, body) = error_body(s.submit(DATA_KEY, task("huge", 200)).await).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "INVALID_PARAMS");
    assert_eq!(s.submit(DATA_KEY, task("t1", 80)).await.status(), 202);
    let (status, retry, body) = error_body(s.submit(DATA_KEY, task("t2", 50)).await).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("tokens_per_minute")
    );
    assert!(retry.is_some_and(|r| r >= 1));
}

/// Deadlines (EDF with feasibility): once the replica's rate is measured, a deadline the
/// predicted decode time cannot meet is DEADLINE_UNMET before enqueue; a feasible one carries
/// on_time_probability in `started` and `metrics`, and the met ratio is exported.
#[tokio::test]
async fn infeasible_deadline_is_refused_before_enqueue() {
    let s = Server::start(&mock_config(1, "", "tokens_per_second = 100", ""));
    // Measure: 20 tokens at 100 tok/s ≈ 200 ms.
    assert_eq!(s.submit(DATA_KEY, task("warm", 20)).await.status(), 202);
    let evs = read_events(s.stream(DATA_KEY, "warm").await).await;
    assert_eq!(evs.last().unwrap().0, "end");
    let mut t = task("tight", 50);
    t["deadline_ms"] = json!(100);
    let (status, _, body) = error_body(s.submit(DATA_KEY, t).await).await;
    assert_eq!(body["code"], "DEADLINE_UNMET", "{body}");
    assert!(status == 400 || status == 429 || status == 503, "{status}");
    assert_eq!(
        s.metric("llorch_tasks_enqueued_total", &[]).await,
        1.0,
        "nothing was enqueued"
    );
    let mut t = task("loose", 5);
    t["deadline_ms"] = json!(30_000);
    assert_eq!(s.submit(DATA_KEY, t).await.status(), 202);
    let evs = read_events(s.stream(DATA_KEY, "loose").await).await;
    assert!(evs[0].1["on_time_probability"].as_f64().unwrap() > 0.9);
    let m = &evs.iter().find(|(n, _)| n == "metrics").unwrap().1;
    assert!(m["on_time_probability"].as_f64().unwrap() > 0.9);
    assert_eq!(evs.last().unwrap().0, "end");
    eventually("met ratio exported", || async {
        s.metric("llorch_deadlines_met_ratio", &["priority=\"interactive\""])
            .await
            == 1.0
    })
    .await;
}

/// ORCH-3086: on a replica whose adapter declares interruptible decode, waiting interactive
/// work interrupts running batch work: the batch task ends with a typed, retriable error, the
/// interactive one runs, and no slot is leaked.
#[tokio::test]
async fn orch_3086_hard_preemption_on_interruptible_replicas() {
    let s = Server::start(&mock_config(
        1,
        "",
        "tokens_per_second = 20, interruptible = true",
        "",
    ));
    eventually("replica ready", || async {
        s.pool_health().await["ready"] == true
    })
    .await;
    assert_eq!(s.submit(DATA_KEY, batch("long", 200)).await.status(), 202);
    let stream = s.stream(DATA_KEY, "long").await;
    eventually("batch runs", || async {
        s.pool_health().await["replicas"][0]["slots_busy"] == 1
    })
    .await;
    assert_eq!(s.submit(DATA_KEY, task("urgent", 3)).await.status(), 202);
    let evs = read_events(stream).await;
    let last = &evs.last().unwrap().1;
    assert_eq!(last["code"], "ADMISSION_REJECT", "{evs:?}");
    assert!(last["message"].as_str().unwrap().contains("preempted"));
    assert_eq!(last["retriable"], true);
    let evs = read_events(s.stream(DATA_KEY, "urgent").await).await;
    assert_eq!(evs.last().unwrap().0, "end");
    assert_eq!(
        s.metric("llorch_preemptions_total", &["mode=\"hard\""])
            .await,
        1.0
    );
    eventually("slot free", || async {
        s.pool_health().await["replicas"][0]["slots_busy"] == 0
    })
    .await;
}

/// Without interruptible decode nothing running is ever interrupted.
#[tokio::test]
async fn no_hard_preemption_without_interruptible_decode() {
    let s = Server::start(&mock_config(1, "", "tokens_per_second = 100", ""));
    assert_eq!(s.submit(DATA_KEY, batch("b", 20)).await.status(), 202);
    eventually("batch runs", || async {
        s.pool_health().await["replicas"][0]["slots_busy"] == 1
    })
    .await;
    assert_eq!(s.submit(DATA_KEY, task("i", 2)).await.status(), 202);
    let evs = read_events(s.stream(DATA_KEY, "b").await).await;
    assert_eq!(evs.last().unwrap().0, "end");
    let evs = read_events(s.stream(DATA_KEY, "i").await).await;
    assert_eq!(evs.last().unwrap().0, "end");
    assert_eq!(s.metric("llorch_preemptions_total", &[]).await, 0.0);
}

/// ORCH-3099: per-session token and time budgets are enforced at admission and shown in
/// response headers, `metrics` events and GET /v1/sessions.
#[tokio::test]
async fn orch_3099_session_budgets() {
    let s = Server::start(&mock_config(2, "", "", "[sessions]\ntoken_budget = 40\n"));
    let mut t = task("s1", 10);
    t["session_id"] = json!("chat");
    t["prompt"] = json!("hello"); // ~2 tokens + 10 reserved
    let r = s.submit(DATA_KEY, t.clone()).await;
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["x-tokens-budget-remaining"], "28");
    let evs = read_events(s.stream(DATA_KEY, "s1").await).await;
    let m = &evs.iter().find(|(n, _)| n == "metrics").unwrap().1;
    assert_eq!(m["tokens_budget_remaining"], 28);
    // After the turn, only what it really used counts (prompt 2 + 10 generated).
    let info: serde_json::Value = s
        .get(DATA_KEY, "/v1/sessions/chat")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["tokens_budget_remaining"], 28);
    t["task_id"] = json!("s2");
    t["max_tokens"] = json!(30);
    let (status, _, body) = error_body(s.submit(DATA_KEY, t).await).await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("budget"),
        "{body}"
    );
}

/// Session affinity: the next turn goes to the replica holding the KV cache (kv_warmth true);
/// when that replica fails the session fails over cold (kv_warmth false) (ORCH-3019, 3091).
#[tokio::test]
async fn kv_warmth_and_cold_failover() {
    let s = two_single_slot_replicas("mock = { disconnect_after_tokens = 3 }").await;
    let turn = |id: &str, n: u32| {
        let mut t = task(id, n);
        t["session_id"] = json!("conv");
        t
    };
    let warmth = |evs: &[(String, serde_json::Value)]| {
        evs.iter().find(|(n, _)| n == "metrics").unwrap().1["kv_warmth"].clone()
    };
    assert_eq!(s.submit(DATA_KEY, turn("t1", 2)).await.status(), 202);
    let evs = read_events(s.stream(DATA_KEY, "t1").await).await;
    assert_eq!(warmth(&evs), false, "first turn is cold");
    assert_eq!(s.submit(DATA_KEY, turn("t2", 5)).await.status(), 202);
    let evs = read_events(s.stream(DATA_KEY, "t2").await).await;
    assert_eq!(warmth(&evs), true, "second turn reuses r0's KV");
    assert_eq!(
        evs.last().unwrap().1["code"],
        "WORKER_RESET",
        "r0 dies mid-turn"
    );
    assert_eq!(s.submit(DATA_KEY, turn("t3", 2)).await.status(), 202);
    let evs = read_events(s.stream(DATA_KEY, "t3").await).await;
    assert_eq!(warmth(&evs), false, "failover is cold");
    assert_eq!(evs.last().unwrap().0, "end");
    let info: serde_json::Value = s
        .get(DATA_KEY, "/v1/sessions/conv")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["kv_warmth"], true, "now warm on r1");
}

/// ORCH-3016: the wall-clock limit aborts a slow job with DECODE_TIMEOUT and frees the slot.
#[tokio::test]
async fn orch_3016_wall_timeout_frees_the_slot() {
    let s = Server::start(&mock_config(
        1,
        "",
        "tokens_per_second = 20",
        "[timeouts]\nwall_ms = 300",
    ));
    assert_eq!(s.submit(DATA_KEY, task("slow", 100)).await.status(), 202);
    let evs = read_events(s.stream(DATA_KEY, "slow").await).await;
    let last = &evs.last().unwrap().1;
    assert_eq!(last["code"], "DECODE_TIMEOUT");
    assert!(last["message"].as_str().unwrap().contains("wall"));
    eventually("slot free", || async {
        s.pool_health().await["replicas"][0]["slots_busy"] == 0
    })
    .await;
    assert_eq!(s.submit(DATA_KEY, task("next", 2)).await.status(), 202);
    let evs = read_events(s.stream(DATA_KEY, "next").await).await;
    assert_eq!(evs.last().unwrap().0, "end");
}

/// Overload with two tenants and both priorities at several times capacity: every admitted
/// task ends (end or a typed error), the observed shares are exported for all four flows,
/// interactive never waits while a slot is free (priority inversions = 0), and after a storm
/// of cancels and client disconnects no slot, queue entry or quota is leaked.
#[tokio::test]
async fn overload_keeps_priorities_and_leaks_nothing() {
    let s = Server::start(&mock_config(
        3,
        "capacity = 24, full_policy = \"shed-low-priority\"",
        "tokens_per_second = 400",
        "[[tenants]]\nid = \"tenant-a\"\nmax_concurrent = 20\n",
    ));
    eventually("ready", || async { s.pool_health().await["ready"] == true }).await;
    let mut handles = Vec::new();
    for i in 0..160u32 {
        let key = if i % 2 == 0 { DATA_KEY } else { DATA_KEY_B };
        let id = format!("o{i}");
        let body = if i % 3 == 0 {
            batch(&id, 8)
        } else {
            task(&id, 8)
        };
        let r = s.submit(key, body).await;
        if r.status() != 202 {
            assert_eq!(r.status(), 429, "only typed refusals");
            continue;
        }
        let stream = s.stream(key, &id).await;
        let http = s.http.clone();
        let cancel_url = s.url(&format!("/v1/tasks/{id}/cancel"));
        handles.push(tokio::spawn(async move {
            match i % 7 {
                // Client goes away mid-stream.
                0 => {
                    drop(stream);
                    None
                }
                1 => {
                    let _ = http.post(cancel_url).bearer_auth(key).send().await;
                    Some(read_events(stream).await)
                }
                _ => Some(read_events(stream).await),
            }
        }));
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for h in handles {
        if let Some(evs) = h.await.unwrap() {
            let last = &evs.last().unwrap().0;
            assert!(last == "end" || last == "error", "{evs:?}");
        }
    }
    eventually("everything drained", || async {
        let m = s.metrics().await;
        metric_value(&m, "llorch_replica_slots_busy", &[]) == 0.0
            && metric_value(&m, "llorch_queue_depth", &[]) == 0.0
    })
    .await;
    let m = s.metrics().await;
    assert_eq!(
        metric_value(&m, "llorch_priority_inversions_total", &[]),
        0.0
    );
    for tenant in ["tenant-a", "tenant-b"] {
        for p in ["interactive", "batch"] {
            assert!(
                m.contains(&format!(
                    "llorch_admission_share_ratio{{priority=\"{p}\",tenant=\"{tenant}\"}}"
                )),
                "share of {tenant}/{p} exported"
            );
        }
    }
    // The quota was given back by every finished, canceled and evicted task.
    let mut ok = 0;
    for i in 0..20 {
        if s.submit(DATA_KEY, task(&format!("after{i}"), 1))
            .await
            .status()
            == 202
        {
            ok += 1;
        }
    }
    assert_eq!(ok, 20, "tenant-a's max_concurrent slots all came back");
}

/// A client that has read `end` finds the task's slot already free: `end` is published only
/// after the runner gave back slot, quota and session budget. A single-slot replica, back to
/// back turns of one session, many times: every next turn lands on the warm replica at once.
#[tokio::test]
async fn end_is_published_after_the_slot_is_free() {
    let s = two_single_slot_replicas("").await;
    for i in 0..40 {
        let mut t = task(&format!("turn{i}"), 2);
        // Sessions allow 8 turns by default: a new session every 8.
        t["session_id"] = json!(format!("back-to-back-{}", i / 8));
        assert_eq!(s.submit(DATA_KEY, t).await.status(), 202);
        let evs = read_events(s.stream(DATA_KEY, &format!("turn{i}")).await).await;
        assert_eq!(evs.last().unwrap().0, "end", "{evs:?}");
        let warm = &evs.iter().find(|(n, _)| n == "metrics").unwrap().1["kv_warmth"];
        assert_eq!(*warm, json!(i % 8 > 0), "turn {i}: {evs:?}");
        // And the slot count agrees right after `end`.
        let h = s.pool_health().await;
        let busy: u64 = (0..2)
            .map(|r| h["replicas"][r]["slots_busy"].as_u64().unwrap())
            .sum();
        assert_eq!(busy, 0, "turn {i}: {h}");
    }
}

/// A server with pool `p` of two single-slot mock replicas r0 (with `r0_extra` lines) and r1,
/// both Ready.
async fn two_single_slot_replicas(r0_extra: &str) -> Server {
    let cfg = format!(
        r#"{auth}
[[pools]]
id = "p"
engine = "mock"
model_ref = "mock:tiny"
ctx_max = 1024
allow_cpu_inference = true

[[pools.replicas]]
id = "r0"
slots = 1
{r0_extra}

[[pools.replicas]]
id = "r1"
slots = 1
"#,
        auth = auth_toml()
    );
    let s = Server::start(&cfg);
    eventually("both ready", || async {
        s.pool_health().await["replicas"]
            .as_array()
            .is_some_and(|r| r.iter().all(|r| r["status"] == "ready"))
    })
    .await;
    s
}
