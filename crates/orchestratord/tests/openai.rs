//! The OpenAI-compatible front door (issue 14 item 1) against the real binary with the mock
//! engine: requests map onto the same tasks as OrchQueue v1 (same tokens), non-stream and
//! stream shapes, OpenAI's error shape with the llama-orch code, and one tenant quota across
//! both dialects.

mod common;

use common::*;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{Value, json};

const LIMITED_KEY: &str = "test-data-key-limited";

fn config(extra: &str) -> String {
    let keys = test_fixtures::api_keys_toml(&[(LIMITED_KEY, "limited", "data")]);
    mock_config(
        2,
        "",
        "",
        &format!(
            "[server]\nopenai_compat = true\n{keys}\n[[tenants]]\nid = \"limited\"\nrequests_per_second = 0.001\nburst = 1\n{extra}"
        ),
    )
}

async fn post(s: &Server, key: &str, path: &str, body: Value) -> reqwest::Response {
    s.http
        .post(s.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Token texts of an OrchQueue v1 task run through the two-step flow.
async fn orchqueue_text(s: &Server, body: Value) -> (String, Value) {
    let id = body["task_id"].as_str().unwrap().to_string();
    assert_eq!(s.submit(DATA_KEY, body).await.status(), 202);
    let evs = read_events(s.stream(DATA_KEY, &id).await).await;
    let text = evs
        .iter()
        .filter(|(e, _)| e == "token")
        .map(|(_, d)| d["t"].as_str().unwrap())
        .collect();
    (text, evs.last().unwrap().1.clone())
}

/// The `data:` payloads of an SSE response, `[DONE]` included.
async fn sse_data(r: reqwest::Response) -> Vec<String> {
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut s = r.bytes_stream().eventsource();
    let mut out = Vec::new();
    while let Some(ev) = tokio::time::timeout(std::time::Duration::from_secs(20), s.next())
        .await
        .expect("stream stalled")
    {
        out.push(ev.unwrap().data);
    }
    out
}

const MESSAGES: &str =
    r#"[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hi"}]"#;

/// Chat and completion requests become the same tasks as their OrchQueue v1 equivalents:
/// same seed, sampling, messages or prompt → byte-identical text, and a stop sequence ends
/// both with `stop`.
#[tokio::test]
async fn openai_requests_map_onto_orchqueue_tasks() {
    let s = Server::start(&config(""));
    let messages: Value = serde_json::from_str(MESSAGES).unwrap();
    let (oq_chat, end) = orchqueue_text(
        &s,
        json!({"task_id": "oq-chat", "workload": "chat", "model_ref": "mock:tiny", "ctx": 1024,
               "messages": messages, "max_tokens": 7, "seed": 42, "temperature": 0.4, "top_p": 0.9}),
    )
    .await;
    assert_eq!(end["finish_reason"], "length");
    let r = post(
        &s,
        DATA_KEY,
        "/v1/chat/completions",
        json!({"model": "mock:tiny", "messages": messages, "max_tokens": 7, "seed": 42,
               "temperature": 0.4, "top_p": 0.9}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let c: Value = r.json().await.unwrap();
    assert_eq!(c["choices"][0]["message"]["content"], oq_chat.as_str());
    assert_eq!(c["choices"][0]["finish_reason"], "length");

    let (oq_text, _) = orchqueue_text(
        &s,
        json!({"task_id": "oq-cmpl", "workload": "completion", "model_ref": "mock:tiny", "ctx": 1024,
               "prompt": "Once upon a time", "max_tokens": 9, "seed": 7}),
    )
    .await;
    // The pool id names the model too.
    let r = post(
        &s,
        DATA_KEY,
        "/v1/completions",
        json!({"model": "p", "prompt": "Once upon a time", "max_tokens": 9, "seed": 7}),
    )
    .await;
    let c: Value = r.json().await.unwrap();
    assert_eq!(c["choices"][0]["text"], oq_text.as_str());
    assert_ne!(oq_text, oq_chat);

    // Stop: cut before the first occurrence of the fourth word, finish_reason stop.
    let word = oq_text.split_inclusive(' ').count();
    assert!(word > 4);
    let fourth = format!(" {}", oq_text.split(' ').nth(4).unwrap());
    let cut = oq_text.find(&fourth).unwrap();
    let r = post(
        &s,
        DATA_KEY,
        "/v1/completions",
        json!({"model": "mock:tiny", "prompt": "Once upon a time", "max_tokens": 9, "seed": 7,
               "stop": fourth}),
    )
    .await;
    let c: Value = r.json().await.unwrap();
    assert_eq!(c["choices"][0]["text"], &oq_text[..cut]);
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
}

/// Non-stream and stream shapes, `stream_options.include_usage`, `[DONE]`.
#[tokio::test]
async fn openai_response_and_stream_shapes() {
    let s = Server::start(&config(""));
    let messages: Value = serde_json::from_str(MESSAGES).unwrap();
    let body = json!({"model": "mock:tiny", "messages": messages, "max_tokens": 5, "seed": 1});
    let c: Value = post(&s, DATA_KEY, "/v1/chat/completions", body.clone())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(c["object"], "chat.completion");
    assert!(c["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(c["model"], "mock:tiny");
    assert_eq!(c["choices"][0]["message"]["role"], "assistant");
    assert_eq!(c["usage"]["completion_tokens"], 5);
    let u = &c["usage"];
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + 5
    );
    let full = c["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();

    let mut sb = body.clone();
    sb["stream"] = json!(true);
    sb["stream_options"] = json!({"include_usage": true});
    let data = sse_data(post(&s, DATA_KEY, "/v1/chat/completions", sb).await).await;
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, full, "stream and non-stream differ");
    let n = chunks.len();
    assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], "length");
    assert!(chunks[..n - 1].iter().all(|c| c["usage"].is_null()));
    assert_eq!(chunks[n - 1]["choices"], json!([]));
    assert_eq!(chunks[n - 1]["usage"]["completion_tokens"], 5);

    // Completions stream without usage: text chunks, the last with finish_reason.
    let data = sse_data(
        post(
            &s,
            DATA_KEY,
            "/v1/completions",
            json!({"model": "mock:tiny", "prompt": "hi", "max_tokens": 3, "stream": true}),
        )
        .await,
    )
    .await;
    assert_eq!(data.len(), 3 + 1 + 1, "{data:?}");
    let last: Value = serde_json::from_str(&data[3]).unwrap();
    assert_eq!(last["object"], "text_completion");
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert!(last.get("usage").is_none());

    // Capabilities announce the facade, chat and sampling.
    let caps: Value = s
        .get(DATA_KEY, "/v1/capabilities")
        .await
        .json()
        .await
        .unwrap();
    for f in ["openai", "sampling", "submit-stream"] {
        assert!(
            caps["features"].as_array().unwrap().contains(&json!(f)),
            "{caps}"
        );
    }
    assert_eq!(caps["workloads"], json!(["completion", "chat"]));
    // Models: the configured pools.
    let m: Value = s.get(DATA_KEY, "/v1/models").await.json().await.unwrap();
    assert_eq!(m["object"], "list");
    assert_eq!(m["data"][0]["id"], "mock:tiny");
    assert_eq!(m["data"][0]["pool_id"], "p");
}

async fn expect_oai_error(
    r: reqwest::Response,
    status: u16,
    kind: &str,
    code: &str,
    param: Option<&str>,
) -> Value {
    assert_eq!(r.status().as_u16(), status, "expected {code}");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let v: Value = r.json().await.unwrap();
    let e = &v["error"];
    assert_eq!(e["type"], kind, "{v}");
    assert_eq!(e["code"], code, "{v}");
    assert_eq!(e["param"].as_str(), param, "{v}");
    assert!(!e["message"].as_str().unwrap().is_empty());
    v
}

/// Errors come in OpenAI's shape, with the llama-orch code and the field at fault.
#[tokio::test]
async fn openai_errors_have_openai_shape() {
    let s = Server::start(&config(""));
    let chat = |extra: Value| {
        let mut b = json!({"model": "mock:tiny", "messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let p = "/v1/chat/completions";
    expect_oai_error(
        post(&s, DATA_KEY, p, chat(json!({"model": "gpt-4o"}))).await,
        404,
        "invalid_request_error",
        "model_not_found",
        Some("model"),
    )
    .await;
    expect_oai_error(
        post(&s, DATA_KEY, p, chat(json!({"n": 2}))).await,
        400,
        "invalid_request_error",
        "INVALID_PARAMS",
        Some("n"),
    )
    .await;
    expect_oai_error(
        post(&s, DATA_KEY, p, chat(json!({"temperature": 3.0}))).await,
        400,
        "invalid_request_error",
        "INVALID_PARAMS",
        Some("temperature"),
    )
    .await;
    expect_oai_error(
        post(&s, DATA_KEY, p, chat(json!({"tools": []}))).await,
        400,
        "invalid_request_error",
        "INVALID_PARAMS",
        Some("tools"),
    )
    .await;
    expect_oai_error(
        post(&s, DATA_KEY, p, chat(json!({"stop": 5}))).await,
        400,
        "invalid_request_error",
        "INVALID_PARAMS",
        Some("stop"),
    )
    .await;
    expect_oai_error(
        post(&s, DATA_KEY, p, chat(json!({"max_tokens": 5000}))).await,
        400,
        "invalid_request_error",
        "INVALID_PARAMS",
        None,
    )
    .await;
    expect_oai_error(
        post(
            &s,
            DATA_KEY,
            p,
            chat(json!({"messages": [{"role": "tool", "content": "x"}]})),
        )
        .await,
        400,
        "invalid_request_error",
        "INVALID_PARAMS",
        Some("messages"),
    )
    .await;
    expect_oai_error(
        post(
            &s,
            DATA_KEY,
            "/v1/completions",
            json!({"model": "mock:tiny", "prompt": ["a", "b"]}),
        )
        .await,
        400,
        "invalid_request_error",
        "INVALID_PARAMS",
        Some("prompt"),
    )
    .await;
    let r = s
        .http
        .post(s.url(p))
        .bearer_auth(DATA_KEY)
        .header("content-type", "application/json")
        .body("{\"model\":")
        .send()
        .await
        .unwrap();
    expect_oai_error(
        r,
        400,
        "invalid_request_error",
        "INVALID_PARAMS",
        Some("body"),
    )
    .await;
    expect_oai_error(
        post(&s, "wrong-key", p, chat(json!({}))).await,
        401,
        "authentication_error",
        "UNAUTHENTICATED",
        None,
    )
    .await;
    expect_oai_error(
        post(&s, CONTROL_KEY, p, chat(json!({}))).await,
        403,
        "permission_error",
        "FORBIDDEN",
        None,
    )
    .await;
    let r = s.http.get(s.url("/v1/models")).send().await.unwrap();
    expect_oai_error(r, 401, "authentication_error", "UNAUTHENTICATED", None).await;
    // Nothing was admitted.
    assert_eq!(
        metric_value(&s.metrics().await, "llorch_tasks_enqueued_total", &[]),
        0.0
    );
}

/// A quota-limited tenant gets the same 429 (ADMISSION_REJECT, Retry-After) through either
/// dialect: the quota is one book, whichever door a request comes in by.
#[tokio::test]
async fn quota_limited_tenant_gets_the_same_429_through_both_dialects() {
    let s = Server::start(&config(""));
    let chat = json!({"model": "mock:tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    // The burst of 1 goes to the OpenAI door ...
    assert_eq!(
        post(&s, LIMITED_KEY, "/v1/chat/completions", chat.clone())
            .await
            .status(),
        200
    );
    // ... so OrchQueue v1 refuses the next one ...
    let r = s.submit(LIMITED_KEY, task("q1", 2)).await;
    assert_eq!(r.status(), 429);
    let oq_retry = r.headers()["retry-after"].to_str().unwrap().to_string();
    let env: Value = r.json().await.unwrap();
    assert_eq!(env["code"], "ADMISSION_REJECT");
    // ... and so does the OpenAI door, in its own shape, with the same code and Retry-After.
    for path in ["/v1/chat/completions", "/v1/completions"] {
        let body = if path.ends_with("chat/completions") {
            chat.clone()
        } else {
            json!({"model": "mock:tiny", "prompt": "hi", "max_tokens": 2, "stream": true})
        };
        let r = post(&s, LIMITED_KEY, path, body).await;
        let retry = r.headers()["retry-after"].to_str().unwrap().to_string();
        let v = expect_oai_error(r, 429, "rate_limit_error", "ADMISSION_REJECT", None).await;
        let (m, oq) = (
            v["error"]["message"].as_str().unwrap(),
            env["message"].as_str().unwrap(),
        );
        assert!(
            m.contains("requests_per_second") && oq.contains("requests_per_second"),
            "{m} | {oq}"
        );
        let (a, b): (u64, u64) = (retry.parse().unwrap(), oq_retry.parse().unwrap());
        assert!(a.abs_diff(b) <= 1, "Retry-After {a} vs {b}");
    }
    // Both refusals were counted where OrchQueue's are.
    assert!(
        metric_value(
            &s.metrics().await,
            "llorch_tasks_rejected_total",
            &["reason=\"ADMISSION_REJECT\""]
        ) >= 3.0
    );
    // Other tenants are unaffected.
    assert_eq!(
        post(&s, DATA_KEY, "/v1/chat/completions", chat)
            .await
            .status(),
        200
    );
}

/// Off unless configured: without `openai_compat` the routes do not exist.
#[tokio::test]
async fn openai_front_door_is_opt_in() {
    let s = Server::start(&mock_config(1, "", "", ""));
    let r = post(
        &s,
        DATA_KEY,
        "/v1/chat/completions",
        json!({"model": "mock:tiny", "messages": []}),
    )
    .await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "NOT_FOUND");
}
