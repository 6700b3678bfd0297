//! End to end: a config with a TGI pool (replica `engine_url` → `llorch-tgi-sim` → the real
//! llama-server), served by orchestratord through the public API, streams real tokens; the
//! same greedy request through `/v1/completions` (OpenAI compat) gives llama-server's text.

mod common;

use std::time::Duration;

const PROMPT: &str = "Once upon a time, in a small village by the sea,";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tgi_pool_streams_through_the_public_api() {
    let s = common::stack(&["--sha", "e2e0123456789"]).await;
    let cfg = config_schema::parse_str(
        &format!(
            r#"
[server]
openai_compat = true

[[auth.api_keys]]
key = "tgi-data-key"
tenant = "t"
role = "data"

[[auth.api_keys]]
key = "tgi-control-key"
tenant = "ops"
role = "control"

[[pools]]
id = "tgi"
engine = "tgi"
model_ref = "smollm2"
ctx_max = 1024
allow_cpu_inference = true

[[pools.replicas]]
id = "r0"
slots = 2
engine_url = "{}"
"#,
            s.sim_url
        ),
        "tgi.toml",
    )
    .unwrap();
    let server = orchestratord::LocalServer::start(cfg, Default::default(), None)
        .await
        .unwrap();
    let base = server.base.clone();
    let http = reqwest::Client::new();

    // The pool is Ready and reports TGI's build.
    let start = std::time::Instant::now();
    let health = loop {
        let h: serde_json::Value = http
            .get(format!("{base}/v1/pools/tgi/health"))
            .bearer_auth("tgi-control-key")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if h.to_string().contains("tgi-3.3.6-dev0+e2e012345678") {
            break h;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "pool never showed the TGI build: {h}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(health.to_string().contains("\"tgi\""), "{health}");

    let body = serde_json::json!({
        "task_id": "tgi-e2e", "workload": "completion", "model_ref": "smollm2", "ctx": 1024,
        "prompt": PROMPT, "max_tokens": 12, "seed": 5
    });
    let events = test_fixtures::api::submit_and_read(&base, "tgi-data-key", "tgi-e2e", &body).await;
    let tokens = events.iter().filter(|(n, _)| n == "token").count();
    assert!(tokens >= 1, "{events:?}");
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "end", "{events:?}");
    assert!(data.contains("\"tokens_out\":12"), "{data}");

    // Greedy through the OpenAI-compatible route: exactly llama-server's greedy text.
    let v: serde_json::Value = http
        .post(format!("{base}/v1/completions"))
        .bearer_auth("tgi-data-key")
        .json(&serde_json::json!({
            "model": "smollm2", "prompt": PROMPT, "max_tokens": 12, "temperature": 0
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = v["choices"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(text, s.llama_greedy(PROMPT, 12).await, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");

    // The engine saw our requests.
    let m = s.metrics().await;
    assert_eq!(m.request_success, Some(2.0), "{m:?}");
}
