//! The adapter daemon (`llorch-adapterd`) killed mid-stream, then restarted.

use std::path::Path;
use std::time::{Duration, Instant};

use llorch_chaos::client::{Outcome, Tally, finish, read_tokens, until};
use llorch_chaos::procs::{Daemon, Spawn, bin};
use llorch_chaos::report::{Row, record_and_check};

use super::engine_kill::describe;
use super::{Orch, keys, mock_task};

fn adapterd(dir: &Path, sock: &Path) -> Daemon {
    let mut d = Spawn::new("llorch-adapterd", bin("llorch-adapterd"), dir)
        .args([
            "--engine",
            "mock",
            "--model-ref",
            "mock:tiny",
            "--slots",
            "2",
        ])
        .args(["--tokens-per-second", "20"])
        .args(["--listen".to_string(), format!("unix:{}", sock.display())])
        .start();
    d.wait_ready(Duration::from_secs(10));
    d
}

/// SIGKILL of `llorch-adapterd` while orchestratord relays one of its streams over the worker
/// protocol (unix socket). Requirements: ORCH-2006/3093 (typed WORKER_RESET to the client),
/// ORCH-3038 (the replica goes Unready, new work is refused with POOL_UNREADY, not lost),
/// ORCH-3008 (placement only on Ready replicas; Ready again once the adapter is back),
/// ORCH-3054 (the worker contract across a process boundary).
pub fn run() {
    llorch_chaos::runtime().block_on(scenario());
}

async fn scenario() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("adapter.sock");
    let mut adapter = adapterd(dir.path(), &sock);
    let orch = Orch::start(
        dir.path(),
        &format!(
            r#"{keys}
[[pools]]
id = "p"
engine = "llamacpp"
model_ref = "mock:tiny"
ctx_max = 1024
allow_cpu_inference = true

[[pools.replicas]]
id = "r0"
slots = 2
endpoint = "unix:{sock}"
"#,
            keys = keys(),
            sock = sock.display()
        ),
    );
    let api = orch.api.clone();
    let mut tally = Tally::default();
    let per_event = Duration::from_secs(10);

    let warm = api.run_task(&mock_task("warm", 3), per_event).await;
    tally.add("warm", &warm);
    assert!(matches!(warm, Outcome::End { .. }), "warm-up: {warm:?}");

    assert_eq!(
        api.submit(&mock_task("victim", 400))
            .await
            .expect("submit")
            .status(),
        202
    );
    let stream = read_tokens(
        api.open_stream("victim").await.expect("stream"),
        2,
        per_event,
    )
    .await;
    let adapter_pid = adapter.pid();
    adapter.kill9();
    let killed = Instant::now();
    let victim = finish(stream, 2, Duration::from_secs(10)).await;
    let error_after = killed.elapsed();
    tally.add("victim", &victim);

    let unready = until("replica r0 Unready", Duration::from_secs(5), || async {
        api.replica("p", "r0").await.status == api_types::ReplicaStatus::Unready
    })
    .await;
    let during = api.run_task(&mock_task("during", 3), per_event).await;
    tally.add("during", &during);

    let _adapter = adapterd(dir.path(), &sock);
    let restarted = Instant::now();
    until(
        "replica r0 Ready again",
        Duration::from_secs(10),
        || async { api.replica("p", "r0").await.status == api_types::ReplicaStatus::Ready },
    )
    .await;
    let ready_after = restarted.elapsed();
    let leaked = api.settle_busy("p", Duration::from_secs(5)).await;
    let fresh = api.run_task(&mock_task("fresh", 5), per_event).await;
    tally.add("fresh", &fresh);

    record_and_check(Row {
        scenario: "adapterd_killed_mid_stream".into(),
        injected: format!(
            "SIGKILL llorch-adapterd (pid {adapter_pid}) after 2 tokens of a 400-token stream; restarted on the same socket path"
        ),
        observed: format!(
            "victim: {} after {error_after:.2?}; replica Unready within {unready:.2?}; task during outage: {}; Ready {ready_after:.2?} after the adapter restart; fresh task: {}",
            describe(&victim),
            describe(&during),
            describe(&fresh)
        ),
        lost: tally.lost.len(),
        leaked,
    });
    assert!(
        matches!(&victim, Outcome::Error { code, .. } if code == "WORKER_RESET"),
        "victim: {victim:?}"
    );
    assert!(
        error_after <= Duration::from_secs(2),
        "typed error took {error_after:?}"
    );
    assert!(
        matches!(&during, Outcome::Refused { code, .. } if code == "POOL_UNREADY"),
        "a task while the adapter is gone: {during:?}"
    );
    assert!(
        matches!(fresh, Outcome::End { tokens: 5 }),
        "fresh task: {fresh:?}"
    );
}
