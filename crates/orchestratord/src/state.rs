//! Shared server state: pools and replicas, the scheduler (orchestrator-core types behind one
//! mutex), the task table, and the operations that change them together: submit, cancel,
//! dispatch, release.
//!
//! Lock order: never hold `sched` while taking `tasks` or a task's log, and the other way
//! round. Each operation takes one lock at a time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use adapter_api::{GenerateRequest, WorkerAdapter, WorkerState};
use api_types::{
    Engine, ErrorCode, MetricsEvent, Priority, ReplicaSnapshot, ReplicaStatus, StartedEvent,
    StreamEvent, TaskAccepted, TaskRequest, Workload,
};
use config_schema::{Config, FullPolicy as CfgFullPolicy, Role};
use orchestrator_core::{
    AdmissionError, AdmissionInput, DecodeRate, Dispatched, EnqueueOutcome, FlowKey, FullPolicy,
    ModelLimits, PlacementDecision, PlacementRequest, PoolQueue, QuotaBook, QuotaViolation,
    ReplicaIdentity, ReplicaState, ReplicaView, RunningView, ServiceTimeEstimator, SessionStore,
    ShareTracker, TenantQuota, Weights, check_admission, choose_replica, hard_preemption_victim,
    on_time_probability, pool_service_ms, seed_from_task_id,
};

use crate::auth::{KeyRing, Principal};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::task::{CancelRefused, Phase, Task, TaskSpec};

/// A replica as configured, with its adapter (swapped atomically by a reload).
pub struct Replica {
    pub id: String,
    pub devices: Vec<u32>,
    adapter: std::sync::RwLock<Arc<dyn WorkerAdapter>>,
}

impl Replica {
    pub fn new(id: String, devices: Vec<u32>, adapter: Arc<dyn WorkerAdapter>) -> Self {
        Replica {
            id,
            devices,
            adapter: std::sync::RwLock::new(adapter),
        }
    }

    /// The adapter now; a task keeps the one it started with even if a reload swaps it.
    pub fn adapter(&self) -> Arc<dyn WorkerAdapter> {
        self.adapter
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn swap_adapter(&self, a: Arc<dyn WorkerAdapter>) {
        *self.adapter.write().unwrap_or_else(|p| p.into_inner()) = a;
    }
}

/// Engine lifecycle the orchestrator cannot do itself: `llorch serve` (and later
/// pool-managerd) implement it. A reload starts the new model beside the old one and hands
/// back one Ready adapter per replica (replica id, adapter), or an error after rolling back.
#[async_trait::async_trait]
pub trait PoolController: Send + Sync {
    async fn reload(
        &self,
        pool_id: &str,
        new_model_ref: &str,
        new_model_sha256: Option<&str>,
    ) -> Result<Vec<(String, Arc<dyn WorkerAdapter>)>, api_types::ErrorCode>;
    /// The switch is done and the old engines' tasks have ended: stop the old engines.
    async fn retire_old(&self, pool_id: &str);
    /// Why the last reload failed (for the error message).
    fn last_error(&self, pool_id: &str) -> Option<String>;
    /// The replica registry of an in-process pool manager (`llorch serve`), followed like
    /// pool-managerd's feed (see [`crate::registry_follower`]).
    fn registry_feed(&self) -> Option<crate::registry_follower::RegistryFeed> {
        None
    }
}

pub struct Pool {
    pub id: String,
    pub engine: Engine,
    model_ref: std::sync::RwLock<String>,
    pub ctx_max: u32,
    pub cpu_allowed: bool,
    pub full_policy: CfgFullPolicy,
    pub replicas: Vec<Replica>,
    /// The model's catalog lifecycle, as the registry reports it.
    pub(crate) lifecycle: Mutex<crate::registry_follower::Lifecycle>,
}

impl Pool {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        engine: Engine,
        model_ref: String,
        ctx_max: u32,
        cpu_allowed: bool,
        full_policy: CfgFullPolicy,
        replicas: Vec<Replica>,
    ) -> Self {
        Pool {
            id,
            engine,
            model_ref: std::sync::RwLock::new(model_ref),
            ctx_max,
            cpu_allowed,
            full_policy,
            replicas,
            lifecycle: Mutex::default(),
        }
    }

    pub fn model_ref(&self) -> String {
        self.model_ref
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A task waiting in a queue, with everything its runner needs.
pub struct Queued {
    pub task: Arc<Task>,
    pub request: GenerateRequest,
    pub affinity: Option<String>,
    /// Where it sat in the fair queue, set when it is dispatched, so that a requeue puts it
    /// back exactly there.
    pub ticket: Option<Dispatched<()>>,
    pub admitted_ms: u64,
    pub predicted_start_ms: u64,
    /// The context the client asked for (placement plugins see it).
    pub ctx: u32,
}

/// Why a pool is drained: decides the error its tasks end with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainCause {
    /// `POST /v1/pools/{id}/drain` or shutdown: POOL_UNAVAILABLE.
    Operator,
    /// The pool's model was Deprecated or Retired in the catalog: MODEL_DEPRECATED.
    ModelLifecycle,
}

impl DrainCause {
    pub fn code(self) -> ErrorCode {
        match self {
            DrainCause::Operator => ErrorCode::PoolUnavailable,
            DrainCause::ModelLifecycle => ErrorCode::ModelDeprecated,
        }
    }

    fn running_message(self) -> &'static str {
        match self {
            DrainCause::Operator => "pool drained while the task ran",
            DrainCause::ModelLifecycle => "model retired while the task ran",
        }
    }

    fn queued_message(self) -> &'static str {
        match self {
            DrainCause::Operator => "pool drained before the task could start",
            DrainCause::ModelLifecycle => "model deprecated before the task could start",
        }
    }
}

/// What the placement plugin said about the head task.
enum PlacementChoice {
    /// No plugin decision (none configured, or it fell back): least-loaded placement.
    Builtin,
    Replica(usize),
    /// Leave the task queued; serve other flows.
    Defer,
}

/// What a finished task used, for quotas, session budgets, rates and deadline statistics.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub tokens_out: u32,
    /// Ended with `end` (not an error or cancel).
    pub completed: bool,
    /// Dispatch to first token, and first token to end, when it produced tokens.
    pub first_token_ms: Option<u64>,
    pub decode_ms: u64,
}

/// A task holding a slot, for hard preemption.
pub struct RunningTask {
    pub task: Arc<Task>,
    pub replica: usize,
    pub started_ms: u64,
}

pub struct PoolSched {
    pub queue: PoolQueue<Queued>,
    pub replicas: Vec<ReplicaView>,
    pub engine_versions: Vec<String>,
    pub last_errors: Vec<Option<String>>,
    /// Per replica: engine restarts and breaker state, as its supervisor reports them.
    pub restarts: Vec<u32>,
    pub circuit_open: Vec<bool>,
    pub estimator: ServiceTimeEstimator,
    /// Measured speed per replica (deadline feasibility, ORCH-3075).
    pub rates: Vec<DecodeRate>,
    /// Per replica: whether its adapter declares interruptible decode (hard preemption).
    pub interruptible: Vec<bool>,
    pub running: HashMap<String, RunningTask>,
    /// A hard preemption is under way (the victim's id): wait for its slot before choosing
    /// another victim.
    pub preempting: Option<String>,
    /// Drained pools take no new work; set by `POST /v1/pools/{id}/drain`.
    pub draining: bool,
    /// Per replica: pool-managerd's view when we follow its registry (None: probes decide).
    pub registry: Vec<Option<crate::registry_follower::RegistryReplica>>,
}

impl PoolSched {
    fn ready_slots(&self) -> (u32, u32) {
        self.replicas
            .iter()
            .filter(|r| r.state == ReplicaState::Ready)
            .fold((0, 0), |(free, total), r| {
                (free + r.slots_total - r.slots_busy, total + r.slots_total)
            })
    }

    /// Suggested client backoff when the pool is full: the time one queued task takes to drain.
    fn backoff_ms(&self) -> u64 {
        let (_, total) = self.ready_slots();
        ((self.estimator.mean_ms() / f64::from(total.max(1))) as u64).clamp(100, 60_000)
    }
}

pub struct Sched {
    pub pools: Vec<PoolSched>,
    pub sessions: SessionStore,
    pub quotas: QuotaBook,
    pub shares: ShareTracker,
    /// Per priority: tasks with a deadline that ended, and how many of them met it.
    pub deadlines: [(u64, u64); 2],
}

pub struct AppState {
    pub cfg: Config,
    pub pools: Vec<Pool>,
    pub keys: KeyRing,
    pub metrics: Metrics,
    sched: Mutex<Sched>,
    tasks: Mutex<HashMap<String, Arc<Task>>>,
    epoch: Instant,
    shutting_down: AtomicBool,
    controller: Option<Arc<dyn PoolController>>,
    /// One reload at a time per process: a second one waits its turn.
    reloading: tokio::sync::Mutex<()>,
    /// The pools' WebAssembly policy plugins (admission and placement hooks).
    pub policy: policy_host::PolicyHost,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // State behind these locks is updated in single steps; a poisoned lock is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn valid_task_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

impl AppState {
    pub fn new(
        cfg: Config,
        pools: Vec<Pool>,
        controller: Option<Arc<dyn PoolController>>,
    ) -> anyhow::Result<Arc<Self>> {
        let metrics = Metrics::new();
        let policy = policy_host::PolicyHost::new(&metrics.registry)
            .map_err(|e| anyhow::anyhow!("policy host: {e:?}"))?;
        crate::policy::install_configured(&cfg, &policy)?;
        let weights = Weights {
            priority: [
                cfg.priorities.interactive_weight,
                cfg.priorities.batch_weight,
            ],
            tenants: cfg
                .tenants
                .iter()
                .map(|t| (t.id.clone(), t.weight))
                .collect(),
            default_tenant: 1,
        };
        let sched_pools = pools
            .iter()
            .zip(&cfg.pools)
            .map(|(p, pc)| {
                let q = cfg.queue_for(pc);
                let policy = match q.full_policy {
                    CfgFullPolicy::Reject => FullPolicy::Reject,
                    CfgFullPolicy::DropLru => FullPolicy::DropLru,
                    CfgFullPolicy::ShedLowPriority => FullPolicy::ShedLowPriority,
                };
                PoolSched {
                    queue: PoolQueue::new(q.capacity, policy, weights.clone()),
                    replicas: p
                        .replicas
                        .iter()
                        .zip(&pc.replicas)
                        .map(|(r, rc)| ReplicaView {
                            id: r.id.clone(),
                            state: ReplicaState::Unready,
                            slots_total: rc.slots,
                            slots_busy: 0,
                            devices: r.devices.clone(),
                        })
                        .collect(),
                    engine_versions: vec!["unknown".into(); p.replicas.len()],
                    last_errors: vec![Some("not probed yet".into()); p.replicas.len()],
                    restarts: vec![0; p.replicas.len()],
                    circuit_open: vec![false; p.replicas.len()],
                    estimator: ServiceTimeEstimator::default(),
                    rates: vec![DecodeRate::default(); p.replicas.len()],
                    interruptible: vec![false; p.replicas.len()],
                    running: HashMap::new(),
                    preempting: None,
                    draining: false,
                    registry: vec![None; p.replicas.len()],
                }
            })
            .collect();
        let s = &cfg.sessions;
        let quota = |l: config_schema::TenantLimits| TenantQuota {
            max_concurrent: l.max_concurrent,
            requests_per_second: l.requests_per_second,
            burst: l.burst.unwrap_or(1),
            tokens_per_minute: l.tokens_per_minute,
        };
        let sched = Sched {
            pools: sched_pools,
            sessions: SessionStore::new(s.ttl_ms, s.max_turns, s.max_sessions)
                .with_budgets(s.token_budget, s.time_budget_ms)
                .with_kv_residency(s.kv_sessions_per_replica),
            quotas: QuotaBook::new(
                quota(cfg.tenant_defaults),
                cfg.tenants
                    .iter()
                    .map(|t| (t.id.clone(), quota(t.limits())))
                    .collect(),
            ),
            shares: ShareTracker::default(),
            deadlines: [(0, 0); 2],
        };
        // Export the zero of counters operators alert on, before the first event.
        for pool in &pools {
            metrics.priority_inversions.with_label_values(&[&pool.id]);
            for mode in ["soft", "hard"] {
                metrics
                    .preemptions
                    .with_label_values(&[mode, pool.engine.as_str()]);
            }
        }
        for key in cfg.auth.api_keys.iter().filter(|k| k.role == Role::Data) {
            let l = cfg.tenant_limits(&key.tenant);
            for (set, quota) in [
                (l.max_concurrent.is_some(), "max_concurrent"),
                (l.requests_per_second.is_some(), "requests_per_second"),
                (l.tokens_per_minute.is_some(), "tokens_per_minute"),
            ] {
                if set {
                    metrics
                        .quota_rejections
                        .with_label_values(&[&key.tenant, quota]);
                }
            }
        }
        Ok(Arc::new(AppState {
            policy,
            keys: KeyRing::new(&cfg.auth),
            metrics,
            sched: Mutex::new(sched),
            tasks: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            shutting_down: AtomicBool::new(false),
            controller,
            reloading: tokio::sync::Mutex::new(()),
            pools,
            cfg,
        }))
    }

    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn sched(&self) -> MutexGuard<'_, Sched> {
        lock(&self.sched)
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// A task visible to `tenant` (another tenant's task is indistinguishable from none).
    pub fn task_for(&self, id: &str, tenant: &str) -> Result<Arc<Task>, ApiError> {
        lock(&self.tasks)
            .get(id)
            .filter(|t| t.tenant == tenant)
            .cloned()
            .ok_or_else(|| ApiError::not_found("task"))
    }

    pub fn live_tasks(&self) -> usize {
        lock(&self.tasks)
            .values()
            .filter(|t| !t.is_released())
            .count()
    }

    pub fn engine_version(&self, pool: usize, replica: usize) -> String {
        self.sched().pools[pool].engine_versions[replica].clone()
    }

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
        let reject = |pool: &str, e: ApiError| {
            self.metrics
                .tasks_rejected
                .with_label_values(&[pool, e.code.as_str()])
                .inc();
            e
        };
        let pool_idx = self.find_pool(&req).map_err(|e| reject("", e))?;
        let pool = &self.pools[pool_idx];
        let validated = self.validate(caller, &req, pool);
        let prompt = validated.map_err(|e| reject(&pool.id, e.with_pool(&pool.id)))?;
        let task_id = req
            .task_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let seed = req.seed.unwrap_or_else(|| seed_from_task_id(&task_id));
        let priority = self
            .admission_policy(caller, &req, pool_idx, &task_id, &prompt)
            .map_err(|e| reject(&pool.id, e.with_pool(&pool.id)))?;

        // Reserve the id first so that two submissions of one id cannot both pass.
        let task = {
            let mut tasks = lock(&self.tasks);
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
                priority,
                session_id: req.session_id.clone(),
                prompt_tokens: orchestrator_core::estimate_prompt_tokens(&prompt),
                max_tokens: req.max_tokens,
                deadline_ms: req.deadline_ms,
            }));
            tasks.insert(task_id.clone(), t.clone());
            t
        };
        let outcome = self.admit_and_enqueue(caller, &req, pool_idx, &prompt, task.clone(), seed);
        match outcome {
            Ok((accepted, evicted, on_time)) => {
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
                        .with_label_values(&[&pool.id, code.as_str()])
                        .inc();
                    self.retire(&ev, Usage::default());
                }
                task.push(StreamEvent::Started(StartedEvent {
                    queue_position: accepted.queue_position,
                    predicted_start_ms: accepted.predicted_start_ms,
                    on_time_probability: on_time,
                }));
                self.metrics
                    .tasks_enqueued
                    .with_label_values(&[&pool.id, priority.as_str()])
                    .inc();
                tracing::info!(
                    job_id = %task_id, tenant = %caller.tenant, pool_id = %pool.id, engine = pool.engine.as_str(),
                    session_id = req.session_id.as_deref().unwrap_or(""), priority = priority.as_str(),
                    queue_position = accepted.queue_position, "task admitted"
                );
                self.dispatch(pool_idx);
                Ok(accepted)
            }
            Err(e) => {
                lock(&self.tasks).remove(&task_id);
                Err(reject(&pool.id, e.with_pool(&pool.id)))
            }
        }
    }

    /// Checks that do not need the scheduler lock; returns the prompt text.
    fn validate(
        &self,
        caller: &Principal,
        req: &TaskRequest,
        pool: &Pool,
    ) -> Result<String, ApiError> {
        if self.is_shutting_down() {
            return Err(
                ApiError::new(ErrorCode::PoolUnavailable, "server is shutting down")
                    .with_retry_after(1000),
            );
        }
        if let Some(e) = crate::registry_follower::lifecycle_refusal(pool) {
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
        if req.workload != Workload::Completion {
            return Err(ApiError::invalid(format!(
                "workload {:?} is not served by pool `{}` (completion only)",
                req.workload, pool.id
            )));
        }
        if req.inputs.is_some() {
            return Err(ApiError::invalid(
                "`inputs` is for embedding/rerank; completion takes `prompt`",
            ));
        }
        match &req.prompt {
            Some(p) if !p.is_empty() => Ok(p.clone()),
            _ => Err(ApiError::invalid("completion needs a non-empty `prompt`")),
        }
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
            let s = self.sched();
            let ps = &s.pools[pool_idx];
            policy_host::AdmissionSnapshot {
                pool_id: pool.id.clone(),
                now_ms: self.now_ms(),
                task: self.task_info(caller, req, pool, task_id, prompt),
                queue: crate::policy::queue_state(ps),
                tenant_usage: crate::policy::tenant_usage(ps, &caller.tenant),
                replicas: crate::policy::replica_loads(ps, |i| {
                    ps.replicas[i].state == ReplicaState::Ready
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
                    .with_retry_after(self.sched().pools[pool_idx].backoff_ms());
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

    /// Swaps a pool's policy plugin for the module its config names, re-read from disk;
    /// atomic: on any load error the old plugin stays and nothing changes.
    pub fn reload_policy(
        self: &Arc<Self>,
        pool_idx: usize,
    ) -> Result<api_types::PolicyInfo, ApiError> {
        let pool = &self.pools[pool_idx];
        let Some(spec) = crate::policy::spec_for(&self.cfg, &pool.id) else {
            return Err(ApiError::invalid(format!(
                "pool `{}` has no [pools.policy] configured",
                pool.id
            ))
            .with_pool(&pool.id));
        };
        let info = self.policy.reload(&pool.id, &spec).map_err(|e| {
            tracing::warn!(pool_id = %pool.id, error = %e, "policy reload refused; old plugin kept");
            ApiError::invalid(format!("policy reload refused, old plugin kept: {e}"))
                .with_pool(&pool.id)
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

    fn admit_and_enqueue(
        &self,
        caller: &Principal,
        req: &TaskRequest,
        pool_idx: usize,
        prompt: &str,
        task: Arc<Task>,
        seed: u64,
    ) -> Result<(TaskAccepted, Option<Arc<Task>>, f64), ApiError> {
        let now = self.now_ms();
        let pool = &self.pools[pool_idx];
        let mut guard = self.sched();
        let Sched {
            pools,
            sessions,
            quotas,
            ..
        } = &mut *guard;
        let ps = &mut pools[pool_idx];
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
        let turn = match &req.session_id {
            Some(sid) => Some(
                sessions
                    .check_turn(&caller.tenant, sid, now, reserved)
                    .map_err(|e| ApiError::invalid(e.to_string()))?,
            ),
            None => None,
        };
        let mean_service = ps.estimator.mean_ms() as u64;
        quotas
            .check(&caller.tenant, reserved, now, mean_service)
            .map_err(|v| self.quota_error(&caller.tenant, v))?;
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
            .rates
            .iter()
            .zip(&ps.replicas)
            .filter(|(_, r)| r.state == ReplicaState::Ready)
            .map(|(rate, _)| rate);
        let predicted_service_ms = pool_service_ms(ready_rates, tokens).map(|ms| ms as u64);
        let prompt_tokens = check_admission(
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
        })?;
        debug_assert_eq!(prompt_tokens, task.prompt_tokens);
        let queued = Queued {
            request: GenerateRequest {
                job_id: task.id.clone(),
                prompt: prompt.to_string(),
                max_tokens: req.max_tokens,
                seed,
                sampler_profile_version: req.sampler_profile_version.clone(),
                strict_determinism: req.determinism == Some(api_types::Determinism::Strict),
            },
            task: task.clone(),
            // Sessions remember "pool/replica": a session that moves to another pool is cold.
            affinity: turn.as_ref().and_then(|t| {
                t.affinity
                    .as_deref()?
                    .strip_prefix(pool.id.as_str())?
                    .strip_prefix('/')
                    .map(String::from)
            }),
            ticket: None,
            admitted_ms: now,
            predicted_start_ms,
            ctx: req.ctx,
        };
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
                Ok((
                    TaskAccepted {
                        task_id: task.id.clone(),
                        queue_position: position,
                        predicted_start_ms,
                        backoff_ms: 0,
                        stream_url: format!("/v1/tasks/{}/stream", task.id),
                        session_tokens_remaining: turn.as_ref().and_then(|t| t.tokens_remaining),
                        session_time_remaining_ms: turn.as_ref().and_then(|t| t.time_remaining_ms),
                    },
                    evicted.map(|(_, q)| q.task),
                    on_time,
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

    fn update_queue_gauges(&self, pool_id: &str, ps: &PoolSched) {
        for p in Priority::ALL {
            self.metrics
                .queue_depth
                .with_label_values(&[pool_id, p.as_str()])
                .set(ps.queue.depth(p) as i64);
        }
    }

    /// Starts as many queued tasks of a pool as free Ready slots allow, in fair-share/EDF
    /// order; when interactive work still waits with no free slot, considers hard preemption.
    pub fn dispatch(self: &Arc<Self>, pool_idx: usize) {
        let mut starts = Vec::new();
        let now = self.now_ms();
        let pool = &self.pools[pool_idx];
        let preempt = {
            let mut guard = self.sched();
            let Sched {
                pools,
                sessions,
                shares,
                ..
            } = &mut *guard;
            let ps = &mut pools[pool_idx];
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
                            kv_warm: head.affinity.as_deref() == Some(ps.replicas[i].id.as_str()),
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
                shares.observe(&d.flow);
                let (ticket, mut queued) = d.split();
                queued.ticket = Some(ticket);
                let r = &mut ps.replicas[decision.replica];
                r.slots_busy += 1;
                if let Some(sid) = &queued.task.session_id {
                    sessions.record_placement(
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
                let version = ps.engine_versions[decision.replica].clone();
                starts.push((queued, decision, version, r.slots_busy));
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
            for (k, v) in shares.shares() {
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
                let r = &ps.replicas[i];
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
                .position(|r| r.id == replica_id)
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
            .filter(|r| ps.replicas[r.replica].state == ReplicaState::Ready)
            .map(|r| {
                (
                    r,
                    RunningView {
                        id: r.task.id.as_str(),
                        priority: r.task.priority,
                        started_ms: r.started_ms,
                        interruptible: ps.interruptible[r.replica],
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

    /// Gives a slot back (after the engine confirmed the job is gone) and dispatches more work.
    pub fn release(self: &Arc<Self>, pool_idx: usize, replica: usize, usage: Usage, task: &Task) {
        let (busy, version) = {
            let mut s = self.sched();
            let ps = &mut s.pools[pool_idx];
            let r = &mut ps.replicas[replica];
            r.slots_busy = r.slots_busy.saturating_sub(1);
            ps.running.remove(&task.id);
            if ps.preempting.as_deref() == Some(task.id.as_str()) {
                ps.preempting = None;
            }
            if usage.completed {
                let first = usage.first_token_ms.unwrap_or(0);
                ps.estimator.observe(first + usage.decode_ms);
                ps.rates[replica].observe(first, usage.tokens_out, usage.decode_ms);
                // Work whose deadline falls within about two service times must go now.
                let horizon = (ps.estimator.mean_ms() * 2.0) as u64;
                ps.queue.set_edf_horizon_ms(horizon);
            }
            (r.slots_busy, ps.engine_versions[replica].clone())
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
            let mut s = self.sched();
            let Sched {
                sessions,
                quotas,
                deadlines,
                ..
            } = &mut *s;
            quotas.finish(&task.tenant, task.reserved_tokens(), used, now);
            if let Some(sid) = &task.session_id {
                sessions.settle_turn(
                    &task.tenant,
                    sid,
                    task.reserved_tokens(),
                    used,
                    usage.decode_ms,
                );
            }
            if let Some(d) = task.deadline_ms {
                let met = usage.completed && task.admitted_at.elapsed().as_millis() as u64 <= d;
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
        self.schedule_forget(task.id.clone());
    }

    /// Fails queued tasks that waited longer than `timeouts.queue_ms` or past their own
    /// deadline (DEADLINE_UNMET). Called every probe tick.
    pub fn expire_queued(self: &Arc<Self>) {
        let limit = Duration::from_millis(self.cfg.timeouts.queue_ms);
        for (pi, pool) in self.pools.iter().enumerate() {
            let (expired, pool_ready) = {
                let mut s = self.sched();
                let ps = &mut s.pools[pi];
                // A deadline that can no longer be met even if the task started now (measured
                // service time) is failed early: EDF serves feasible work only.
                let service = Duration::from_millis(ps.estimator.mean_ms() as u64);
                let measured = ps.rates.iter().any(|r| r.samples() > 0);
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
                        .with_label_values(&[&pool.id, code.as_str()])
                        .inc();
                }
                self.retire(&t, Usage::default());
            }
        }
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
        self.sched().pools[pool_idx].draining = true;
        let pool_id = self.pools[pool_idx].id.clone();
        tracing::info!(pool_id = %pool_id, deadline_ms = deadline.as_millis() as u64, "draining pool");
        let until = tokio::time::Instant::now() + deadline;
        // In flight = holds a slot: not released and no longer in the queue (a task just
        // dispatched may not be marked Running yet). Draining stops dispatch, so the queue is
        // stable from here on.
        let in_flight = |state: &Self| {
            let queued: std::collections::HashSet<String> = state.sched().pools[pool_idx]
                .queue
                .ids()
                .into_iter()
                .map(String::from)
                .collect();
            lock(&state.tasks)
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
            let mut s = self.sched();
            let ps = &mut s.pools[pool_idx];
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
                    .with_label_values(&[&pool_id, cause.code().as_str()])
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
            .with_pool(&pool.id));
        };
        let _one_at_a_time = self.reloading.lock().await;
        tracing::info!(pool_id = %pool.id, new_model_ref, "reloading pool");
        let adapters = ctl.reload(&pool.id, new_model_ref, new_model_sha256).await.map_err(|code| {
            let why = ctl.last_error(&pool.id).unwrap_or_else(|| "new engine never became ready".into());
            tracing::warn!(pool_id = %pool.id, error = %why, "reload failed; old model keeps serving");
            ApiError::new(code, format!("reload rolled back: {why}")).with_pool(&pool.id)
        })?;
        {
            // Atomic for the scheduler: no dispatch sees half the replicas switched.
            let _sched = self.sched();
            for (rid, a) in adapters {
                if let Some(r) = pool.replicas.iter().find(|r| r.id == rid) {
                    r.swap_adapter(a);
                }
            }
            *pool.model_ref.write().unwrap_or_else(|p| p.into_inner()) = new_model_ref.to_string();
        }
        // Taken after the switch: every task that picked up an old adapter is Running by now
        // (runners mark themselves Running before they read the adapter).
        let running_at_switch: Vec<Arc<Task>> = lock(&self.tasks)
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

    pub fn is_draining(&self, pool_idx: usize) -> bool {
        self.sched().pools[pool_idx].draining
    }

    /// A replica failed under a task: stop placing work on it until a probe finds it Ready.
    pub fn mark_replica_unready(&self, pool_idx: usize, replica: usize, reason: &str) {
        let mut guard = self.sched();
        let Sched {
            pools, sessions, ..
        } = &mut *guard;
        let ps = &mut pools[pool_idx];
        if ps.replicas[replica].state == ReplicaState::Ready {
            ps.replicas[replica].state = ReplicaState::Unready;
            ps.last_errors[replica] = Some(reason.to_string());
            let pool = &self.pools[pool_idx];
            // Its KV caches are gone (or unreachable): sessions fail over cold.
            sessions.forget_replica(&format!("{}/{}", pool.id, pool.replicas[replica].id));
            let v = &ps.engine_versions[replica];
            let cpu = if pool.replicas[replica].devices.is_empty() {
                "true"
            } else {
                "false"
            };
            self.metrics
                .replica_ready
                .with_label_values(&[
                    pool.id.as_str(),
                    pool.replicas[replica].id.as_str(),
                    pool.engine.as_str(),
                    v.as_str(),
                    cpu,
                ])
                .set(0);
            tracing::warn!(pool_id = %pool.id, replica_id = %pool.replicas[replica].id, reason, "replica marked unready");
        }
    }

    /// Gives back the slot of a task that never started on its replica and puts the task at
    /// the head of its queue again (no admitted task is lost to a replica failure).
    pub fn requeue(self: &Arc<Self>, pool_idx: usize, replica: usize, mut queued: Queued) {
        let canceled = {
            let mut s = self.sched();
            let ps = &mut s.pools[pool_idx];
            let r = &mut ps.replicas[replica];
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
        self.metrics
            .tasks_canceled
            .with_label_values(&[&pool.id, reason])
            .inc();
        tracing::info!(job_id = %task.id, tenant = %task.tenant, pool_id = %pool.id, reason, "task canceled");
        if phase == Phase::Queued {
            let removed = {
                let mut s = self.sched();
                let ps = &mut s.pools[task.pool];
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

    /// Drops a finished task's record after the retention period.
    fn schedule_forget(self: &Arc<Self>, id: String) {
        let state = self.clone();
        let keep = Duration::from_millis(self.cfg.server.task_retention_ms);
        tokio::spawn(async move {
            tokio::time::sleep(keep).await;
            lock(&state.tasks).remove(&id);
        });
    }

    /// The `metrics` event of a task at dispatch: queue depth, on-time probability from the
    /// replica's measured rate, KV warmth, and the session's budgets left.
    pub fn metrics_event(&self, task: &Task, replica: usize, kv_warm: bool) -> MetricsEvent {
        let now = self.now_ms();
        let (depth, expected_ms, session) = {
            let s = self.sched();
            let ps = &s.pools[task.pool];
            let expected = ps.rates[replica]
                .expected_service_ms(task.max_tokens)
                .unwrap_or(ps.estimator.mean_ms());
            let session = task
                .session_id
                .as_deref()
                .and_then(|sid| s.sessions.get(&task.tenant, sid, now));
            (ps.queue.len() as u32, expected, session)
        };
        let waited = task.admitted_at.elapsed().as_millis() as u64;
        MetricsEvent {
            queue_depth: depth,
            on_time_probability: on_time_probability(waited, task.deadline_ms, expected_ms),
            kv_warmth: kv_warm,
            tokens_budget_remaining: task.max_tokens,
            session_tokens_remaining: session.as_ref().and_then(|v| v.tokens_remaining),
            session_time_remaining_ms: session.as_ref().and_then(|v| v.time_remaining_ms),
        }
    }

    /// Probes every replica once and records readiness and engine versions.
    pub async fn probe_replicas(self: &Arc<Self>) {
        for (pi, pool) in self.pools.iter().enumerate() {
            for (ri, r) in pool.replicas.iter().enumerate() {
                let adapter = r.adapter();
                let health = tokio::time::timeout(Duration::from_secs(5), adapter.health()).await;
                let props =
                    tokio::time::timeout(Duration::from_secs(5), adapter.properties()).await;
                let supervision = match &health {
                    Ok(Ok(h)) => Some((h.restarts, h.circuit_open)),
                    _ => None,
                };
                let interruptible = matches!(&props, Ok(Ok(p)) if p.interruptible_decode);
                let (state, version, error) = match (health, props) {
                    (Ok(Ok(h)), Ok(Ok(p))) if h.state == WorkerState::Ready => {
                        (ReplicaState::Ready, Some(p.engine_version), None)
                    }
                    (Ok(Ok(h)), _) => (
                        ReplicaState::Unready,
                        None,
                        Some(h.last_error.unwrap_or_else(|| format!("{:?}", h.state))),
                    ),
                    (Ok(Err(e)), _) => (ReplicaState::Unready, None, Some(e.to_string())),
                    (Err(_), _) => (
                        ReplicaState::Unready,
                        None,
                        Some("health probe timed out".into()),
                    ),
                };
                let retired = crate::registry_follower::is_retired(pool);
                let became_ready = {
                    let mut s = self.sched();
                    let ps = &mut s.pools[pi];
                    // pool-managerd's registry (when followed) can veto what the probe saw.
                    let (state, error) = crate::registry_follower::gate(
                        retired,
                        ps.registry[ri].as_ref(),
                        state,
                        error.clone(),
                    );
                    let from_registry = ps.registry[ri]
                        .as_ref()
                        .is_some_and(|r| r.engine_version.is_some());
                    let version = version.filter(|_| !from_registry);
                    let (state, error) = if state == ReplicaState::Ready {
                        hold_out_mixed_versions(ps, ri, version.as_deref(), state, error)
                    } else {
                        (state, error)
                    };
                    let was = ps.replicas[ri].state;
                    ps.replicas[ri].state = state;
                    ps.interruptible[ri] = interruptible;
                    if was == ReplicaState::Ready && state != ReplicaState::Ready {
                        s.sessions.forget_replica(&format!("{}/{}", pool.id, r.id));
                    }
                    let ps = &mut s.pools[pi];
                    if let Some(v) = version {
                        ps.engine_versions[ri] = v;
                    }
                    if error.is_some() || state == ReplicaState::Ready {
                        ps.last_errors[ri] = error.clone();
                    }
                    // Restarts and breaker come from the registry while it is followed (an
                    // adapter daemon knows nothing of its engine's restarts).
                    if let Some((restarts, open)) =
                        supervision.filter(|_| ps.registry[ri].is_none())
                    {
                        let engine_labels = [pool.id.as_str(), r.id.as_str(), pool.engine.as_str()];
                        // Always resolve the series so it is exported at 0 before the first restart.
                        let counter = self
                            .metrics
                            .replica_restarts
                            .with_label_values(&engine_labels);
                        counter.inc_by(u64::from(restarts.saturating_sub(ps.restarts[ri])));
                        ps.restarts[ri] = restarts;
                        ps.circuit_open[ri] = open;
                        self.metrics
                            .replica_circuit_open
                            .with_label_values(&engine_labels)
                            .set(i64::from(open));
                    }
                    let v = &ps.engine_versions[ri];
                    let labels = [
                        pool.id.as_str(),
                        r.id.as_str(),
                        pool.engine.as_str(),
                        v.as_str(),
                    ];
                    let cpu = if r.devices.is_empty() {
                        "true"
                    } else {
                        "false"
                    };
                    self.metrics
                        .replica_ready
                        .with_label_values(&[labels[0], labels[1], labels[2], labels[3], cpu])
                        .set(i64::from(state == ReplicaState::Ready));
                    self.metrics
                        .replica_slots_total
                        .with_label_values(&labels)
                        .set(i64::from(ps.replicas[ri].slots_total));
                    self.metrics
                        .replica_slots_busy
                        .with_label_values(&labels)
                        .set(i64::from(ps.replicas[ri].slots_busy));
                    was != ReplicaState::Ready && state == ReplicaState::Ready
                };
                if let Some(e) = &error {
                    tracing::warn!(pool_id = %pool.id, replica_id = %r.id, error = %e, "replica unready");
                }
                if became_ready {
                    tracing::info!(pool_id = %pool.id, replica_id = %r.id, cpu = r.devices.is_empty(), "replica ready");
                    self.dispatch(pi);
                }
            }
        }
    }

    pub fn replica_snapshots(&self, pool_idx: usize) -> Vec<ReplicaSnapshot> {
        let s = self.sched();
        let ps = &s.pools[pool_idx];
        let pool = &self.pools[pool_idx];
        ps.replicas
            .iter()
            .zip(&ps.engine_versions)
            .enumerate()
            .map(|(i, (r, v))| ReplicaSnapshot {
                restarts: ps.restarts[i],
                circuit_open: ps.circuit_open[i],
                last_error: ps.last_errors[i].clone(),
                replica_id: r.id.clone(),
                status: match r.state {
                    ReplicaState::Ready => ReplicaStatus::Ready,
                    ReplicaState::Unready => ReplicaStatus::Unready,
                    ReplicaState::Draining => ReplicaStatus::Draining,
                },
                engine: pool.engine.as_str().into(),
                engine_version: v.clone(),
                devices: r.devices.clone(),
                slots_total: r.slots_total,
                slots_busy: r.slots_busy,
                cpu: r.devices.is_empty(),
            })
            .collect()
    }

    pub fn is_ready(&self) -> bool {
        !self.is_shutting_down()
            && self
                .sched()
                .pools
                .iter()
                .all(|p| p.replicas.iter().any(|r| r.state == ReplicaState::Ready))
    }
}

/// The identity a replica reports: its engine build (from the registry when pool-managerd
/// reports one, else `probed`, else what was last recorded) and, where known, its model digest.
fn replica_identity(ps: &PoolSched, ri: usize, probed: Option<&str>) -> ReplicaIdentity {
    let registry = ps.registry[ri].as_ref();
    ReplicaIdentity {
        engine_version: registry
            .and_then(|r| r.engine_version.as_deref())
            .or(probed)
            .unwrap_or(&ps.engine_versions[ri])
            .to_string(),
        model_digest: registry.and_then(|r| r.model_digest.clone()),
    }
}

/// ORCH-3007: a replica reporting Ready joins its set only if every replica already serving
/// reports the same engine build and model; otherwise it stays out of placement (Unready) and
/// says which identity the set serves.
fn hold_out_mixed_versions(
    ps: &PoolSched,
    ri: usize,
    probed: Option<&str>,
    state: ReplicaState,
    error: Option<String>,
) -> (ReplicaState, Option<String>) {
    let me = replica_identity(ps, ri, probed);
    let serving: Vec<ReplicaIdentity> = (0..ps.replicas.len())
        .filter(|&j| j != ri && ps.replicas[j].state == ReplicaState::Ready)
        .map(|j| replica_identity(ps, j, None))
        .collect();
    match orchestrator_core::set_membership_conflict(&serving, &me) {
        None => (state, error),
        Some(set) => (
            ReplicaState::Unready,
            Some(format!(
                "held out of its replica set: the set serves {set}, this replica reports {me}; \
                 one set never mixes versions (ORCH-3007)"
            )),
        ),
    }
}
