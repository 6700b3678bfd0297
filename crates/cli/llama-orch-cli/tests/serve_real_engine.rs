//! The README's run path for real: the `llorch serve` binary supervising llama-server with a
//! real model, answering the `llorch submit` binary with streamed tokens.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn llorch_serve_answers_llorch_submit_with_real_tokens() {
    let e = test_fixtures::engine();
    let port = test_fixtures::free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("serve.toml");
    let toml = format!(
        "{}{}",
        test_fixtures::api_keys_toml(&[("serve-data-key", "t", "data")]),
        test_fixtures::llamacpp_pool_toml(&e, "llm", 512, &[("cpu0", 1)])
    );
    std::fs::write(&cfg, toml).unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = Command::new(env!("CARGO_BIN_EXE_llorch"))
        .args([
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "llorch serve did not start listening"
        );
        if let Ok(Some(st)) = server.try_wait() {
            panic!("llorch serve exited early: {st}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_llorch"))
        .args([
            "--url",
            &url,
            "submit",
            "--model-ref",
            &e.model.display().to_string(),
        ])
        .args([
            "--prompt",
            "Once upon a time, in a small village by the sea,",
            "--max-tokens",
            "16",
            "--ctx",
            "512",
        ])
        .env("LLORCH_API_KEY", "serve-data-key")
        .output()
        .unwrap();
    unsafe {
        libc::kill(server.id() as i32, libc::SIGTERM);
    }
    let status = server.wait().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(!stdout.trim().is_empty(), "no tokens printed");
    assert!(stderr.contains("tokens"), "{stderr}");
    assert!(
        status.success(),
        "llorch serve exit status after SIGTERM: {status}"
    );
}
