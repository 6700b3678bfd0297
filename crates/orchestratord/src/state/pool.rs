//! The data of pools and their replicas: what is configured ([`Pool`], [`Replica`]), what the
//! scheduler keeps per pool behind the pool's own lock ([`PoolSched`], one [`ReplicaSched`] per
//! replica), what a queued or running task carries ([`Queued`], [`RunningTask`], [`Usage`]), and
//! what the registry and the catalog last said ([`RegistryReplica`], [`Lifecycle`]).
//!
//! Plain data and the small questions it answers about itself; no operation that changes
//! several of these together lives here (those are the rooms: admission, dispatch, completion,
//! lifecycle, health).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use adapter_api::{GenerateRequest, WorkerAdapter};
use api_types::{Engine, ErrorCode, ModelState, ReplicaRecord};
use config_schema::FullPolicy as CfgFullPolicy;
use futures::stream::BoxStream;
use orchestrator_core::{
    DecodeRate, Dispatched, PoolQueue, ReplicaState, ReplicaView, ServiceTimeEstimator,
};

use crate::error::ApiError;
use crate::task::Task;

use super::lock;

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

    pub(crate) fn swap_adapter(&self, a: Arc<dyn WorkerAdapter>) {
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
    /// pool-managerd's feed (see `registry_follower`).
    fn registry_feed(&self) -> Option<RegistryFeed> {
        None
    }
}

/// Registry snapshots from an in-process pool manager.
pub type RegistryFeed = BoxStream<'static, Vec<ReplicaRecord>>;

pub struct Pool {
    pub id: String,
    pub engine: Engine,
    pub(crate) model_ref: std::sync::RwLock<String>,
    pub ctx_max: u32,
    pub cpu_allowed: bool,
    pub full_policy: CfgFullPolicy,
    pub replicas: Vec<Replica>,
    /// The model's catalog lifecycle, as the registry reports it.
    pub(crate) lifecycle: Mutex<Lifecycle>,
    /// Tasks with a deadline that ended on this pool, and how many met it (lock-free: counted
    /// by `retire`, which may hold other locks).
    pub(crate) deadline_tasks: std::sync::atomic::AtomicU64,
    pub(crate) deadline_met: std::sync::atomic::AtomicU64,
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
            deadline_tasks: Default::default(),
            deadline_met: Default::default(),
        }
    }

    pub fn model_ref(&self) -> String {
        self.model_ref
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The refusal for a new task on a pool whose model is Deprecated or Retired.
    pub fn lifecycle_refusal(&self) -> Option<ApiError> {
        let state = lock(&self.lifecycle).state?;
        matches!(state, ModelState::Deprecated | ModelState::Retired).then(|| {
            ApiError::new(
                ErrorCode::ModelDeprecated,
                format!(
                    "model `{}` is {} in the catalog: it takes no new sessions or tasks",
                    self.model_ref(),
                    state.as_str()
                ),
            )
        })
    }

    /// Whether the pool's model is Retired (its replicas stay Unready). Lock order: a pool's
    /// lifecycle before its scheduling state, never the other way round, so call this before
    /// `pool_sched()`.
    pub fn is_retired(&self) -> bool {
        lock(&self.lifecycle).state == Some(ModelState::Retired)
    }
}

/// What the registry last said about one of our replicas.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryReplica {
    pub ready: bool,
    pub phase: String,
    pub last_error: Option<String>,
    /// The engine build pool-managerd read from the engine itself; it wins over what the
    /// adapter reports.
    pub engine_version: Option<String>,
    /// Digest of the model file the engine loaded (part of the replica set identity).
    pub model_digest: Option<String>,
}

impl RegistryReplica {
    pub fn unready_reason(&self) -> String {
        match &self.last_error {
            Some(e) => format!("pool-managerd: {} ({e})", self.phase),
            None => format!("pool-managerd: {}", self.phase),
        }
    }
}

/// A pool's model lifecycle as the catalog reports it, and the drain it caused.
#[derive(Default)]
pub struct Lifecycle {
    pub state: Option<ModelState>,
    /// We drained the pool because of the catalog (not an operator): lift it when the model
    /// becomes servable again.
    pub(crate) drained_by_catalog: bool,
    pub(crate) drain: Option<tokio::task::JoinHandle<()>>,
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

    pub(crate) fn running_message(self) -> &'static str {
        match self {
            DrainCause::Operator => "pool drained while the task ran",
            DrainCause::ModelLifecycle => "model retired while the task ran",
        }
    }

    pub(crate) fn queued_message(self) -> &'static str {
        match self {
            DrainCause::Operator => "pool drained before the task could start",
            DrainCause::ModelLifecycle => "model deprecated before the task could start",
        }
    }
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

/// Everything the scheduler knows about one replica: what placement sees, and the facts its
/// probes, its supervisor and pool-managerd's registry report.
pub struct ReplicaSched {
    /// What placement decides on (orchestrator-core's view).
    pub view: ReplicaView,
    pub engine_version: String,
    pub last_error: Option<String>,
    /// Engine restarts and breaker state, as its supervisor reports them.
    pub restarts: u32,
    pub circuit_open: bool,
    /// Measured speed (deadline feasibility, ORCH-3075).
    pub rate: DecodeRate,
    /// Whether its adapter declares interruptible decode (hard preemption).
    pub interruptible: bool,
    /// pool-managerd's view when we follow its registry (None: probes decide).
    pub registry: Option<RegistryReplica>,
}

impl ReplicaSched {
    /// A configured replica before its first probe.
    pub fn new(view: ReplicaView) -> Self {
        ReplicaSched {
            view,
            engine_version: "unknown".into(),
            last_error: Some("not probed yet".into()),
            restarts: 0,
            circuit_open: false,
            rate: DecodeRate::default(),
            interruptible: false,
            registry: None,
        }
    }
}

impl std::borrow::Borrow<ReplicaView> for ReplicaSched {
    fn borrow(&self) -> &ReplicaView {
        &self.view
    }
}

/// One pool's scheduling state, behind the pool's own lock: its queue and its replicas.
pub struct PoolSched {
    pub queue: PoolQueue<Queued>,
    /// One per configured replica, in config order (the index is the replica's everywhere).
    pub replicas: Vec<ReplicaSched>,
    pub estimator: ServiceTimeEstimator,
    pub running: HashMap<String, RunningTask>,
    /// A hard preemption is under way (the victim's id): wait for its slot before choosing
    /// another victim.
    pub preempting: Option<String>,
    /// Drained pools take no new work; set by `POST /v1/pools/{id}/drain`.
    pub draining: bool,
    /// The engine_version the queue-depth gauges were last exported under (its series are
    /// removed when the pool's serving version changes, e.g. after a reload).
    pub queue_gauge_version: Option<String>,
}

impl PoolSched {
    pub(crate) fn ready_slots(&self) -> (u32, u32) {
        self.replicas
            .iter()
            .map(|r| &r.view)
            .filter(|r| r.state == ReplicaState::Ready)
            .fold((0, 0), |(free, total), r| {
                (free + r.slots_total - r.slots_busy, total + r.slots_total)
            })
    }

    /// The engine build the pool serves: its Ready replicas' (a replica set never mixes
    /// versions, ORCH-3007), else the first replica's last known one.
    pub(crate) fn serving_version(&self) -> &str {
        self.replicas
            .iter()
            .find(|r| r.view.state == ReplicaState::Ready)
            .or(self.replicas.first())
            .map_or("unknown", |r| r.engine_version.as_str())
    }

    /// Suggested client backoff when the pool is full: the time one queued task takes to drain.
    pub(crate) fn backoff_ms(&self) -> u64 {
        let (_, total) = self.ready_slots();
        ((self.estimator.mean_ms() / f64::from(total.max(1))) as u64).clamp(100, 60_000)
    }
}
