//! The negative side of the determinism proof, seen from outside: two replicas of different
//! engine builds are never one replica set (ORCH-3007, ORCH-3046), so they can never be asked
//! to agree. Driven through the public API of the `orchestratord` binary: a pool whose second
//! replica reports another build (the mock engine's `engine_build` knob, as in the middle of
//! an upgrade) keeps that replica out of placement — every task lands on the first replica,
//! and the held-out replica's `last_error` names both builds.

use std::time::Duration;

use api_types::ReplicaStatus;
use llorch_proof_harness::{Client, Daemon};

const DATA: &str = "guard-data-key";
const CONTROL: &str = "guard-control-key";
const TASKS: usize = 6;

fn config() -> String {
    format!(
        r#"{keys}
[[pools]]
id = "mixed"
engine = "mock"
model_ref = "mock:tiny"
ctx_max = 1024
allow_cpu_inference = true

[[pools.replicas]]
id = "r0"
slots = 1
mock = {{ tokens_per_second = 200 }}

[[pools.replicas]]
id = "r1"
slots = 1
mock = {{ tokens_per_second = 200, engine_build = 2 }}
"#,
        keys = test_fixtures::api_keys_toml(&[(DATA, "t", "data"), (CONTROL, "ops", "control")]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_of_another_build_is_held_out_and_gets_no_task() {
    let mut d = Daemon::orchestratord(&config()).expect("start orchestratord");
    d.wait_ready(Duration::from_secs(30)).await.expect("ready");
    let c = Client::new(&d.base, DATA, CONTROL);
    let h = c
        .wait_health("mixed", "r1 held out", Duration::from_secs(30), |h| {
            h.replicas[0].status == ReplicaStatus::Ready && h.replicas[1].last_error.is_some()
        })
        .await
        .unwrap_or_else(|err| panic!("{err}{}", d.log_tail()));
    let (r0, r1) = (&h.replicas[0], &h.replicas[1]);
    assert_eq!(r1.status, ReplicaStatus::Unready, "{h:?}");
    let why = r1.last_error.as_deref().unwrap_or_default();
    let other_build = format!("{}+b2", r0.engine_version);
    assert!(
        why.contains("held out")
            && why.contains(&other_build)
            && why.replace(&other_build, "").contains(&r0.engine_version)
            && why.contains("ORCH-3007"),
        "last_error must name the set's build ({}) and the replica's ({other_build}): {why}",
        r0.engine_version
    );

    // Six one-slot tasks: with r1 in the set they would spread; held out, r0 serves them all
    // one after another.
    let ids: Vec<String> = (0..TASKS).map(|i| format!("g{i}")).collect();
    for id in &ids {
        c.submit(&serde_json::json!({
            "task_id": id, "workload": "completion", "model_ref": "mock:tiny", "ctx": 256,
            "prompt": "hello", "max_tokens": 4, "seed": 1,
        }))
        .await
        .expect("submit");
    }
    for id in &ids {
        let s = c.stream(id, Duration::from_secs(30)).await.expect("stream");
        assert!(s.end.is_some() && s.tokens.len() == 4, "{s:?}");
    }
    let m = c.metrics().await.expect("metrics");
    let on = |r: &str| {
        m.sum(
            "llorch_tasks_completed_total",
            &[("pool_id", "mixed"), ("replica_id", r)],
        )
    };
    assert_eq!((on("r0"), on("r1")), (TASKS as f64, 0.0), "all on r0");
    assert_eq!(
        m.sum("llorch_replica_ready", &[("replica_id", "r1")]),
        0.0,
        "r1 reported not ready"
    );
    let h = c.pool_health("mixed").await.expect("health");
    assert_eq!(h.replicas[1].status, ReplicaStatus::Unready, "{h:?}");
    assert!(d.stop().await.expect("stop"), "orchestratord exit status");
}
