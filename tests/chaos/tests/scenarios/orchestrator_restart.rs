//! orchestratord restarted under socket activation while clients keep connecting.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use llorch_chaos::client::{Api, Outcome, Tally};
use llorch_chaos::report::{Row, record_and_check};

use super::engine_kill::describe;
use super::{Orch, keys, mock_task};

#[derive(Default, Debug)]
struct Connects {
    ok: usize,
    refused: usize,
    other: Vec<String>,
}

/// GET /healthz on a fresh connection each time until `stop`.
async fn connector(base: String, stop: Arc<AtomicBool>) -> Connects {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let mut c = Connects::default();
    while !stop.load(Ordering::Relaxed) {
        match http.get(format!("{base}/healthz")).send().await {
            Ok(r) if r.status() == 200 => c.ok += 1,
            Ok(r) => c.other.push(format!("status {}", r.status())),
            Err(e) if e.is_connect() => c.refused += 1,
            Err(e) => c.other.push(format!("{e}")),
        }
    }
    c
}

/// submit + stream, in a loop, until `stop`.
async fn tasks(api: Api, worker: usize, stop: Arc<AtomicBool>) -> Vec<(String, Outcome)> {
    let mut out = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let id = format!("w{worker}-{i}");
        let o = api
            .run_task(&mock_task(&id, 20), Duration::from_secs(15))
            .await;
        let refused = matches!(o, Outcome::Refused { .. });
        out.push((id, o));
        i += 1;
        if refused {
            tokio::time::sleep(Duration::from_millis(20)).await; // typed refusal: back off
        }
    }
    out
}

/// Two restarts of orchestratord while this process holds its listening socket and passes it
/// with LISTEN_FDS/LISTEN_PID, as systemd does: a `systemctl restart` (SIGTERM, drain, exit,
/// start) under a client load of health checks and streaming tasks, then a crash (SIGKILL,
/// start) under health checks. Requirements: SPEC §10 (socket-activated services), SPEC §9
/// chaos "orchestrator restart", ORCH-2002 (streams running at SIGTERM end with `end`),
/// ORCH-2006 (refusals while draining are typed).
pub fn run() {
    llorch_chaos::runtime().block_on(scenario());
}

async fn scenario() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut orch = Orch::start(
        dir.path(),
        &format!(
            r#"{keys}
[server]
shutdown_grace_ms = 10000

[[pools]]
id = "p"
engine = "mock"
model_ref = "mock:tiny"
ctx_max = 1024
allow_cpu_inference = true

[[pools.replicas]]
id = "r0"
slots = 4
mock = {{ tokens_per_second = 200 }}
"#,
            keys = keys()
        ),
    );
    let base = orch.api.base.clone();

    // Phase 1: systemctl restart (SIGTERM, wait for the exit, start) under load.
    let stop = Arc::new(AtomicBool::new(false));
    let conn = tokio::spawn(connector(base.clone(), stop.clone()));
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let api = Api::new(&base, super::DATA, super::CONTROL);
            tokio::spawn(tasks(api, w, stop.clone()))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let old = orch.daemon.pid();
    let t = Instant::now();
    let status = orch.daemon.terminate(Duration::from_secs(15));
    let drained_in = t.elapsed();
    orch.daemon = Orch::spawn(dir.path(), &orch.config, &orch.listener);
    let gap = t.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let c1 = conn.await.expect("connector");
    let mut tally = Tally::default();
    for w in workers {
        for (id, o) in w.await.expect("worker") {
            tally.add(&id, &o);
        }
    }
    for l in &tally.lost {
        println!("  LOST {l}");
    }
    println!(
        "  SIGTERM restart: old pid {old} exited {status} after {drained_in:.2?}, new one ready {gap:.2?} after the SIGTERM; health checks {c1:?}; tasks {}",
        tally.summary()
    );

    // Phase 2: crash (SIGKILL) and start, under health checks.
    let stop = Arc::new(AtomicBool::new(false));
    let conn = tokio::spawn(connector(base.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    orch.daemon.kill9();
    orch.daemon = Orch::spawn(dir.path(), &orch.config, &orch.listener);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let c2 = conn.await.expect("connector");
    println!("  SIGKILL restart: health checks {c2:?}");
    let retries = llorch_chaos::client::SUBMIT_RETRIES.load(Ordering::Relaxed);

    let leaked = orch.api.settle_busy("p", Duration::from_secs(5)).await;
    let fresh = orch
        .api
        .run_task(&mock_task("fresh", 5), Duration::from_secs(10))
        .await;
    tally.add("fresh", &fresh);
    record_and_check(Row {
        scenario: "orchestratord_restart_socket_activated".into(),
        injected: "orchestratord SIGTERM+start, then SIGKILL+start, on a socket held by the parent (LISTEN_FDS)".into(),
        observed: format!(
            "restart gap {gap:.2?}; health checks ok/refused/failed: {}/{}/{} (SIGTERM), {}/{}/{} (SIGKILL); tasks: {} ({retries} submits resent after a transport error); fresh task: {}",
            c1.ok, c1.refused, c1.other.len(), c2.ok, c2.refused, c2.other.len(),
            tally.summary(),
            describe(&fresh)
        ),
        lost: tally.lost.len(),
        leaked,
    });
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert_eq!(
        c1.refused + c2.refused,
        0,
        "refused connections: {c1:?} {c2:?}"
    );
    // A connection accepted just before SIGTERM gets its first request served
    // (daemon_kit::FIRST_REQUEST_GRACE): nothing fails across a graceful restart.
    assert!(
        c1.other.is_empty(),
        "failed health checks across a graceful restart: {:?}",
        c1.other
    );
    assert!(c1.ok > 0 && c2.ok > 0, "health checks answered");
    assert!(tally.ended > 0, "tasks ran across the restart");
    assert!(
        tally.refused.iter().all(|r| r.contains("503")),
        "refusals while draining are typed 503s: {:?}",
        tally.refused
    );
    assert!(
        matches!(fresh, Outcome::End { tokens: 5 }),
        "fresh: {fresh:?}"
    );
}
