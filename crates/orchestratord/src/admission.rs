//! Admission: a task enters. Validates the request, runs the pool's admission plugin, checks
//! sessions, quotas and feasibility, reserves the task id and enqueues the task, then hands the
//! pool to dispatch (ORCH-2001, 3004, 3005, 3014, 3015).
//!
//! May touch: the task table (reserving an id), the admitted pool's [`PoolSched`] (its queue),
//! the session store and the quota book (checked and committed together, under the pool's
//! lock, in the order of `state`'s lock list). Never another pool's state; the admission
//! plugin is called with no lock held.

use std::sync::Arc;

use adapter_api::GenerateRequest;
use api_types::{ErrorCode, Priority, StartedEvent, StreamEvent, TaskAccepted, TaskRequest};
use config_schema::FullPolicy as CfgFullPolicy;
use orchestrator_core::{
    AdmissionError, AdmissionInput, EnqueueOutcome, FlowKey, ModelLimits, QuotaViolation,
    ReplicaState, check_admission, on_time_probability, pool_service_ms, seed_from_task_id,
};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::sampling::Validated;
use crate::state::{AppState, Pool, Queued, Usage};
use crate::task::{Task, TaskSpec};

impl AppState {
    fn find_pool(&self, req: &TaskRequest) -> Result<usize, ApiError> {
        self.pools
            .iter()
            .position(|p| {
                p.model_ref() == req.model_ref && req.engine.is_none_or(|e| e == p.engine)
            })
            .ok_or_else(|| {
                ApiError::invalid(match req.engine {
                    Some(e) => format!(
                        "no pool serves model_ref `{}` on engine {}",
                        req.model_ref,
                        e.as_str()
                    ),
                    None => format!("no pool serves model_ref `{}`", req.model_ref),
                })
            })
    }

    /// Validates, admits and enqueues a task (ORCH-2001, 3004, 3005, 3014, 3015).
    pub fn submit(
        self: &Arc<Self>,
        caller: &Principal,
        req: TaskRequest,
    ) -> Result<TaskAccepted, ApiError> {
        // Counts the refusal and names the pool's engine in the envelope (ORCH-2006).
        let reject = |pool: &str, e: ApiError| {
            let engine = self
                .pools
                .iter()
                .find(|p| p.id == pool)
                .map_or("", |p| p.engine.as_str());
            self.metrics
                .tasks_rejected
                .with_label_values(&[pool, engine, e.code.as_str()])
                .inc();
            if engine.is_empty() {
                e
            } else {
                e.with_engine(engine)
            }
        };
        let pool_idx = self.find_pool(&req).map_err(|e| reject("", e))?;
        let pool = &self.pools[pool_idx];
        let validated = self.validate(caller, &req, pool);
        let v = validated.map_err(|e| reject(&pool.id, e.with_pool(&pool.id)))?;
        let prompt = v.estimate_text.as_str();
        let task_id = req
            .task_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let seed = req.seed.unwrap_or_else(|| seed_from_task_id(&task_id));
        let priority = self
            .admission_policy(caller, &req, pool_idx, &task_id, prompt)
            .map_err(|e| reject(&pool.id, e.with_pool(&pool.id)))?;

        // Reserve the id first so that two submissions of one id cannot both pass.
        let task = {
            let mut tasks = self.tasks();
            if tasks.contains_key(&task_id) {
                drop(tasks);
                return Err(reject(
                    &pool.id,
                    ApiError::invalid(format!("task_id `{task_id}` is already in use")),
                ));
            }
            let t = Arc::new(Task::new(TaskSpec {
                id: task_id.clone(),
                tenant: caller.tenant.clone(),
                pool: pool_idx,
                engine: pool.engine,
                priority,
                session_id: req.session_id.clone(),
                prompt_tokens: orchestrator_core::estimate_prompt_tokens(prompt),
                max_tokens: req.max_tokens,
                deadline_ms: req.deadline_ms,
            }));
            tasks.insert(task_id.clone(), t.clone());
            t
        };
        let outcome = self.admit_and_enqueue(caller, &req, pool_idx, &v, task.clone(), seed);
        match outcome {
            Ok((accepted, evicted)) => {
                if let Some(ev) = evicted {
                    // Soft preemption (shed-low-priority) or drop-lru: never silent.
                    let (code, why) = match pool.full_policy {
                        CfgFullPolicy::ShedLowPriority => (
                            ErrorCode::AdmissionReject,
                            "preempted while queued: shed to admit higher-priority work",
                        ),
                        _ => (
                            ErrorCode::QueueFullDropLru,
                            "evicted from a full queue by a newer task",
                        ),
                    };
                    ev.fail(code, why, None);
                    if pool.full_policy == CfgFullPolicy::ShedLowPriority {
                        self.metrics
                            .preemptions
                            .with_label_values(&["soft", pool.engine.as_str()])
                            .inc();
                    }
                    self.metrics
                        .tasks_rejected
                        .with_label_values(&[&pool.id, pool.engine.as_str(), code.as_str()])
                        .inc();
                    self.retire(&ev, Usage::default());
                }
                self.metrics
                    .tasks_enqueued
                    .with_label_values(&[&pool.id, pool.engine.as_str(), priority.as_str()])
                    .inc();
                tracing::info!(
                    job_id = %task_id, tenant = %caller.tenant, pool_id = %pool.id, engine = pool.engine.as_str(),
                    session_id = req.session_id.as_deref().unwrap_or(""), priority = priority.as_str(),
                    queue_position = accepted.queue_position, "task admitted"
                );
                self.dispatch(pool_idx);
                // Work exists now: the upkeep loop switches to its busy pace.
                self.upkeep_bell.notify_one();
                Ok(accepted)
            }
            Err(e) => {
                self.tasks().remove(&task_id);
                Err(reject(
                    &pool.id,
                    e.with_pool(&pool.id).with_engine(pool.engine.as_str()),
                ))
            }
        }
    }

    /// Checks that do not need the scheduler lock; returns the engine's input and sampling.
    fn validate(
        &self,
        caller: &Principal,
        req: &TaskRequest,
        pool: &Pool,
    ) -> Result<Validated, ApiError> {
        if self.is_shutting_down() {
            return Err(
                ApiError::new(ErrorCode::PoolUnavailable, "server is shutting down")
                    .with_retry_after(1000),
            );
        }
        if let Some(e) = pool.lifecycle_refusal() {
            return Err(e);
        }
        if let Some(t) = &req.tenant
            && *t != caller.tenant
        {
            return Err(ApiError::invalid(
                "`tenant` does not match the API key's tenant",
            ));
        }
        if let Some(id) = &req.task_id
            && !valid_task_id(id)
        {
            return Err(ApiError::invalid(
                "task_id must be 1-128 chars of [A-Za-z0-9._:-]",
            ));
        }
        if let Some(id) = &req.session_id
            && !valid_task_id(id)
        {
            return Err(ApiError::invalid(
                "session_id must be 1-128 chars of [A-Za-z0-9._:-]",
            ));
        }
        crate::sampling::validate(req)
    }

    /// Runs the pool's admission plugin, if any, on a snapshot of the real state; returns the
    /// priority to queue the task with. A plugin failure falls back to the built-in decision
    /// (admit as asked), counted by the host.
    fn admission_policy(
        &self,
        caller: &Principal,
        req: &TaskRequest,
        pool_idx: usize,
        task_id: &str,
        prompt: &str,
    ) -> Result<Priority, ApiError> {
        let pool = &self.pools[pool_idx];
        // No snapshot to build unless the pool's plugin has an admission hook.
        if !self
            .policy
            .plugin(&pool.id)
            .is_some_and(|p| p.info().admits)
        {
            return Ok(req.priority);
        }
        let snapshot = {
            let ps = self.pool_sched(pool_idx);
            let ps = &*ps;
            policy_host::AdmissionSnapshot {
                pool_id: pool.id.clone(),
                now_ms: self.now_ms(),
                task: self.task_info(caller, req, pool, task_id, prompt),
                queue: crate::policy::queue_state(ps),
                tenant_usage: crate::policy::tenant_usage(ps, &caller.tenant),
                replicas: crate::policy::replica_loads(ps, |i| {
                    ps.replicas[i].view.state == ReplicaState::Ready
                }),
            }
        };
        match self.policy.admit(&snapshot) {
            policy_host::Outcome::Decided { decision, plugin } => match decision {
                policy_host::AdmissionDecision::Admit => Ok(req.priority),
                policy_host::AdmissionDecision::Reprioritize { priority } => {
                    Ok(crate::policy::from_sdk(priority))
                }
                policy_host::AdmissionDecision::Reject { reason } => {
                    let mut e = ApiError::new(
                        ErrorCode::AdmissionReject,
                        format!("rejected by policy plugin `{}`: {reason}", plugin.id),
                    )
                    .with_retry_after(self.pool_sched(pool_idx).backoff_ms());
                    e.policy_label = Some("policy-plugin");
                    Err(e)
                }
            },
            _ => Ok(req.priority),
        }
    }

    fn task_info(
        &self,
        caller: &Principal,
        req: &TaskRequest,
        pool: &Pool,
        task_id: &str,
        prompt: &str,
    ) -> policy_host::TaskInfo {
        policy_host::TaskInfo {
            task_id: task_id.to_string(),
            tenant: caller.tenant.clone(),
            priority: crate::policy::priority(req.priority),
            model_ref: pool.model_ref(),
            ctx: req.ctx,
            max_tokens: req.max_tokens,
            prompt_tokens: orchestrator_core::estimate_prompt_tokens(prompt),
            deadline_ms: req.deadline_ms,
            session_id: req.session_id.clone(),
        }
    }

    fn admit_and_enqueue(
        &self,
        caller: &Principal,
        req: &TaskRequest,
        pool_idx: usize,
        v: &Validated,
        task: Arc<Task>,
        seed: u64,
    ) -> Result<(TaskAccepted, Option<Arc<Task>>), ApiError> {
        let prompt = v.estimate_text.as_str();
        let now = self.now_ms();
        let pool = &self.pools[pool_idx];
        let mut guard = self.pool_sched(pool_idx);
        let ps = &mut *guard;
        if ps.draining {
            return Err(
                ApiError::new(ErrorCode::PoolUnavailable, "pool is draining")
                    .with_retry_after(5000),
            );
        }
        let (free, total) = ps.ready_slots();
        if total == 0 {
            return Err(
                ApiError::new(ErrorCode::PoolUnready, "no replica of this pool is ready")
                    .with_retry_after(ps.backoff_ms().max(1000)),
            );
        }
        let reserved = task.reserved_tokens();
        let flow = FlowKey::new(caller.tenant.clone(), task.priority);
        // Predicted start if it were queued now: the tasks that would go first, from a what-if
        // run of the fair scheduler over the real queue.
        let deadline_at = req.deadline_ms.map(|d| now.saturating_add(d));
        let ahead = ps.queue.position_if_enqueued(&flow, deadline_at, now);
        let predicted_start_ms = ps.estimator.predicted_start_ms(ahead, free, total);
        let tokens = req
            .expected_tokens
            .unwrap_or(req.max_tokens)
            .min(req.max_tokens);
        let ready_rates = ps
            .replicas
            .iter()
            .filter(|r| r.view.state == ReplicaState::Ready)
            .map(|r| &r.rate);
        let predicted_service_ms = pool_service_ms(ready_rates, tokens).map(|ms| ms as u64);
        // Computed before the shared books are locked (it reads only this pool), reported
        // after their refusals, as before.
        let admission = check_admission(
            &AdmissionInput {
                ctx: req.ctx,
                prompt,
                max_tokens: req.max_tokens,
                deadline_ms: req.deadline_ms,
                predicted_start_ms,
                predicted_service_ms,
            },
            &ModelLimits {
                ctx_max: pool.ctx_max,
            },
        )
        .map_err(|e| match e {
            AdmissionError::DeadlineInfeasible { .. } => {
                ApiError::new(ErrorCode::DeadlineUnmet, e.to_string())
            }
            _ => ApiError::invalid(e.to_string()),
        });
        let mut queued = Queued {
            request: GenerateRequest {
                job_id: task.id.clone(),
                prompt: v.prompt.clone(),
                messages: v.messages.clone(),
                sampling: Some(v.sampling.clone()),
                max_tokens: req.max_tokens,
                seed,
                sampler_profile_version: req.sampler_profile_version.clone(),
                strict_determinism: req.determinism == Some(api_types::Determinism::Strict),
            },
            task: task.clone(),
            affinity: None,
            ticket: None,
            admitted_ms: now,
            predicted_start_ms,
            ctx: req.ctx,
        };
        // Sessions and quotas are shared by every pool: held from their checks to their
        // commits, so that two pools admitting one tenant at once cannot both pass a limit
        // only one of them fits.
        let mut sessions = self.sessions();
        let turn = match &req.session_id {
            Some(sid) => Some(
                sessions
                    .check_turn(&caller.tenant, sid, now, reserved)
                    .map_err(|e| ApiError::invalid(e.to_string()))?,
            ),
            None => None,
        };
        let mut quotas = self.quotas();
        let mean_service = ps.estimator.mean_ms() as u64;
        quotas
            .check(&caller.tenant, reserved, now, mean_service)
            .map_err(|v| self.quota_error(&caller.tenant, v))?;
        let prompt_tokens = admission?;
        debug_assert_eq!(prompt_tokens, task.prompt_tokens);
        // Sessions remember "pool/replica": a session that moves to another pool is cold.
        queued.affinity = turn.as_ref().and_then(|t| {
            t.affinity
                .as_deref()?
                .strip_prefix(pool.id.as_str())?
                .strip_prefix('/')
                .map(String::from)
        });
        let policy_label = pool.full_policy.label();
        match ps
            .queue
            .enqueue(queued.task.id.clone(), flow, deadline_at, queued, now)
        {
            EnqueueOutcome::Rejected(_) => {
                self.metrics
                    .backpressure_events
                    .with_label_values(&[&pool.id, policy_label])
                    .inc();
                let mut e = ApiError::new(
                    ErrorCode::AdmissionReject,
                    format!(
                        "queue of pool `{}` is full ({} tasks)",
                        pool.id,
                        ps.queue.capacity()
                    ),
                )
                .with_retry_after(ps.backoff_ms());
                e.policy_label = Some(policy_label);
                Err(e)
            }
            EnqueueOutcome::Admitted { position, evicted } => {
                if evicted.is_some() {
                    self.metrics
                        .backpressure_events
                        .with_label_values(&[&pool.id, policy_label])
                        .inc();
                }
                quotas.commit(&caller.tenant, reserved, now);
                if let Some(sid) = &req.session_id {
                    sessions.commit_turn(&caller.tenant, sid, now, reserved);
                }
                self.update_queue_gauges(&pool.id, ps);
                self.metrics.sessions_active.set(sessions.len() as i64);
                let predicted_start_ms = ps.estimator.predicted_start_ms(position, free, total);
                if let Some(q) = ps.queue.get_mut(&task.id) {
                    q.predicted_start_ms = predicted_start_ms;
                }
                let expected = predicted_start_ms as f64
                    + predicted_service_ms.map_or(ps.estimator.mean_ms(), |s| s as f64);
                let on_time = on_time_probability(0, req.deadline_ms, expected);
                // Pushed while this pool's scheduler is still locked: a dispatcher on another
                // thread can take the task only after the lock drops, so `started` is always
                // the stream's first event, ahead of the runner's `metrics` (ORCH-2002).
                task.push(StreamEvent::Started(StartedEvent {
                    queue_position: position,
                    predicted_start_ms,
                    on_time_probability: on_time,
                }));
                Ok((
                    TaskAccepted {
                        task_id: task.id.clone(),
                        queue_position: position,
                        predicted_start_ms,
                        backoff_ms: 0,
                        stream_url: format!("/v1/tasks/{}/stream", task.id),
                        tokens_budget_remaining: turn.as_ref().and_then(|t| t.tokens_remaining),
                        time_budget_remaining_ms: turn.as_ref().and_then(|t| t.time_remaining_ms),
                    },
                    evicted.map(|(_, q)| q.task),
                ))
            }
        }
    }

    fn quota_error(&self, tenant: &str, v: QuotaViolation) -> ApiError {
        match v {
            QuotaViolation::Exceeded {
                kind,
                retry_after_ms,
                ..
            } => {
                self.metrics
                    .quota_rejections
                    .with_label_values(&[tenant, kind.as_str()])
                    .inc();
                ApiError::new(ErrorCode::AdmissionReject, v.to_string())
                    .with_retry_after(retry_after_ms)
            }
            QuotaViolation::NeverFits { .. } => ApiError::invalid(v.to_string()),
        }
    }
}

fn valid_task_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}
