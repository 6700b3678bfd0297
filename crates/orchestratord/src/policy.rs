//! Policy plugins (ORCH-3048) in admission and placement: the JSON snapshots the hooks see,
//! built from a pool's real scheduling state, and the priority conversions. Loading the
//! modules is [`crate::plugins`]; the host itself (limits, fallbacks, metrics, logs) is
//! `llorch-policy-host`; the decisions are applied in `admission` and `dispatch`.

use std::collections::BTreeMap;

use api_types::Priority;
use orchestrator_core::ReplicaState;
use policy_host::sdk;

use crate::state::PoolSched;

pub fn priority(p: Priority) -> sdk::Priority {
    match p {
        Priority::Interactive => sdk::Priority::Interactive,
        Priority::Batch => sdk::Priority::Batch,
    }
}

pub fn from_sdk(p: sdk::Priority) -> Priority {
    match p {
        sdk::Priority::Interactive => Priority::Interactive,
        sdk::Priority::Batch => Priority::Batch,
    }
}

pub fn queue_state(ps: &PoolSched) -> sdk::QueueState {
    sdk::QueueState {
        capacity: ps.queue.capacity() as u32,
        depth_interactive: ps.queue.depth(Priority::Interactive) as u32,
        depth_batch: ps.queue.depth(Priority::Batch) as u32,
    }
}

/// Replica loads with who runs where; `candidate(i)` marks the replicas the built-in rules
/// allow for this task.
pub fn replica_loads(ps: &PoolSched, candidate: impl Fn(usize) -> bool) -> Vec<sdk::ReplicaLoad> {
    let mut by_tenant: Vec<BTreeMap<String, u32>> = vec![BTreeMap::new(); ps.replicas.len()];
    for r in ps.running.values() {
        *by_tenant[r.replica]
            .entry(r.task.tenant.clone())
            .or_default() += 1;
    }
    ps.replicas
        .iter()
        .map(|r| &r.view)
        .zip(by_tenant)
        .enumerate()
        .map(|(i, (r, running_by_tenant))| sdk::ReplicaLoad {
            replica_id: r.id.clone(),
            candidate: candidate(i),
            state: match r.state {
                ReplicaState::Ready => sdk::ReplicaState::Ready,
                ReplicaState::Unready => sdk::ReplicaState::Unready,
                ReplicaState::Draining => sdk::ReplicaState::Draining,
            },
            slots_total: r.slots_total,
            slots_busy: r.slots_busy,
            devices: r.devices.clone(),
            running_by_tenant,
        })
        .collect()
}

/// Tasks of `tenant` running and queued in this pool.
pub fn tenant_usage(ps: &PoolSched, tenant: &str) -> sdk::TenantUsage {
    sdk::TenantUsage {
        running: ps
            .running
            .values()
            .filter(|r| r.task.tenant == tenant)
            .count() as u32,
        queued: ps.queue.tenant_depth(tenant) as u32,
    }
}
