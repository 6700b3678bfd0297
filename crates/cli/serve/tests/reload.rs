//! Pool reload with the real engine (SPEC §2): the new model starts beside the old one and the
//! switch happens only once it is Ready; a broken model or a checksum mismatch rolls back, and
//! the old model keeps serving throughout.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

const KEY: &str = "reload-data-key";
const CONTROL: &str = "reload-control-key";

struct Stack {
    /// Held for the test's length: dropping it stops the server.
    _server: orchestratord::LocalServer,
    base: String,
    http: reqwest::Client,
    model: String,
    sha: String,
    _engines: Arc<llorch_serve::Engines>,
}

async fn start() -> Stack {
    let e = test_fixtures::engine();
    let toml = format!(
        "{}{}",
        test_fixtures::api_keys_toml(&[(KEY, "t", "data"), (CONTROL, "ops", "control")]),
        test_fixtures::llamacpp_pool_toml(&e, "llm", 512, &[("cpu0", 1)])
    );
    let cfg = config_schema::parse_str(&toml, "reload.toml").unwrap();
    let (engines, overrides) = llorch_serve::Engines::start(&cfg).unwrap();
    assert!(engines.wait_preloaded(Duration::from_secs(120)).await);
    let server = orchestratord::LocalServer::start(
        cfg,
        overrides,
        Some(llorch_serve::controller(engines.clone())),
    )
    .await
    .unwrap();
    Stack {
        base: server.base.clone(),
        _server: server,
        http: reqwest::Client::new(),
        model: e.model.display().to_string(),
        sha: e.model_sha256,
        _engines: engines,
    }
}

impl Stack {
    async fn submit(&self, id: &str, model_ref: &str, max_tokens: u32) -> u16 {
        let body = serde_json::json!({
            "task_id": id, "workload": "completion", "model_ref": model_ref, "ctx": 512,
            "prompt": "Once upon a time, in a small village by the sea,", "max_tokens": max_tokens, "seed": 3
        });
        let r = self
            .http
            .post(format!("{}/v1/tasks", self.base))
            .bearer_auth(KEY)
            .json(&body);
        r.send().await.unwrap().status().as_u16()
    }

    async fn last_event(&self, id: &str) -> (String, serde_json::Value) {
        use eventsource_stream::Eventsource;
        let resp = self
            .http
            .get(format!("{}/v1/tasks/{id}/stream", self.base))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        let evs: Vec<_> = tokio::time::timeout(
            Duration::from_secs(120),
            resp.bytes_stream().eventsource().collect::<Vec<_>>(),
        )
        .await
        .unwrap();
        let e = evs.into_iter().last().unwrap().unwrap();
        (e.event, serde_json::from_str(&e.data).unwrap())
    }

    async fn reload(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = self
            .http
            .post(format!("{}/v1/pools/llm/reload", self.base))
            .bearer_auth(CONTROL)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn model_ref(&self) -> String {
        let v: serde_json::Value = self
            .http
            .get(format!("{}/v1/replicasets", self.base))
            .bearer_auth(CONTROL)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v[0]["model_ref"].as_str().unwrap().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_switches_atomically_and_running_work_finishes_on_the_old_engine() {
    let s = start().await;
    let dir = tempfile::tempdir().unwrap();
    let new_model = dir.path().join("smollm2-copy.gguf");
    std::fs::copy(&s.model, &new_model).unwrap();
    let new_ref = new_model.display().to_string();
    assert_eq!(s.submit("during", &s.model, 120).await, 202);
    let (status, health) = s
        .reload(serde_json::json!({"new_model_ref": new_ref, "new_model_sha256": s.sha}))
        .await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["ready"], true);
    assert_eq!(s.model_ref().await, new_ref);
    // The task that ran across the switch finished normally (on the old engine).
    let (event, data) = s.last_event("during").await;
    assert_eq!(event, "end", "{data}");
    assert_eq!(s.submit("new", &new_ref, 4).await, 202);
    assert_eq!(s.last_event("new").await.0, "end");
    assert_eq!(
        s.submit("old", &s.model, 4).await,
        400,
        "the old model_ref is gone after the switch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_model_and_checksum_mismatch_roll_back() {
    let s = start().await;
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.gguf");
    std::fs::write(&broken, b"GGUF but not a model").unwrap();
    let (status, env) = s
        .reload(serde_json::json!({"new_model_ref": broken.display().to_string()}))
        .await;
    assert_eq!(status, 503, "{env}");
    assert_eq!(env["code"], "POOL_UNREADY");
    assert!(
        env["message"].as_str().unwrap().contains("rolled back"),
        "{env}"
    );
    assert_eq!(s.model_ref().await, s.model);
    assert_eq!(s.submit("still", &s.model, 4).await, 202);
    assert_eq!(s.last_event("still").await.0, "end");

    let (status, env) = s
        .reload(serde_json::json!({"new_model_ref": s.model, "new_model_sha256": "0".repeat(64)}))
        .await;
    assert_eq!(status, 422, "{env}");
    assert_eq!(env["code"], "UNTRUSTED_ARTIFACT");
    assert_eq!(s.submit("still2", &s.model, 4).await, 202);
    assert_eq!(s.last_event("still2").await.0, "end");
    // Bad request bodies change nothing either.
    let (status, _) = s.reload(serde_json::json!({"new_model_ref": ""})).await;
    assert_eq!(status, 400);
    let (status, _) = s.reload(serde_json::json!({"model": "x"})).await;
    assert_eq!(status, 400);
}
