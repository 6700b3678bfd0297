//! OrchQueue v1 data plane against the real binary (SPEC §1).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn names(evs: &[(String, serde_json::Value)]) -> Vec<&str> {
    evs.iter().map(|(n, _)| n.as_str()).collect()
}

/// ORCH-2001, ORCH-2002: 202 with Location, then started, metrics, token*, end in order.
#[tokio::test]
async fn orch_2002_submit_then_stream_in_contract_order() {
    let s = Server::start(&mock_config(2, "", "", ""));
    let resp = s
        .http
        .post(s.url("/v1/tasks"))
        .bearer_auth(DATA_KEY)
        .header("x-correlation-id", "corr-123")
        .json(&task("t1", 6))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()["x-correlation-id"], "corr-123");
    assert_eq!(resp.headers()["location"], "/v1/tasks/t1/stream");
    let acc: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(acc["task_id"], "t1");
    assert_eq!(acc["queue_position"], 0);

    let stream = s.stream(DATA_KEY, "t1").await;
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let evs = read_events(stream).await;
    assert_eq!(
        names(&evs),
        [
            "started", "metrics", "token", "token", "token", "token", "token", "token", "end"
        ]
    );
    for (i, (_, d)) in evs[2..8].iter().enumerate() {
        assert_eq!(d["i"], i as u64);
        assert!(d["t"].as_str().unwrap().starts_with(' '));
    }
    assert_eq!(evs[8].1["tokens_out"], 6);
    // Re-reading a finished task replays the same log.
    let again = read_events(s.stream(DATA_KEY, "t1").await).await;
    assert_eq!(again, evs);
    assert_eq!(
        s.metric("llorch_tokens_out_total", &["pool_id=\"p\""])
            .await,
        6.0
    );
    assert_eq!(s.metric("llorch_tasks_completed_total", &[]).await, 1.0);
}

/// ORCH-3045: same prompt and seed give the same tokens; the server assigns ids when absent.
#[tokio::test]
async fn orch_3045_seeded_tasks_are_deterministic() {
    let s = Server::start(&mock_config(2, "", "", ""));
    let mut outs = Vec::new();
    for _ in 0..2 {
        let mut body = task("x", 8);
        body.as_object_mut().unwrap().remove("task_id");
        body["seed"] = json!(42);
        let acc: serde_json::Value = s.submit(DATA_KEY, body).await.json().await.unwrap();
        let id = acc["task_id"].as_str().unwrap().to_string();
        assert_eq!(id.len(), 36, "server-assigned UUID");
        let evs = read_events(s.stream(DATA_KEY, &id).await).await;
        outs.push(
            evs.into_iter()
                .filter(|(n, _)| n == "token")
                .map(|(_, d)| d["t"].clone())
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(outs[0], outs[1]);
    assert_eq!(outs[0].len(), 8);
}

/// ORCH-3017, ORCH-3026: after 204 no token is appended and the slot is free.
#[tokio::test]
async fn orch_3026_cancel_is_race_free_and_frees_the_slot() {
    let s = Server::start(&mock_config(1, "", "tokens_per_second = 100", ""));
    assert_eq!(s.submit(DATA_KEY, task("c1", 500)).await.status(), 202);
    let (seen, rest) = read_n_events(s.stream(DATA_KEY, "c1").await, 5).await;
    assert_eq!(names(&seen)[..3], ["started", "metrics", "token"]);
    let r = s.cancel(DATA_KEY, "c1").await;
    assert_eq!(r.status(), 204);
    // Slot already free when 204 arrives.
    let h = s.pool_health().await;
    assert_eq!(h["replicas"][0]["slots_busy"], 0, "{h}");
    drop(rest);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let evs = read_events(s.stream(DATA_KEY, "c1").await).await;
    let (last_name, last) = evs.last().unwrap();
    assert_eq!(last_name, "error");
    assert_eq!(last["code"], "CANCELED");
    let tokens = evs.iter().filter(|(n, _)| n == "token").count();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let later = read_events(s.stream(DATA_KEY, "c1").await).await;
    assert_eq!(
        later.iter().filter(|(n, _)| n == "token").count(),
        tokens,
        "token after cancel ack"
    );
    assert!(tokens < 500);
    // Cancel of a finished task, and of an unknown one.
    assert_eq!(s.cancel(DATA_KEY, "c1").await.status(), 409);
    let r = s.cancel(DATA_KEY, "nope").await;
    assert_eq!(r.status(), 404);
    let env: serde_json::Value = r.json().await.unwrap();
    assert_eq!(env["code"], "NOT_FOUND");
    assert!(env["correlation_id"].as_str().unwrap().len() > 8);
    assert_eq!(
        s.metric(
            "llorch_tasks_canceled_total",
            &["reason=\"client_request\""]
        )
        .await,
        1.0
    );
    // The freed slot takes new work.
    assert_eq!(s.submit(DATA_KEY, task("c2", 3)).await.status(), 202);
    let evs = read_events(s.stream(DATA_KEY, "c2").await).await;
    assert_eq!(evs.last().unwrap().0, "end");
}

/// Cancel of a queued task removes it from the queue without touching the engine.
#[tokio::test]
async fn cancel_of_queued_task() {
    let s = Server::start(&mock_config(1, "", "stall_after_tokens = 1", ""));
    assert_eq!(s.submit(DATA_KEY, task("run", 5)).await.status(), 202);
    let acc: serde_json::Value = s
        .submit(DATA_KEY, task("wait", 5))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(acc["queue_position"], 0);
    assert_eq!(
        s.metric("llorch_queue_depth", &["priority=\"interactive\""])
            .await,
        1.0
    );
    assert_eq!(s.cancel(DATA_KEY, "wait").await.status(), 204);
    assert_eq!(
        s.metric("llorch_queue_depth", &["priority=\"interactive\""])
            .await,
        0.0
    );
    let evs = read_events(s.stream(DATA_KEY, "wait").await).await;
    assert_eq!(names(&evs), ["started", "error"]);
    assert_eq!(s.cancel(DATA_KEY, "run").await.status(), 204);
}

/// A client that disconnects mid-stream and does not resume within the grace window
/// (`server.stream_resume_grace_ms`, 2 s by default) gets its task canceled, its slot freed and
/// counted (the window itself is tested in tests/resume.rs).
#[tokio::test]
async fn client_disconnect_frees_slot_and_is_counted() {
    let s = Server::start(&mock_config(1, "", "tokens_per_second = 100", ""));
    assert_eq!(s.submit(DATA_KEY, task("d1", 400)).await.status(), 202);
    let (_, open) = read_n_events(s.stream(DATA_KEY, "d1").await, 4).await;
    assert_eq!(s.pool_health().await["replicas"][0]["slots_busy"], 1);
    drop(open);
    eventually("disconnect cancels the task", || async {
        s.metric(
            "llorch_tasks_canceled_total",
            &["reason=\"client_disconnect\""],
        )
        .await
            == 1.0
    })
    .await;
    eventually("slot freed", || async {
        s.pool_health().await["replicas"][0]["slots_busy"] == 0
    })
    .await;
    let evs = read_events(s.stream(DATA_KEY, "d1").await).await;
    assert_eq!(evs.last().unwrap().1["code"], "CANCELED");
}

/// ORCH-2007, ORCH-3005: a full queue answers 429 with Retry-After, X-Backoff-Ms, policy_label.
#[tokio::test]
async fn orch_2007_full_queue_rejects_with_backoff() {
    let s = Server::start(&mock_config(
        1,
        "capacity = 1, full_policy = \"reject\"",
        "stall_after_tokens = 1",
        "",
    ));
    assert_eq!(s.submit(DATA_KEY, task("a", 5)).await.status(), 202);
    eventually("a runs", || async {
        s.pool_health().await["replicas"][0]["slots_busy"] == 1
    })
    .await;
    assert_eq!(s.submit(DATA_KEY, task("b", 5)).await.status(), 202);
    let r = s.submit(DATA_KEY, task("c", 5)).await;
    assert_eq!(r.status(), 429);
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let backoff: u64 = r.headers()["x-backoff-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1 && backoff >= 100);
    let env: serde_json::Value = r.json().await.unwrap();
    assert_eq!(env["code"], "ADMISSION_REJECT");
    assert_eq!(env["policy_label"], "reject");
    assert_eq!(env["retriable"], true);
    assert_eq!(env["retry_after_ms"], backoff);
    // The rejected id is free to use later; nothing of it was kept.
    assert_eq!(s.stream(DATA_KEY, "c").await.status(), 404);
    assert_eq!(
        s.metric("llorch_backpressure_events_total", &["policy=\"reject\""])
            .await,
        1.0
    );
    assert_eq!(
        s.metric(
            "llorch_tasks_rejected_total",
            &["reason=\"ADMISSION_REJECT\""]
        )
        .await,
        1.0
    );
}

/// drop-lru evicts the oldest queued task, which ends with QUEUE_FULL_DROP_LRU;
/// shed-low-priority drops queued batch work for interactive work (soft preemption).
#[tokio::test]
async fn full_policies_evict_with_typed_errors() {
    let s = Server::start(&mock_config(
        1,
        "capacity = 1, full_policy = \"drop-lru\"",
        "stall_after_tokens = 1",
        "",
    ));
    assert_eq!(s.submit(DATA_KEY, task("run", 5)).await.status(), 202);
    eventually("run runs", || async {
        s.pool_health().await["replicas"][0]["slots_busy"] == 1
    })
    .await;
    assert_eq!(s.submit(DATA_KEY, task("old", 5)).await.status(), 202);
    assert_eq!(s.submit(DATA_KEY, task("new", 5)).await.status(), 202);
    let evs = read_events(s.stream(DATA_KEY, "old").await).await;
    assert_eq!(names(&evs), ["started", "error"]);
    assert_eq!(evs[1].1["code"], "QUEUE_FULL_DROP_LRU");

    let s = Server::start(&mock_config(
        1,
        "capacity = 1, full_policy = \"shed-low-priority\"",
        "stall_after_tokens = 1",
        "",
    ));
    assert_eq!(s.submit(DATA_KEY, task("run", 5)).await.status(), 202);
    eventually("run runs", || async {
        s.pool_health().await["replicas"][0]["slots_busy"] == 1
    })
    .await;
    let mut b = task("batch", 5);
    b["priority"] = json!("batch");
    assert_eq!(s.submit(DATA_KEY, b.clone()).await.status(), 202);
    b["task_id"] = json!("batch2");
    let r = s.submit(DATA_KEY, b).await;
    assert_eq!(r.status(), 429, "batch cannot shed batch");
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["policy_label"],
        "shed-low-priority"
    );
    assert_eq!(s.submit(DATA_KEY, task("inter", 5)).await.status(), 202);
    // Soft preemption (ORCH-3085): the shed batch task gets a typed error, never silence.
    let evs = read_events(s.stream(DATA_KEY, "batch").await).await;
    let last = &evs.last().unwrap().1;
    assert_eq!(last["code"], "ADMISSION_REJECT");
    assert!(
        last["message"].as_str().unwrap().contains("preempted"),
        "{last}"
    );
    assert_eq!(last["retriable"], true);
    assert_eq!(
        s.metric(
            "llorch_preemptions_total",
            &["mode=\"soft\"", "engine=\"mock\""]
        )
        .await,
        1.0
    );
}

/// Injected engine faults become typed stream errors and free the slot (ORCH-3016, 3093).
#[tokio::test]
async fn engine_faults_map_to_typed_errors() {
    for (mock, code) in [
        ("error_after_tokens = 2", "INTERNAL"),
        ("disconnect_after_tokens = 2", "WORKER_RESET"),
        ("stall_after_tokens = 2", "DECODE_TIMEOUT"),
    ] {
        let s = Server::start(&mock_config(1, "", mock, "[timeouts]\nidle_ms = 200"));
        assert_eq!(s.submit(DATA_KEY, task("f", 10)).await.status(), 202);
        let evs = read_events(s.stream(DATA_KEY, "f").await).await;
        assert_eq!(
            names(&evs),
            ["started", "metrics", "token", "token", "error"],
            "{mock}"
        );
        let err = &evs[4].1;
        assert_eq!(err["code"], code, "{mock}");
        assert_eq!(err["engine"], "mock");
        eventually("slot freed", || async {
            s.pool_health().await["replicas"][0]["slots_busy"] == 0
        })
        .await;
        assert_eq!(
            s.metric("llorch_tasks_failed_total", &[&format!("code=\"{code}\"")])
                .await,
            1.0
        );
    }
}

/// Sessions: turns counted, bounded, per tenant; DELETE evicts (ORCH-3021, 3022).
#[tokio::test]
async fn sessions_count_turns_and_are_tenant_scoped() {
    let s = Server::start(&mock_config(2, "", "", "[sessions]\nmax_turns = 2"));
    for id in ["s1", "s2"] {
        let mut b = task(id, 2);
        b["session_id"] = json!("chat-1");
        assert_eq!(s.submit(DATA_KEY, b).await.status(), 202);
        read_events(s.stream(DATA_KEY, id).await).await;
    }
    let get = |key: &'static str| {
        let req = s.http.get(s.url("/v1/sessions/chat-1")).bearer_auth(key);
        async move { req.send().await.unwrap() }
    };
    let info: serde_json::Value = get(DATA_KEY).await.json().await.unwrap();
    assert_eq!(info["turns"], 2);
    assert_eq!(info["kv_warmth"], true);
    assert!(info["ttl_ms_remaining"].as_u64().unwrap() > 0);
    assert_eq!(get(DATA_KEY_B).await.status(), 404, "other tenant");
    let mut b = task("s3", 2);
    b["session_id"] = json!("chat-1");
    let r = s.submit(DATA_KEY, b.clone()).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("turns"));
    let del = s
        .http
        .delete(s.url("/v1/sessions/chat-1"))
        .bearer_auth(DATA_KEY_B)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 404);
    let del = s
        .http
        .delete(s.url("/v1/sessions/chat-1"))
        .bearer_auth(DATA_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    assert_eq!(get(DATA_KEY).await.status(), 404);
    assert_eq!(
        s.submit(DATA_KEY, b).await.status(),
        202,
        "a new session starts"
    );
}

/// Interactive work is dispatched before batch work queued earlier (ORCH-3004).
#[tokio::test]
async fn interactive_before_batch() {
    let s = Server::start(&mock_config(1, "", "tokens_per_second = 200", ""));
    assert_eq!(s.submit(DATA_KEY, task("first", 20)).await.status(), 202);
    let mut b = task("batch", 1);
    b["priority"] = json!("batch");
    let acc: serde_json::Value = s.submit(DATA_KEY, b).await.json().await.unwrap();
    assert_eq!(acc["queue_position"], 0);
    let acc: serde_json::Value = s
        .submit(DATA_KEY, task("inter", 1))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(acc["queue_position"], 0, "interactive goes ahead of batch");
    let batch = read_events(s.stream(DATA_KEY, "batch").await).await;
    let inter = read_events(s.stream(DATA_KEY, "inter").await).await;
    assert_eq!(batch.last().unwrap().0, "end", "{batch:?}");
    assert_eq!(inter.last().unwrap().0, "end");
    assert_eq!(batch[0].1["queue_position"], 0);
}

/// A deadline is surfaced as on_time_probability in the `metrics` event.
#[tokio::test]
async fn deadline_surfaces_on_time_probability() {
    let s = Server::start(&mock_config(1, "", "", ""));
    let mut b = task("dl", 2);
    b["deadline_ms"] = json!(60_000);
    assert_eq!(s.submit(DATA_KEY, b).await.status(), 202);
    let evs = read_events(s.stream(DATA_KEY, "dl").await).await;
    let m = &evs.iter().find(|(n, _)| n == "metrics").unwrap().1;
    assert!(m["on_time_probability"].as_f64().unwrap() > 0.9, "{m}");
    assert!(
        m.get("tokens_budget_remaining").is_none(),
        "no session budget, so no budget left to report: {m}"
    );
}

/// Drain: new work refused at once, running work may finish until the deadline, queued work
/// fails with POOL_UNAVAILABLE, health says draining.
#[tokio::test]
async fn drain_stops_new_work_and_bounds_running_work() {
    let s = Server::start(&mock_config(1, "", "tokens_per_second = 100", ""));
    assert_eq!(s.submit(DATA_KEY, task("short", 5)).await.status(), 202);
    assert_eq!(s.submit(DATA_KEY, task("waiting", 5)).await.status(), 202);
    let drain = |key: &'static str, body: serde_json::Value| {
        let req = s
            .http
            .post(s.url("/v1/pools/p/drain"))
            .bearer_auth(key)
            .json(&body);
        async move { req.send().await.unwrap() }
    };
    assert_eq!(
        drain(DATA_KEY, json!({"deadline_ms": 1000})).await.status(),
        403
    );
    assert_eq!(
        drain(CONTROL_KEY, json!({"deadline": 1})).await.status(),
        400
    );
    let r = drain(CONTROL_KEY, json!({"deadline_ms": 1000})).await;
    assert_eq!(r.status(), 202);
    let h: serde_json::Value = r.json().await.unwrap();
    assert_eq!(h["draining"], true);
    assert_eq!(h["ready"], false);
    let r = s.submit(DATA_KEY, task("late", 5)).await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["code"],
        "POOL_UNAVAILABLE"
    );
    // The running task finishes within the deadline; the queued one never starts.
    assert_eq!(
        read_events(s.stream(DATA_KEY, "short").await)
            .await
            .last()
            .unwrap()
            .0,
        "end"
    );
    let w = read_events(s.stream(DATA_KEY, "waiting").await).await;
    assert_eq!(names(&w), ["started", "error"]);
    assert_eq!(w[1].1["code"], "POOL_UNAVAILABLE");
}

/// A task still running at the drain deadline is canceled with POOL_UNAVAILABLE, slot freed.
#[tokio::test]
async fn drain_deadline_cancels_running_work() {
    let s = Server::start(&mock_config(1, "", "stall_after_tokens = 1", ""));
    assert_eq!(s.submit(DATA_KEY, task("stuck", 5)).await.status(), 202);
    eventually("stuck runs", || async {
        s.pool_health().await["replicas"][0]["slots_busy"] == 1
    })
    .await;
    let r = s
        .http
        .post(s.url("/v1/pools/p/drain"))
        .bearer_auth(CONTROL_KEY)
        .json(&json!({"deadline_ms": 100}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let evs = read_events(s.stream(DATA_KEY, "stuck").await).await;
    assert_eq!(evs.last().unwrap().1["code"], "POOL_UNAVAILABLE");
    eventually("slot freed", || async {
        s.pool_health().await["replicas"][0]["slots_busy"] == 0
    })
    .await;
    assert_eq!(
        s.metric("llorch_tasks_canceled_total", &["reason=\"drain\""])
            .await,
        1.0
    );
}

/// Control-plane reads: replica sets and pool health (control key only).
#[tokio::test]
async fn replicasets_and_pool_health() {
    let s = Server::start(&mock_config(3, "", "", ""));
    let r = s.get(CONTROL_KEY, "/v1/replicasets").await;
    assert_eq!(r.status(), 200);
    let sets: serde_json::Value = r.json().await.unwrap();
    assert_eq!(sets[0]["pool_id"], "p");
    assert_eq!(sets[0]["model_ref"], "mock:tiny");
    assert_eq!(sets[0]["queue_depth"], 0);
    assert_eq!(sets[0]["replicas"][0]["slots_total"], 3);
    assert_eq!(sets[0]["replicas"][0]["status"], "ready");
    let h = s.pool_health().await;
    assert_eq!(
        (
            h["live"].as_bool(),
            h["ready"].as_bool(),
            h["draining"].as_bool()
        ),
        (Some(true), Some(true), Some(false))
    );
    let r = s.get(CONTROL_KEY, "/v1/pools/nope/health").await;
    assert_eq!(r.status(), 404);
    // Without a controller (orchestratord alone), reload is refused with a clear error.
    let r = s
        .http
        .post(s.url("/v1/pools/p/reload"))
        .bearer_auth(CONTROL_KEY)
        .json(&json!({"new_model_ref": "mock:other"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let env: serde_json::Value = r.json().await.unwrap();
    assert!(
        env["message"].as_str().unwrap().contains("llorch serve"),
        "{env}"
    );
}

/// Nothing waits forever: a queued task fails after timeouts.queue_ms (or its own deadline).
#[tokio::test]
async fn queued_tasks_time_out() {
    let s = Server::start(&mock_config(
        1,
        "",
        "stall_after_tokens = 1",
        "[timeouts]\nqueue_ms = 2500",
    ));
    assert_eq!(s.submit(DATA_KEY, task("hog", 5)).await.status(), 202);
    // First in the queue, so its predicted start (one service time, 1 s before any sample)
    // fits the deadline and admission takes it; it then waits past the deadline.
    let mut d = task("deadline", 5);
    d["deadline_ms"] = json!(1500);
    assert_eq!(s.submit(DATA_KEY, d).await.status(), 202);
    assert_eq!(s.submit(DATA_KEY, task("waits", 5)).await.status(), 202);
    let w = read_events(s.stream(DATA_KEY, "waits").await).await;
    assert_eq!(names(&w), ["started", "error"]);
    assert_eq!(w[1].1["code"], "ADMISSION_REJECT");
    let d = read_events(s.stream(DATA_KEY, "deadline").await).await;
    assert_eq!(d[1].1["code"], "DEADLINE_UNMET");
    assert_eq!(s.metric("llorch_queue_depth", &[]).await, 0.0);
    assert_eq!(s.cancel(DATA_KEY, "hog").await.status(), 204);
}
