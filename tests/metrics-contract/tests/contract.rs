//! The metrics contract against live daemons (SPEC §7): the real orchestratord and
//! pool-managerd binaries on loopback, a representative workload through their public APIs,
//! then each `/metrics` scrape is linted against `contract.toml` (undocumented, missing, type,
//! labels, naming) and, where promtool is installed, by `promtool check metrics`.
//!
//! This is the one contract test of both daemons; it absorbed the former
//! `crates/orchestratord/tests/metrics_contract.rs` and
//! `crates/pool-managerd/tests/metrics_contract.rs` with all their assertions.

use std::time::Duration;

use futures::StreamExt;
use llorch_metrics_contract::{self as contract, Scrape, daemons::Daemon};

const DATA_KEY: &str = "contract-data-key";
const CONTROL_KEY: &str = "contract-control-key";

fn wat(name: &str) -> String {
    format!(
        "{}/../../examples/plugins/wat/{name}.wat",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn mock_pool(id: &str, model: &str, extra: &str, replica: &str) -> String {
    format!(
        "\n[[pools]]\nid = \"{id}\"\nengine = \"mock\"\nmodel_ref = \"{model}\"\nctx_max = 1024\n\
         allow_cpu_inference = true\n{extra}\n\n[[pools.replicas]]\n{replica}\n"
    )
}

/// orchestratord's config: pool `p` (one slot, queue capacity 1, for a 429 and a cancel), a
/// pool whose engine fails after one token, and two pools with policy plugins — one that
/// decides, one whose answers are garbage (fallbacks).
fn orchestratord_config() -> String {
    let mut cfg = test_fixtures::api_keys_toml(&[
        (DATA_KEY, "tenant-a", "data"),
        (CONTROL_KEY, "ops", "control"),
    ]);
    cfg.push_str("\n[tenant_defaults]\nmax_concurrent = 100\n");
    cfg.push_str(&mock_pool(
        "p",
        "mock:tiny",
        "queue = { capacity = 1 }",
        "id = \"r0\"\nslots = 1\nmock = { tokens_per_second = 200 }",
    ));
    cfg.push_str(&mock_pool(
        "f",
        "mock:faulty",
        "",
        "id = \"f0\"\nmock = { error_after_tokens = 1 }",
    ));
    for (id, module) in [("good", "good"), ("junk", "garbage")] {
        cfg.push_str(&mock_pool(
            id,
            &format!("mock:{id}"),
            &format!("policy = {{ module = {:?} }}", wat(module)),
            &format!("id = \"{id}0\""),
        ));
    }
    cfg
}

fn task(id: &str, model: &str, max_tokens: u32) -> serde_json::Value {
    serde_json::json!({
        "task_id": id, "workload": "completion", "model_ref": model,
        "ctx": 512, "prompt": "write a haiku", "max_tokens": max_tokens
    })
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn submit(&self, body: serde_json::Value) -> u16 {
        let r = self
            .http
            .post(format!("{}/v1/tasks", self.base))
            .bearer_auth(DATA_KEY)
            .json(&body)
            .send()
            .await;
        r.expect("submit").status().as_u16()
    }

    /// The event names of a whole task stream.
    async fn events(&self, id: &str) -> Vec<String> {
        use eventsource_stream::Eventsource;
        let r = self
            .http
            .get(format!("{}/v1/tasks/{id}/stream", self.base))
            .bearer_auth(DATA_KEY)
            .send()
            .await;
        let mut s = r.expect("stream").bytes_stream().eventsource();
        let mut out = Vec::new();
        while let Some(ev) = tokio::time::timeout(Duration::from_secs(20), s.next())
            .await
            .expect("stream stalled")
        {
            out.push(ev.expect("sse parse").event);
        }
        out
    }

    async fn cancel(&self, id: &str) -> u16 {
        let r = self
            .http
            .post(format!("{}/v1/tasks/{id}/cancel", self.base))
            .bearer_auth(DATA_KEY)
            .send()
            .await;
        r.expect("cancel").status().as_u16()
    }
}

async fn scrape(http: &reqwest::Client, url: String) -> (String, Scrape) {
    let r = http.get(url).send().await.expect("GET /metrics");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("metrics body");
    let parsed =
        contract::parse(&text).unwrap_or_else(|e| panic!("unparsable scrape: {e}\n{text}"));
    (text, parsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestratord_metrics_follow_the_contract() {
    let c = contract::load().unwrap_or_else(|e| panic!("{e}"));
    let d = Daemon::start(
        "orchestratord",
        &[],
        &orchestratord_config(),
        &[],
        Duration::from_secs(30),
    );
    let cl = Client {
        http: reqwest::Client::new(),
        base: d.base.clone(),
    };

    // An error: the faulty engine fails after one token.
    assert_eq!(cl.submit(task("f", "mock:faulty", 3)).await, 202);
    assert_eq!(
        cl.events("f").await.last().map(String::as_str),
        Some("error")
    );
    // Completions through both policy plugins (decisions and fallbacks).
    for pool in ["good", "junk"] {
        assert_eq!(cl.submit(task(pool, &format!("mock:{pool}"), 2)).await, 202);
        assert_eq!(
            cl.events(pool).await.last().map(String::as_str),
            Some("end")
        );
    }
    // A completion with a deadline (deadlines met ratio).
    let mut a = task("a", "mock:tiny", 3);
    a["deadline_ms"] = serde_json::json!(60_000);
    assert_eq!(cl.submit(a).await, 202);
    assert_eq!(cl.events("a").await.last().map(String::as_str), Some("end"));
    // A long task on the one slot, one queued, a 429 (queue full), a cancel.
    assert_eq!(cl.submit(task("b", "mock:tiny", 300)).await, 202);
    assert_eq!(cl.submit(task("c", "mock:tiny", 3)).await, 202);
    assert_eq!(cl.submit(task("d", "mock:tiny", 3)).await, 429);
    assert_eq!(cl.cancel("b").await, 204);

    let (text, s) = scrape(&cl.http, d.url("/metrics")).await;
    contract::assert_conforms(&c, "orchestratord", &s);
    contract::assert_promtool_clean("orchestratord", &text);
    // The workload shows in the values, not only in the family names.
    let v = |name: &str, labels: &[(&str, &str)]| s.value(name, labels).unwrap_or(0.0);
    assert!(
        v("llorch_tasks_completed_total", &[("pool_id", "good")]) >= 1.0,
        "{text}"
    );
    assert!(
        v("llorch_tasks_failed_total", &[("pool_id", "f")]) >= 1.0,
        "{text}"
    );
    assert!(
        v(
            "llorch_tasks_canceled_total",
            &[("pool_id", "p"), ("reason", "client_request")]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        v("llorch_tasks_rejected_total", &[("pool_id", "p")]) >= 1.0,
        "{text}"
    );
    assert!(
        v("llorch_backpressure_events_total", &[("pool_id", "p")]) >= 1.0,
        "{text}"
    );
    assert!(
        v("llorch_policy_fallbacks_total", &[("pool_id", "junk")]) >= 1.0,
        "{text}"
    );
    assert!(
        text.contains("cpu=\"true\""),
        "CPU replica must be labelled"
    );
    println!(
        "orchestratord: {} families scraped, {} documented for it",
        s.families().len(),
        c.of("orchestratord").count()
    );
}

/// pool-managerd supervising a real llama-server (the provisioned engine and model); its
/// registry reports engine_version and model digest per replica (ORCH-3032).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_managerd_metrics_follow_the_contract() {
    let c = contract::load().unwrap_or_else(|e| panic!("{e}"));
    let e = test_fixtures::engine();
    let state = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        "{}{}",
        test_fixtures::api_keys_toml(&[(DATA_KEY, "t", "data"), (CONTROL_KEY, "o", "control")]),
        test_fixtures::llamacpp_pool_toml(&e, "llm", 512, &[("cpu0", 1)])
    );
    let state_dir = state.path().display().to_string();
    let d = Daemon::start(
        "pool-managerd",
        &["serve"],
        &cfg,
        &[("STATE_DIRECTORY", &state_dir)],
        Duration::from_secs(180),
    );
    let http = reqwest::Client::new();

    // Traffic: one completion on the engine, one catalog registration and verification.
    let (_, before) = scrape(&http, d.url("/metrics")).await;
    let replicas: serde_json::Value = http
        .get(d.url("/v1/replicas"))
        .send()
        .await
        .expect("replicas")
        .json()
        .await
        .expect("json");
    // The registry names the engine build and the model digest the replica serves (ORCH-3032).
    assert!(
        replicas[0]["engine_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("llamacpp-b")),
        "{replicas}"
    );
    assert_eq!(
        replicas[0]["model_digest"].as_str(),
        Some(e.model_sha256.as_str()),
        "{replicas}"
    );
    let engine_url = replicas[0]["engine_url"]
        .as_str()
        .unwrap_or_else(|| panic!("no engine_url in {replicas}"))
        .to_string();
    let body =
        serde_json::json!({"prompt": "Count: one two", "n_predict": 6, "cache_prompt": false});
    let r = http
        .post(format!("{engine_url}/completion"))
        .json(&body)
        .send()
        .await
        .expect("completion");
    assert_eq!(r.status(), 200);
    let body =
        serde_json::json!({"model_ref": e.model.display().to_string(), "sha256": e.model_sha256});
    let r = http
        .post(d.url("/v1/catalog/models"))
        .bearer_auth(CONTROL_KEY)
        .json(&body)
        .send()
        .await
        .expect("catalog");
    assert_eq!(r.status(), 201);
    let verify = d.url(&format!("/v1/catalog/models/{}/verify", e.model_sha256));
    let r = http
        .post(verify)
        .bearer_auth(CONTROL_KEY)
        .send()
        .await
        .expect("verify");
    assert_eq!(r.status(), 200);

    let (text, s) = scrape(&http, d.url("/metrics")).await;
    contract::assert_conforms(&c, "pool-managerd", &s);
    contract::assert_promtool_clean("pool-managerd", &text);
    // The CPU replica is labelled as such, Ready, and its engine_version is the real build.
    let ready = s
        .samples
        .iter()
        .find(|x| x.name == "llorch_replica_ready")
        .expect("replica_ready sample");
    assert!(
        ready.labels["cpu"] == "true"
            && ready.labels["engine_version"].starts_with("llamacpp-b")
            && ready.value == 1.0,
        "{}",
        ready.line
    );
    let state_ready = [
        ("cpu", "true"),
        ("engine", "llamacpp"),
        ("pool_id", "llm"),
        ("replica_id", "cpu0"),
        ("state", "ready"),
    ];
    assert_eq!(
        s.value("llorch_replica_state", &state_ready),
        Some(1.0),
        "{text}"
    );
    let preload = [
        ("outcome", "ready"),
        ("pool_id", "llm"),
        ("replica_id", "cpu0"),
    ];
    assert_eq!(
        s.value("llorch_preload_outcomes_total", &preload),
        Some(1.0),
        "{text}"
    );
    // llama-server's own counters, folded in: the completion shows.
    let generated = "llorch_engine_generated_tokens_total";
    let (b, a) = (
        before.value(generated, &[]).unwrap_or(0.0),
        s.value(generated, &[]).unwrap_or(0.0),
    );
    assert!(a >= b + 1.0, "generated tokens {b} -> {a}");
    assert!(
        s.value("llorch_engine_prompt_tokens_total", &[])
            .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
    assert_eq!(
        s.value(
            "llorch_catalog_verifications_total",
            &[("result", "passed")]
        ),
        Some(1.0),
        "{text}"
    );
    println!(
        "pool-managerd: {} families scraped, {} documented for it",
        s.families().len(),
        c.of("pool-managerd").count()
    );
}
