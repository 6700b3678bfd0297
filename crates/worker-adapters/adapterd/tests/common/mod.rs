//! What the engine tests of `llorch-adapterd` share: starting the daemon for an engine on a
//! unix socket, and the two checks every HTTP engine gets (an engine not listening yet reads
//! as Loading; `--engine-url` is required).
#![allow(dead_code)] // each test file uses its own subset

use std::process::{Command, Stdio};
use std::time::Duration;

use adapter_api::client::{Endpoint, HttpWorker};
use adapter_api::{WorkerAdapter, WorkerState};

/// Kills the daemon when the test ends, however it ends.
pub struct Kill(pub std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `llorch-adapterd --engine <engine> --model-ref <model_ref> --engine-url <url> <extra>` on
/// the unix socket `sock`.
pub fn adapterd(
    engine: &str,
    model_ref: &str,
    engine_url: &str,
    sock: &std::path::Path,
    extra: &[&str],
) -> Kill {
    Kill(
        Command::new(env!("CARGO_BIN_EXE_llorch-adapterd"))
            .args(["--engine", engine, "--model-ref", model_ref])
            .args(["--engine-url", engine_url])
            .args(extra)
            .arg("--listen")
            .arg(format!("unix:{}", sock.display()))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The daemon for `engine`, pointed at a port nobody listens on, answers health with Loading
/// ("not accepting connections"), not a failure: engines bind only once loaded.
pub async fn engine_not_listening_is_loading(engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join(format!("{engine}.sock"));
    let port = test_fixtures::free_port();
    let _d = adapterd(engine, "m", &format!("http://127.0.0.1:{port}"), &sock, &[]);
    let client = HttpWorker::new(&Endpoint::Unix(sock.clone())).unwrap();
    let mut health = None;
    for _ in 0..400 {
        if let Ok(h) = client.health().await {
            health = Some(h);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let h = health.unwrap_or_else(|| panic!("adapterd --engine {engine} did not come up"));
    assert_eq!(h.state, WorkerState::Loading, "{h:?}");
    assert!(
        h.last_error
            .unwrap_or_default()
            .contains("not accepting connections")
    );
}

/// `--engine <engine>` without `--engine-url` is a usage error.
pub fn engine_needs_an_engine_url(engine: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_llorch-adapterd"))
        .args(["--engine", engine])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--engine-url"));
}
