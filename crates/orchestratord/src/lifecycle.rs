//! Pool lifecycle: a pool changes what it serves. Drains (operator or catalog-caused), reloads
//! a pool's model through the [`crate::PoolController`], swaps its policy plugin, and follows
//! the model's catalog lifecycle (Deprecated / Retired drain it, back to Active lifts the drain).
//!
//! May touch: a pool's catalog [`Lifecycle`](crate::state::Lifecycle) (lock level 1), then that
//! pool's [`PoolSched`](crate::state::PoolSched) (draining flag, queue; the adapters and
//! model_ref are switched under it), the task table (to find in-flight tasks, with no other
//! lock held). Ends tasks only through completion (cancel, retire).

use std::sync::Arc;
use std::time::Duration;

use api_types::{ErrorCode, ModelState};

use crate::error::ApiError;
use crate::state::{AppState, DrainCause, Usage, lock};
use crate::task::{Phase, Task};

impl AppState {
    /// Swaps a pool's policy plugin for the module its config names, re-read from disk;
    /// atomic: on any load error the old plugin stays and nothing changes.
    pub fn reload_policy(
        self: &Arc<Self>,
        pool_idx: usize,
    ) -> Result<api_types::PolicyInfo, ApiError> {
        let pool = &self.pools[pool_idx];
        let Some(spec) = crate::plugins::spec_for(&self.cfg, &pool.id) else {
            return Err(ApiError::invalid(format!(
                "pool `{}` has no [pools.policy] configured",
                pool.id
            ))
            .with_pool(&pool.id)
            .with_engine(pool.engine.as_str()));
        };
        let info = self.policy.reload(&pool.id, &spec).map_err(|e| {
            tracing::warn!(pool_id = %pool.id, error = %e, "policy reload refused; old plugin kept");
            ApiError::invalid(format!("policy reload refused, old plugin kept: {e}"))
                .with_pool(&pool.id).with_engine(pool.engine.as_str())
        })?;
        tracing::info!(pool_id = %pool.id, plugin = %info.id, version = %info.version, "policy plugin reloaded");
        // Work the old plugin deferred may go now.
        self.dispatch(pool_idx);
        Ok(api_types::PolicyInfo {
            pool_id: pool.id.clone(),
            plugin_id: info.id.clone(),
            version: info.version.clone(),
            abi: format!("{}.{}", info.abi.0, info.abi.1),
        })
    }

    /// Drains a pool (SPEC §2): new submissions get POOL_UNAVAILABLE at once, nothing more is
    /// dispatched, running tasks may finish until `deadline`; then whatever still runs is
    /// canceled and whatever still waits fails with POOL_UNAVAILABLE. Returns once drained.
    pub async fn drain(self: &Arc<Self>, pool_idx: usize, deadline: Duration) {
        self.drain_because(pool_idx, deadline, DrainCause::Operator)
            .await;
    }

    /// [`Self::drain`], telling the tasks it ends why: an operator's drain is
    /// POOL_UNAVAILABLE, a drain caused by the catalog (model Deprecated or Retired) is
    /// MODEL_DEPRECATED, so clients learn to move to another model rather than retry.
    pub async fn drain_because(
        self: &Arc<Self>,
        pool_idx: usize,
        deadline: Duration,
        cause: DrainCause,
    ) {
        self.pool_sched(pool_idx).draining = true;
        let pool_id = self.pools[pool_idx].id.clone();
        tracing::info!(pool_id = %pool_id, deadline_ms = deadline.as_millis() as u64, "draining pool");
        let until = tokio::time::Instant::now() + deadline;
        // In flight = holds a slot: not released and no longer in the queue (a task just
        // dispatched may not be marked Running yet). Draining stops dispatch, so the queue is
        // stable from here on.
        let in_flight = |state: &Self| {
            let queued: std::collections::HashSet<String> = state
                .pool_sched(pool_idx)
                .queue
                .ids()
                .into_iter()
                .map(String::from)
                .collect();
            state
                .tasks()
                .values()
                .filter(|t| t.pool == pool_idx && !t.is_released() && !queued.contains(&t.id))
                .cloned()
                .collect::<Vec<_>>()
        };
        while tokio::time::Instant::now() < until && !in_flight(self).is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for t in in_flight(self) {
            let _ = self
                .cancel_as(&t, "drain", cause.code(), cause.running_message())
                .await;
        }
        let waiting: Vec<Arc<Task>> = {
            let mut guard = self.pool_sched(pool_idx);
            let ps = &mut *guard;
            let mut v = Vec::new();
            while let Some(d) = ps.queue.pop_next(u64::MAX) {
                v.push(d.item.task);
            }
            self.update_queue_gauges(&pool_id, ps);
            v
        };
        for t in waiting {
            if t.fail(cause.code(), cause.queued_message(), None) {
                self.metrics
                    .tasks_rejected
                    .with_label_values(&[
                        &pool_id,
                        self.pools[pool_idx].engine.as_str(),
                        cause.code().as_str(),
                    ])
                    .inc();
            }
            self.retire(&t, Usage::default());
        }
        tracing::info!(pool_id = %pool_id, "pool drained");
    }

    /// Reloads a pool with a new model (SPEC §2): the controller starts it beside the old one;
    /// only when every replica's new engine is Ready are the adapters and the model_ref
    /// switched, together, under the scheduler lock. Tasks already running finish on the old
    /// engines, which are retired afterwards. On failure nothing changed (rollback).
    pub async fn reload(
        self: &Arc<Self>,
        pool_idx: usize,
        new_model_ref: &str,
        new_model_sha256: Option<&str>,
    ) -> Result<(), ApiError> {
        let pool = &self.pools[pool_idx];
        let Some(ctl) = self.controller.clone() else {
            return Err(ApiError::new(
                ErrorCode::PoolUnavailable,
                "this orchestrator does not manage engines: reload needs `llorch serve` (or pool-managerd)",
            )
            .with_pool(&pool.id).with_engine(pool.engine.as_str()));
        };
        let _one_at_a_time = self.reloading.lock().await;
        tracing::info!(pool_id = %pool.id, new_model_ref, "reloading pool");
        let adapters = ctl.reload(&pool.id, new_model_ref, new_model_sha256).await.map_err(|code| {
            let why = ctl.last_error(&pool.id).unwrap_or_else(|| "new engine never became ready".into());
            tracing::warn!(pool_id = %pool.id, error = %why, "reload failed; old model keeps serving");
            ApiError::new(code, format!("reload rolled back: {why}")).with_pool(&pool.id).with_engine(pool.engine.as_str())
        })?;
        {
            // Atomic for the scheduler: no dispatch sees half the replicas switched.
            let _sched = self.pool_sched(pool_idx);
            for (rid, a) in adapters {
                if let Some(r) = pool.replicas.iter().find(|r| r.id == rid) {
                    r.swap_adapter(a);
                }
            }
            *pool.model_ref.write().unwrap_or_else(|p| p.into_inner()) = new_model_ref.to_string();
        }
        // Taken after the switch: every task that picked up an old adapter is Running by now
        // (runners mark themselves Running before they read the adapter).
        let running_at_switch: Vec<Arc<Task>> = self
            .tasks()
            .values()
            .filter(|t| t.pool == pool_idx && t.phase() == Phase::Running && !t.is_released())
            .cloned()
            .collect();
        tracing::info!(pool_id = %pool.id, new_model_ref, "pool switched to the new model");
        self.probe_replicas().await;
        let state = self.clone();
        let pool_id = pool.id.clone();
        tokio::spawn(async move {
            for t in running_at_switch {
                t.wait_released(Duration::from_secs(600)).await;
            }
            ctl.retire_old(&pool_id).await;
            drop(state);
        });
        Ok(())
    }

    /// Acts on a change of a pool's model lifecycle state.
    pub fn set_lifecycle(self: &Arc<Self>, pool_idx: usize, to: Option<ModelState>) {
        let pool = &self.pools[pool_idx];
        let mut lc = lock(&pool.lifecycle);
        if lc.state == to {
            return;
        }
        lc.state = to;
        tracing::info!(pool_id = %pool.id, model_ref = %pool.model_ref(), state = to.map_or("none", |s| s.as_str()), "model lifecycle changed");
        let blocked = |s: Option<ModelState>| {
            matches!(s, Some(ModelState::Deprecated) | Some(ModelState::Retired))
        };
        if blocked(to) {
            if let Some(h) = lc.drain.take() {
                h.abort();
            }
            let already = self.pool_sched(pool_idx).draining;
            if !already {
                lc.drained_by_catalog = true;
            }
            // Deprecated: running work may finish (it is bounded by the wall timeout);
            // Retired: unload now.
            let grace = if to == Some(ModelState::Retired) {
                Duration::ZERO
            } else {
                Duration::from_millis(self.cfg.timeouts.wall_ms)
            };
            let state = self.clone();
            lc.drain = Some(tokio::spawn(async move {
                state
                    .drain_because(pool_idx, grace, DrainCause::ModelLifecycle)
                    .await;
            }));
            if to == Some(ModelState::Retired) {
                drop(lc);
                let n = pool.replicas.len();
                for ri in 0..n {
                    self.mark_replica_unready(
                        pool_idx,
                        ri,
                        "model retired in the catalog (unloaded)",
                    );
                }
            }
        } else if lc.drained_by_catalog {
            if let Some(h) = lc.drain.take() {
                h.abort();
            }
            lc.drained_by_catalog = false;
            drop(lc);
            self.pool_sched(pool_idx).draining = false;
            tracing::info!(pool_id = %pool.id, "catalog drain lifted: the model serves again");
            self.dispatch(pool_idx);
        }
    }
}
