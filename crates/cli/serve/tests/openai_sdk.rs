//! The OpenAI front door with real clients on a real model (issue 14 item 1): the official
//! `openai` Python package (pinned, installed by `cargo xtask fetch-engine`) and `curl -N`
//! stream a completion and a chat completion from a supervised llama-server (SmolLM2-135M)
//! through llama-orch, and a quota-limited tenant gets the same 429 through both dialects.
//! Greedy decoding with a fixed seed: the OpenAI answers must equal OrchQueue v1's, byte for
//! byte, for the same request.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

const KEY: &str = "oai-data-key";
const LIMITED: &str = "oai-limited-key";

fn config() -> config_schema::Config {
    let e = test_fixtures::engine();
    let toml = format!(
        "[server]\nopenai_compat = true\n\n[timeouts]\nfirst_token_ms = 60000\n\n[[tenants]]\nid = \"limited\"\nrequests_per_second = 0.001\nburst = 1\n{}\n{}",
        test_fixtures::api_keys_toml(&[(KEY, "t", "data"), (LIMITED, "limited", "data")]),
        test_fixtures::llamacpp_pool_toml(&e, "llm", 1024, &[("cpu0", 2)])
    );
    config_schema::parse_str(&toml, "openai_sdk.toml").unwrap()
}

/// Runs an OrchQueue v1 task in one round trip and returns (text, end event).
async fn orchqueue(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    body: Value,
) -> (u16, String, Value) {
    use eventsource_stream::Eventsource;
    let r = http
        .post(format!("{base}/v1/tasks"))
        .bearer_auth(key)
        .header("accept", "text/event-stream")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    if status != 200 {
        return (status, String::new(), r.json().await.unwrap());
    }
    let evs: Vec<_> = tokio::time::timeout(
        Duration::from_secs(120),
        r.bytes_stream().eventsource().collect::<Vec<_>>(),
    )
    .await
    .expect("stream stalled");
    let mut text = String::new();
    let mut last = Value::Null;
    for e in evs {
        let e = e.unwrap();
        let d: Value = serde_json::from_str(&e.data).unwrap();
        if e.event == "token" {
            text.push_str(d["t"].as_str().unwrap());
        }
        last = json!({"event": e.event, "data": d});
    }
    (status, text, last)
}

fn messages() -> Value {
    json!([
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"}
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_package_and_curl_stream_a_real_model() {
    let python = test_fixtures::openai_python();
    let cfg = config();
    let model = cfg.pools[0].model_ref.clone();
    let (engines, overrides) = llorch_serve::Engines::start(&cfg).unwrap();
    assert!(engines.wait_preloaded(Duration::from_secs(120)).await);
    let server = orchestratord::LocalServer::start(cfg, overrides, None)
        .await
        .unwrap();
    let base = server.base.clone();
    let http = reqwest::Client::new();

    // OrchQueue v1's answers to the same requests.
    let (_, oq_completion, end) = orchqueue(
        &http,
        &base,
        KEY,
        json!({"workload": "completion", "model_ref": model, "ctx": 1024, "prompt": "Once upon a time,",
               "max_tokens": 12, "seed": 7, "temperature": 0}),
    )
    .await;
    assert_eq!(end["event"], "end", "{end}");
    let (_, oq_chat, end) = orchqueue(
        &http,
        &base,
        KEY,
        json!({"workload": "chat", "model_ref": model, "ctx": 1024, "messages": messages(),
               "max_tokens": 24, "seed": 7, "temperature": 0}),
    )
    .await;
    assert_eq!(end["event"], "end", "{end}");
    assert!(!oq_chat.is_empty() && !oq_completion.is_empty());

    // The official client.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/openai_sdk.py");
    let args = [
        script.to_string(),
        base.clone(),
        KEY.into(),
        LIMITED.into(),
        model.clone(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "openai client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("openai client saw: {r:#}");
    let c = &r["completion"];
    assert_eq!(
        c["text"],
        oq_completion.as_str(),
        "completion differs from OrchQueue v1"
    );
    assert_eq!(c["finish_reason"], "length");
    assert_eq!(c["usage"]["completion_tokens"], 12);
    assert!(c["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(c["chunks"].as_u64().unwrap() > 1, "not streamed: {c}");
    let ch = &r["chat"];
    assert_eq!(
        ch["text"],
        oq_chat.as_str(),
        "chat differs from OrchQueue v1"
    );
    assert_eq!(ch["role"], "assistant");
    assert!(matches!(
        ch["finish_reason"].as_str(),
        Some("stop" | "length")
    ));
    // Stop at "." : the greedy answer up to its first period, finish_reason stop.
    let dot = oq_chat.find('.').expect("the greedy answer has a period");
    assert_eq!(r["chat_stop"]["text"], &oq_chat[..dot]);
    assert_eq!(r["chat_stop"]["finish_reason"], "stop");
    assert_eq!(r["models"], json!([model]));
    assert_eq!(
        r["unknown_model"],
        json!({"status": 404, "code": "model_not_found"})
    );
    let lim = &r["limited"];
    assert_eq!(lim["status"], 429, "{lim}");
    assert_eq!(lim["code"], "ADMISSION_REJECT");
    assert_eq!(lim["type"], "rate_limit_error");
    assert!(lim["retry_after"].as_str().unwrap().parse::<u64>().unwrap() >= 1);
    // The same tenant through OrchQueue v1: the same refusal.
    let (status, _, env) = orchqueue(
        &http,
        &base,
        LIMITED,
        json!({"workload": "completion", "model_ref": model, "ctx": 1024, "prompt": "x", "max_tokens": 2}),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(env["code"], "ADMISSION_REJECT");

    // Constraints reach the real engine: a grammar allows only "yes" or "no" (OrchQueue v1),
    // and a grammar the engine cannot parse is INVALID_PARAMS (OpenAI dialect, extension).
    let (_, yes_no, end) = orchqueue(
        &http,
        &base,
        KEY,
        json!({"workload": "chat", "model_ref": model, "ctx": 1024, "max_tokens": 8, "seed": 1,
               "messages": [{"role": "user", "content": "Is Paris in France?"}],
               "grammar": "root ::= \"yes\" | \"no\""}),
    )
    .await;
    assert!(yes_no == "yes" || yes_no == "no", "{yes_no:?} {end}");
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&json!({"model": model, "messages": messages(), "max_tokens": 4, "grammar": "root ::= ((("}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "INVALID_PARAMS", "{e}");

    // curl -N: a streamed chat completion as raw SSE.
    let body = json!({"model": model, "messages": messages(), "max_tokens": 24, "seed": 7,
                      "temperature": 0, "stream": true});
    let url = format!("{base}/v1/chat/completions");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args([
                "-sN",
                "--fail-with-body",
                "-H",
                &format!("Authorization: Bearer {KEY}"),
            ])
            .args([
                "-H",
                "content-type: application/json",
                "-d",
                &body.to_string(),
                &url,
            ])
            .output()
            .expect("curl")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let raw = String::from_utf8(out.stdout).unwrap();
    let data: Vec<&str> = raw
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{raw}");
    let text: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(text, oq_chat, "curl's stream differs");
    server.stop().await.unwrap();
}
