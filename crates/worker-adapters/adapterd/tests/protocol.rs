//! The worker protocol (ORCH-3054–3057: health, properties, streaming generate, cancel) across a
//! real process boundary: `llorch-adapterd --engine mock` on a unix socket,
//! driven by `adapter_api::client::HttpWorker` (the client orchestratord uses).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use adapter_api::client::{Endpoint, HttpWorker};
use adapter_api::{GenerateRequest, WorkerAdapter, WorkerEvent, WorkerState};
use api_types::ErrorCode;
use futures::StreamExt;

struct Worker {
    child: Child,
    client: HttpWorker,
    _dir: tempfile::TempDir,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// The child is waited for in `Worker::drop`; on the panic path the test process exits anyway.
#[allow(clippy::zombie_processes)]
async fn start(extra: &[&str]) -> Worker {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("w.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_llorch-adapterd"))
        .args(["--engine", "mock"])
        .arg("--listen")
        .arg(format!("unix:{}", sock.display()))
        .args(extra)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = HttpWorker::new(&Endpoint::Unix(sock.clone())).unwrap();
    for _ in 0..400 {
        if client.health().await.is_ok() {
            return Worker {
                child,
                client,
                _dir: dir,
            };
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("mock worker did not come up");
}

fn req(id: &str, n: u32) -> GenerateRequest {
    GenerateRequest {
        job_id: id.into(),
        prompt: "p".into(),
        max_tokens: n,
        seed: 1,
        sampler_profile_version: None,
        strict_determinism: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn health_properties_generate_over_unix_socket() {
    let w = start(&["--slots", "2"]).await;
    assert_eq!(w.client.health().await.unwrap().state, WorkerState::Ready);
    let p = w.client.properties().await.unwrap();
    assert_eq!(
        (p.engine.as_str(), p.slots_total, p.slots_busy),
        ("mock", 2, 0)
    );
    let events: Vec<_> = w
        .client
        .generate(req("a", 4))
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(events.len(), 5);
    for (i, e) in events[..4].iter().enumerate() {
        assert!(matches!(e, Ok(WorkerEvent::Token(t)) if t.i == i as u32));
    }
    assert!(matches!(events[4], Ok(WorkerEvent::End(ref e)) if e.tokens_out == 4));
    // Same request, same tokens, across the protocol too.
    let again: Vec<_> = w
        .client
        .generate(req("b", 4))
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(events, again);
}

#[tokio::test]
async fn cancel_and_disconnect_free_the_engine_slot() {
    let w = start(&["--slots", "1", "--stall-after-tokens", "1"]).await;
    let mut s = w.client.generate(req("a", 5)).await.unwrap();
    assert!(matches!(s.next().await, Some(Ok(WorkerEvent::Token(_)))));
    let busy = w.client.generate(req("b", 5)).await.err().unwrap();
    assert_eq!(busy.code, ErrorCode::ReplicaExhausted);
    w.client.cancel("a").await.unwrap();
    assert_eq!(w.client.properties().await.unwrap().slots_busy, 0);
    drop(s);
    // Dropping the HTTP stream (client gone) frees the slot as well.
    let mut s = w.client.generate(req("c", 5)).await.unwrap();
    assert!(s.next().await.is_some());
    drop(s);
    for _ in 0..200 {
        if w.client.properties().await.unwrap().slots_busy == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("slot not freed after the client disconnected");
}

#[tokio::test]
async fn engine_errors_arrive_typed_and_dead_workers_are_worker_reset() {
    let w = start(&["--error-after-tokens", "1"]).await;
    let events: Vec<_> = w
        .client
        .generate(req("a", 5))
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].as_ref().unwrap_err().code, ErrorCode::Internal);
    // A second job with a running job's id is refused with a typed error.
    let w = start(&["--stall-after-tokens", "1"]).await;
    let _s = w.client.generate(req("dup", 5)).await.unwrap();
    let dup = w.client.generate(req("dup", 5)).await.err().unwrap();
    assert_eq!(dup.code, ErrorCode::InvalidParams);
    let gone = HttpWorker::new(&Endpoint::Unix("/nonexistent/llorch.sock".into())).unwrap();
    assert_eq!(
        gone.health().await.unwrap_err().code,
        ErrorCode::WorkerReset
    );
}
