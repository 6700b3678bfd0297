//! End-to-end tests of `llorch` against an in-process HTTP fake of the OrchQueue v1 endpoints.
//!
//! This is a contract fake; the real-server consumer tests live in orchestratord's tests. The fake
//! answers with canned responses shaped by `api-types` (the wire contract), so these tests check
//! the CLI's request building, SSE handling, output and exit codes, not the server's behaviour.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api_types::{ErrorCode, ErrorEnvelope, SessionInfo, StreamEvent, TaskAccepted, TaskRequest};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Parser;
use futures::StreamExt;
use llama_orch_cli::{ApiKey, Cli, CliError, Client, EXIT_CLIENT, EXIT_OK, EXIT_RETRY, run};

const KEY: &str = "good-key-0123456789";

#[derive(Default)]
struct Seen {
    /// (method+path, Authorization header) of every request.
    requests: Vec<(String, Option<String>)>,
    /// Bodies of `POST /v1/tasks` that parsed as `TaskRequest`.
    tasks: Vec<TaskRequest>,
}

type Shared = Arc<Mutex<Seen>>;

fn record(seen: &Shared, what: String, headers: &HeaderMap) -> bool {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let ok = auth.as_deref() == Some(&format!("Bearer {KEY}"));
    seen.lock().expect("lock").requests.push((what, auth));
    ok
}

fn envelope(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let env = ErrorEnvelope {
        code,
        message: message.to_string(),
        engine: None,
        pool_id: None,
        retriable: Some(code.retriable()),
        retry_after_ms: None,
        policy_label: None,
        correlation_id: "corr-42".to_string(),
    };
    (status, axum::Json(env)).into_response()
}

fn unauthenticated() -> Response {
    envelope(
        StatusCode::UNAUTHORIZED,
        ErrorCode::Unauthenticated,
        "unknown API key",
    )
}

async fn submit(
    State(seen): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !record(&seen, "POST /v1/tasks".into(), &headers) {
        return unauthenticated();
    }
    let req: TaskRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return envelope(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidParams,
                &e.to_string(),
            );
        }
    };
    seen.lock().expect("lock").tasks.push(req.clone());
    match req.model_ref.as_str() {
        "busy" => {
            let mut resp = envelope(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::AdmissionReject,
                "queue full",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            resp.headers_mut()
                .insert("x-backoff-ms", HeaderValue::from_static("1500"));
            resp
        }
        "too-big" => envelope(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidParams,
            "ctx exceeds ctx_max",
        ),
        _ => {
            let task_id = req.task_id.unwrap_or_else(|| "t-1".to_string());
            let accepted = TaskAccepted {
                stream_url: format!("/v1/tasks/{task_id}/stream"),
                task_id,
                queue_position: 3,
                predicted_start_ms: 120,
                backoff_ms: 0,
                tokens_budget_remaining: None,
                time_budget_remaining_ms: None,
            };
            (StatusCode::ACCEPTED, axum::Json(accepted)).into_response()
        }
    }
}

fn sse(name: &str, data: &str) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

async fn stream(
    State(seen): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !record(&seen, format!("GET /v1/tasks/{id}/stream"), &headers) {
        return unauthenticated();
    }
    let started = sse(
        "started",
        r#"{"queue_position":3,"predicted_start_ms":120}"#,
    );
    let chunks: Vec<String> = match id.as_str() {
        "t-1" => vec![
            ": keep-alive\n\n".into(),
            started,
            sse("token", r#"{"t":"Hel","i":0}"#),
            sse(
                "metrics",
                r#"{"queue_depth":1,"on_time_probability":0.9,"kv_warmth":false,"tokens_budget_remaining":62,"future_field":1}"#,
            ),
            sse("token", r#"{"t":"lo","i":1}"#),
            sse("end", r#"{"tokens_out":2,"decode_ms":40}"#),
        ],
        "t-err" => vec![
            started,
            sse("token", r#"{"t":"x","i":0}"#),
            sse(
                "error",
                r#"{"code":"DECODE_TIMEOUT","message":"engine stalled","engine":"mock","retriable":true,"retry_after_ms":500}"#,
            ),
        ],
        "t-trunc" => vec![started, sse("token", r#"{"t":"x","i":0}"#)],
        _ => return envelope(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such task"),
    };
    // Sent chunk by chunk with pauses, so the client really reads a live stream.
    let body = futures::stream::iter(chunks).then(|c| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok::<_, Infallible>(c)
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(body))
        .expect("response")
}

async fn cancel(
    State(seen): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !record(&seen, format!("POST /v1/tasks/{id}/cancel"), &headers) {
        return unauthenticated();
    }
    match id.as_str() {
        "missing" => envelope(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such task"),
        _ => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn session_get(
    State(seen): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !record(&seen, format!("GET /v1/sessions/{id}"), &headers) {
        return unauthenticated();
    }
    match id.as_str() {
        "s-1" => axum::Json(session_s1()).into_response(),
        "proxy" => (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "text/html")],
            "<html>bad gateway</html>",
        )
            .into_response(),
        _ => envelope(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "no such session",
        ),
    }
}

async fn session_delete(
    State(seen): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !record(&seen, format!("DELETE /v1/sessions/{id}"), &headers) {
        return unauthenticated();
    }
    StatusCode::NO_CONTENT.into_response()
}

fn session_s1() -> SessionInfo {
    SessionInfo {
        session_id: "s-1".into(),
        ttl_ms_remaining: 600_000,
        turns: 2,
        kv_bytes: 4096,
        kv_warmth: true,
        tokens_budget_remaining: None,
        time_budget_remaining_ms: None,
    }
}

struct Fake {
    url: String,
    seen: Shared,
}

async fn start_fake() -> Fake {
    let seen: Shared = Arc::default();
    let app = Router::new()
        .route("/v1/tasks", post(submit))
        .route("/v1/tasks/{id}/stream", get(stream))
        .route("/v1/tasks/{id}/cancel", post(cancel))
        .route("/v1/sessions/{id}", get(session_get).delete(session_delete))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    Fake {
        url: format!("http://{addr}"),
        seen,
    }
}

/// Runs `llorch --url URL --api-key KEY ARGS...` in-process; returns (exit code, stdout, stderr).
async fn llorch_with_key(url: &str, key: &str, args: &[&str]) -> (i32, String, String) {
    let mut argv = vec!["llorch", "--url", url, "--api-key", key];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("arguments parse");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run(cli, &mut out, &mut err).await;
    let (out, err) = (
        String::from_utf8(out).expect("utf8"),
        String::from_utf8(err).expect("utf8"),
    );
    assert!(
        !out.contains(key) && !err.contains(key),
        "API key leaked:\n{out}\n{err}"
    );
    (code, out, err)
}

async fn llorch(url: &str, args: &[&str]) -> (i32, String, String) {
    llorch_with_key(url, KEY, args).await
}

#[tokio::test]
async fn submit_streams_tokens_live_and_summarizes() {
    let fake = start_fake().await;
    let (code, out, err) = llorch(
        &fake.url,
        &["submit", "--model-ref", "m", "--prompt", "Say hello"],
    )
    .await;
    assert_eq!(code, EXIT_OK, "{err}");
    assert_eq!(out, "Hello");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines[0], "accepted: task t-1");
    assert_eq!(lines[1], "queued: position 3, predicted start in 120 ms");
    assert_eq!(lines[2], "", "the open token line is closed on stderr");
    assert!(lines[3].starts_with("done: 2 tokens in "), "{err}");
    assert!(
        lines[3].ends_with("(decode 0.04 s, 50.0 tokens/s)"),
        "{err}"
    );

    let seen = fake.seen.lock().expect("lock");
    let req = &seen.tasks[0];
    assert_eq!(req.model_ref, "m");
    assert_eq!(req.prompt.as_deref(), Some("Say hello"));
    assert_eq!((req.max_tokens, req.ctx), (64, 2048));
    assert_eq!(req.priority, api_types::Priority::Interactive);
    assert_eq!(req.task_id, None);
    let paths: Vec<&str> = seen.requests.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["POST /v1/tasks", "GET /v1/tasks/t-1/stream"]);
    let bearer = format!("Bearer {KEY}");
    assert!(
        seen.requests
            .iter()
            .all(|(_, auth)| auth.as_deref() == Some(bearer.as_str()))
    );
}

#[tokio::test]
async fn submit_sends_all_options() {
    let fake = start_fake().await;
    let args = [
        "submit",
        "--model-ref",
        "m",
        "--prompt",
        "p",
        "--max-tokens",
        "8",
        "--ctx",
        "512",
        "--priority",
        "batch",
        "--session-id",
        "s-1",
        "--seed",
        "7",
        "--task-id",
        "t-1",
        "--deadline-ms",
        "900",
        "--no-stream",
    ];
    let (code, _, err) = llorch(&fake.url, &args).await;
    assert_eq!(code, EXIT_OK, "{err}");
    let seen = fake.seen.lock().expect("lock");
    let req = &seen.tasks[0];
    assert_eq!(
        (req.max_tokens, req.ctx, req.seed, req.deadline_ms),
        (8, 512, Some(7), Some(900))
    );
    assert_eq!(req.priority, api_types::Priority::Batch);
    assert_eq!(req.session_id.as_deref(), Some("s-1"));
    assert_eq!(req.task_id.as_deref(), Some("t-1"));
}

#[tokio::test]
async fn submit_json_prints_one_line_per_event() {
    let fake = start_fake().await;
    let (code, out, err) = llorch(
        &fake.url,
        &["submit", "--model-ref", "m", "--prompt", "p", "--json"],
    )
    .await;
    assert_eq!(code, EXIT_OK, "{err}");
    assert_eq!(err, "", "no human chatter in --json mode");
    let values: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let names: Vec<&str> = values
        .iter()
        .map(|v| v["event"].as_str().expect("event name"))
        .collect();
    assert_eq!(
        names,
        ["accepted", "started", "token", "metrics", "token", "end"]
    );
    assert_eq!(values[0]["data"]["task_id"], "t-1");
    assert_eq!(values[2]["data"], serde_json::json!({"t": "Hel", "i": 0}));
    assert_eq!(
        values[5]["data"],
        serde_json::json!({"tokens_out": 2, "decode_ms": 40})
    );
}

#[tokio::test]
async fn submit_no_stream_prints_the_task_id_only() {
    let fake = start_fake().await;
    let (code, out, err) = llorch(
        &fake.url,
        &["submit", "--model-ref", "m", "--prompt", "p", "--no-stream"],
    )
    .await;
    assert_eq!(code, EXIT_OK, "{err}");
    assert_eq!(out, "t-1\n");
    assert_eq!(err, "queued: position 3, predicted start in 120 ms\n");
    assert_eq!(
        fake.seen.lock().expect("lock").requests.len(),
        1,
        "stream not opened"
    );
}

#[tokio::test]
async fn admission_429_shows_backoff_and_exits_3() {
    let fake = start_fake().await;
    let (code, out, err) = llorch(
        &fake.url,
        &["submit", "--model-ref", "busy", "--prompt", "p"],
    )
    .await;
    assert_eq!(code, EXIT_RETRY);
    assert_eq!(out, "");
    assert_eq!(
        err,
        "error: ADMISSION_REJECT: queue full\nhint: retry after 1500 ms\nnote: correlation id corr-42\n"
    );
}

#[tokio::test]
async fn admission_429_is_a_typed_error_on_the_client_api() {
    let fake = start_fake().await;
    let client = Client::new(&fake.url, Some(ApiKey::new(KEY))).expect("client");
    let cli = Cli::try_parse_from(["llorch", "submit", "--model-ref", "busy", "--prompt", "p"])
        .expect("parses");
    let llama_orch_cli::Command::Submit(args) = cli.command else {
        panic!("not submit")
    };
    let e = client
        .submit(&llama_orch_cli::task_request(&args, "p".into()))
        .await
        .expect_err("429");
    match e {
        CliError::Api {
            status,
            envelope,
            backoff_ms,
        } => {
            assert_eq!(status, 429);
            assert_eq!(envelope.code, ErrorCode::AdmissionReject);
            assert_eq!(backoff_ms, Some(1500));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn bad_key_is_401_and_exits_2() {
    let fake = start_fake().await;
    let (code, out, err) = llorch_with_key(
        &fake.url,
        "wrong-key-987",
        &["submit", "--model-ref", "m", "--prompt", "p"],
    )
    .await;
    assert_eq!(code, EXIT_CLIENT);
    assert_eq!(out, "");
    assert_eq!(
        err,
        "error: UNAUTHENTICATED: unknown API key\nnote: correlation id corr-42\n"
    );
}

#[tokio::test]
async fn invalid_params_exit_2_without_hint() {
    let fake = start_fake().await;
    let (code, _, err) = llorch(
        &fake.url,
        &["submit", "--model-ref", "too-big", "--prompt", "p"],
    )
    .await;
    assert_eq!(code, EXIT_CLIENT);
    assert!(
        err.starts_with("error: INVALID_PARAMS: ctx exceeds ctx_max\n"),
        "{err}"
    );
    assert!(!err.contains("hint"));
}

#[tokio::test]
async fn stream_error_event_is_reported_with_retry_hint() {
    let fake = start_fake().await;
    let (code, out, err) = llorch(
        &fake.url,
        &[
            "submit",
            "--model-ref",
            "m",
            "--prompt",
            "p",
            "--task-id",
            "t-err",
        ],
    )
    .await;
    assert_eq!(code, EXIT_RETRY);
    assert_eq!(out, "x");
    assert!(
        err.ends_with(
            "\nerror: DECODE_TIMEOUT: engine stalled\nnote: engine mock\nhint: retry after 500 ms\n"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn stream_error_event_in_json_mode() {
    let fake = start_fake().await;
    let (code, out, err) = llorch(
        &fake.url,
        &[
            "submit",
            "--model-ref",
            "m",
            "--prompt",
            "p",
            "--task-id",
            "t-err",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, EXIT_RETRY);
    let last: serde_json::Value =
        serde_json::from_str(out.lines().last().expect("a line")).expect("json");
    assert_eq!(last["event"], "error");
    assert_eq!(last["data"]["code"], "DECODE_TIMEOUT");
    assert!(
        err.starts_with("error: DECODE_TIMEOUT: engine stalled\n"),
        "{err}"
    );
}

#[tokio::test]
async fn truncated_stream_is_a_protocol_error() {
    let fake = start_fake().await;
    let (code, out, err) = llorch(
        &fake.url,
        &[
            "submit",
            "--model-ref",
            "m",
            "--prompt",
            "p",
            "--task-id",
            "t-trunc",
        ],
    )
    .await;
    assert_eq!(code, EXIT_RETRY);
    assert_eq!(out, "x");
    assert!(
        err.contains("\nerror: PROTOCOL: the stream closed before an `end` or `error` event\n"),
        "{err}"
    );
}

#[tokio::test]
async fn client_stream_yields_typed_events() {
    let fake = start_fake().await;
    let client = Client::new(&fake.url, Some(ApiKey::new(KEY))).expect("client");
    let events: Vec<StreamEvent> = client
        .stream("t-1")
        .map(|r| r.expect("event"))
        .collect()
        .await;
    let names: Vec<&str> = events.iter().map(StreamEvent::name).collect();
    assert_eq!(names, ["started", "token", "metrics", "token", "end"]);

    let items: Vec<_> = client.stream("unknown").collect().await;
    assert_eq!(items.len(), 1);
    assert!(
        matches!(&items[0], Err(CliError::Api { status: 404, .. })),
        "{items:?}"
    );
}

#[tokio::test]
async fn cancel_ok_and_not_found() {
    let fake = start_fake().await;
    let (code, out, err) = llorch(&fake.url, &["cancel", "t-1"]).await;
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (EXIT_OK, "", "canceled: task t-1\n")
    );
    let (code, _, err) = llorch(&fake.url, &["cancel", "missing"]).await;
    assert_eq!(code, EXIT_CLIENT);
    assert!(err.starts_with("error: NOT_FOUND: no such task\n"), "{err}");
}

#[tokio::test]
async fn session_get_prints_pretty_json_and_delete_works() {
    let fake = start_fake().await;
    let (code, out, err) = llorch(&fake.url, &["session", "get", "s-1"]).await;
    assert_eq!(code, EXIT_OK, "{err}");
    assert!(out.lines().count() > 1, "pretty-printed: {out}");
    let info: SessionInfo = serde_json::from_str(&out).expect("SessionInfo JSON");
    assert_eq!(info, session_s1());

    let (code, out, err) = llorch(&fake.url, &["session", "delete", "s-1"]).await;
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (EXIT_OK, "", "deleted: session s-1\n")
    );
    let paths: Vec<String> = fake
        .seen
        .lock()
        .expect("lock")
        .requests
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(paths, ["GET /v1/sessions/s-1", "DELETE /v1/sessions/s-1"]);
}

#[tokio::test]
async fn non_envelope_error_body_exits_3() {
    let fake = start_fake().await;
    let (code, out, err) = llorch(&fake.url, &["session", "get", "proxy"]).await;
    assert_eq!(code, EXIT_RETRY);
    assert_eq!(out, "");
    assert_eq!(
        err,
        "error: HTTP 502: <html>bad gateway</html>\nhint: retriable; try again later\n"
    );
}

#[tokio::test]
async fn unreachable_server_is_a_transport_error() {
    // Bind, note the port, close it again: nothing listens there any more.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let (code, out, err) = llorch(&url, &["cancel", "t-1"]).await;
    assert_eq!(code, EXIT_RETRY);
    assert_eq!(out, "");
    assert!(err.starts_with("error: TRANSPORT: "), "{err}");
}
