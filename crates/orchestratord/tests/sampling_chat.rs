//! Sampling, stop sequences, constraints and chat in OrchQueue v1 (issue 14 item 0), and the
//! one-round-trip submit (issue 15 item 2), against the real binary with the mock engine.
//! The mock's tokens are a function of (seed, prompt or rendered chat, sampling), so these
//! tests see exactly what reached the engine.

mod common;

use adapter_api::GenerateRequest;
use api_types::TaskRequest;
use common::*;
use mock_adapter::{effective_prompt, mock_token};
use serde_json::{Value, json};

/// The tokens the mock engine produces for this task body, computed from the request as
/// admission resolves it (profile v1).
fn expected_tokens(body: &Value, n: u32) -> Vec<String> {
    let req: TaskRequest = serde_json::from_value(body.clone()).unwrap();
    let v = orchestratord::sampling::validate(&req).unwrap();
    let g = GenerateRequest {
        prompt: v.prompt,
        messages: v.messages,
        sampling: Some(v.sampling),
        ..Default::default()
    };
    let p = effective_prompt(&g);
    (0..n)
        .map(|i| mock_token(req.seed.unwrap(), &p, i))
        .collect()
}

fn tokens(evs: &[(String, Value)]) -> Vec<String> {
    evs.iter()
        .filter(|(e, _)| e == "token")
        .map(|(_, d)| d["t"].as_str().unwrap().to_string())
        .collect()
}

async fn run(s: &Server, body: Value) -> Vec<(String, Value)> {
    let id = body["task_id"].as_str().unwrap().to_string();
    let r = s.submit(DATA_KEY, body).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    read_events(s.stream(DATA_KEY, &id).await).await
}

fn chat(id: &str) -> Value {
    json!({
        "task_id": id, "workload": "chat", "model_ref": "mock:tiny", "ctx": 512, "max_tokens": 6,
        "seed": 5, "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hi"}
        ]
    })
}

/// Sampling fields and chat messages reach the engine as resolved (profile v1): the tokens
/// are the mock's function of exactly that request, and change when the sampling changes.
#[tokio::test]
async fn sampling_and_messages_reach_the_engine() {
    let s = Server::start(&mock_config(2, "", "", ""));
    let plain = run(&s, chat("c1")).await;
    assert_eq!(tokens(&plain), expected_tokens(&chat("c1"), 6));
    assert_eq!(plain.last().unwrap().1["finish_reason"], "length");

    let mut b = chat("c2");
    b["temperature"] = json!(0.3);
    b["top_k"] = json!(7);
    b["min_p"] = json!(0.1);
    b["repeat_penalty"] = json!(1.1);
    b["top_p"] = json!(0.5);
    let tuned = run(&s, b.clone()).await;
    assert_eq!(tokens(&tuned), expected_tokens(&b, 6));
    assert_ne!(
        tokens(&tuned),
        tokens(&plain),
        "sampling did not reach the engine"
    );

    let mut b = chat("c3");
    b["json_schema"] = json!({"type": "object"});
    let constrained = run(&s, b.clone()).await;
    assert_eq!(tokens(&constrained), expected_tokens(&b, 6));
    assert_ne!(tokens(&constrained), tokens(&plain));

    // A completion with the same text as prompt is not the chat: the template was applied.
    let mut b = task("p1", 6);
    b["seed"] = json!(5);
    b["prompt"] = json!("You are terse.\nSay hi");
    let completion = run(&s, b.clone()).await;
    assert_eq!(tokens(&completion), expected_tokens(&b, 6));
    assert_ne!(tokens(&completion), tokens(&plain));
}

/// A stop sequence ends the stream before its first match with `finish_reason: stop`; the
/// matched text is not emitted.
#[tokio::test]
async fn stop_sequences_end_the_stream_with_stop() {
    let s = Server::start(&mock_config(1, "", "", ""));
    let mut b = task("s0", 8);
    b["seed"] = json!(9);
    let all = expected_tokens(&b, 8);
    let text: String = all.concat();
    // Stop at the fourth token's word; the text before its first occurrence is expected.
    let stop = all[3].clone();
    let cut = text.find(&stop).unwrap();
    b["task_id"] = json!("s1");
    b["stop"] = json!([stop, "never-produced"]);
    let evs = run(&s, b).await;
    assert_eq!(tokens(&evs).concat(), text[..cut]);
    let end = &evs.last().unwrap();
    assert_eq!(end.0, "end");
    assert_eq!(end.1["finish_reason"], "stop", "{end:?}");
    assert_eq!(end.1["tokens_out"], tokens(&evs).len());
}

async fn expect_invalid(s: &Server, body: Value, field: &str) {
    let r = s.submit(DATA_KEY, body.clone()).await;
    assert_eq!(r.status(), 400, "{body}");
    let env: Value = r.json().await.unwrap();
    assert_eq!(env["code"], "INVALID_PARAMS", "{env}");
    let msg = env["message"].as_str().unwrap();
    assert!(msg.starts_with(&format!("`{field}`")), "{field}: {msg}");
}

/// Out-of-bounds sampling values and mismatched workload inputs are INVALID_PARAMS naming
/// the field, and admit nothing.
#[tokio::test]
async fn bad_sampling_and_chat_inputs_name_the_field() {
    let s = Server::start(&mock_config(1, "", "", ""));
    let with = |k: &str, v: Value| {
        let mut b = task("bad", 4);
        b[k] = v;
        b
    };
    for (field, v) in [
        ("temperature", json!(2.01)),
        ("temperature", json!(-1)),
        ("top_p", json!(0)),
        ("top_p", json!(1.5)),
        ("top_k", json!(1001)),
        ("min_p", json!(-0.1)),
        ("repeat_penalty", json!(0)),
        ("repeat_penalty", json!(2.5)),
        ("stop", json!(["a", "b", "c", "d", "e"])),
        ("stop", json!([""])),
        ("stop", json!(["x".repeat(257)])),
        ("grammar", json!("")),
        ("json_schema", json!("not an object")),
        ("sampler_profile_version", json!("v2")),
        ("messages", json!([{"role": "user", "content": "hi"}])),
    ] {
        expect_invalid(&s, with(field, v), field).await;
    }
    let mut b = with("grammar", json!("root ::= \"a\""));
    b["json_schema"] = json!({"type": "object"});
    expect_invalid(&s, b, "json_schema").await;
    let mut b = chat("bad");
    b.as_object_mut().unwrap().remove("messages");
    expect_invalid(&s, b, "messages").await;
    let mut b = chat("bad");
    b["messages"] = json!([]);
    expect_invalid(&s, b, "messages").await;
    let mut b = chat("bad");
    b["prompt"] = json!("also a prompt");
    expect_invalid(&s, b, "prompt").await;
    let mut b = chat("bad");
    b["messages"] = json!([{"role": "wizard", "content": "hi"}]);
    let r = s.submit(DATA_KEY, b).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        metric_value(&s.metrics().await, "llorch_tasks_enqueued_total", &[]),
        0.0
    );
}

/// `POST /v1/tasks` with `Accept: text/event-stream` answers the task's stream itself, the
/// same events as the two-step flow; admission errors stay typed JSON envelopes.
#[tokio::test]
async fn one_round_trip_submit_streams_directly() {
    let s = Server::start(&mock_config(
        1,
        "",
        "",
        "[[tenants]]\nid = \"tenant-b\"\nrequests_per_second = 0.001\nburst = 1",
    ));
    let post = |key: &'static str, body: Value| {
        s.http
            .post(s.url("/v1/tasks"))
            .bearer_auth(key)
            .header("accept", "text/event-stream")
            .json(&body)
            .send()
    };
    let mut b = task("one", 5);
    b["seed"] = json!(3);
    let r = post(DATA_KEY, b.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(r.headers()["location"], "/v1/tasks/one/stream");
    let one = read_events(r).await;
    let names: Vec<&str> = one.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names.first(), Some(&"started"));
    assert_eq!(names.last(), Some(&"end"));
    assert_eq!(tokens(&one), expected_tokens(&b, 5));
    // The two-step flow gives the same events.
    b["task_id"] = json!("two");
    let two = run(&s, b).await;
    assert_eq!(tokens(&two), tokens(&one));
    // The stream URL replays the one-round-trip task too.
    assert_eq!(
        tokens(&read_events(s.stream(DATA_KEY, "one").await).await),
        tokens(&one)
    );
    // Errors: typed status and JSON envelope, not a stream.
    let mut bad = task("bad", 5);
    bad["temperature"] = json!(9);
    let r = post(DATA_KEY, bad).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "INVALID_PARAMS");
    assert_eq!(post(DATA_KEY_B, task("b1", 2)).await.unwrap().status(), 200);
    let r = post(DATA_KEY_B, task("b2", 2)).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "ADMISSION_REJECT");
}
