//! Dispatch: a queued task gets a replica. Picks tasks in fair-share/EDF order, places them
//! (built-in least-loaded placement or the pool's placement plugin), takes a slot, considers
//! hard preemption, and starts a [`crate::runner`] per task; builds the `metrics` event a task
//! sees when it starts.
//!
//! May touch: one pool's [`PoolSched`] at a time (queue, replicas' busy slots, running set),
//! and, nested under it, the session store (where a session's KV now lives) and the shares.
//! The placement plugin runs under the pool's own lock only. Ends nothing itself: a
//! preemption victim is canceled through its task log, and the runner's end goes through
//! completion.

use std::sync::Arc;

use api_types::{ErrorCode, MetricsEvent, Priority};
use orchestrator_core::{
    FlowKey, PlacementDecision, PlacementRequest, ReplicaState, RunningView, choose_replica,
    hard_preemption_victim, on_time_probability,
};

use crate::state::{AppState, Pool, PoolSched, Queued, RunningTask};
use crate::task::Task;

/// What the placement plugin said about the head task.
enum PlacementChoice {
    /// No plugin decision (none configured, or it fell back): least-loaded placement.
    Builtin,
    Replica(usize),
    /// Leave the task queued; serve other flows.
    Defer,
}

impl AppState {
    /// Starts as many queued tasks of a pool as free Ready slots allow, in fair-share/EDF
    /// order; when interactive work still waits with no free slot, considers hard preemption.
    pub fn dispatch(self: &Arc<Self>, pool_idx: usize) {
        let mut starts = Vec::new();
        let now = self.now_ms();
        let pool = &self.pools[pool_idx];
        let preempt = {
            let mut guard = self.pool_sched(pool_idx);
            let ps = &mut *guard;
            // Flows whose head the placement plugin deferred this round: the others are
            // still served (no head-of-line blocking across tenants).
            let mut deferred: Vec<FlowKey> = Vec::new();
            let plugin = self
                .policy
                .plugin(&pool.id)
                .is_some_and(|p| p.info().places);
            while !ps.draining {
                let Some((_, head)) = ps.queue.peek_next_where(now, |k| !deferred.contains(k))
                else {
                    break;
                };
                let req = PlacementRequest {
                    device_mask: None,
                    affinity: head.affinity.as_deref(),
                };
                let Some(builtin) = choose_replica(&ps.replicas, &req) else {
                    break;
                };
                let decision = if plugin {
                    match self.placement_policy(pool, ps, head, now) {
                        PlacementChoice::Builtin => builtin,
                        PlacementChoice::Replica(i) => PlacementDecision {
                            replica: i,
                            kv_warm: head.affinity.as_deref()
                                == Some(ps.replicas[i].view.id.as_str()),
                        },
                        PlacementChoice::Defer => {
                            deferred
                                .push(FlowKey::new(head.task.tenant.clone(), head.task.priority));
                            continue;
                        }
                    }
                } else {
                    builtin
                };
                let Some(d) = ps.queue.pop_next_where(now, |k| !deferred.contains(k)) else {
                    break;
                };
                self.shares().observe(&d.flow);
                let (ticket, mut queued) = d.split();
                queued.ticket = Some(ticket);
                let rs = &mut ps.replicas[decision.replica];
                let r = &mut rs.view;
                r.slots_busy += 1;
                if let Some(sid) = &queued.task.session_id {
                    self.sessions().record_placement(
                        &queued.task.tenant,
                        sid,
                        &format!("{}/{}", pool.id, r.id),
                        0,
                    );
                }
                ps.running.insert(
                    queued.task.id.clone(),
                    RunningTask {
                        task: queued.task.clone(),
                        replica: decision.replica,
                        started_ms: now,
                    },
                );
                let busy = r.slots_busy;
                let version = rs.engine_version.clone();
                starts.push((queued, decision, version, busy));
            }
            // Priority inversion: interactive work waiting while a slot it could use is free.
            // The loop above never leaves one; this guards the invariant against future
            // placement constraints and is exported so operators can alert on it.
            let waiting_interactive = ps
                .queue
                .peek_next_where(now, |k| {
                    k.priority == Priority::Interactive && !deferred.contains(k)
                })
                .is_some();
            if !ps.draining
                && waiting_interactive
                && choose_replica(&ps.replicas, &PlacementRequest::default()).is_some()
            {
                self.metrics
                    .priority_inversions
                    .with_label_values(&[&pool.id])
                    .inc();
            }
            let preempt = self.choose_preemption(ps, now);
            for (k, v) in self.shares().shares() {
                self.metrics
                    .admission_share
                    .with_label_values(&[&k.tenant, k.priority.as_str()])
                    .set(v);
            }
            self.update_queue_gauges(&pool.id, ps);
            preempt
        };
        if let Some(victim) = preempt {
            tracing::info!(job_id = %victim.id, pool_id = %pool.id, "hard preemption: interrupting batch work for waiting interactive work");
            self.metrics
                .preemptions
                .with_label_values(&["hard", pool.engine.as_str()])
                .inc();
            let _ = victim.cancel_with(
                ErrorCode::AdmissionReject,
                "preempted: interrupted to serve higher-priority work (retry)",
            );
        }
        for (queued, decision, version, busy) in starts {
            let replica = &pool.replicas[decision.replica];
            let waited = now.saturating_sub(queued.admitted_ms);
            let priority = queued.task.priority.as_str();
            self.metrics
                .queue_wait
                .with_label_values(&[&pool.id, priority])
                .observe(waited as f64 / 1000.0);
            self.metrics
                .start_prediction_error
                .with_label_values(&[&pool.id, priority])
                .observe(waited.abs_diff(queued.predicted_start_ms) as f64 / 1000.0);
            self.metrics
                .replica_slots_busy
                .with_label_values(&[&pool.id, &replica.id, pool.engine.as_str(), &version])
                .set(i64::from(busy));
            let state = self.clone();
            tokio::spawn(crate::runner::run(
                state,
                pool_idx,
                decision.replica,
                decision.kv_warm,
                version,
                queued,
            ));
        }
    }

    /// Runs the pool's placement plugin for the task at the head of the queue, over the real
    /// replica loads, with the built-in eligibility (Ready, free slot) as the candidates.
    fn placement_policy(
        &self,
        pool: &Pool,
        ps: &PoolSched,
        head: &Queued,
        now: u64,
    ) -> PlacementChoice {
        let t = &head.task;
        let snapshot = policy_host::PlacementSnapshot {
            pool_id: pool.id.clone(),
            now_ms: now,
            task: policy_host::TaskInfo {
                task_id: t.id.clone(),
                tenant: t.tenant.clone(),
                priority: crate::policy::priority(t.priority),
                model_ref: pool.model_ref(),
                ctx: head.ctx,
                max_tokens: t.max_tokens,
                prompt_tokens: t.prompt_tokens,
                deadline_ms: t.deadline_ms,
                session_id: t.session_id.clone(),
            },
            queue: crate::policy::queue_state(ps),
            replicas: crate::policy::replica_loads(ps, |i| {
                let r = &ps.replicas[i].view;
                r.state == ReplicaState::Ready && r.has_free_slot()
            }),
        };
        match self.policy.place(&snapshot) {
            policy_host::Outcome::Decided {
                decision: policy_host::PlacementDecision::Place { replica_id },
                ..
            } => ps
                .replicas
                .iter()
                .position(|r| r.view.id == replica_id)
                .map_or(PlacementChoice::Builtin, PlacementChoice::Replica),
            policy_host::Outcome::Decided {
                decision: policy_host::PlacementDecision::Defer,
                ..
            } => PlacementChoice::Defer,
            _ => PlacementChoice::Builtin,
        }
    }

    /// Hard preemption (ORCH-3086): when the next task to start is interactive and no slot is
    /// free, interrupt the most recently started batch task on a replica whose adapter
    /// declares interruptible decode. One at a time per pool.
    fn choose_preemption(&self, ps: &mut PoolSched, now: u64) -> Option<Arc<Task>> {
        if ps.draining || ps.preempting.is_some() {
            return None;
        }
        let (_, head) = ps.queue.peek_next(now)?;
        let incoming = head.task.priority;
        let running: Vec<(&RunningTask, RunningView<'_>)> = ps
            .running
            .values()
            .filter(|r| ps.replicas[r.replica].view.state == ReplicaState::Ready)
            .map(|r| {
                (
                    r,
                    RunningView {
                        id: r.task.id.as_str(),
                        priority: r.task.priority,
                        started_ms: r.started_ms,
                        interruptible: ps.replicas[r.replica].interruptible,
                    },
                )
            })
            .collect();
        let views: Vec<RunningView<'_>> = running.iter().map(|(_, v)| v.clone()).collect();
        let victim = hard_preemption_victim(&views, incoming)?;
        let task = running[victim].0.task.clone();
        ps.preempting = Some(task.id.clone());
        Some(task)
    }

    /// The `metrics` event of a task at dispatch: queue depth, on-time probability from the
    /// replica's measured rate, KV warmth, and the session's budgets left.
    pub fn metrics_event(&self, task: &Task, replica: usize, kv_warm: bool) -> MetricsEvent {
        let now = self.now_ms();
        let (depth, expected_ms) = {
            let ps = self.pool_sched(task.pool);
            let expected = ps.replicas[replica]
                .rate
                .expected_service_ms(task.max_tokens)
                .unwrap_or(ps.estimator.mean_ms());
            (ps.queue.len() as u32, expected)
        };
        let session = task
            .session_id
            .as_deref()
            .and_then(|sid| self.sessions().get(&task.tenant, sid, now));
        let waited = task.admitted_at.elapsed().as_millis() as u64;
        MetricsEvent {
            queue_depth: depth,
            on_time_probability: on_time_probability(waited, task.deadline_ms, expected_ms),
            kv_warmth: kv_warm,
            tokens_budget_remaining: session.as_ref().and_then(|v| v.tokens_remaining),
            time_budget_remaining_ms: session.as_ref().and_then(|v| v.time_remaining_ms),
        }
    }
}
