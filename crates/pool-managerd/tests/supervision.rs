//! Supervision paths that need no real engine: checksum refusal and the circuit breaker.

use std::time::Duration;

use pool_managerd::policy::RestartConfig;
use pool_managerd::supervisor::{EngineSpec, Phase, Supervisor};

fn spec(binary: &str, model: std::path::PathBuf, sha: Option<String>) -> EngineSpec {
    EngineSpec {
        pool_id: "p".into(),
        replica_id: "r0".into(),
        kind: pool_managerd::engine_kind::EngineKind::LlamaCpp,
        binary: binary.into(),
        model,
        model_sha256: sha,
        source: None,
        port: 1,
        slots: 1,
        ctx_per_slot: 128,
        devices: vec![],
        extra_args: vec![],
        env: Default::default(),
        restart: RestartConfig {
            initial_backoff_ms: 10,
            max_backoff_ms: 40,
            max_crashes: 4,
            window_ms: 60_000,
            open_for_ms: 60_000,
        },
        ready_timeout: Duration::from_secs(5),
    }
}

/// Checksums are verified before load: a mismatch is UNTRUSTED_ARTIFACT and nothing starts.
#[tokio::test]
async fn checksum_mismatch_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.gguf");
    std::fs::write(&model, b"weights").unwrap();
    let sup = Supervisor::spawn(spec("/bin/true", model, Some("0".repeat(64))));
    let st = sup
        .wait_for(Duration::from_secs(5), |s| s.phase == Phase::Failed)
        .await
        .unwrap();
    assert!(st.last_error.unwrap().starts_with("UNTRUSTED_ARTIFACT"));
    assert_eq!(st.pid, None);
    assert_eq!(st.restarts, 0);
    sup.shutdown().await;
}

/// ORCH-3053: an engine that keeps dying opens the breaker instead of a restart storm.
#[tokio::test]
async fn repeated_crashes_open_the_circuit_breaker() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.gguf");
    std::fs::write(&model, b"weights").unwrap();
    let sup = Supervisor::spawn(spec("/bin/false", model, None));
    let st = sup
        .wait_for(Duration::from_secs(10), |s| {
            matches!(s.phase, Phase::BreakerOpen { .. })
        })
        .await
        .unwrap_or_else(|| panic!("breaker did not open: {:?}", sup.status()));
    assert_eq!(
        st.restarts, 3,
        "max_crashes = 4: three restarts, then the breaker"
    );
    assert!(st.last_error.unwrap().contains("exited"));
    // It stays open: no more restarts for open_for_ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(sup.status().phase, Phase::BreakerOpen { .. }));
    assert_eq!(sup.status().restarts, 3);
    sup.shutdown().await;
}

/// A binary that does not exist is a failed start, handled like a crash.
#[tokio::test]
async fn missing_binary_backs_off() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.gguf");
    std::fs::write(&model, b"weights").unwrap();
    let sup = Supervisor::spawn(spec("/nonexistent/llama-server", model, None));
    let st = sup
        .wait_for(Duration::from_secs(5), |s| s.last_error.is_some())
        .await
        .unwrap();
    assert!(st.last_error.unwrap().contains("cannot start"));
    sup.shutdown().await;
}
