//! The SDK path end to end: `examples/plugins/tenant-half`, written in Rust with
//! `llorch-policy-sdk` and built to `wasm32-wasip1` (`cargo xtask build-plugins`, committed as
//! `tenant_half.wasm`), loads in the real host under the default limits and no grants, and
//! decides exactly what the same Rust code decides natively, for arbitrary snapshots. That
//! covers the SDK's export glue (snapshot decoding, decision encoding, allocation across the
//! ABI) and the host's WASI subset, which Rust's std for wasm32-wasip1 imports.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::*;
use llorch_example_tenant_half::{LIMITED, TenantHalf};
use llorch_policy_host::sdk::PlacementPolicy;
use llorch_policy_host::{
    AdmissionDecision, Outcome, PlacementDecision, PlacementSnapshot, Priority, QueueState,
    ReplicaLoad, ReplicaState, TaskInfo,
};
use proptest::prelude::*;

fn committed_module() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../examples/plugins/tenant-half/tenant_half.wasm");
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (build it with `cargo xtask build-plugins`)",
            path.display()
        )
    })
}

fn load() -> (llorch_policy_host::PolicyHost, prometheus::Registry) {
    let (host, reg) = host();
    let info = host
        .reload("p", &spec("tenant-half", committed_module()))
        .expect("the SDK-built module loads with default limits and no grants");
    assert_eq!(info.abi, (1, 0));
    assert!(info.places, "exports the placement hook");
    assert!(!info.admits, "leaves admission to the built-in policy");
    (host, reg)
}

fn load_of(id: &str, total: u32, busy: u32, limited: u32, state: ReplicaState) -> ReplicaLoad {
    let busy = busy.min(total);
    let limited = limited.min(busy);
    let mut running = BTreeMap::new();
    if limited > 0 {
        running.insert(LIMITED.to_string(), limited);
    }
    if busy > limited {
        running.insert("tenant-b".to_string(), busy - limited);
    }
    ReplicaLoad {
        replica_id: id.into(),
        candidate: state == ReplicaState::Ready && busy < total,
        state,
        slots_total: total,
        slots_busy: busy,
        devices: vec![],
        running_by_tenant: running,
    }
}

fn snapshot(tenant: &str, replicas: Vec<ReplicaLoad>) -> PlacementSnapshot {
    PlacementSnapshot {
        pool_id: "p".into(),
        now_ms: 1_700_000_000_000,
        task: TaskInfo {
            tenant: tenant.into(),
            priority: Priority::Interactive,
            ..task(tenant)
        },
        queue: QueueState {
            capacity: 64,
            depth_interactive: 1,
            depth_batch: 0,
        },
        replicas,
    }
}

fn decided(o: Outcome<PlacementDecision>) -> PlacementDecision {
    match o {
        Outcome::Decided { decision, .. } => decision,
        other => panic!("the SDK-built plugin must decide, not fall back: {other:?}"),
    }
}

/// The worked example of docs/plugins.md: with two replicas, tenant-a may hold one. It shares
/// the replica it already uses, is deferred when that one is full, and other tenants still
/// get the other replica.
#[test]
fn tenant_half_limits_tenant_a_to_half_the_replicas() {
    let (host, reg) = load();
    let ready = ReplicaState::Ready;

    // Idle pool: tenant-a is placed (least loaded, config order breaks the tie).
    let idle = vec![load_of("r0", 2, 0, 0, ready), load_of("r1", 2, 0, 0, ready)];
    assert_eq!(
        decided(host.place(&snapshot(LIMITED, idle))),
        PlacementDecision::Place {
            replica_id: "r0".into()
        }
    );
    // tenant-a on r0 (1 of 2 slots): its next task shares r0 although r1 is less loaded.
    let one = vec![load_of("r0", 2, 1, 1, ready), load_of("r1", 2, 0, 0, ready)];
    assert_eq!(
        decided(host.place(&snapshot(LIMITED, one.clone()))),
        PlacementDecision::Place {
            replica_id: "r0".into()
        }
    );
    // ...while another tenant goes to the least-loaded replica as usual.
    assert_eq!(
        decided(host.place(&snapshot("tenant-b", one))),
        PlacementDecision::Place {
            replica_id: "r1".into()
        }
    );
    // r0 full of tenant-a: a third tenant-a task is deferred, r1 stays for the others.
    let full = vec![load_of("r0", 2, 2, 2, ready), load_of("r1", 2, 0, 0, ready)];
    assert_eq!(
        decided(host.place(&snapshot(LIMITED, full.clone()))),
        PlacementDecision::Defer
    );
    assert_eq!(
        decided(host.place(&snapshot("tenant-b", full))),
        PlacementDecision::Place {
            replica_id: "r1".into()
        }
    );
    assert_eq!(
        metric(
            &reg,
            "llorch_policy_fallbacks_total",
            &[("pool_id", "p"), ("plugin", "tenant-half")]
        ),
        0
    );
    // No admission hook: the host reports "not exported", and the caller's built-in rule
    // decides.
    assert_eq!(
        host.admit(&admission("p", LIMITED))
            .decision_or(AdmissionDecision::Admit),
        AdmissionDecision::Admit
    );
}

fn arb_state() -> impl Strategy<Value = ReplicaState> {
    prop_oneof![
        6 => Just(ReplicaState::Ready),
        1 => Just(ReplicaState::Unready),
        1 => Just(ReplicaState::Draining),
    ]
}

fn arb_replicas() -> impl Strategy<Value = Vec<ReplicaLoad>> {
    prop::collection::vec((1u32..6, 0u32..7, 0u32..7, arb_state()), 0..7).prop_map(|rs| {
        rs.into_iter()
            .enumerate()
            .map(|(i, (total, busy, limited, state))| {
                load_of(&format!("r{i}"), total, busy, limited, state)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Differential: the wasm build and the native build of the same policy agree on every
    /// snapshot (any pool size, load, tenant mix and replica state), and the wasm build never
    /// falls back.
    #[test]
    fn wasm_build_decides_exactly_like_the_native_code(
        replicas in arb_replicas(),
        limited_tenant in any::<bool>(),
    ) {
        let (host, _reg) = HOST.with(|h| h.clone());
        let tenant = if limited_tenant { LIMITED } else { "tenant-b" };
        let snap = snapshot(tenant, replicas);
        let native = TenantHalf::place(&snap);
        prop_assert_eq!(decided(host.place(&snap)), native);
    }
}

thread_local! {
    // Loading compiles the module (cranelift); do it once per test thread, not per case.
    static HOST: (std::sync::Arc<llorch_policy_host::PolicyHost>, prometheus::Registry) = {
        let (h, r) = load();
        (std::sync::Arc::new(h), r)
    };
}
