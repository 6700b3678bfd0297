//! `llorch-adapterd --engine tgi`: the TGI adapter behind the worker protocol. A TGI router
//! that is not listening yet (it binds only after loading) reads as Loading through the
//! daemon, not as a failure. And the whole daemon chain with real tokens: orchestratord →
//! worker protocol on a unix socket → `llorch-adapterd --engine tgi` → `llorch-tgi-sim`
//! (in-process) → the provisioned llama-server.

use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::Kill;

#[tokio::test]
async fn tgi_engine_not_listening_is_loading() {
    common::engine_not_listening_is_loading("tgi").await;
}

#[test]
fn tgi_engine_needs_an_engine_url() {
    common::engine_needs_an_engine_url("tgi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestratord_to_adapterd_to_tgi_to_llama_server() {
    use tgi_sim::Parser;

    let e = test_fixtures::engine();
    let lport = test_fixtures::free_port();
    let _llama = Kill(
        Command::new(&e.llama_server)
            .arg("-m")
            .arg(&e.model)
            .args(["--host", "127.0.0.1", "--port", &lport.to_string()])
            .args(["-np", "1", "-c", "1024", "-t", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let sport = test_fixtures::free_port();
    let args = tgi_sim::Args::try_parse_from([
        "llorch-tgi-sim",
        "--llama-server-url",
        &format!("http://127.0.0.1:{lport}"),
        "--port",
        &sport.to_string(),
    ])
    .unwrap();
    tokio::spawn(tgi_sim::run(args));
    let tgi = format!("http://127.0.0.1:{sport}");
    let http = reqwest::Client::new();
    let start = std::time::Instant::now();
    // The simulator binds only once llama-server has loaded the model.
    while http.get(format!("{tgi}/info")).send().await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "tgi simulator never came up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("tgi.sock");
    let _adapterd = Kill(
        Command::new(env!("CARGO_BIN_EXE_llorch-adapterd"))
            .args([
                "--engine",
                "tgi",
                "--engine-url",
                &tgi,
                "--model-ref",
                "smollm2",
            ])
            .args(["--slots", "1"])
            .arg("--listen")
            .arg(format!("unix:{}", sock.display()))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = std::time::Instant::now();
    while !sock.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "adapterd did not bind its socket"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cfg = config_schema::parse_str(
        &format!(
            r#"
[[auth.api_keys]]
key = "tgi-chain-key"
tenant = "t"
role = "data"

[[pools]]
id = "tgi"
engine = "tgi"
model_ref = "smollm2"
ctx_max = 1024
allow_cpu_inference = true

[[pools.replicas]]
id = "r0"
slots = 1
endpoint = "unix:{}"
"#,
            sock.display()
        ),
        "tgi-chain.toml",
    )
    .unwrap();
    let server = orchestratord::LocalServer::start(cfg, Default::default(), None)
        .await
        .unwrap();
    let base = server.base.clone();
    let body = serde_json::json!({
        "task_id": "tgi-chain", "workload": "completion", "model_ref": "smollm2", "ctx": 1024,
        "prompt": "Once upon a time, in a small village by the sea,", "max_tokens": 12, "seed": 5
    });
    let events =
        test_fixtures::api::submit_and_read(&base, "tgi-chain-key", "tgi-chain", &body).await;
    let tokens = events.iter().filter(|(n, _)| n == "token").count();
    assert!(tokens >= 1, "{events:?}");
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "end", "{events:?}");
    assert!(data.contains("\"tokens_out\":12"), "{data}");
}
