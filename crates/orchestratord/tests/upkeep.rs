//! Zero idle cost: with nothing queued or running and every replica Ready, orchestratord does
//! not probe its replicas every second; probes come back at the busy pace while a task runs,
//! and stop again once it is done. Counts the health requests a worker-protocol replica sees.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use mock_adapter::{MockAdapter, MockBehaviour};

async fn count_probes(
    hits: Arc<AtomicUsize>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if req.uri().path() == "/health" {
        hits.fetch_add(1, Ordering::SeqCst);
    }
    next.run(req).await
}

async fn probes_during(hits: &AtomicUsize, d: Duration) -> usize {
    let before = hits.load(Ordering::SeqCst);
    tokio::time::sleep(d).await;
    hits.load(Ordering::SeqCst) - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_server_does_not_probe_every_second() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("worker.sock");
    let mock = Arc::new(MockAdapter::new(
        "mock:tiny",
        MockBehaviour {
            slots: 1,
            tokens_per_second: 100,
            ..Default::default()
        },
    ));
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app =
        adapter_api::server::router(mock).layer(axum::middleware::from_fn(move |req, next| {
            count_probes(counter.clone(), req, next)
        }));
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let cfg = format!(
        r#"{auth}
[server]
idle_probe_interval_ms = 60000

[[pools]]
id = "p"
engine = "llamacpp"
model_ref = "mock:tiny"
ctx_max = 1024
allow_cpu_inference = true

[[pools.replicas]]
id = "r0"
slots = 1
endpoint = "unix:{sock}"
"#,
        auth = auth_toml(),
        sock = sock.display()
    );
    let s = Server::start(&cfg);
    assert!(
        hits.load(Ordering::SeqCst) >= 1,
        "READY=1 comes after the first probe"
    );

    // Idle: the old 1 s prober would have probed 3 times here.
    assert_eq!(probes_during(&hits, Duration::from_millis(3200)).await, 0);

    // A 250-token task at 100 tokens/s runs ~2.5 s: work exists, the busy pace is back.
    assert_eq!(s.submit(DATA_KEY, task("busy", 250)).await.status(), 202);
    let stream = s.stream(DATA_KEY, "busy").await;
    let during = probes_during(&hits, Duration::from_millis(2100)).await;
    assert!(during >= 1, "no probe while a task ran: {during}");
    let evs = read_events(stream).await;
    assert_eq!(evs.last().unwrap().0, "end");

    // Done: after the last busy tick, quiet again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(probes_during(&hits, Duration::from_millis(3200)).await, 0);
}
