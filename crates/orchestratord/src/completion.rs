//! Completion: a task lets go. Gives a slot back (release, or requeue when the task never
//! started on its replica), settles the task's accounting once (quota, session budget,
//! deadline statistics), cancels on request, expires tasks that waited too long, and keeps a
//! finished task's log for replay within the retention budgets (evicting the oldest). After a slot comes back the pool is dispatched
//! again.
//!
//! May touch: one pool's [`PoolSched`] at a time (busy slots, running set, estimator and
//! measured rates), then — never nested in it — the quota book, the session store and the
//! deadline statistics, one at a time; the replay store's books, then (not nested) the task
//! table (forgetting). Order that clients rely
//! on: the accounting is settled before a task is marked released (a 204 cancel finds the
//! quota given back), and the runner appends `end` only after [`AppState::release`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use api_types::ErrorCode;

use crate::error::ApiError;
use crate::state::retention::Gone;
use crate::state::{AppState, Queued, Usage};
use crate::task::{CancelRefused, Phase, Task};

impl AppState {
    /// Gives a slot back (after the engine confirmed the job is gone) and dispatches more work.
    pub fn release(self: &Arc<Self>, pool_idx: usize, replica: usize, usage: Usage, task: &Task) {
        let (busy, version) = {
            let mut guard = self.pool_sched(pool_idx);
            let ps = &mut *guard;
            let r = &mut ps.replicas[replica].view;
            r.slots_busy = r.slots_busy.saturating_sub(1);
            let busy = r.slots_busy;
            ps.running.remove(&task.id);
            if ps.preempting.as_deref() == Some(task.id.as_str()) {
                ps.preempting = None;
            }
            if usage.completed {
                let first = usage.first_token_ms.unwrap_or(0);
                ps.estimator.observe(first + usage.decode_ms);
                ps.replicas[replica]
                    .rate
                    .observe(first, usage.tokens_out, usage.decode_ms);
                // Work whose deadline falls within about two service times must go now.
                let horizon = (ps.estimator.mean_ms() * 2.0) as u64;
                ps.queue.set_edf_horizon_ms(horizon);
            }
            (busy, ps.replicas[replica].engine_version.clone())
        };
        let pool = &self.pools[pool_idx];
        self.metrics
            .replica_slots_busy
            .with_label_values(&[
                &pool.id,
                &pool.replicas[replica].id,
                pool.engine.as_str(),
                &version,
            ])
            .set(i64::from(busy));
        self.retire(task, usage);
        self.dispatch(pool_idx);
    }

    /// A task holds nothing any more: the one place that settles its accounting (quota,
    /// session budget, deadline statistics) and schedules its record to be forgotten. Safe to
    /// call twice; only the first call counts.
    pub fn retire(self: &Arc<Self>, task: &Task, usage: Usage) {
        // Settle first, then mark released: a canceler waiting for "released" (the 204 of
        // cancel) must find the quota and budget already given back.
        if !task.begin_retire() {
            return;
        }
        let now = self.now_ms();
        let used = u64::from(task.prompt_tokens) + u64::from(usage.tokens_out);
        {
            self.quotas()
                .finish(&task.tenant, task.reserved_tokens(), used, now);
            if let Some(sid) = &task.session_id {
                self.sessions().settle_turn(
                    &task.tenant,
                    sid,
                    task.reserved_tokens(),
                    used,
                    usage.decode_ms,
                );
            }
            if let Some(d) = task.deadline_ms {
                let met = usage.completed && task.admitted_at.elapsed().as_millis() as u64 <= d;
                let pool = &self.pools[task.pool];
                pool.deadline_tasks.fetch_add(1, Ordering::Relaxed);
                pool.deadline_met
                    .fetch_add(u64::from(met), Ordering::Relaxed);
                let mut deadlines = self.deadlines();
                let slot = &mut deadlines[task.priority.index()];
                slot.1 += 1;
                slot.0 += u64::from(met);
                self.metrics
                    .deadlines_met_ratio
                    .with_label_values(&[task.priority.as_str()])
                    .set(slot.0 as f64 / slot.1 as f64);
            }
        }
        task.mark_released();
        self.retain(task);
    }

    /// Fails queued tasks that waited longer than `timeouts.queue_ms` or past their own
    /// deadline (DEADLINE_UNMET). Called every probe tick.
    pub fn expire_queued(self: &Arc<Self>) {
        let limit = Duration::from_millis(self.cfg.timeouts.queue_ms);
        for (pi, pool) in self.pools.iter().enumerate() {
            let (expired, pool_ready) = {
                let mut guard = self.pool_sched(pi);
                let ps = &mut *guard;
                // A deadline that can no longer be met even if the task started now (measured
                // service time) is failed early: EDF serves feasible work only.
                let service = Duration::from_millis(ps.estimator.mean_ms() as u64);
                let measured = ps.replicas.iter().any(|r| r.rate.samples() > 0);
                let expired = ps.queue.remove_where(|q| {
                    let waited = q.task.admitted_at.elapsed();
                    let finish = if measured { waited + service } else { waited };
                    waited >= limit
                        || q.task
                            .deadline_ms
                            .is_some_and(|d| finish > Duration::from_millis(d))
                });
                if !expired.is_empty() {
                    self.update_queue_gauges(&pool.id, ps);
                }
                (expired, ps.ready_slots().1 > 0)
            };
            for (_, q) in expired {
                let t = q.task;
                let waited = t.admitted_at.elapsed().as_millis() as u64;
                let by_deadline = t.deadline_ms.is_some() && waited < limit.as_millis() as u64;
                let (code, why) = if by_deadline {
                    (
                        ErrorCode::DeadlineUnmet,
                        format!("deadline can no longer be met after {waited} ms in the queue"),
                    )
                } else if pool_ready {
                    (
                        ErrorCode::AdmissionReject,
                        format!("waited {waited} ms in the queue (timeouts.queue_ms)"),
                    )
                } else {
                    (
                        ErrorCode::PoolUnready,
                        format!("no replica became ready within {waited} ms"),
                    )
                };
                if t.fail(code, why, None) {
                    self.metrics
                        .tasks_rejected
                        .with_label_values(&[&pool.id, pool.engine.as_str(), code.as_str()])
                        .inc();
                }
                self.retire(&t, Usage::default());
            }
        }
    }

    /// Gives back the slot of a task that never started on its replica and puts the task at
    /// the head of its queue again (no admitted task is lost to a replica failure).
    pub fn requeue(self: &Arc<Self>, pool_idx: usize, replica: usize, mut queued: Queued) {
        let canceled = {
            let mut guard = self.pool_sched(pool_idx);
            let ps = &mut *guard;
            let r = &mut ps.replicas[replica].view;
            r.slots_busy = r.slots_busy.saturating_sub(1);
            ps.running.remove(&queued.task.id);
            if ps.preempting.as_deref() == Some(queued.task.id.as_str()) {
                ps.preempting = None;
            }
            let canceled = if queued.task.requeue()
                && let Some(ticket) = queued.ticket.take()
            {
                ps.queue.requeue_front(ticket.with(queued));
                None
            } else {
                // Canceled meanwhile: it holds nothing any more.
                Some(queued.task)
            };
            self.update_queue_gauges(&self.pools[pool_idx].id, ps);
            canceled
        };
        if let Some(t) = canceled {
            self.retire(&t, Usage::default());
        }
        self.dispatch(pool_idx);
    }

    /// A reader of the task's stream went away. If the task has not ended and no reader is
    /// attached `server.stream_resume_grace_ms` later (nobody resumed with `Last-Event-ID`,
    /// or whoever did left again: the wait restarts from the last leave), the task is
    /// canceled with reason `client_disconnect`: nobody would read its tokens, and the slot
    /// is freed. With other streams still attached nothing happens.
    pub fn stream_detached(self: &Arc<Self>, task: &Arc<Task>) {
        if task.is_terminal() {
            return;
        }
        let mark = task.note_detached();
        let grace = Duration::from_millis(self.cfg.server.stream_resume_grace_ms);
        let (state, task) = (self.clone(), task.clone());
        tokio::spawn(async move {
            if !grace.is_zero() {
                tokio::time::sleep(grace).await;
            }
            if task.abandoned_since(mark) && !task.is_terminal() {
                let _ = state.cancel(&task, "client_disconnect").await;
            }
        });
    }

    /// Cancels a task (ORCH-3017, 3026). Returns once it holds no slot (bounded wait).
    pub async fn cancel(self: &Arc<Self>, task: &Arc<Task>, reason: &str) -> Result<(), ApiError> {
        self.cancel_as(task, reason, ErrorCode::Canceled, "canceled by client")
            .await
    }

    /// [`Self::cancel`] with the terminal error the task's stream ends with.
    pub async fn cancel_as(
        self: &Arc<Self>,
        task: &Arc<Task>,
        reason: &str,
        code: ErrorCode,
        message: &str,
    ) -> Result<(), ApiError> {
        let ended = task.cancel_with(code, message);
        let phase = ended.map_err(|CancelRefused::AlreadyFinished| {
            ApiError::new(ErrorCode::TaskFinished, "task already finished")
        })?;
        let pool = &self.pools[task.pool];
        let version = self.pool_sched(task.pool).serving_version().to_string();
        self.metrics
            .tasks_canceled
            .with_label_values(&[&pool.id, pool.engine.as_str(), &version, reason])
            .inc();
        tracing::info!(job_id = %task.id, tenant = %task.tenant, pool_id = %pool.id, reason, "task canceled");
        if phase == Phase::Queued {
            let removed = {
                let mut guard = self.pool_sched(task.pool);
                let ps = &mut *guard;
                let removed = ps.queue.remove(&task.id).is_some();
                self.update_queue_gauges(&pool.id, ps);
                removed
            };
            if removed {
                self.retire(task, Usage::default());
                return Ok(());
            }
            // Dispatched meanwhile: the runner sees the terminal log and releases the slot.
        }
        if !task.wait_released(Duration::from_secs(10)).await {
            tracing::warn!(job_id = %task.id, "engine did not confirm cancel within 10 s");
        }
        Ok(())
    }

    /// Keeps a finished task's log for replay, within the `server.task_log_*` budgets: evicts
    /// the oldest finished tasks that no longer fit (and those past `task_retention_ms`).
    fn retain(&self, task: &Task) {
        let bytes = task.compact();
        let now = self.now_ms();
        task.set_finished_at_ms(now);
        let gone = self
            .retention()
            .keep(task.id.clone(), task.tenant.clone(), bytes, now);
        self.forget(gone);
    }

    /// Forgets finished tasks older than `task_retention_ms` (called every probe tick; a
    /// lookup already treats them as gone); returns how many.
    pub fn expire_retained(&self) -> usize {
        let gone = self.retention().expire(self.now_ms());
        let n = gone.len();
        self.forget(gone);
        n
    }

    /// Drops tasks that left the replay store from the task table, and counts them.
    fn forget(&self, gone: Vec<(String, Gone)>) {
        if !gone.is_empty() {
            let mut tasks = self.tasks();
            for (id, _) in &gone {
                // Only a finished task: an id reused by a new submission stays.
                if tasks.get(id).is_some_and(|t| t.finished_at_ms().is_some()) {
                    tasks.remove(id);
                }
            }
        }
        for (_, why) in &gone {
            if *why != Gone::Expired {
                self.metrics
                    .task_log_evictions
                    .with_label_values(&[why.as_str()])
                    .inc();
            }
        }
        let (bytes, n) = {
            let r = self.retention();
            (r.bytes(), r.len())
        };
        self.metrics
            .task_log_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.metrics.task_log_tasks.set(n as i64);
    }
}
