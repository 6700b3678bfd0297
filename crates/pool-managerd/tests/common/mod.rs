//! The lifecycle every supervised engine must go through, checked the same way for vLLM,
//! Triton and TGI: started from the config → Loading (never Failed while it loads) → Ready
//! with the self-test passed → serves a decode through its gated adapter → registry and
//! metrics show it → `kill -9` → restarted after a backoff and Ready again → stop leaves no
//! process of its group.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use adapter_api::{GenerateRequest, WorkerAdapter, WorkerEvent, WorkerState};
use futures::StreamExt;
use pool_managerd::daemon::PoolManager;
use pool_managerd::engines::{ReplicaAdapters, ReplicaView};
use pool_managerd::supervisor::Phase;

pub fn start(cfg: &str) -> (PoolManager, ReplicaAdapters) {
    let cfg = config_schema::parse_str(cfg, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    PoolManager::start(&cfg).expect("pool manager starts")
}

pub async fn view(pm: &PoolManager, pool: &str) -> ReplicaView {
    pm.engines
        .replica_views()
        .await
        .into_iter()
        .find(|v| v.pool_id == pool)
        .unwrap_or_else(|| panic!("pool {pool} has no supervised replica"))
}

/// Polls the replica's status every 50 ms until `pred` holds; panics with the status (and the
/// phases seen) after `limit`. Returns the view and every distinct phase seen on the way.
pub async fn wait_view(
    pm: &PoolManager,
    pool: &str,
    limit: Duration,
    what: &str,
    pred: impl Fn(&ReplicaView) -> bool,
) -> (ReplicaView, Vec<String>) {
    let t = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    loop {
        let v = view(pm, pool).await;
        let name = v.status.phase.name().to_string();
        if seen.last() != Some(&name) {
            seen.push(name);
        }
        if pred(&v) {
            return (v, seen);
        }
        assert!(
            t.elapsed() < limit,
            "{pool}: not {what} within {limit:?}: {:?} (phases seen: {seen:?})",
            v.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// True when no process of the group `pgid` exists any more.
pub fn group_gone(pgid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let r = unsafe { libc::kill(-(pgid as libc::pid_t), 0) };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

async fn decode(adapter: &Arc<dyn WorkerAdapter>, job: &str) -> usize {
    let mut s = adapter
        .generate(GenerateRequest {
            job_id: job.into(),
            prompt: "Once upon a time".into(),
            max_tokens: 4,
            seed: 7,
            sampler_profile_version: None,
            strict_determinism: false,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{job}: generate: {e}"));
    let mut tokens = 0;
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(60), s.next())
        .await
        .unwrap_or_else(|_| panic!("{job}: no event in 60 s"))
    {
        match ev.unwrap_or_else(|e| panic!("{job}: stream: {e}")) {
            WorkerEvent::Token(_) => tokens += 1,
            WorkerEvent::End(_) => return tokens,
        }
    }
    panic!("{job}: stream ended without an end event");
}

/// Wall times of one engine's lifecycle.
#[derive(Debug)]
pub struct Timings {
    pub first_ready: Duration,
    pub restart_ready: Duration,
    pub stop: Duration,
}

/// Runs the whole lifecycle on the one replica of `pool` (engine `engine`); `load` bounds
/// each load. Call right after [`start`]. Stops every engine of `pm` at the end.
pub async fn lifecycle(
    pm: &PoolManager,
    adapters: &ReplicaAdapters,
    pool: &str,
    engine: &str,
    load: Duration,
) -> Timings {
    let t0 = Instant::now();
    let gated = adapters
        .iter()
        .find(|((p, _), _)| p == pool)
        .map(|(_, a)| a.clone())
        .unwrap_or_else(|| panic!("{pool}: no gated adapter"));

    // Loading: the gate says so, and nothing counts as failed while the engine loads.
    let h = gated.health().await.unwrap();
    if view(pm, pool).await.status.phase != Phase::Ready {
        assert_eq!(h.state, WorkerState::Loading, "{pool}: {h:?}");
    }
    let (v, seen) = wait_view(pm, pool, load, "Ready", |v| {
        assert!(
            v.status.last_error.is_none(),
            "{pool}: a failure while loading: {:?}",
            v.status
        );
        v.status.phase == Phase::Ready
    })
    .await;
    let first_ready = t0.elapsed();
    assert_eq!(
        seen.first().map(String::as_str),
        Some("starting"),
        "{seen:?}"
    );
    assert_eq!(v.engine, engine);
    assert_eq!(v.status.starts_ready, 1, "{:?}", v.status);
    let pid = v.status.pid.expect("a Ready engine has a pid");
    assert_eq!(gated.health().await.unwrap().state, WorkerState::Ready);

    // Serves through the gate.
    let n = decode(&gated, &format!("{pool}-served")).await;
    assert!(n >= 1, "{pool}: no token");

    // The registry shows its build, the metrics its engine families.
    let rec = pm
        .engines
        .records()
        .await
        .into_iter()
        .find(|r| r.pool_id == pool)
        .unwrap();
    let version = rec.engine_version.clone().unwrap_or_default();
    assert!(
        version.starts_with(&format!("{engine}-")),
        "{pool}: engine_version {version:?}"
    );
    assert_eq!(rec.pid, Some(pid));
    let text = pm.metrics_text().await;
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("llorch_engine_")
                && l.contains(&format!("pool_id=\"{pool}\""))
                && l.contains(&format!("engine_version=\"{version}\""))
        })
        .unwrap_or_else(|| panic!("{pool}: no engine family with its version:\n{text}"));
    assert!(line.contains(&format!("engine=\"{engine}\"")), "{line}");

    // kill -9: restarted after a backoff, Ready again under a new pid.
    // SAFETY: killing the engine this test's supervisor started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0);
    let t1 = Instant::now();
    let (v, _) = wait_view(pm, pool, Duration::from_secs(30), "restarting", |v| {
        v.status.restarts >= 1
    })
    .await;
    let why = v.status.last_error.clone().unwrap_or_default();
    assert!(why.contains("exited"), "{pool}: last_error {why:?}");
    let (v, seen) = wait_view(pm, pool, load, "Ready again", |v| {
        v.status.phase == Phase::Ready
    })
    .await;
    let restart_ready = t1.elapsed();
    assert!(
        seen.iter().any(|p| p == "starting"),
        "{pool}: phases after the kill: {seen:?}"
    );
    assert_eq!(v.status.restarts, 1, "{:?}", v.status);
    assert_eq!(v.status.starts_ready, 2, "{:?}", v.status);
    assert!(v.status.last_error.is_none(), "{:?}", v.status);
    let pid2 = v.status.pid.unwrap();
    assert_ne!(pid2, pid);
    assert!(group_gone(pid), "{pool}: the killed engine's group lingers");
    let n = decode(&gated, &format!("{pool}-after-restart")).await;
    assert!(n >= 1);

    // Stop: nothing of the engine's process group is left.
    let t2 = Instant::now();
    pm.engines.shutdown().await;
    let stop = t2.elapsed();
    let t = Instant::now();
    while !group_gone(pid2) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{pool}: processes of group {pid2} left after stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Timings {
        first_ready,
        restart_ready,
        stop,
    }
}
