//! Shared helpers: the WAT test plugins of examples/plugins/wat, snapshots, metric reads.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use llorch_policy_host::{
    AdmissionSnapshot, Grant, Limits, ModuleSource, PlacementSnapshot, PluginSpec, PolicyHost,
    Priority, QueueState, ReplicaLoad, ReplicaState, TaskInfo, TenantUsage,
};

pub fn wat_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../examples/plugins/wat")
}

/// Compiles one of the example WAT plugins to binary WebAssembly with the `wat` crate.
pub fn wasm(name: &str) -> Vec<u8> {
    let path = wat_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    wat::parse_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub fn spec(id: &str, bytes: Vec<u8>) -> PluginSpec {
    PluginSpec {
        id: id.into(),
        module: ModuleSource::Bytes(bytes),
        limits: Limits::default(),
        grants: vec![],
    }
}

pub fn spec_with(id: &str, bytes: Vec<u8>, limits: Limits, grants: &[Grant]) -> PluginSpec {
    PluginSpec {
        id: id.into(),
        module: ModuleSource::Bytes(bytes),
        limits,
        grants: grants.to_vec(),
    }
}

pub fn host() -> (PolicyHost, prometheus::Registry) {
    let registry = prometheus::Registry::new();
    let host = PolicyHost::new(&registry).expect("host");
    (host, registry)
}

pub fn task(tenant: &str) -> TaskInfo {
    TaskInfo {
        task_id: format!("task-{tenant}"),
        tenant: tenant.into(),
        priority: Priority::Interactive,
        model_ref: "hf:org/model".into(),
        ctx: 4096,
        max_tokens: 256,
        prompt_tokens: 100,
        deadline_ms: Some(30_000),
        session_id: Some("s-1".into()),
    }
}

pub fn replica(id: &str, busy: u32, total: u32, candidate: bool) -> ReplicaLoad {
    ReplicaLoad {
        replica_id: id.into(),
        candidate,
        state: if candidate {
            ReplicaState::Ready
        } else {
            ReplicaState::Unready
        },
        slots_total: total,
        slots_busy: busy,
        devices: vec![0],
        running_by_tenant: BTreeMap::from([("acme".to_string(), busy)]),
    }
}

pub fn admission(pool: &str, tenant: &str) -> AdmissionSnapshot {
    AdmissionSnapshot {
        pool_id: pool.into(),
        now_ms: 1_700_000_000_000,
        task: task(tenant),
        queue: QueueState {
            capacity: 256,
            depth_interactive: 3,
            depth_batch: 7,
        },
        tenant_usage: TenantUsage {
            running: 1,
            queued: 2,
        },
        replicas: vec![replica("r0", 1, 4, false), replica("r1", 2, 4, false)],
    }
}

pub fn placement(pool: &str, replicas: Vec<ReplicaLoad>) -> PlacementSnapshot {
    PlacementSnapshot {
        pool_id: pool.into(),
        now_ms: 1_700_000_000_000,
        task: task("acme"),
        queue: QueueState {
            capacity: 256,
            depth_interactive: 1,
            depth_batch: 0,
        },
        replicas,
    }
}

/// Value of a counter (or a histogram's sample count) with exactly these labels; 0 if absent.
pub fn metric(registry: &prometheus::Registry, name: &str, labels: &[(&str, &str)]) -> u64 {
    for family in registry.gather() {
        if family.name() != name {
            continue;
        }
        for m in family.get_metric() {
            let got: BTreeMap<&str, &str> = m
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            let want: BTreeMap<&str, &str> = labels.iter().copied().collect();
            if got == want {
                return match family.get_field_type() {
                    prometheus::proto::MetricType::COUNTER => m.get_counter().get_value() as u64,
                    prometheus::proto::MetricType::HISTOGRAM => {
                        m.get_histogram().get_sample_count()
                    }
                    _ => 0,
                };
            }
        }
    }
    0
}

/// A plugin whose admission hook always answers `answer` (a JSON decision).
pub fn constant_plugin(answer: &str) -> Vec<u8> {
    let escaped = answer.replace('\\', "\\\\").replace('"', "\\\"");
    let text = format!(
        r#"(module
  (memory (export "memory") 1)
  (data (i32.const 0) "{escaped}")
  (func (export "llorch_abi_version") (result i32) (i32.const 0x10000))
  (func (export "llorch_alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "llorch_admit") (param i32 i32) (result i64) (i64.const {len})))"#,
        len = answer.len()
    );
    wat::parse_str(&text).expect("constant plugin")
}
