//! The startup self-test (ORCH-3049) decides readiness: an engine that loads and decodes but
//! whose telemetry does not count its work, or whose slot stays busy after a cancel, never
//! becomes Ready, and says why. The engine is a fault-injecting stand-in for llama-server
//! (tests/fixtures/faulty_engine.py); with no fault the same stand-in becomes Ready, so each
//! refusal is the fault's doing. The self-test against a real llama-server runs in every
//! real-engine test (tests/real_engine.rs), which only starts once the replica is Ready.

use std::path::PathBuf;
use std::time::Duration;

use pool_managerd::policy::RestartConfig;
use pool_managerd::supervisor::{EngineSpec, Phase, Supervisor};

fn spec(fault: &str, model: PathBuf) -> EngineSpec {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    EngineSpec {
        pool_id: "p".into(),
        replica_id: "r0".into(),
        kind: pool_managerd::engine_kind::EngineKind::LlamaCpp,
        binary: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/faulty_engine.py"),
        model,
        model_sha256: None,
        source: None,
        port,
        slots: 1,
        ctx_per_slot: 128,
        devices: vec![],
        extra_args: vec!["--fault".into(), fault.into()],
        env: Default::default(),
        restart: RestartConfig {
            initial_backoff_ms: 50,
            max_backoff_ms: 200,
            max_crashes: 100,
            window_ms: 60_000,
            open_for_ms: 60_000,
        },
        ready_timeout: Duration::from_secs(15),
    }
}

async fn run(fault: &str) -> (bool, Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.gguf");
    std::fs::write(&model, b"weights").unwrap();
    let sup = Supervisor::spawn(spec(fault, model));
    let st = sup
        .wait_for(Duration::from_secs(30), |s| {
            s.phase == Phase::Ready || s.last_error.is_some()
        })
        .await
        .unwrap_or_else(|| panic!("{fault}: neither Ready nor an error: {:?}", sup.status()));
    sup.shutdown().await;
    (st.phase == Phase::Ready, st.last_error)
}

#[tokio::test]
async fn startup_self_test_gates_readiness() {
    let (ready, err) = run("none").await;
    assert!(
        ready,
        "the well-behaved stand-in must become Ready: {err:?}"
    );

    let (ready, err) = run("metrics").await;
    assert!(!ready);
    let err = err.unwrap();
    assert!(err.contains("self-test: telemetry"), "{err}");

    let (ready, err) = run("cancel").await;
    assert!(!ready);
    let err = err.unwrap();
    assert!(
        err.contains("self-test: cancel") && err.contains("still processing"),
        "{err}"
    );
}
