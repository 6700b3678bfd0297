//! One replica set never mixes versions (ORCH-3007, 3046): a replica reporting another engine build
//! than the replicas already serving is held out of placement, says why in pool health, and
//! gets no work; the set keeps serving on the replicas that agree.

mod common;

use common::*;

#[tokio::test]
async fn a_replica_of_another_engine_build_is_held_out_of_the_set() {
    let cfg = mock_config(2, "", "stall_after_tokens = 1", "").replace(
        "mock = { stall_after_tokens = 1 }\n",
        "mock = { stall_after_tokens = 1 }\n\n[[pools.replicas]]\nid = \"r1\"\nslots = 2\nmock = { stall_after_tokens = 1, engine_build = 2 }\n",
    );
    let s = Server::start(&cfg);
    eventually("r0 ready, r1 held out", || async {
        let h = s.pool_health().await;
        h["replicas"][0]["status"] == "ready" && h["replicas"][1]["last_error"].is_string()
    })
    .await;
    let h = s.pool_health().await;
    assert_eq!(h["replicas"][1]["status"], "unready", "{h}");
    let why = h["replicas"][1]["last_error"].as_str().unwrap();
    assert!(
        why.contains("held out") && why.contains("+b2") && why.contains("ORCH-3007"),
        "{why}"
    );
    assert_eq!(h["ready"], true, "the set still serves on r0");

    // Work goes only to the replica of the set's build, and waits rather than spill over.
    for id in ["a", "b", "c"] {
        assert_eq!(s.submit(DATA_KEY, task(id, 5)).await.status(), 202);
    }
    eventually("r0 full", || async {
        s.pool_health().await["replicas"][0]["slots_busy"] == 2
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let h = s.pool_health().await;
    assert_eq!(h["replicas"][1]["slots_busy"], 0, "{h}");
    assert_eq!(h["queue_depth"], 1, "{h}");
    assert_eq!(
        s.metric("llorch_replica_ready", &["replica_id=\"r1\""])
            .await,
        0.0
    );
    for id in ["a", "b", "c"] {
        assert_eq!(s.cancel(DATA_KEY, id).await.status(), 204, "{id}");
    }
}
