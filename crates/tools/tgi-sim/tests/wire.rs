//! The simulator's bytes on the wire, checked raw (not through the adapter) against tgi.md:
//! event framing and field order, the validation event on HTTP 200, `/generate` error bodies,
//! keep-alive comments, and that the adapter reads a stream full of keep-alives unchanged.

mod common;

use adapter_api::{GenerateRequest, WorkerAdapter, WorkerEvent};
use futures::StreamExt;

const PROMPT: &str = "Once upon a time, in a small village by the sea,";

async fn post(url: &str, body: serde_json::Value) -> (u16, String, String) {
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_on_the_wire_follow_tgi() {
    // A keep-alive after 5 ms without an event: CPU decoding is slower, so comments appear
    // between tokens.
    let s = common::stack(&["--keep-alive-ms", "5"]).await;
    let u = &s.sim_url;

    // temperature 0: TGI's validation error, as an SSE event on HTTP 200.
    let (status, ct, body) = post(
        &format!("{u}/generate_stream"),
        serde_json::json!({"inputs": PROMPT, "parameters": {"temperature": 0.0}}),
    )
    .await;
    assert_eq!((status, ct.as_str()), (200, "text/event-stream"));
    assert_eq!(
        body,
        "data: {\"error\":\"Input validation error: `temperature` must be strictly positive\",\"error_type\":\"validation\"}\n\n"
    );
    // The same on /generate: 422 with the JSON body.
    let (status, _, body) = post(
        &format!("{u}/generate"),
        serde_json::json!({"inputs": PROMPT, "parameters": {"temperature": 0.0}}),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(
        body,
        r#"{"error":"Input validation error: `temperature` must be strictly positive","error_type":"validation"}"#
    );
    let (status, _, body) = post(
        &format!("{u}/generate"),
        serde_json::json!({"inputs": PROMPT, "parameters": {"max_new_tokens": 0}}),
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        body.contains("`max_new_tokens` must be strictly positive"),
        "{body}"
    );
    let (status, ct, body) = post(
        &format!("{u}/generate"),
        serde_json::json!({"parameters": {}}),
    )
    .await;
    assert_eq!((status, ct.as_str()), (422, "text/plain; charset=utf-8"));
    assert!(
        body.starts_with("Failed to deserialize the JSON body"),
        "{body}"
    );

    // A greedy stream: framing, field order, indices, generated_text = the token texts.
    let (status, _, body) = post(
        &format!("{u}/generate_stream"),
        serde_json::json!({"inputs": PROMPT, "parameters": {"max_new_tokens": 16, "details": true}}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains(":\n\n"), "no keep-alive comment in {body:?}");
    let events: Vec<&str> = body
        .split("\n\n")
        .filter(|e| !e.is_empty() && *e != ":")
        .collect();
    assert_eq!(events.len(), 16, "{body}");
    let mut text = String::new();
    for (n, e) in events.iter().enumerate() {
        let json = e
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("framing: {e:?}"));
        assert!(
            json.starts_with(&format!("{{\"index\":{},\"token\":{{\"id\":", n + 1)),
            "{json}"
        );
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let keys: Vec<&str> = v["token"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 4, "{json}");
        text.push_str(v["token"]["text"].as_str().unwrap());
        if n < 15 {
            assert!(
                json.ends_with(",\"generated_text\":null,\"details\":null}"),
                "{json}"
            );
        } else {
            assert_eq!(v["generated_text"], text.as_str());
            let d = &v["details"];
            assert_eq!(d["finish_reason"], "length");
            assert_eq!(d["generated_tokens"], 16);
            assert!(d["seed"].is_null(), "greedy: no seed");
            assert!(json.contains(",\"details\":{\"finish_reason\":\"length\",\"generated_tokens\":16,\"seed\":null,\"input_length\":"), "{json}");
        }
    }
    assert_eq!(text, s.llama_greedy(PROMPT, 16).await);

    // The adapter skips the comments: the same text.
    let a = tgi_adapter::TgiAdapter::new(tgi_adapter::TgiConfig::new(u, "smollm2")).unwrap();
    let mut st = a
        .generate(GenerateRequest {
            job_id: "ka".into(),
            prompt: PROMPT.into(),
            max_tokens: 16,
            seed: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut got = String::new();
    while let Some(ev) = st.next().await {
        match ev.unwrap() {
            WorkerEvent::Token(t) => got.push_str(&t.t),
            WorkerEvent::End(e) => assert_eq!(e.tokens_out, 16),
        }
    }
    assert_eq!(got, text);

    // /info carries what the adapter needs; /health is 200 with an empty body.
    let info: serde_json::Value = reqwest::get(format!("{u}/info"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["router"], "text-generation-router");
    assert_eq!(info["max_total_tokens"], 1024);
    assert_eq!(info["max_input_tokens"], 1023);
    let h = reqwest::get(format!("{u}/health")).await.unwrap();
    assert_eq!(h.status(), 200);
    assert_eq!(h.text().await.unwrap(), "");
}
