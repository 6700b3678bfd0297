//! Linter for the Prometheus contract (SPEC §7): names, types and label sets of every
//! `llorch_` family, parsed from a real scrape after real traffic.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;

/// name → (type, label set). Changing a family means changing this table and the dashboards.
fn contract() -> BTreeMap<&'static str, (&'static str, &'static [&'static str])> {
    const ENGINE: &[&str] = &["engine", "engine_version", "pool_id", "replica_id"];
    BTreeMap::from([
        (
            "llorch_tasks_enqueued_total",
            ("counter", &["pool_id", "priority"][..]),
        ),
        (
            "llorch_tasks_started_total",
            (
                "counter",
                &[
                    "engine",
                    "engine_version",
                    "pool_id",
                    "priority",
                    "replica_id",
                ][..],
            ),
        ),
        (
            "llorch_tasks_canceled_total",
            ("counter", &["pool_id", "reason"][..]),
        ),
        (
            "llorch_tasks_rejected_total",
            ("counter", &["pool_id", "reason"][..]),
        ),
        ("llorch_tasks_completed_total", ("counter", ENGINE)),
        (
            "llorch_tasks_failed_total",
            (
                "counter",
                &["code", "engine", "engine_version", "pool_id", "replica_id"][..],
            ),
        ),
        (
            "llorch_queue_depth",
            ("gauge", &["pool_id", "priority"][..]),
        ),
        (
            "llorch_first_token_latency_seconds",
            (
                "histogram",
                &["engine", "engine_version", "pool_id", "priority"][..],
            ),
        ),
        (
            "llorch_decode_duration_seconds",
            ("histogram", &["engine", "engine_version", "pool_id"][..]),
        ),
        ("llorch_tokens_in_total", ("counter", ENGINE)),
        ("llorch_tokens_out_total", ("counter", ENGINE)),
        (
            "llorch_backpressure_events_total",
            ("counter", &["pool_id", "policy"][..]),
        ),
        ("llorch_replica_slots_busy", ("gauge", ENGINE)),
        ("llorch_replica_slots_total", ("gauge", ENGINE)),
        (
            "llorch_replica_ready",
            (
                "gauge",
                &["cpu", "engine", "engine_version", "pool_id", "replica_id"][..],
            ),
        ),
        ("llorch_sessions_active", ("gauge", &[][..])),
        (
            "llorch_replica_restarts_total",
            ("counter", &["engine", "pool_id", "replica_id"][..]),
        ),
        (
            "llorch_replica_circuit_open",
            ("gauge", &["engine", "pool_id", "replica_id"][..]),
        ),
        (
            "llorch_admission_share",
            ("gauge", &["priority", "tenant"][..]),
        ),
        ("llorch_deadlines_met_ratio", ("gauge", &["priority"][..])),
        (
            "llorch_preemptions_total",
            ("counter", &["engine", "mode"][..]),
        ),
        (
            "llorch_quota_rejections_total",
            ("counter", &["quota", "tenant"][..]),
        ),
        (
            "llorch_queue_wait_seconds",
            ("histogram", &["pool_id", "priority"][..]),
        ),
        (
            "llorch_start_prediction_error_seconds",
            ("histogram", &["pool_id", "priority"][..]),
        ),
        (
            "llorch_priority_inversions_total",
            ("counter", &["pool_id"][..]),
        ),
        (
            "llorch_policy_decisions_total",
            ("counter", &["decision", "hook", "plugin", "pool_id"][..]),
        ),
        (
            "llorch_policy_fallbacks_total",
            ("counter", &["hook", "plugin", "pool_id", "reason"][..]),
        ),
        (
            "llorch_policy_call_duration_seconds",
            ("histogram", &["hook", "pool_id"][..]),
        ),
        ("llorch_registry_feed_up", ("gauge", &[][..])),
        ("llorch_task_log_bytes", ("gauge", &[][..])),
        ("llorch_task_log_tasks", ("gauge", &[][..])),
        ("llorch_task_log_budget_bytes", ("gauge", &[][..])),
        (
            "llorch_task_log_evictions_total",
            ("counter", &["reason"][..]),
        ),
    ])
}

fn labels_of(sample: &str) -> BTreeSet<String> {
    let Some(start) = sample.find('{') else {
        return BTreeSet::new();
    };
    let end = sample.rfind('}').unwrap();
    sample[start + 1..end]
        .split("\",")
        .filter(|kv| !kv.is_empty())
        .map(|kv| kv.split('=').next().unwrap().trim().to_string())
        .filter(|k| k != "le")
        .collect()
}

#[tokio::test]
async fn metrics_follow_the_contract() {
    let faulty_pool = r#"
[[pools]]
id = "f"
engine = "mock"
model_ref = "mock:faulty"
ctx_max = 1024
allow_cpu_inference = true

[[pools.replicas]]
id = "f0"
mock = { error_after_tokens = 1 }
"#;
    let wat = |name: &str| {
        format!(
            "{}/../../examples/plugins/wat/{name}.wat",
            env!("CARGO_MANIFEST_DIR")
        )
    };
    // Pools with policy plugins, so the policy families are scraped too: one that decides,
    // one whose answers are garbage (fallbacks).
    let policy_pools: String = [("good", "good"), ("junk", "garbage")]
        .iter()
        .map(|(id, module)| {
            format!(
                "\n[[pools]]\nid = \"{id}\"\nengine = \"mock\"\nmodel_ref = \"mock:{id}\"\nctx_max = 1024\nallow_cpu_inference = true\npolicy = {{ module = {:?} }}\n\n[[pools.replicas]]\nid = \"{id}0\"\n",
                wat(module)
            )
        })
        .collect();
    let cfg = format!(
        "{}{faulty_pool}{policy_pools}",
        mock_config(
            1,
            "capacity = 1",
            "tokens_per_second = 200",
            "[tenant_defaults]\nmax_concurrent = 100\n"
        )
    );
    let s = Server::start(&cfg);
    // Traffic that touches every family: completed, failed, canceled, rejected.
    let mut f = task("f", 3);
    f["model_ref"] = serde_json::json!("mock:faulty");
    assert_eq!(s.submit(DATA_KEY, f).await.status(), 202);
    assert_eq!(
        read_events(s.stream(DATA_KEY, "f").await)
            .await
            .last()
            .unwrap()
            .0,
        "error"
    );
    for pool in ["good", "junk"] {
        let mut t = task(pool, 2);
        t["model_ref"] = serde_json::json!(format!("mock:{pool}"));
        assert_eq!(s.submit(DATA_KEY, t).await.status(), 202);
        read_events(s.stream(DATA_KEY, pool).await).await;
    }
    let mut a = task("a", 3);
    a["deadline_ms"] = serde_json::json!(60_000);
    assert_eq!(s.submit(DATA_KEY, a).await.status(), 202);
    read_events(s.stream(DATA_KEY, "a").await).await;
    assert_eq!(s.submit(DATA_KEY, task("b", 300)).await.status(), 202);
    assert_eq!(s.submit(DATA_KEY, task("c", 3)).await.status(), 202);
    assert_eq!(s.submit(DATA_KEY, task("d", 3)).await.status(), 429);
    assert_eq!(s.cancel(DATA_KEY, "b").await.status(), 204);
    let text = s.metrics().await;
    let contract = contract();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            types.insert(
                it.next().unwrap().to_string(),
                it.next().unwrap().to_string(),
            );
        }
    }
    for (name, ty) in &types {
        assert!(
            name.starts_with("llorch_"),
            "{name} lacks the llorch_ prefix"
        );
        let (want_ty, _) = contract
            .get(name.as_str())
            .unwrap_or_else(|| panic!("{name} is not in the contract"));
        assert_eq!(ty, want_ty, "{name}");
        if ty == "counter" {
            assert!(name.ends_with("_total"), "{name}: counters end in _total");
        }
        if ty == "histogram" {
            assert!(
                name.ends_with("_seconds") || name.ends_with("_bytes"),
                "{name}: base units"
            );
        }
    }
    for (name, (_, labels)) in &contract {
        assert!(types.contains_key(*name), "{name} missing from the scrape");
        let want: BTreeSet<String> = labels.iter().map(|s| s.to_string()).collect();
        for sample in text
            .lines()
            .filter(|l| !l.starts_with('#') && l.starts_with(name))
        {
            let base = sample.split(['{', ' ']).next().unwrap();
            let family = base
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            if family == *name {
                assert_eq!(labels_of(sample), want, "labels of {sample}");
            }
        }
    }
    assert!(
        text.contains("cpu=\"true\""),
        "CPU replica must be labelled"
    );
}
