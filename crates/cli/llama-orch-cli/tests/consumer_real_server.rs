//! Consumer contract tests: the real `llorch` binary against a real orchestratord (in-process,
//! on a real TCP socket, mock engine). The fake-server tests in cli_against_server.rs pin the
//! CLI's formatting; these prove it speaks the server's actual API.

use std::process::Command;

const CONFIG: &str = r#"
[[auth.api_keys]]
key = "consumer-data-key"
tenant = "t"
role = "data"

[queue]
capacity = 1

[[pools]]
id = "p"
engine = "mock"
model_ref = "mock:tiny"
ctx_max = 2048
allow_cpu_inference = true

[[pools.replicas]]
id = "r0"
slots = 1
mock = { tokens_per_second = 500 }
"#;

async fn start_server() -> orchestratord::LocalServer {
    let cfg = config_schema::parse_str(CONFIG, "consumer.toml").unwrap();
    orchestratord::LocalServer::start(cfg, Default::default(), None)
        .await
        .unwrap()
}

fn llorch(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_llorch"))
        .args(["--url", url])
        .args(args)
        .env("LLORCH_API_KEY", "consumer-data-key")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_streams_tokens_and_prints_summary() {
    let server = start_server().await;
    let url = server.base.clone();
    let u = url.clone();
    let out = tokio::task::spawn_blocking(move || {
        llorch(
            &u,
            &[
                "submit",
                "--model-ref",
                "mock:tiny",
                "--prompt",
                "hello",
                "--max-tokens",
                "7",
                "--task-id",
                "c1",
                "--session-id",
                "s1",
            ],
        )
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(
        stdout.split_whitespace().count(),
        7,
        "7 mock tokens: {stdout}"
    );
    assert!(stderr.contains("7 tokens"), "{stderr}");
    assert!(!stderr.contains("consumer-data-key") && !stdout.contains("consumer-data-key"));

    let u = url.clone();
    let out = tokio::task::spawn_blocking(move || llorch(&u, &["session", "get", "s1"]))
        .await
        .unwrap();
    assert!(out.status.success());
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["turns"], 1);

    let u = url.clone();
    let out = tokio::task::spawn_blocking(move || llorch(&u, &["session", "delete", "s1"]))
        .await
        .unwrap();
    assert!(out.status.success());
    let u = url.clone();
    let out = tokio::task::spawn_blocking(move || llorch(&u, &["session", "get", "s1"]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOT_FOUND"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_show_code_and_retry_hint() {
    let server = start_server().await;
    let url = server.base.clone();
    // Occupy the slot and the one queue place, then a third submission is refused with 429.
    for id in ["busy", "queued"] {
        let u = url.clone();
        let id = id.to_string();
        let out = tokio::task::spawn_blocking(move || {
            llorch(
                &u,
                &[
                    "submit",
                    "--model-ref",
                    "mock:tiny",
                    "--prompt",
                    "x",
                    "--max-tokens",
                    "1000",
                    "--task-id",
                    &id,
                    "--no-stream",
                ],
            )
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let u = url.clone();
    let out = tokio::task::spawn_blocking(move || {
        llorch(
            &u,
            &[
                "submit",
                "--model-ref",
                "mock:tiny",
                "--prompt",
                "x",
                "--max-tokens",
                "5",
                "--no-stream",
            ],
        )
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("ADMISSION_REJECT"), "{stderr}");
    assert!(stderr.contains("retry after"), "{stderr}");

    let u = url.clone();
    let out = tokio::task::spawn_blocking(move || llorch(&u, &["cancel", "busy"]))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let u = url.clone();
    let out = tokio::task::spawn_blocking(move || llorch(&u, &["cancel", "busy"]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TASK_FINISHED"));

    let u = url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_llorch"))
            .args([
                "--url",
                &u,
                "--api-key",
                "wrong-key-0000",
                "cancel",
                "queued",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("UNAUTHENTICATED"));
}
