//! # llorch-policy-host — runs llama-orch policy plugins (ORCH-3048)
//!
//! Loads WebAssembly policy modules (the ABI and JSON types are defined once, in
//! `llorch-policy-sdk`) with wasmtime and calls their admission and placement hooks as pure,
//! bounded functions of a snapshot:
//!
//! - **ABI**: core WebAssembly with a tiny ABI (not the component model, not full WASI):
//!   exports `memory`, `llorch_abi_version`, `llorch_alloc`, `llorch_admit` and/or
//!   `llorch_place`. The ABI major is checked at load ([`LoadError::AbiIncompatible`]).
//! - **No authority**: imports are limited to a small WASI preview-1 subset without files,
//!   sockets, clock or entropy (module `wasi`); a module importing anything else is refused at
//!   load with [`LoadError::ImportNotAllowed`]. The optional [`Grant`]s stay deterministic.
//! - **Bounded**: fuel bounds CPU per call, a resource limiter bounds memory.
//! - **Pure**: every call runs in a fresh instance (compiled once, instantiated per call from a
//!   pre-linked `InstancePre`), so the same snapshot gives the same decision, also after a call
//!   that trapped. Instances come from wasmtime's pooling allocator, so a call costs no
//!   mmap/munmap (see [`PolicyHost::new`]).
//! - **Never fatal**: a trap, exhausted fuel, refused memory or a malformed answer becomes
//!   [`Outcome::Fallback`] with a [`FallbackReason`]; the caller applies its built-in decision.
//!   Nothing here panics on plugin output.
//! - **Observable**: every call is logged (tracing target `llorch_policy`: pool, plugin id and
//!   version, hook, decision or fallback reason, latency) and counted in Prometheus metrics
//!   registered on the registry given to [`PolicyHost::new`].
//! - **Swappable**: plugins are installed per pool; [`PolicyHost::reload`] and
//!   [`PolicyHost::replace_all`] swap them atomically (an in-flight call finishes on the
//!   plugin it started with).
//!
//! Must not depend on orchestratord, tokio or anything with network I/O: it is a synchronous
//! library that orchestratord calls from its admission and dispatch paths.

mod metrics;
mod plugin;
mod slots;
mod wasi;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

pub use metrics::METRIC_NAMES;
pub use plugin::{Limits, MAX_ANSWER_BYTES, ModuleSource, Plugin, PluginInfo, PluginSpec};
pub use policy_sdk as sdk;
pub use policy_sdk::{
    AdmissionDecision, AdmissionSnapshot, PlacementDecision, PlacementSnapshot, Priority,
    QueueState, ReplicaLoad, ReplicaState, TaskInfo, TenantUsage,
};

/// A capability beyond the always-available, authority-free host functions. Both keep a call
/// a pure function of its snapshot; files and sockets have no grant at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Grant {
    /// WASI `clock_time_get`/`clock_res_get`, answering the snapshot's `now_ms`.
    Clock,
    /// WASI `random_get`, a stream seeded from the snapshot bytes.
    Random,
}

impl From<config_schema::PolicyGrant> for Grant {
    fn from(g: config_schema::PolicyGrant) -> Self {
        match g {
            config_schema::PolicyGrant::Clock => Grant::Clock,
            config_schema::PolicyGrant::Random => Grant::Random,
        }
    }
}

/// The two hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    Admission,
    Placement,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Admission => "admission",
            Hook::Placement => "placement",
        }
    }
}

/// Why a module was not loaded. The previous plugin of the pool (if any) stays in place.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read policy module {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy module does not compile: {0}")]
    Compile(String),
    #[error(
        "policy module imports `{module}::{name}`, which is not allowed{}",
        match grant {
            Some(g) => format!(" without grant `{}`", grant_name(*g)),
            None => " (policies get no files, sockets or other host functions)".to_string(),
        }
    )]
    ImportNotAllowed {
        module: String,
        name: String,
        /// The grant that would allow it, if one exists.
        grant: Option<Grant>,
    },
    #[error("policy module lacks the export `{0}` required by the plugin ABI")]
    MissingExport(&'static str),
    #[error("policy module's export `{name}` has the wrong type: {detail}")]
    BadExport { name: &'static str, detail: String },
    #[error("policy module exports neither llorch_admit nor llorch_place")]
    NoHooks,
    #[error(
        "policy module speaks plugin ABI {}.{}, this host supports {}.0 to {}.{}",
        found.0, found.1, supported.0, supported.0, supported.1
    )]
    AbiIncompatible {
        found: (u16, u16),
        supported: (u16, u16),
    },
    #[error("policy module cannot be linked: {0}")]
    Link(String),
    #[error("policy module fails to start within its limits: {0}")]
    Instantiate(String),
    #[error("invalid policy limits: {0}")]
    InvalidLimits(String),
}

fn grant_name(g: Grant) -> &'static str {
    match g {
        Grant::Clock => "clock",
        Grant::Random => "random",
    }
}

/// Why a call's answer was not used. The caller applies its built-in decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FallbackReason {
    #[error("out of fuel")]
    OutOfFuel,
    #[error("memory limit reached")]
    MemoryLimit,
    /// The module trapped (unreachable, out-of-bounds access, stack overflow, proc_exit, …).
    #[error("trap: {0}")]
    Trap(String),
    /// The answer was not a valid decision: bad pointer/length, not JSON, unknown fields,
    /// a non-candidate replica, an over-long reason.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// The host could not prepare the call (snapshot not serializable). Not the plugin's fault,
    /// but the built-in decision still applies.
    #[error("host: {0}")]
    Host(String),
}

impl FallbackReason {
    /// Value of the `reason` label.
    pub fn label(&self) -> &'static str {
        match self {
            FallbackReason::OutOfFuel => "out_of_fuel",
            FallbackReason::MemoryLimit => "memory_limit",
            FallbackReason::Trap(_) => "trap",
            FallbackReason::Malformed(_) => "malformed",
            FallbackReason::Host(_) => "host",
        }
    }
}

/// Result of a hook call through the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<D> {
    /// The pool has no plugin, or its plugin does not implement this hook: use the built-in
    /// policy. Not counted as a fallback.
    NotConfigured,
    /// The plugin's decision, validated.
    Decided {
        decision: D,
        plugin: Arc<PluginInfo>,
    },
    /// The plugin failed; use the built-in decision. Counted and logged.
    Fallback {
        reason: FallbackReason,
        plugin: Arc<PluginInfo>,
    },
}

impl<D> Outcome<D> {
    /// The plugin's decision, or `builtin` when there is none.
    pub fn decision_or(self, builtin: D) -> D {
        self.decision_or_else(|| builtin)
    }

    /// The plugin's decision, or the built-in one computed lazily.
    pub fn decision_or_else(self, builtin: impl FnOnce() -> D) -> D {
        match self {
            Outcome::Decided { decision, .. } => decision,
            Outcome::NotConfigured | Outcome::Fallback { .. } => builtin(),
        }
    }

    pub fn decision(&self) -> Option<&D> {
        match self {
            Outcome::Decided { decision, .. } => Some(decision),
            _ => None,
        }
    }
}

/// Why the host could not be created.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot configure wasmtime: {0}")]
    Engine(String),
    #[error("cannot register policy metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl PluginSpec {
    /// The spec a pool's `[pools.policy]` config describes. A relative `module` path is
    /// resolved against `config_dir` (the directory of the config file); the id defaults to
    /// the module's file stem.
    pub fn from_config(cfg: &config_schema::PolicyPluginConfig, config_dir: &Path) -> PluginSpec {
        let path = config_dir.join(&cfg.module);
        let id = cfg.id.clone().unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "policy".into())
        });
        PluginSpec {
            id,
            module: ModuleSource::File(path),
            limits: Limits {
                fuel: cfg.fuel,
                memory_bytes: cfg.memory_bytes,
            },
            grants: cfg.grants.iter().map(|g| Grant::from(*g)).collect(),
        }
    }
}

/// The policy plugins of all pools, with one shared wasmtime engine and the metrics.
pub struct PolicyHost {
    engine: wasmtime::Engine,
    /// Bounds concurrent calls to the instance pool's size, so a burst waits for a slot
    /// instead of failing instantiation and silently falling back. `None`: on-demand engine.
    gate: Option<slots::Gate>,
    /// Pool id → plugin. Readers clone the `Arc` under the read lock and call outside it, so a
    /// swap never waits for a plugin call and a call never sees half of a swap.
    plugins: RwLock<HashMap<String, Arc<Plugin>>>,
    metrics: metrics::Metrics,
}

impl std::fmt::Debug for PolicyHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyHost")
            .field("pools", &self.pools())
            .finish()
    }
}

/// Instance slots of the pool: concurrent calls are bounded by the threads that make them
/// (orchestratord's runtime workers), so a few per core is plenty; each slot reserves (not
/// commits) address space for the largest memory a plugin may be given.
pub const INSTANCE_SLOTS_PER_CORE: u32 = 4;

/// See [`INSTANCE_SLOTS_PER_CORE`]; the pool has at least this many slots.
pub const INSTANCE_SLOTS: u32 = 16;

/// Memory a pooled slot keeps resident between calls and resets with memset instead of
/// madvise: policy plugins' working sets are small, and madvise would cost TLB shootdowns.
const KEEP_RESIDENT_BYTES: usize = 1 << 20;

fn engine_config(pool_slots: Option<u32>) -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config
        .consume_fuel(true)
        // Determinism: the same snapshot gives the same decision on every host.
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true)
        .wasm_multi_memory(false)
        // Plugin memories are small: no 4 GiB reservation and guard per memory, explicit
        // bounds checks instead.
        .memory_guard_size(0);
    match pool_slots {
        Some(slots) => {
            let mut pool = wasmtime::PoolingAllocationConfig::new();
            pool.total_core_instances(slots)
                .total_memories(slots)
                .total_tables(slots)
                .max_memory_size(plugin::MAX_MEMORY_BYTES)
                .table_elements(plugin::MAX_TABLE_ELEMENTS)
                .max_unused_warm_slots(slots)
                .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
                .table_keep_resident(KEEP_RESIDENT_BYTES);
            config
                .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool))
                .memory_reservation(plugin::MAX_MEMORY_BYTES as u64)
                .memory_reservation_for_growth(0);
        }
        None => {
            // Per-call instances on demand: a small reservation keeps each call's mmap small.
            config
                .memory_reservation(0)
                .memory_reservation_for_growth(1 << 20);
        }
    }
    config
}

impl PolicyHost {
    /// A host without plugins whose metrics are registered on `registry`.
    ///
    /// Every call instantiates its module afresh (purity). With wasmtime's default on-demand
    /// allocator that is an mmap, mprotect and munmap of the linear memory (and of its
    /// copy-on-write data image) per call; munmap's TLB shootdowns across cores made those
    /// syscalls most of a call's cost under load. The pooling allocator reserves
    /// [`INSTANCE_SLOTS`]-many instance slots once and resets a used slot in place (memset of
    /// the resident part), so a call makes no memory-map syscalls. Where the reservation is
    /// refused (e.g. a low `ulimit -v`), the host falls back to on-demand allocation and says
    /// so in the log.
    pub fn new(registry: &prometheus::Registry) -> Result<PolicyHost, HostError> {
        let slots = slots::instance_slots();
        match wasmtime::Engine::new(&engine_config(Some(slots))) {
            Ok(engine) => PolicyHost::with_engine(registry, engine, Some(slots)),
            Err(e) => {
                tracing::warn!(
                    target: "llorch_policy",
                    error = %format!("{e:#}"),
                    slots,
                    "cannot reserve the policy plugin instance pool; allocating instances on demand (slower)"
                );
                PolicyHost::new_on_demand(registry)
            }
        }
    }

    /// A host whose instances are allocated per call, with no pool: what [`PolicyHost::new`]
    /// falls back to; public so that benchmarks can compare the two.
    pub fn new_on_demand(registry: &prometheus::Registry) -> Result<PolicyHost, HostError> {
        let engine = wasmtime::Engine::new(&engine_config(None))
            .map_err(|e| HostError::Engine(format!("{e:#}")))?;
        PolicyHost::with_engine(registry, engine, None)
    }

    fn with_engine(
        registry: &prometheus::Registry,
        engine: wasmtime::Engine,
        pool_slots: Option<u32>,
    ) -> Result<PolicyHost, HostError> {
        Ok(PolicyHost {
            engine,
            gate: pool_slots.map(slots::Gate::new),
            plugins: RwLock::new(HashMap::new()),
            metrics: metrics::Metrics::new(registry)?,
        })
    }

    /// Compiles and checks a module without installing it.
    pub fn load(&self, spec: &PluginSpec) -> Result<Arc<Plugin>, LoadError> {
        let started = Instant::now();
        let plugin = Plugin::load(&self.engine, spec)?;
        let info = plugin.info();
        tracing::info!(
            target: "llorch_policy",
            plugin = %info.id,
            plugin_version = %info.version,
            abi = %format!("{}.{}", info.abi.0, info.abi.1),
            admission = info.admits,
            placement = info.places,
            fuel = info.limits.fuel,
            memory_bytes = info.limits.memory_bytes,
            load_ms = started.elapsed().as_millis() as u64,
            "policy plugin loaded"
        );
        Ok(Arc::new(plugin))
    }

    /// Installs `plugin` for `pool_id` (or removes the pool's plugin with `None`), returning
    /// the previous one. Atomic: each call uses either the old or the new plugin.
    pub fn install(&self, pool_id: &str, plugin: Option<Arc<Plugin>>) -> Option<Arc<Plugin>> {
        let mut map = self.plugins.write().unwrap_or_else(PoisonError::into_inner);
        match plugin {
            Some(p) => map.insert(pool_id.to_string(), p),
            None => map.remove(pool_id),
        }
    }

    /// Loads `spec` and installs it for `pool_id`. On error the pool keeps its old plugin.
    pub fn reload(&self, pool_id: &str, spec: &PluginSpec) -> Result<Arc<PluginInfo>, LoadError> {
        let plugin = self.load(spec)?;
        let info = plugin.info().clone();
        self.install(pool_id, Some(plugin));
        Ok(info)
    }

    /// Replaces every pool's plugin at once (pools absent from `specs` lose theirs). All
    /// modules are loaded first: if one fails, nothing changes and the pool id and error are
    /// returned.
    pub fn replace_all<'a>(
        &self,
        specs: impl IntoIterator<Item = (&'a str, &'a PluginSpec)>,
    ) -> Result<(), (String, LoadError)> {
        let mut next = HashMap::new();
        for (pool, spec) in specs {
            let p = self.load(spec).map_err(|e| (pool.to_string(), e))?;
            next.insert(pool.to_string(), p);
        }
        *self.plugins.write().unwrap_or_else(PoisonError::into_inner) = next;
        Ok(())
    }

    /// The plugin installed for a pool.
    pub fn plugin(&self, pool_id: &str) -> Option<Arc<Plugin>> {
        self.plugins
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(pool_id)
            .cloned()
    }

    /// Pools that have a plugin, sorted.
    pub fn pools(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .plugins
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Runs the admission hook of `snapshot.pool_id`'s plugin.
    pub fn admit(&self, snapshot: &AdmissionSnapshot) -> Outcome<AdmissionDecision> {
        self.call(
            Hook::Admission,
            &snapshot.pool_id,
            &snapshot.task.task_id,
            |p| p.admit(snapshot),
            |d| d.label(),
        )
    }

    /// Runs the placement hook of `snapshot.pool_id`'s plugin. A decided
    /// [`PlacementDecision::Place`] always names a candidate of the snapshot.
    pub fn place(&self, snapshot: &PlacementSnapshot) -> Outcome<PlacementDecision> {
        self.call(
            Hook::Placement,
            &snapshot.pool_id,
            &snapshot.task.task_id,
            |p| p.place(snapshot),
            |d| d.label(),
        )
    }

    /// One hook call on the pool's plugin: inside an instance-pool slot, timed, then logged and
    /// counted by [`PolicyHost::finish`].
    fn call<D: std::fmt::Debug>(
        &self,
        hook: Hook,
        pool_id: &str,
        task_id: &str,
        run: impl FnOnce(&Plugin) -> Result<Option<D>, FallbackReason>,
        label: impl Fn(&D) -> &'static str,
    ) -> Outcome<D> {
        let Some(plugin) = self.plugin(pool_id) else {
            return Outcome::NotConfigured;
        };
        let started = Instant::now();
        let result = {
            let _slot = self.gate.as_ref().map(slots::Gate::acquire);
            run(&plugin)
        };
        self.finish(hook, pool_id, task_id, &plugin, started, result, label)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish<D: std::fmt::Debug>(
        &self,
        hook: Hook,
        pool_id: &str,
        task_id: &str,
        plugin: &Plugin,
        started: Instant,
        result: Result<Option<D>, FallbackReason>,
        label: impl Fn(&D) -> &'static str,
    ) -> Outcome<D> {
        let info = plugin.info();
        let elapsed = started.elapsed();
        let latency_us = elapsed.as_micros() as u64;
        match result {
            Ok(None) => Outcome::NotConfigured,
            Ok(Some(decision)) => {
                self.metrics
                    .decided(pool_id, &info.id, hook, label(&decision), elapsed);
                tracing::debug!(
                    target: "llorch_policy",
                    pool_id,
                    task_id,
                    plugin = %info.id,
                    plugin_version = %info.version,
                    hook = hook.as_str(),
                    decision = ?decision,
                    latency_us,
                    "policy decision"
                );
                Outcome::Decided {
                    decision,
                    plugin: info.clone(),
                }
            }
            Err(reason) => {
                self.metrics
                    .fallback(pool_id, &info.id, hook, reason.label(), elapsed);
                tracing::warn!(
                    target: "llorch_policy",
                    pool_id,
                    task_id,
                    plugin = %info.id,
                    plugin_version = %info.version,
                    hook = hook.as_str(),
                    reason = reason.label(),
                    detail = %reason,
                    latency_us,
                    "policy plugin failed; using the built-in decision"
                );
                Outcome::Fallback {
                    reason,
                    plugin: info.clone(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> PluginSpec {
        let text = include_str!("../../../../examples/plugins/wat/good.wat");
        PluginSpec {
            id: "good".into(),
            module: ModuleSource::Bytes(wat::parse_str(text).expect("good.wat")),
            limits: Limits::default(),
            grants: vec![],
        }
    }

    fn snapshot(tenant: &str) -> AdmissionSnapshot {
        AdmissionSnapshot {
            pool_id: "p".into(),
            now_ms: 0,
            task: TaskInfo {
                task_id: "t".into(),
                tenant: tenant.into(),
                priority: Priority::Interactive,
                model_ref: "m".into(),
                ctx: 512,
                max_tokens: 8,
                prompt_tokens: 4,
                deadline_ms: None,
                session_id: None,
            },
            queue: QueueState {
                capacity: 8,
                depth_interactive: 0,
                depth_batch: 0,
            },
            tenant_usage: TenantUsage {
                running: 0,
                queued: 0,
            },
            replicas: vec![],
        }
    }

    /// Both allocation strategies run the same plugin to the same decisions: the on-demand
    /// fallback (taken where the pool's address space cannot be reserved) is not a lesser host.
    #[test]
    fn pooled_and_on_demand_hosts_decide_alike() {
        let pooled = PolicyHost::new(&prometheus::Registry::new()).unwrap();
        assert!(
            pooled.gate.is_some(),
            "the pool is reserved on this machine"
        );
        let on_demand = PolicyHost::new_on_demand(&prometheus::Registry::new()).unwrap();
        assert!(on_demand.gate.is_none());
        for host in [&pooled, &on_demand] {
            host.reload("p", &good()).unwrap();
            // More calls than the pool has slots: slots are reused, never exhausted.
            for _ in 0..(2 * INSTANCE_SLOTS) {
                assert_eq!(
                    host.admit(&snapshot("blocked")).decision(),
                    Some(&AdmissionDecision::Reject {
                        reason: "tenant blocked by policy".into()
                    })
                );
                assert_eq!(
                    host.admit(&snapshot("acme")).decision(),
                    Some(&AdmissionDecision::Admit)
                );
            }
        }
    }

    #[test]
    fn memory_beyond_a_pool_slot_is_refused_at_load() {
        let host = PolicyHost::new(&prometheus::Registry::new()).unwrap();
        let mut spec = good();
        spec.limits.memory_bytes = plugin::MAX_MEMORY_BYTES as u64 + 1;
        assert!(matches!(host.load(&spec), Err(LoadError::InvalidLimits(_))));
    }
}
