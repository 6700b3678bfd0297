//! A misbehaving "TGI" (a tiny in-test server): garbage events, truncated streams, streams
//! without a final event, oversized errors and events, odd framing. The adapter always ends
//! with a typed, bounded error or a well-formed end — never a panic, never unbounded memory.

use adapter_api::{WorkerAdapter, WorkerError, WorkerState};
use api_types::{ErrorCode, FinishReason};
use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use llorch_tgi_adapter::{MAX_ENGINE_MESSAGE_BYTES, TgiAdapter, TgiConfig};
use test_fixtures::fake_engine::{self, Outcome, req, run};

const INFO: &str = r#"{"model_id":"bad/engine","max_concurrent_requests":4,"max_best_of":2,"max_stop_sequences":4,"max_input_tokens":511,"max_total_tokens":512,"validation_workers":2,"max_client_batch_size":4,"router":"text-generation-router","version":"3.3.6-dev0","sha":null,"docker_label":null}"#;

fn tok(i: u32, text: &str) -> String {
    format!(
        "data: {{\"index\":{i},\"token\":{{\"id\":{i},\"text\":{},\"logprob\":-0.5,\"special\":false}},\"generated_text\":null,\"details\":null}}\n\n",
        serde_json::json!(text)
    )
}

fn sse(parts: Vec<Vec<u8>>) -> Response {
    fake_engine::sse("text/event-stream", parts)
}

async fn generate_stream(body: Bytes) -> Response {
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    // The adapter never sends temperature 0 (TGI would refuse it).
    assert!(
        v["parameters"]
            .get("temperature")
            .is_none_or(|t| t.as_f64() != Some(0.0))
    );
    let scenario = v["inputs"].as_str().unwrap().to_string();
    let b = |s: &str| s.as_bytes().to_vec();
    let split = {
        let t = tok(2, "llo 東京").into_bytes();
        let at = t.windows(3).position(|w| w == "東".as_bytes()).unwrap() + 1;
        (t[..at].to_vec(), t[at..].to_vec())
    };
    match scenario.as_str() {
        "garbage" => sse(vec![b("data: not json\n\n")]),
        "garbage-mid" => sse(vec![
            b(&tok(1, "a")),
            b("data: {\"index\":2,\"token\":\n\n"),
        ]),
        "wrong-types" => sse(vec![b(
            "data: {\"index\":\"x\",\"token\":{\"text\":5}}\n\n",
        )]),
        "invalid-utf8" => sse(vec![
            b(&tok(1, "a")),
            vec![b'd', b'a', b't', b'a', b':', 0xff, 0xfe, b'\n', b'\n'],
        ]),
        "truncated" => sse(vec![b(&tok(1, "a")), b("data: {\"index\":2,\"tok")]),
        "no-final" => sse(vec![b(&tok(1, "a")), b(&tok(2, "b"))]),
        "empty" => sse(vec![]),
        "huge-error" => sse(vec![
            b(&tok(1, "a")),
            b(&format!(
                "data: {}\n\n",
                serde_json::json!({"error": "x".repeat(200_000), "error_type": "generation"})
            )),
        ]),
        "huge-error-type" => sse(vec![b(&format!(
            "data: {}\n\n",
            serde_json::json!({"error": "boom", "error_type": "y".repeat(100_000)})
        ))]),
        "endless" => {
            // 64 KiB chunks of one line that never ends: 16 MiB if nobody stops reading.
            let first = b("data: ");
            let chunks = std::iter::once(first).chain((0..256).map(|_| vec![b'a'; 64 * 1024]));
            sse(chunks.collect())
        }
        "framing" => sse(vec![
            b(":\n\n"),
            b(
                "data:{\"index\":1,\"token\":{\"id\":1,\"text\":\"He\",\"logprob\":-0.1,\"special\":false},\"generated_text\":null,\"details\":null}\r\n\r\n",
            ),
            b(": ping\n\n"),
            // An event split across writes, mid-UTF-8.
            split.0,
            split.1,
            b(
                "data: {\"index\":3,\"token\":{\"id\":2,\"text\":\"</s>\",\"logprob\":-0.1,\"special\":true},\"generated_text\":\"Hello 東京\",\"details\":{\"finish_reason\":\"eos_token\",\"generated_tokens\":3,\"seed\":null,\"input_length\":4}}\n\n",
            ),
        ]),
        "no-details" => sse(vec![
            b(&tok(1, "a")),
            b(
                "data: {\"index\":2,\"token\":{\"id\":2,\"text\":\"b\",\"logprob\":-0.1,\"special\":false},\"generated_text\":\"ab\",\"details\":null}\n\n",
            ),
            // Anything after the final event is ignored.
            b("data: junk\n\n"),
        ]),
        "http-429" => (
            StatusCode::TOO_MANY_REQUESTS,
            r#"{"error":"Model is overloaded","error_type":"overloaded"}"#,
        )
            .into_response(),
        "http-500-html" => (StatusCode::INTERNAL_SERVER_ERROR, "<html>oops</html>").into_response(),
        "http-422-huge" => (StatusCode::UNPROCESSABLE_ENTITY, "z".repeat(1 << 20)).into_response(),
        other => panic!("unknown scenario {other}"),
    }
}

async fn server(health: (StatusCode, &'static str), info: &'static str) -> String {
    let app = Router::new()
        .route(
            "/health",
            get(move || async move { health.into_response() }),
        )
        .route("/info", get(move || async move { info }))
        .route(
            "/metrics",
            get(|| async { "tgi_queue_size {\ntgi_batch_current_size 3\n\u{0}garbage" }),
        )
        .route("/generate_stream", post(generate_stream));
    fake_engine::serve(app).await
}

fn bounded(e: &WorkerError) {
    fake_engine::bounded(e, MAX_ENGINE_MESSAGE_BYTES)
}

#[tokio::test]
async fn misbehaving_engine_gives_typed_bounded_errors() {
    let url = server((StatusCode::OK, ""), INFO).await;
    let a = TgiAdapter::new(TgiConfig::new(&url, "m")).unwrap();
    // Refused before the first token.
    let refused = [
        ("garbage", ErrorCode::WorkerReset),
        ("wrong-types", ErrorCode::WorkerReset),
        ("empty", ErrorCode::WorkerReset),
        ("endless", ErrorCode::WorkerReset),
        ("huge-error-type", ErrorCode::Internal),
        ("http-429", ErrorCode::ReplicaExhausted),
        ("http-500-html", ErrorCode::WorkerReset),
        ("http-422-huge", ErrorCode::InvalidParams),
    ];
    fake_engine::assert_refused(&a, &refused, MAX_ENGINE_MESSAGE_BYTES).await;
    // Tokens, then a typed error and no end.
    let reset = [
        ("garbage-mid", "a"),
        ("invalid-utf8", "a"),
        ("truncated", "a"),
        ("no-final", "ab"),
        ("huge-error", "a"),
    ];
    fake_engine::assert_reset_after(&a, &reset, MAX_ENGINE_MESSAGE_BYTES).await;
    // Every job released its slot.
    assert_eq!(a.in_flight(), 0);
}

#[tokio::test]
async fn odd_but_valid_framing_streams() {
    let url = server((StatusCode::OK, ""), INFO).await;
    let a = TgiAdapter::new(TgiConfig::new(&url, "m")).unwrap();
    let Outcome::Streamed { text, end, err } = run(&a, "framing").await else {
        panic!("refused")
    };
    assert!(err.is_none(), "{err:?}");
    // `data:` without a space, CRLF, comments, a split event; the EOS token is not text.
    assert_eq!(text, "Hello 東京");
    let end = end.unwrap();
    assert_eq!(end.finish_reason, Some(FinishReason::Stop));
    assert_eq!(end.prompt_tokens, Some(4));
    let Outcome::Streamed { text, end, err } = run(&a, "no-details").await else {
        panic!("refused")
    };
    assert!(err.is_none(), "{err:?}");
    assert_eq!(text, "ab");
    assert_eq!(end.unwrap().finish_reason, None);
}

#[tokio::test]
async fn bad_health_info_and_metrics() {
    let url = server(
        (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":"unhealthy","error_type":"healthcheck"}"#,
        ),
        "{not json",
    )
    .await;
    let a = TgiAdapter::new(TgiConfig::new(&url, "m")).unwrap();
    let h = a.health().await.unwrap();
    assert_eq!(h.state, WorkerState::Error, "{h:?}");
    assert!(h.last_error.unwrap().contains("unhealthy"));
    let e = a.properties().await.unwrap_err();
    assert_eq!(e.code, ErrorCode::WorkerReset);
    bounded(&e);
    let e = a.generate(req("garbage")).await.err().unwrap();
    assert_eq!(e.code, ErrorCode::WorkerReset);
    let m = a.metrics().await.unwrap();
    assert_eq!(m.requests_processing, Some(3.0));
    assert_eq!(m.requests_deferred, None);
}
