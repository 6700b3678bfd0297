//! `llorch submit` submits and streams in one request (`POST /v1/tasks` with
//! `Accept: text/event-stream`, issue 15 item 2): against a server that has no stream route at
//! all, and against the real orchestratord (mock engine), `--json` included.

use std::process::Command;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

const KEY: &str = "one-trip-key";

fn llorch(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_llorch"))
        .args(["--url", url])
        .args(args)
        .env("LLORCH_API_KEY", KEY)
        .output()
        .expect("run llorch")
}

/// A server whose only route is `POST /v1/tasks`, answering the stream itself: a CLI that
/// took the two-step flow would get 404.
async fn post_only(headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !accept.contains("text/event-stream") {
        return (
            StatusCode::IM_A_TEAPOT,
            "the CLI did not ask for the stream",
        )
            .into_response();
    }
    let body = concat!(
        "event: started\ndata: {\"queue_position\":2,\"predicted_start_ms\":30}\n\n",
        "event: token\ndata: {\"t\":\"one\",\"i\":0}\n\n",
        "event: token\ndata: {\"t\":\" trip\",\"i\":1}\n\n",
        "event: end\ndata: {\"tokens_out\":2,\"decode_ms\":4}\n\n"
    );
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::LOCATION, "/v1/tasks/srv-7/stream"),
        ],
        body,
    )
        .into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_streams_in_one_request() {
    let app = axum::Router::new().route("/v1/tasks", axum::routing::post(post_only));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let u = url.clone();
    let out = tokio::task::spawn_blocking(move || {
        llorch(&u, &["submit", "--model-ref", "m", "--prompt", "p"])
    })
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "one trip");
    assert!(
        stderr.starts_with("accepted: task srv-7\nqueued: position 2"),
        "{stderr}"
    );

    let out = tokio::task::spawn_blocking(move || {
        llorch(
            &url,
            &["submit", "--model-ref", "m", "--prompt", "p", "--json"],
        )
    })
    .await
    .unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = lines.iter().map(|v| v["event"].as_str().unwrap()).collect();
    assert_eq!(names, ["accepted", "started", "token", "token", "end"]);
    assert_eq!(lines[0]["data"]["task_id"], "srv-7");
    assert_eq!(lines[0]["data"]["queue_position"], 2);
    assert_eq!(lines[0]["data"]["stream_url"], "/v1/tasks/srv-7/stream");
}

const CONFIG: &str = r#"
[[auth.api_keys]]
key = "one-trip-key"
tenant = "t"
role = "data"

[[pools]]
id = "p"
engine = "mock"
model_ref = "mock:tiny"
ctx_max = 2048
allow_cpu_inference = true

[[pools.replicas]]
id = "r0"
slots = 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_against_the_real_server_in_one_request() {
    let cfg = config_schema::parse_str(CONFIG, "one.toml").unwrap();
    let server = orchestratord::LocalServer::start(cfg, Default::default(), None)
        .await
        .unwrap();
    let url = server.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        llorch(
            &url,
            &[
                "submit",
                "--model-ref",
                "mock:tiny",
                "--prompt",
                "hi",
                "--max-tokens",
                "4",
                "--seed",
                "3",
                "--task-id",
                "cli-1",
            ],
        )
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The task's log replayed over the two-step stream URL holds the same text.
    let replay = reqwest::Client::new()
        .get(server.url("/v1/tasks/cli-1/stream"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let expected: String = replay
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| v["t"].as_str().map(String::from))
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    assert!(stderr.starts_with("accepted: task cli-1\n"), "{stderr}");
    assert!(stderr.contains("done: 4 tokens"), "{stderr}");
    server.stop().await.unwrap();
}
