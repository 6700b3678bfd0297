//! A misbehaving "vLLM" (a tiny in-test server): garbage chunks, truncated streams, streams
//! without a finish reason, oversized errors and events, odd framing, both error shapes. The
//! adapter always ends with a typed, bounded error or a well-formed end — never a panic, never
//! unbounded memory.

use adapter_api::{WorkerAdapter, WorkerError, WorkerState};
use api_types::{ErrorCode, FinishReason};
use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use llorch_vllm_adapter::{MAX_ENGINE_MESSAGE_BYTES, VllmAdapter, VllmConfig};
use test_fixtures::fake_engine::{self, Outcome, req, run};

const MODELS: &str = r#"{"object":"list","data":[{"id":"smollm2-135m","object":"model","created":1796229275,"owned_by":"vllm","root":"models/smollm2-135m-instruct-hf","parent":null,"max_model_len":2048,"permission":[]}]}"#;

fn tok(text: &str, finish: Option<&str>) -> String {
    format!(
        "data: {{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"smollm2-135m\",\"choices\":[{{\"index\":0,\"text\":{},\"logprobs\":null,\"finish_reason\":{},\"stop_reason\":null}}]}}\n\n",
        serde_json::json!(text),
        serde_json::json!(finish)
    )
}

const USAGE: &str = "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"smollm2-135m\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"total_tokens\":8,\"completion_tokens\":3},\"system_fingerprint\":\"vllm-0.32.0-94b7464a\"}\n\n";

fn sse(parts: Vec<Vec<u8>>) -> Response {
    fake_engine::sse("text/event-stream; charset=utf-8", parts)
}

async fn completions(body: Bytes) -> Response {
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["stream"], true);
    assert_eq!(v["stream_options"]["include_usage"], true);
    assert_eq!(v["model"], "smollm2-135m");
    let scenario = v["prompt"].as_str().unwrap().to_string();
    let b = |s: &str| s.as_bytes().to_vec();
    let split = {
        let t = tok("llo 東京", None).into_bytes();
        let at = t.windows(3).position(|w| w == "東".as_bytes()).unwrap() + 1;
        (t[..at].to_vec(), t[at..].to_vec())
    };
    match scenario.as_str() {
        "garbage" => sse(vec![b("data: not json\n\n")]),
        "garbage-mid" => sse(vec![b(&tok("a", None)), b("data: {\"choices\":[{\n\n")]),
        "wrong-types" => sse(vec![b(&tok("a", None)), b("data: {\"choices\":\"x\"}\n\n")]),
        "invalid-utf8" => sse(vec![
            b(&tok("a", None)),
            vec![b'd', b'a', b't', b'a', b':', 0xff, 0xfe, b'\n', b'\n'],
        ]),
        "truncated" => sse(vec![b(&tok("a", None)), b("data: {\"choices\":[{\"te")]),
        "no-finish" => sse(vec![b(&tok("a", None)), b(&tok("b", None))]),
        "done-no-finish" => sse(vec![b(&tok("a", None)), b("data: [DONE]\n\n")]),
        "empty" => sse(vec![]),
        "abort" => sse(vec![b(&tok("a", Some("abort"))), b("data: [DONE]\n\n")]),
        "huge-error" => sse(vec![
            b(&tok("a", None)),
            b(&format!(
                "data: {}\n\n",
                serde_json::json!({"error": {"message": "x".repeat(200_000), "type": "InternalServerError", "param": null, "code": 500}})
            )),
            b("data: [DONE]\n\n"),
        ]),
        "endless" => {
            // 64 KiB chunks of one line that never ends: 16 MiB if nobody stops reading.
            let first = b("data: ");
            let chunks = std::iter::once(first).chain((0..256).map(|_| vec![b'a'; 64 * 1024]));
            sse(chunks.collect())
        }
        "framing" => sse(vec![
            b(": ping\n\n"),
            b(&tok("He", None).replace("data: ", "data:").replace("\n\n", "\r\n\r\n")),
            // A chunk split across writes, mid-UTF-8.
            split.0,
            split.1,
            b(&tok("", Some("stop"))),
            b(USAGE),
            b("data: [DONE]\n\n"),
            // Anything after [DONE] is ignored.
            b("data: junk\n\n"),
        ]),
        "no-usage-no-done" => sse(vec![b(&tok("a", None)), b(&tok("b", Some("length")))]),
        "http-400-nested" => (
            StatusCode::BAD_REQUEST,
            r#"{"error":{"message":"This model's maximum context length is 2048 tokens.","type":"BadRequestError","param":null,"code":400}}"#,
        )
            .into_response(),
        "http-400-flat" => (
            StatusCode::BAD_REQUEST,
            r#"{"object":"error","message":"bad temperature","type":"BadRequestError","param":"temperature","code":400}"#,
        )
            .into_response(),
        "http-404" => (
            StatusCode::NOT_FOUND,
            r#"{"error":{"message":"The model `x` does not exist.","type":"NotFoundError","param":"model","code":404}}"#,
        )
            .into_response(),
        "http-500-html" => (StatusCode::INTERNAL_SERVER_ERROR, "<html>oops</html>").into_response(),
        "http-503-empty" => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        "http-400-huge" => (StatusCode::BAD_REQUEST, "z".repeat(8 << 20)).into_response(),
        other => panic!("unknown scenario {other}"),
    }
}

async fn server(health: StatusCode, models: &'static str) -> String {
    let app = Router::new()
        .route("/health", get(move || async move { health.into_response() }))
        .route("/v1/models", get(move || async move { models }))
        .route(
            "/metrics",
            get(|| async {
                "vllm:num_requests_waiting {\nvllm:num_requests_running{engine=\"0\"} 3\n\u{0}garbage"
            }),
        )
        .route("/v1/completions", post(completions));
    fake_engine::serve(app).await
}

fn bounded(e: &WorkerError) {
    fake_engine::bounded(e, MAX_ENGINE_MESSAGE_BYTES)
}

#[tokio::test]
async fn misbehaving_engine_gives_typed_bounded_errors() {
    let url = server(StatusCode::OK, MODELS).await;
    let a = VllmAdapter::new(VllmConfig::new(&url, "m")).unwrap();
    // HTTP errors before any token, in both error shapes.
    let refused = [
        ("http-400-nested", ErrorCode::InvalidParams),
        ("http-400-flat", ErrorCode::InvalidParams),
        ("http-404", ErrorCode::Internal),
        ("http-500-html", ErrorCode::WorkerReset),
        ("http-503-empty", ErrorCode::PoolUnready),
        ("http-400-huge", ErrorCode::InvalidParams),
    ];
    fake_engine::assert_refused(&a, &refused, MAX_ENGINE_MESSAGE_BYTES).await;
    // Streams that end in a typed error and no end event.
    let reset = [
        ("garbage", ""),
        ("empty", ""),
        ("endless", ""),
        ("garbage-mid", "a"),
        ("wrong-types", "a"),
        ("invalid-utf8", "a"),
        ("truncated", "a"),
        ("no-finish", "ab"),
        ("done-no-finish", "a"),
        ("abort", "a"),
        ("huge-error", "a"),
    ];
    fake_engine::assert_reset_after(&a, &reset, MAX_ENGINE_MESSAGE_BYTES).await;
    // Every job released its slot.
    assert_eq!(a.in_flight(), 0);
}

#[tokio::test]
async fn odd_but_valid_framing_streams() {
    let url = server(StatusCode::OK, MODELS).await;
    let a = VllmAdapter::new(VllmConfig::new(&url, "m")).unwrap();
    let Outcome::Streamed { text, end, err } = run(&a, "framing").await else {
        panic!("refused")
    };
    assert!(err.is_none(), "{err:?}");
    // `data:` without a space, CRLF, comments, a split chunk, an empty final text.
    assert_eq!(text, "Hello 東京");
    let end = end.unwrap();
    assert_eq!(end.finish_reason, Some(FinishReason::Stop));
    assert_eq!(end.prompt_tokens, Some(5));
    assert_eq!(end.tokens_out, 2);
    // A finish reason, then the body closes without usage or [DONE]: still a clean end.
    let Outcome::Streamed { text, end, err } = run(&a, "no-usage-no-done").await else {
        panic!("refused")
    };
    assert!(err.is_none(), "{err:?}");
    assert_eq!(text, "ab");
    let end = end.unwrap();
    assert_eq!(end.finish_reason, Some(FinishReason::Length));
    assert_eq!(end.prompt_tokens, None);
}

#[tokio::test]
async fn bad_health_models_and_metrics() {
    let url = server(StatusCode::SERVICE_UNAVAILABLE, "{not json").await;
    let a = VllmAdapter::new(VllmConfig::new(&url, "m")).unwrap();
    let h = a.health().await.unwrap();
    assert_eq!(h.state, WorkerState::Error, "{h:?}");
    assert!(h.last_error.unwrap().contains("503"));
    let e = a.properties().await.unwrap_err();
    assert_eq!(e.code, ErrorCode::WorkerReset);
    bounded(&e);
    let e = a.generate(req("garbage")).await.err().unwrap();
    assert_eq!(e.code, ErrorCode::WorkerReset);
    let m = a.metrics().await.unwrap();
    assert_eq!(m.requests_processing, Some(3.0));
    assert_eq!(m.requests_deferred, None);
    // A served name the engine does not list: Error, not Ready.
    let url = server(StatusCode::OK, MODELS).await;
    let mut c = VllmConfig::new(&url, "m");
    c.served_model_name = Some("other".into());
    let h = VllmAdapter::new(c).unwrap().health().await.unwrap();
    assert_eq!(h.state, WorkerState::Error, "{h:?}");
    // Nothing listening: Loading (vLLM binds only once the engine is up).
    let port = test_fixtures::free_port();
    let a = VllmAdapter::new(VllmConfig::new(format!("http://127.0.0.1:{port}"), "m")).unwrap();
    let h = a.health().await.unwrap();
    assert_eq!(h.state, WorkerState::Loading, "{h:?}");
    // Full slots: backpressure from the adapter itself.
    let a = VllmAdapter::new(VllmConfig::new(&url, "m")).unwrap();
    let s = a.generate(req("no-finish")).await.unwrap();
    let e = a.generate(req("framing")).await.err().unwrap();
    assert_eq!(e.code, ErrorCode::ReplicaExhausted);
    drop(s);
}
