//! Issue 4's scheduling verified with a real engine (supervised llama-server, SmolLM2-135M,
//! one slot) instead of the mock: fair order lets interactive work go ahead of batch work
//! that queued earlier, deadline feasibility uses the engine's measured decode rate, and a
//! tenant quota refuses with a typed 429.

use std::time::{Duration, Instant};

use futures::StreamExt;

const KEY: &str = "sched-data-key";

fn config() -> config_schema::Config {
    let e = test_fixtures::engine();
    let toml = format!(
        "{}\n[timeouts]\nfirst_token_ms = 60000\n\n[[tenants]]\nid = \"t\"\nmax_concurrent = 4\n{}",
        test_fixtures::api_keys_toml(&[(KEY, "t", "data")]),
        test_fixtures::llamacpp_pool_toml(&e, "llm", 512, &[("cpu0", 1)])
    );
    config_schema::parse_str(&toml, "sched.toml").unwrap()
}

struct Stack {
    server: orchestratord::LocalServer,
    _engines: std::sync::Arc<llorch_serve::Engines>,
    http: reqwest::Client,
    model_ref: String,
}

impl Stack {
    async fn submit(
        &self,
        id: &str,
        priority: &str,
        max_tokens: u32,
        deadline_ms: Option<u64>,
    ) -> (u16, serde_json::Value) {
        let mut body = serde_json::json!({
            "task_id": id, "workload": "completion", "model_ref": self.model_ref,
            "ctx": 512, "prompt": "The lighthouse keeper wrote in his log:", "max_tokens": max_tokens,
            "priority": priority, "seed": 7
        });
        if let Some(d) = deadline_ms {
            body["deadline_ms"] = d.into();
        }
        let r = self
            .http
            .post(self.server.url("/v1/tasks"))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or_default())
    }

    /// The stream's events, each with the instant it arrived.
    async fn events(&self, id: &str) -> Vec<(String, serde_json::Value, Instant)> {
        use eventsource_stream::Eventsource;
        let resp = self
            .http
            .get(self.server.url(&format!("/v1/tasks/{id}/stream")))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        let evs = resp.bytes_stream().eventsource().map(|e| {
            let e = e.unwrap();
            (
                e.event,
                serde_json::from_str(&e.data).unwrap(),
                Instant::now(),
            )
        });
        tokio::time::timeout(Duration::from_secs(180), evs.collect())
            .await
            .expect("stream stalled")
    }
}

fn at(evs: &[(String, serde_json::Value, Instant)], name: &str) -> Instant {
    evs.iter()
        .find(|(n, _, _)| n == name)
        .unwrap_or_else(|| panic!("no {name} in {evs:?}"))
        .2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fair_order_deadlines_and_quotas_hold_on_a_real_engine() {
    let cfg = config();
    let model_ref = cfg.pools[0].model_ref.clone();
    let (engines, overrides) = llorch_serve::Engines::start(&cfg).unwrap();
    assert!(engines.wait_preloaded(Duration::from_secs(120)).await);
    let server = orchestratord::LocalServer::start(cfg, overrides, None)
        .await
        .unwrap();
    let s = Stack {
        server,
        _engines: engines,
        http: reqwest::Client::new(),
        model_ref,
    };

    // Measure the engine: one completed task gives the replica its decode rate.
    assert_eq!(s.submit("warm", "interactive", 16, None).await.0, 202);
    assert_eq!(s.events("warm").await.last().unwrap().0, "end");

    // A deadline the measured rate cannot meet is refused before enqueue.
    let (status, body) = s.submit("tight", "interactive", 200, Some(5)).await;
    assert_eq!(body["code"], "DEADLINE_UNMET", "{status} {body}");

    // The slot is busy with a long batch task; a short batch task queues, then an interactive
    // one arrives and goes ahead of it.
    assert_eq!(s.submit("long", "batch", 96, None).await.0, 202);
    let (_, b) = s.submit("b2", "batch", 8, None).await;
    assert_eq!(b["queue_position"], 0);
    let (_, i) = s.submit("i1", "interactive", 8, Some(120_000)).await;
    assert_eq!(
        i["queue_position"], 0,
        "interactive goes ahead of queued batch"
    );
    // Quota: long, b2, i1 and this one = 4 unfinished; the fifth is refused.
    assert_eq!(s.submit("b3", "batch", 4, None).await.0, 202);
    let (status, body) = s.submit("b4", "batch", 4, None).await;
    assert_eq!(status, 429, "{body}");
    assert!(body["message"].as_str().unwrap().contains("max_concurrent"));

    let (long, b2, i1) = tokio::join!(s.events("long"), s.events("b2"), s.events("i1"));
    for evs in [&long, &b2, &i1] {
        assert_eq!(evs.last().unwrap().0, "end", "{evs:?}");
    }
    assert!(
        at(&i1, "metrics") < at(&b2, "metrics"),
        "the interactive task was dispatched before the batch task queued ahead of it"
    );
    assert!(i1[0].1["on_time_probability"].as_f64().unwrap() > 0.5);
    assert_eq!(s.events("b3").await.last().unwrap().0, "end");
    s.server.stop().await.unwrap();
}
