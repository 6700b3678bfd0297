//! `llorch-adapterd --engine tgi`: the TGI adapter behind the worker protocol. A TGI router
//! that is not listening yet (it binds only after loading) reads as Loading through the
//! daemon, not as a failure. Token streaming through the TGI adapter against the simulator
//! and a real llama-server is tested in `crates/tools/tgi-sim/tests`.

use std::process::{Command, Stdio};
use std::time::Duration;

use adapter_api::client::{Endpoint, HttpWorker};
use adapter_api::{WorkerAdapter, WorkerState};

#[tokio::test]
async fn tgi_engine_not_listening_is_loading() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("tgi.sock");
    let tgi_port = test_fixtures::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_llorch-adapterd"))
        .args(["--engine", "tgi", "--model-ref", "smollm2"])
        .args(["--engine-url", &format!("http://127.0.0.1:{tgi_port}")])
        .arg("--listen")
        .arg(format!("unix:{}", sock.display()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = HttpWorker::new(&Endpoint::Unix(sock.clone())).unwrap();
    let mut health = None;
    for _ in 0..400 {
        if let Ok(h) = client.health().await {
            health = Some(h);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let h = health.expect("adapterd --engine tgi did not come up");
    assert_eq!(h.state, WorkerState::Loading, "{h:?}");
    assert!(
        h.last_error
            .unwrap_or_default()
            .contains("not accepting connections")
    );
}

#[test]
fn tgi_engine_needs_an_engine_url() {
    let out = Command::new(env!("CARGO_BIN_EXE_llorch-adapterd"))
        .args(["--engine", "tgi"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--engine-url"));
}
