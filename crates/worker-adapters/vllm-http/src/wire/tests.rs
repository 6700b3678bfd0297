use super::*;
use proptest::prelude::*;
use test_fixtures::fake_engine::{sampling, wire_req as req};

// Real captures from vLLM 0.32.0 (shared/engines/vllm-here.md), byte for byte.
const TOKEN: &str = r#"{"id":"cmpl-8d7bc85d791b8b85","object":"text_completion","created":1796229276,"model":"smollm2-135m","choices":[{"index":0,"text":" Paris","logprobs":null,"finish_reason":null,"stop_reason":null,"prompt_token_ids":null,"token_ids":null}]}"#;
const LAST: &str = r#"{"id":"cmpl-8d7bc85d791b8b85","object":"text_completion","created":1796229276,"model":"smollm2-135m","choices":[{"index":0,"text":":","logprobs":null,"finish_reason":"length","stop_reason":null,"prompt_token_ids":null,"token_ids":null}]}"#;
const USAGE: &str = r#"{"id":"cmpl-8d7bc85d791b8b85","object":"text_completion","created":1796229276,"model":"smollm2-135m","choices":[],"usage":{"prompt_tokens":5,"total_tokens":13,"completion_tokens":8},"system_fingerprint":"vllm-0.32.0-94b7464a"}"#;
const STOPPED: &str = r#"{"id":"cmpl-9a5adb376627c489","object":"text_completion","created":1796229276,"model":"smollm2-135m","choices":[{"index":0,"text":"\n\nThe ","logprobs":null,"finish_reason":"stop","stop_reason":"answer","prompt_token_ids":null,"token_ids":null}],"system_fingerprint":"vllm-0.32.0-94b7464a"}"#;
const TOO_MANY: &str = r#"{"error":{"message":"max_tokens=100000 cannot be greater than max_model_len=2048. Please request fewer output tokens. (parameter=max_tokens, value=100000)","type":"BadRequestError","param":"max_tokens","code":400}}"#;
const NO_MODEL: &str = r#"{"error":{"message":"The model `nope` does not exist. Valid aliases: smollm2-135m.","type":"NotFoundError","param":"model","code":404}}"#;
const MODELS: &str = r#"{"object":"list","data":[{"id":"smollm2-135m","object":"model","created":1796229275,"owned_by":"vllm","root":"models/smollm2-135m-instruct-hf","parent":null,"max_model_len":2048,"permission":[{"id":"modelperm-8a83b4a6a45740e3","object":"model_permission"}]}]}"#;

#[test]
fn parses_the_captured_chunks() {
    let Event::Chunk(c) = parse_event(TOKEN) else {
        panic!()
    };
    assert_eq!(c.choices[0].content(), " Paris");
    assert_eq!(c.choices[0].finish_reason, None);
    let Event::Chunk(c) = parse_event(LAST) else {
        panic!()
    };
    assert_eq!(
        c.choices[0]
            .finish_reason
            .as_deref()
            .and_then(finish_reason),
        Some(FinishReason::Length)
    );
    let Event::Chunk(c) = parse_event(USAGE) else {
        panic!()
    };
    assert!(c.choices.is_empty());
    assert_eq!(c.usage.as_ref().unwrap().prompt_tokens, Some(5));
    assert_eq!(
        c.system_fingerprint.as_deref(),
        Some("vllm-0.32.0-94b7464a")
    );
    let Event::Chunk(c) = parse_event(STOPPED) else {
        panic!()
    };
    assert_eq!(c.choices[0].content(), "\n\nThe ");
    assert_eq!(
        c.choices[0]
            .finish_reason
            .as_deref()
            .and_then(finish_reason),
        Some(FinishReason::Stop)
    );
    assert_eq!(parse_event("[DONE]"), Event::Done);
    let chat = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}"#;
    let Event::Chunk(c) = parse_event(chat) else {
        panic!()
    };
    assert_eq!(c.choices[0].content(), "Hi");
    let models: ModelList = serde_json::from_str(MODELS).unwrap();
    assert_eq!(models.data[0].id, "smollm2-135m");
    assert_eq!(models.data[0].max_model_len, Some(2048));
}

#[test]
fn errors_in_both_shapes_are_typed() {
    let e = error_from_body(400, TOO_MANY.as_bytes());
    assert_eq!(e.code, ErrorCode::InvalidParams);
    assert!(e.message.contains("max_model_len=2048"), "{}", e.message);
    assert_eq!(
        error_from_body(404, NO_MODEL.as_bytes()).code,
        ErrorCode::Internal
    );
    // The flat shape of older releases.
    let flat = r#"{"object":"error","message":"This model's maximum context length is 2048 tokens.","type":"BadRequestError","param":null,"code":400}"#;
    let e = error_from_body(400, flat.as_bytes());
    assert_eq!(e.code, ErrorCode::InvalidParams);
    assert!(e.message.contains("maximum context length"));
    // In a stream (no HTTP status): the body's code decides for an unknown type.
    let Event::Error(e) =
        parse_event(r#"{"error":{"message":"boom","type":"Weird","param":null,"code":503}}"#)
    else {
        panic!()
    };
    assert_eq!(e.code, ErrorCode::PoolUnready);
    let Event::Error(e) = parse_event(
        r#"{"error":{"message":"engine died","type":"EngineDeadError","param":null,"code":500}}"#,
    ) else {
        panic!()
    };
    assert_eq!(e.code, ErrorCode::WorkerReset);
    assert_eq!(
        error_from_body(429, b"slow down").code,
        ErrorCode::ReplicaExhausted
    );
    assert_eq!(
        error_from_body(500, b"Internal Server Error").code,
        ErrorCode::WorkerReset
    );
    let d = error_from_body(422, br#"{"detail":[{"loc":["body"],"msg":"x"}]}"#);
    assert_eq!(d.code, ErrorCode::InvalidParams);
    assert!(d.message.contains("msg"));
    // Oversized messages are clipped, on a char boundary.
    let big = format!(
        r#"{{"error":{{"message":"{}","type":"BadRequestError","param":null,"code":400}}}}"#,
        "é".repeat(100_000)
    );
    let e = error_from_body(400, big.as_bytes());
    assert!(e.message.len() < 700);
}

#[test]
fn garbage_is_worker_reset() {
    for bad in [
        "{",
        "null",
        "[]",
        r#"{"choices":"x"}"#,
        "\u{0}",
        r#"{"error":3}"#,
    ] {
        let Event::Error(e) = parse_event(bad) else {
            panic!("{bad} parsed")
        };
        assert_eq!(e.code, ErrorCode::WorkerReset, "{bad}");
    }
}

#[test]
fn maps_requests() {
    let r0 = req(None);
    let r = CompletionRequest::from_request(&r0, "m").unwrap();
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"model":"m","prompt":"p","max_tokens":8,"seed":7,"stream":true,
            "stream_options":{"include_usage":true}})
    );
    let g = req(Some(sampling(0.0)));
    let v = serde_json::to_value(CompletionRequest::from_request(&g, "m").unwrap()).unwrap();
    assert_eq!(v["temperature"], 0.0);
    assert!(v.get("top_k").is_none() && v.get("top_p").is_none());
    assert_eq!(v["stop"], serde_json::json!(["\n\n"]));
    let s = req(Some(sampling(0.7)));
    let v = serde_json::to_value(CompletionRequest::from_request(&s, "m").unwrap()).unwrap();
    assert_eq!(v["top_k"], 40);
    assert!((v["min_p"].as_f64().unwrap() - 0.05).abs() < 1e-6);
    assert!((v["repetition_penalty"].as_f64().unwrap() - 1.1).abs() < 1e-6);
    let mut big = req(None);
    big.seed = u64::MAX;
    let v = serde_json::to_value(CompletionRequest::from_request(&big, "m").unwrap()).unwrap();
    assert_eq!(v["seed"], i64::MAX);
    let mut zero = req(None);
    zero.max_tokens = 0;
    assert_eq!(
        CompletionRequest::from_request(&zero, "m")
            .unwrap_err()
            .code,
        ErrorCode::InvalidParams
    );
    let mut chat = req(None);
    chat.messages = Some(vec![api_types::ChatMessage {
        role: api_types::ChatRole::User,
        content: "hi".into(),
    }]);
    let v = serde_json::to_value(CompletionRequest::from_request(&chat, "m").unwrap()).unwrap();
    assert!(v.get("prompt").is_none());
    assert_eq!(
        v["messages"],
        serde_json::json!([{"role":"user","content":"hi"}])
    );
}

proptest! {
    #[test]
    fn any_event_text_is_typed(s in "\\PC{0,200}") {
        let _ = parse_event(&s);
    }

    #[test]
    fn any_error_body_is_typed(b in prop::collection::vec(any::<u8>(), 0..400), status in 100u16..600) {
        let e = error_from_body(status, &b);
        prop_assert!(e.message.len() < 700);
    }
}
