//! pool-managerd killed and restarted while orchestratord follows its replica registry.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use llorch_chaos::client::{Api, Outcome, Tally, metric_value, until};
use llorch_chaos::procs::{Daemon, Spawn, bin};
use llorch_chaos::report::{Row, record_and_check};

use super::engine_kill::describe;
use super::{Orch, keys, mock_task, write};

fn pool_managerd(dir: &Path, cfg: &Path, listener: &std::os::unix::net::UnixListener) -> Daemon {
    let mut d = Spawn::new("pool-managerd", bin("pool-managerd"), dir)
        .args([
            "serve".to_string(),
            "--config".into(),
            cfg.display().to_string(),
        ])
        .listen_fd(listener.as_raw_fd())
        .env("STATE_DIRECTORY", dir.join("state").display().to_string())
        .start();
    d.wait_ready(Duration::from_secs(180));
    d
}

async fn feed_up(api: &Api) -> bool {
    metric_value(&api.metrics().await, "llorch_registry_feed_up", &[]) == 1.0
}

/// The pid of the engine pool-managerd reports for llm/cpu0 (its registry, over its socket).
async fn registry_engine_pid(pm: &reqwest::Client) -> Option<u32> {
    let records: Vec<api_types::ReplicaRecord> = pm
        .get("http://pool-managerd/v1/replicas")
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    records
        .into_iter()
        .find(|r| r.ready && r.replica_id == "cpu0")?
        .pid
}

/// SIGKILL of pool-managerd (its engine dies with it), a client load meanwhile, then a new
/// pool-managerd on the same (held) socket. Requirements: ORCH-3038 (a pool-manager outage
/// never takes the service down: while the registry feed is down orchestratord's probes alone
/// decide), ORCH-3008 (placement on Ready replicas only: after the restart the registry's
/// Unready vetoes placement again, faster than the 1 s probe), ORCH-3053 (the new
/// pool-managerd's supervisor restarts the engine).
pub fn run() {
    llorch_chaos::runtime().block_on(scenario());
}

async fn scenario() {
    let e = test_fixtures::engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("pm.sock");
    let pm_listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind pm.sock");
    let pm_cfg = write(
        dir.path(),
        "pool-managerd.toml",
        &format!(
            "{}{}",
            keys(),
            test_fixtures::llamacpp_pool_toml(&e, "llm", 512, &[("cpu0", 1)])
        ),
    );
    let mut pm = pool_managerd(dir.path(), &pm_cfg, &pm_listener);
    let pm_http = reqwest::Client::builder()
        .unix_socket(sock.clone())
        .build()
        .expect("unix client");

    // orchestratord's replica llm/cpu0 is the in-process mock (its probe always says Ready), so
    // every Unready it shows below came from pool-managerd's registry.
    let orch = Orch::start(
        dir.path(),
        &format!(
            r#"[pool_manager]
registry_url = "unix:{sock}"
{keys}
[[pools]]
id = "llm"
engine = "mock"
model_ref = "mock:tiny"
ctx_max = 512
allow_cpu_inference = true

[[pools.replicas]]
id = "cpu0"
slots = 2
mock = {{ tokens_per_second = 400 }}
"#,
            sock = sock.display(),
            keys = keys()
        ),
    );
    let api = orch.api.clone();
    until("registry feed up", Duration::from_secs(15), || {
        feed_up(&api)
    })
    .await;
    let mut tally = Tally::default();

    // Client load through the whole outage.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (api, stop) = (api.clone(), stop.clone());
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("load-{i}");
                let o = api
                    .run_task(&mock_task(&id, 8), Duration::from_secs(10))
                    .await;
                outcomes.push((id, o));
                i += 1;
            }
            outcomes
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let old_pid = pm.pid();
    pm.kill9();
    let killed = Instant::now();
    until("registry feed down", Duration::from_secs(5), || async {
        !feed_up(&api).await
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let outage = load.await.expect("load task");
    let outage_secs = killed.elapsed();
    let outage_ended = outage
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::End { .. }))
        .count();
    for (id, o) in &outage {
        tally.add(id, o);
    }

    // A new pool-managerd on the same socket: orchestratord re-follows it.
    let restarted = Instant::now();
    let _pm = pool_managerd(dir.path(), &pm_cfg, &pm_listener);
    until("registry feed up again", Duration::from_secs(15), || {
        feed_up(&api)
    })
    .await;
    until(
        "replica Ready under the new registry",
        Duration::from_secs(30),
        || async { api.replica("llm", "cpu0").await.status == api_types::ReplicaStatus::Ready },
    )
    .await;
    let refollow = restarted.elapsed();

    // Proof that it follows the new registry: kill the new engine; only the registry can say so.
    let engine = registry_engine_pid(&pm_http)
        .await
        .expect("engine pid from the new registry");
    // SAFETY: kill(2) on the engine (a child of our child) by pid.
    unsafe {
        libc::kill(engine as i32, libc::SIGKILL);
    }
    let veto = until(
        "registry Unready vetoes llm/cpu0",
        Duration::from_secs(5),
        || async { api.replica("llm", "cpu0").await.status == api_types::ReplicaStatus::Unready },
    )
    .await;
    until(
        "engine restarted, replica Ready",
        Duration::from_secs(120),
        || async { api.replica("llm", "cpu0").await.status == api_types::ReplicaStatus::Ready },
    )
    .await;
    let leaked = api.settle_busy("llm", Duration::from_secs(5)).await;
    let fresh = api
        .run_task(&mock_task("fresh", 5), Duration::from_secs(10))
        .await;
    tally.add("fresh", &fresh);
    for l in &tally.lost {
        println!("  LOST {l}");
    }

    record_and_check(Row {
        scenario: "pool_managerd_killed_and_restarted".into(),
        injected: format!(
            "SIGKILL pool-managerd (pid {old_pid}, its engine dies with it) under client load; new pool-managerd on the held socket; then SIGKILL of its engine"
        ),
        observed: format!(
            "{} tasks during the {outage_secs:.1?} outage: {}; feed re-followed and Ready {refollow:.1?} after the restart; engine kill vetoed placement in {veto:.2?}; fresh task: {}",
            outage.len(),
            {
                let mut t = Tally::default();
                for (id, o) in &outage {
                    t.add(id, o);
                }
                t.summary()
            },
            describe(&fresh)
        ),
        lost: tally.lost.len(),
        leaked,
    });
    assert!(
        outage_ended >= 3,
        "orchestratord kept serving during the outage: {outage_ended} tasks ended"
    );
    assert_eq!(
        outage_ended,
        outage.len(),
        "every task during the outage ends: {}",
        tally.summary()
    );
    assert!(
        veto < Duration::from_secs(1),
        "veto took {veto:?}: not from the registry feed"
    );
    assert!(
        matches!(fresh, Outcome::End { tokens: 5 }),
        "fresh: {fresh:?}"
    );
}
