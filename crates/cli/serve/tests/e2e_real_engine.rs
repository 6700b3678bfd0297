//! End to end with a real engine: client → orchestratord (HTTP/SSE) → supervised llama-server
//! (SmolLM2-135M), all wired by `llorch serve`'s library code, over a real TCP socket.

use std::time::{Duration, Instant};

use futures::StreamExt;

const KEY: &str = "e2e-data-key";
const CONTROL: &str = "e2e-control-key";

fn config(replicas: u32, slots: u32) -> config_schema::Config {
    let e = test_fixtures::engine();
    let ids: Vec<String> = (0..replicas).map(|i| format!("cpu{i}")).collect();
    let reps: Vec<(&str, u32)> = ids.iter().map(|id| (id.as_str(), slots)).collect();
    let toml = format!(
        "{}\n[timeouts]\nfirst_token_ms = 60000\n{}",
        test_fixtures::api_keys_toml(&[(KEY, "t", "data"), (CONTROL, "ops", "control")]),
        test_fixtures::llamacpp_pool_toml(&e, "llm", 512, &reps)
    );
    config_schema::parse_str(&toml, "e2e.toml").unwrap()
}

struct Stack {
    /// Held for the test's length: dropping it stops the server.
    _server: orchestratord::LocalServer,
    base: String,
    engines: std::sync::Arc<llorch_serve::Engines>,
    http: reqwest::Client,
}

async fn start(replicas: u32, slots: u32) -> Stack {
    let cfg = config(replicas, slots);
    let (engines, overrides) = llorch_serve::Engines::start(&cfg).unwrap();
    assert!(
        engines.wait_preloaded(Duration::from_secs(120)).await,
        "{:?}",
        engines.statuses().await
    );
    let server = orchestratord::LocalServer::start(cfg, overrides, None)
        .await
        .unwrap();
    Stack {
        base: server.base.clone(),
        _server: server,
        engines,
        http: reqwest::Client::new(),
    }
}

impl Stack {
    async fn submit(&self, id: &str, max_tokens: u32) -> u16 {
        let body = serde_json::json!({
            "task_id": id, "workload": "completion", "model_ref": config(1, 1).pools[0].model_ref,
            "ctx": 512, "prompt": "Once upon a time, in a small village by the sea,", "max_tokens": max_tokens, "seed": 11
        });
        self.http
            .post(format!("{}/v1/tasks", self.base))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn stream(
        &self,
        id: &str,
    ) -> impl futures::Stream<Item = (String, serde_json::Value)> + use<> {
        use eventsource_stream::Eventsource;
        let resp = self
            .http
            .get(format!("{}/v1/tasks/{id}/stream", self.base))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        resp.bytes_stream().eventsource().map(|e| {
            let e = e.unwrap();
            (e.event, serde_json::from_str(&e.data).unwrap())
        })
    }

    async fn events(&self, id: &str) -> Vec<(String, serde_json::Value)> {
        tokio::time::timeout(Duration::from_secs(120), self.stream(id).await.collect())
            .await
            .expect("stream stalled")
    }

    async fn health(&self) -> serde_json::Value {
        self.http
            .get(format!("{}/v1/pools/llm/health", self.base))
            .bearer_auth(CONTROL)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn text(evs: &[(String, serde_json::Value)]) -> String {
    evs.iter()
        .filter(|(n, _)| n == "token")
        .map(|(_, d)| d["t"].as_str().unwrap().to_string())
        .collect()
}

/// Real tokens through the whole stack, same seed → same text, engine_version reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_tokens_through_the_orchestrator() {
    let s = start(1, 2).await;
    assert_eq!(s.submit("a", 16).await, 202);
    let a = s.events("a").await;
    assert_eq!(a.first().unwrap().0, "started");
    assert_eq!(a.last().unwrap().0, "end", "{a:?}");
    assert!(!text(&a).is_empty());
    assert_eq!(s.submit("b", 16).await, 202);
    assert_eq!(
        text(&s.events("b").await),
        text(&a),
        "same seed, same prompt"
    );
    let h = s.health().await;
    assert!(
        h["replicas"][0]["engine_version"]
            .as_str()
            .unwrap()
            .starts_with("llamacpp-b"),
        "{h}"
    );
    assert_eq!(h["replicas"][0]["cpu"], true);
}

/// Least-loaded placement across two replicas (ORCH-3011): two long tasks land on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_load() {
    let s = start(2, 1).await;
    assert_eq!(s.submit("x", 300).await, 202);
    assert_eq!(s.submit("y", 300).await, 202);
    let mut sx = Box::pin(s.stream("x").await);
    let mut sy = Box::pin(s.stream("y").await);
    for st in [&mut sx, &mut sy] {
        loop {
            let (n, _) = st.next().await.unwrap();
            if n == "token" {
                break;
            }
        }
    }
    let h = s.health().await;
    let busy: Vec<u64> = h["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["slots_busy"].as_u64().unwrap())
        .collect();
    assert_eq!(busy, [1, 1], "{h}");
}

/// Engine SIGKILL mid-stream: WORKER_RESET to the client within 2 s, the replica restarts after
/// backoff, the queued task is not lost and the next task succeeds (ORCH-3038).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_kill_mid_stream() {
    let s = start(1, 1).await;
    assert_eq!(s.submit("victim", 400).await, 202);
    let mut victim = Box::pin(s.stream("victim").await);
    loop {
        if victim.next().await.unwrap().0 == "token" {
            break;
        }
    }
    assert_eq!(s.submit("queued", 8).await, 202);
    let pid = s.engines.statuses().await[0].2.pid.unwrap();
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let killed = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let (n, d) = victim.next().await.unwrap();
            if n == "error" {
                return d;
            }
            assert_eq!(n, "token");
        }
    })
    .await
    .expect("no error event within 2 s of the engine's death");
    assert_eq!(err["code"], "WORKER_RESET", "{err}");
    assert!(killed.elapsed() < Duration::from_secs(2));
    // The queued task survives the crash and runs after the restart.
    let q = s.events("queued").await;
    assert_eq!(q.last().unwrap().0, "end", "{q:?}");
    assert_eq!(s.engines.statuses().await[0].2.restarts, 1);
    assert_eq!(s.submit("after", 4).await, 202);
    assert_eq!(s.events("after").await.last().unwrap().0, "end");
}
