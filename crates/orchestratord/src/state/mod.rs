//! The data room: everything orchestratord knows, and nothing that changes several things at
//! once. [`AppState`] holds the configured pools ([`Pool`], [`Replica`]), each pool's
//! scheduling state ([`PoolSched`]: its queue and one [`ReplicaSched`] per replica) behind
//! that pool's own lock, the books shared by all pools (sessions, quotas, shares, deadline
//! statistics) each behind its own lock, and the task table. The operations that walk a task
//! through this data live in the rooms above it: `admission`, `dispatch` (with `runner`),
//! `completion`, `lifecycle`, `health`. This module imports none of them.
//!
//! Lock order (the one place it is written down). Take locks only in this order, and never
//! two locks of one level at once:
//! 1. a pool's catalog lifecycle ([`Pool::lifecycle`]);
//! 2. one pool's scheduling state ([`AppState::pool_sched`]) — never two pools' at once;
//! 3. sessions ([`AppState::sessions`]);
//! 4. quotas ([`AppState::quotas`]);
//! 5. shares ([`AppState::shares`]);
//! 6. deadline statistics ([`AppState::deadlines`]).
//!
//! The task table, the replay store's books ([`AppState::retention`]) and a task's event log
//! are never taken while any of the above is held, nor the other way round, nor one inside
//! another. Policy plugins are called with no lock held except, for placement,
//! the lock of the pool being placed (which no other pool needs).

mod build;
mod pool;
pub mod retention;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use api_types::{Priority, ReplicaSnapshot, ReplicaStatus};
use config_schema::Config;
use orchestrator_core::{QuotaBook, ReplicaState, SessionStore, ShareTracker};

pub use pool::{
    DrainCause, Lifecycle, Pool, PoolController, PoolSched, Queued, RegistryFeed, RegistryReplica,
    Replica, ReplicaSched, RunningTask, Usage,
};

use crate::auth::KeyRing;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::task::Task;

pub struct AppState {
    pub cfg: Config,
    pub pools: Vec<Pool>,
    pub keys: KeyRing,
    pub metrics: Metrics,
    /// Per pool, by pool index: its queue and replicas (lock level 2).
    pool_scheds: Vec<Mutex<PoolSched>>,
    sessions: Mutex<SessionStore>,
    quotas: Mutex<QuotaBook>,
    shares: Mutex<ShareTracker>,
    /// Per priority: tasks with a deadline that ended, and how many of them met it.
    deadlines: Mutex<[(u64, u64); 2]>,
    tasks: Mutex<HashMap<String, Arc<Task>>>,
    /// Finished tasks kept for replay, within the `server.task_log_*` budgets.
    retention: Mutex<retention::RetentionBook>,
    epoch: Instant,
    shutting_down: AtomicBool,
    pub(crate) controller: Option<Arc<dyn PoolController>>,
    /// One reload at a time per process: a second one waits its turn.
    pub(crate) reloading: tokio::sync::Mutex<()>,
    /// The pools' WebAssembly policy plugins (admission and placement hooks).
    pub policy: policy_host::PolicyHost,
    /// Wakes the upkeep loop early (a task was admitted), see [`crate::upkeep`].
    pub(crate) upkeep_bell: tokio::sync::Notify,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // State behind these locks is updated in single steps; a poisoned lock is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AppState {
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// One pool's scheduling state (lock level 2).
    pub fn pool_sched(&self, pool_idx: usize) -> MutexGuard<'_, PoolSched> {
        lock(&self.pool_scheds[pool_idx])
    }

    /// The session store (lock level 3).
    pub fn sessions(&self) -> MutexGuard<'_, SessionStore> {
        lock(&self.sessions)
    }

    /// The tenants' quota book (lock level 4).
    pub fn quotas(&self) -> MutexGuard<'_, QuotaBook> {
        lock(&self.quotas)
    }

    /// Admission shares per flow (lock level 5).
    pub fn shares(&self) -> MutexGuard<'_, ShareTracker> {
        lock(&self.shares)
    }

    /// Deadline statistics per priority (lock level 6).
    pub fn deadlines(&self) -> MutexGuard<'_, [(u64, u64); 2]> {
        lock(&self.deadlines)
    }

    /// The task table (never taken with a level 1-6 lock held).
    pub(crate) fn tasks(&self) -> MutexGuard<'_, HashMap<String, Arc<Task>>> {
        lock(&self.tasks)
    }

    /// The replay store's books (never taken with another lock held).
    pub(crate) fn retention(&self) -> MutexGuard<'_, retention::RetentionBook> {
        lock(&self.retention)
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// A task visible to `tenant` (another tenant's task is indistinguishable from none). A
    /// finished task past `task_retention_ms` is gone (404) even before the next sweep; one
    /// evicted to keep within the budgets answers 410 TASK_EVICTED.
    pub fn task_for(&self, id: &str, tenant: &str) -> Result<Arc<Task>, ApiError> {
        let keep_ms = self.cfg.server.task_retention_ms;
        let now = self.now_ms();
        let found = lock(&self.tasks)
            .get(id)
            .filter(|t| t.tenant == tenant)
            .filter(|t| {
                t.finished_at_ms()
                    .is_none_or(|at| at.saturating_add(keep_ms) > now)
            })
            .cloned();
        match found {
            Some(t) => Ok(t),
            None if self.retention().was_evicted(id, tenant) => Err(ApiError::new(
                api_types::ErrorCode::TaskEvicted,
                "the task finished and its events were evicted to keep within the replay budget \
                 (server.task_log_*)",
            )),
            None => Err(ApiError::not_found("task")),
        }
    }

    pub fn live_tasks(&self) -> usize {
        lock(&self.tasks)
            .values()
            .filter(|t| !t.is_released())
            .count()
    }

    pub fn engine_version(&self, pool: usize, replica: usize) -> String {
        self.pool_sched(pool).replicas[replica]
            .engine_version
            .clone()
    }

    pub fn is_draining(&self, pool_idx: usize) -> bool {
        self.pool_sched(pool_idx).draining
    }

    /// Exports a pool's queue depth per priority, labelled with the pool's engine and the
    /// build it serves (SPEC §7).
    pub(crate) fn update_queue_gauges(&self, pool_id: &str, ps: &mut PoolSched) {
        let engine = self
            .pools
            .iter()
            .find(|p| p.id == pool_id)
            .map_or("", |p| p.engine.as_str());
        let version = ps.serving_version().to_string();
        if let Some(old) = ps.queue_gauge_version.replace(version.clone())
            && old != version
        {
            for p in Priority::ALL {
                let _ = self.metrics.queue_depth.remove_label_values(&[
                    pool_id,
                    engine,
                    &old,
                    p.as_str(),
                ]);
            }
        }
        for p in Priority::ALL {
            self.metrics
                .queue_depth
                .with_label_values(&[pool_id, engine, &version, p.as_str()])
                .set(ps.queue.depth(p) as i64);
        }
    }

    /// A pool's load and service figures now (replica sets, pool health).
    pub fn pool_figures(&self, pool_idx: usize) -> (api_types::PoolLoad, api_types::SloSnapshot) {
        use std::sync::atomic::Ordering::Relaxed;
        let pool = &self.pools[pool_idx];
        let ps = self.pool_sched(pool_idx);
        let (slots_free, slots_total) = ps.ready_slots();
        let queue_depth = ps.queue.len() as u32;
        let load = api_types::PoolLoad {
            slots_total,
            slots_free,
            slots_busy: ps.replicas.iter().map(|r| r.view.slots_busy).sum(),
            replicas_ready: ps
                .replicas
                .iter()
                .filter(|r| r.view.state == ReplicaState::Ready)
                .count() as u32,
            replicas_total: ps.replicas.len() as u32,
            queue_depth,
            queue_capacity: ps.queue.capacity() as u32,
        };
        let mean =
            |xs: Vec<f64>| (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64);
        let (tasks, met) = (
            pool.deadline_tasks.load(Relaxed),
            pool.deadline_met.load(Relaxed),
        );
        let slo = api_types::SloSnapshot {
            predicted_start_ms: ps.estimator.predicted_start_ms(
                queue_depth,
                slots_free,
                slots_total,
            ),
            mean_service_ms: ps
                .replicas
                .iter()
                .any(|r| r.rate.samples() > 0)
                .then(|| ps.estimator.mean_ms().round() as u64),
            first_token_ms: mean(
                ps.replicas
                    .iter()
                    .filter_map(|r| r.rate.first_token_ms())
                    .collect(),
            )
            .map(|v| v.round() as u64),
            decode_tokens_per_second: mean(
                ps.replicas
                    .iter()
                    .filter_map(|r| r.rate.tokens_per_second())
                    .collect(),
            ),
            deadline_tasks: tasks,
            deadlines_met_ratio: (tasks > 0).then(|| met as f64 / tasks as f64),
        };
        (load, slo)
    }

    pub fn replica_snapshots(&self, pool_idx: usize) -> Vec<ReplicaSnapshot> {
        let ps = self.pool_sched(pool_idx);
        let pool = &self.pools[pool_idx];
        ps.replicas
            .iter()
            .map(|rs| {
                let r = &rs.view;
                ReplicaSnapshot {
                    restarts: rs.restarts,
                    circuit_open: rs.circuit_open,
                    last_error: rs.last_error.clone(),
                    replica_id: r.id.clone(),
                    status: match r.state {
                        ReplicaState::Ready => ReplicaStatus::Ready,
                        ReplicaState::Unready => ReplicaStatus::Unready,
                        ReplicaState::Draining => ReplicaStatus::Draining,
                    },
                    engine: pool.engine.as_str().into(),
                    engine_version: rs.engine_version.clone(),
                    model_digest: rs.registry.as_ref().and_then(|g| g.model_digest.clone()),
                    devices: r.devices.clone(),
                    slots_total: r.slots_total,
                    slots_busy: r.slots_busy,
                    cpu: r.devices.is_empty(),
                }
            })
            .collect()
    }

    pub fn is_ready(&self) -> bool {
        !self.is_shutting_down()
            && (0..self.pools.len()).all(|i| {
                self.pool_sched(i)
                    .replicas
                    .iter()
                    .any(|r| r.view.state == ReplicaState::Ready)
            })
    }
}
