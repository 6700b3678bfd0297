//! Example llama-orch policy plugin, built with `llorch-policy-sdk`: tenant [`LIMITED`] never
//! occupies more than half of a pool's replicas at once (at least one), so other tenants
//! always keep the rest. Its tasks may share replicas it already uses; a task that would need
//! one more replica is deferred (stays queued) until one of the tenant's replicas has a free
//! slot. Other tenants are placed least-loaded first, like the built-in policy. Admission is
//! left to the built-in policy (only the placement hook is exported).
//!
//! Build the module (needs the `wasm32-wasip1` target: `rustup target add wasm32-wasip1`):
//!
//! ```text
//! cargo build --release --target wasm32-wasip1 -p llorch-example-tenant-half
//! # -> target/wasm32-wasip1/release/llorch_example_tenant_half.wasm
//! ```
//!
//! `cargo xtask build-plugins` writes the reproducible build that is committed beside this
//! crate (`tenant_half.wasm`) and that the host and orchestratord tests load.
//!
//! Must not depend on anything but the SDK: a plugin has no I/O, everything it knows is in
//! the snapshot.

use llorch_policy_sdk::{PlacementDecision, PlacementPolicy, PlacementSnapshot, ReplicaLoad};

/// The tenant this policy limits. Parameters are compiled in: a different limit is a different
/// module (and so a different plugin version in logs and metrics).
pub const LIMITED: &str = "tenant-a";

pub struct TenantHalf;

fn uses(r: &ReplicaLoad) -> bool {
    r.running_by_tenant.get(LIMITED).copied().unwrap_or(0) > 0
}

impl PlacementPolicy for TenantHalf {
    fn place(s: &PlacementSnapshot) -> PlacementDecision {
        let limit = (s.replicas.len() / 2).max(1);
        let used = s.replicas.iter().filter(|r| uses(r)).count();
        let allowed = |r: &ReplicaLoad| s.task.tenant != LIMITED || uses(r) || used < limit;
        // min_by keeps the first of equals: config order breaks ties, as in the built-in.
        match s
            .candidates()
            .filter(|r| allowed(r))
            .min_by(|a, b| a.load_cmp(b))
        {
            Some(r) => PlacementDecision::Place {
                replica_id: r.replica_id.clone(),
            },
            None => PlacementDecision::Defer,
        }
    }
}

llorch_policy_sdk::export_policy!(TenantHalf, placement);

#[cfg(test)]
mod tests {
    use super::*;
    use llorch_policy_sdk::{Priority, QueueState, ReplicaState, TaskInfo};
    use std::collections::BTreeMap;

    fn replica(id: &str, busy: u32, tenant_a: u32) -> ReplicaLoad {
        let mut running = BTreeMap::new();
        if tenant_a > 0 {
            running.insert(LIMITED.to_string(), tenant_a);
        }
        if busy > tenant_a {
            running.insert("other".to_string(), busy - tenant_a);
        }
        ReplicaLoad {
            replica_id: id.into(),
            candidate: busy < 4,
            state: ReplicaState::Ready,
            slots_total: 4,
            slots_busy: busy,
            devices: vec![],
            running_by_tenant: running,
        }
    }

    fn snapshot(tenant: &str, replicas: Vec<ReplicaLoad>) -> PlacementSnapshot {
        PlacementSnapshot {
            pool_id: "p".into(),
            now_ms: 0,
            task: TaskInfo {
                task_id: "t".into(),
                tenant: tenant.into(),
                priority: Priority::Interactive,
                model_ref: "m".into(),
                ctx: 1024,
                max_tokens: 16,
                prompt_tokens: 4,
                deadline_ms: None,
                session_id: None,
            },
            queue: QueueState::default(),
            replicas,
        }
    }

    fn placed(d: PlacementDecision) -> Option<String> {
        match d {
            PlacementDecision::Place { replica_id } => Some(replica_id),
            PlacementDecision::Defer => None,
        }
    }

    #[test]
    fn limited_tenant_stays_on_its_half() {
        // 4 replicas, tenant-a already on r0 and r1 (its limit of 2): r2/r3 are idle but it
        // must stay on r0/r1; the less loaded of those wins.
        let s = snapshot(
            LIMITED,
            vec![
                replica("r0", 3, 3),
                replica("r1", 1, 1),
                replica("r2", 0, 0),
                replica("r3", 0, 0),
            ],
        );
        assert_eq!(placed(TenantHalf::place(&s)).as_deref(), Some("r1"));
    }

    #[test]
    fn limited_tenant_is_deferred_when_its_half_is_full() {
        let s = snapshot(
            LIMITED,
            vec![
                replica("r0", 4, 4),
                replica("r1", 4, 2),
                replica("r2", 0, 0),
                replica("r3", 1, 0),
            ],
        );
        assert_eq!(TenantHalf::place(&s), PlacementDecision::Defer);
    }

    #[test]
    fn limited_tenant_may_take_a_new_replica_below_its_limit() {
        let s = snapshot(
            LIMITED,
            vec![
                replica("r0", 3, 3),
                replica("r1", 2, 0),
                replica("r2", 0, 0),
                replica("r3", 1, 0),
            ],
        );
        assert_eq!(placed(TenantHalf::place(&s)).as_deref(), Some("r2"));
    }

    #[test]
    fn other_tenants_are_placed_least_loaded_anywhere() {
        let s = snapshot(
            "tenant-b",
            vec![
                replica("r0", 3, 3),
                replica("r1", 1, 1),
                replica("r2", 2, 0),
                replica("r3", 0, 0),
            ],
        );
        assert_eq!(placed(TenantHalf::place(&s)).as_deref(), Some("r3"));
    }

    #[test]
    fn a_single_replica_pool_still_serves_the_limited_tenant() {
        let s = snapshot(LIMITED, vec![replica("r0", 0, 0)]);
        assert_eq!(placed(TenantHalf::place(&s)).as_deref(), Some("r0"));
    }

    #[test]
    fn never_more_than_half_over_a_simulated_run() {
        // Place 40 tenant-a tasks one by one on 6 replicas (nothing finishes): at every step
        // the tenant occupies at most 3 replicas, and it does get work placed.
        let mut replicas: Vec<ReplicaLoad> =
            (0..6).map(|i| replica(&format!("r{i}"), 0, 0)).collect();
        let mut placed_count = 0;
        for _ in 0..40 {
            let s = snapshot(LIMITED, replicas.clone());
            if let Some(id) = placed(TenantHalf::place(&s)) {
                let r = replicas.iter_mut().find(|r| r.replica_id == id).unwrap();
                assert!(r.candidate);
                r.slots_busy += 1;
                *r.running_by_tenant.entry(LIMITED.into()).or_default() += 1;
                r.candidate = r.slots_busy < r.slots_total;
                placed_count += 1;
            }
            assert!(replicas.iter().filter(|r| uses(r)).count() <= 3);
        }
        assert_eq!(placed_count, 12, "3 replicas x 4 slots");
    }

    #[test]
    fn the_export_glue_round_trips_json() {
        let s = snapshot("tenant-b", vec![replica("r0", 1, 0), replica("r1", 0, 0)]);
        let input = serde_json::to_vec(&s).unwrap();
        let out = llorch_policy_sdk::__private::place_json::<TenantHalf>(&input);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"decision":"place","replica_id":"r1"}"#
        );
    }
}
