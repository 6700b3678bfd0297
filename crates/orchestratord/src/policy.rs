//! Wiring of policy plugins (ORCH-3048) into admission and placement: loads each pool's
//! `[pools.policy]` module into the policy host, and builds the JSON snapshots the hooks see
//! from the scheduler's real state. The host itself (limits, fallbacks, metrics, logs) is
//! `llorch-policy-host`; the decisions are applied in `state.rs`.

use std::collections::BTreeMap;
use std::path::Path;

use api_types::Priority;
use config_schema::Config;
use orchestrator_core::ReplicaState;
use policy_host::{PluginSpec, PolicyHost, sdk};

use crate::state::PoolSched;

/// Loads every configured pool plugin; any load error (wrong ABI, forbidden import, missing
/// file) refuses the whole config, naming the pool: a policy that silently did not load would
/// be worse than not starting.
pub fn install_configured(cfg: &Config, host: &PolicyHost) -> anyhow::Result<()> {
    for pool in &cfg.pools {
        if let Some(spec) = spec_for(cfg, &pool.id) {
            let plugin = host
                .load(&spec)
                .map_err(|e| anyhow::anyhow!("pool `{}`: policy plugin: {e}", pool.id))?;
            let info = plugin.info().clone();
            host.install(&pool.id, Some(plugin));
            tracing::info!(pool_id = %pool.id, plugin = %info.id, version = %info.version, "policy plugin installed");
        }
    }
    Ok(())
}

/// The plugin spec of a pool, with its module path resolved against the config's directory.
pub fn spec_for(cfg: &Config, pool_id: &str) -> Option<PluginSpec> {
    let pc = cfg.pool(pool_id)?.policy.as_ref()?;
    let dir = cfg.source_dir.as_deref().unwrap_or(Path::new("."));
    Some(PluginSpec::from_config(pc, dir))
}

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
