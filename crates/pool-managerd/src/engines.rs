//! [`Engines`]: every supervised replica of an appliance config, by pool — started from the
//! config, preloaded, reloaded with a new model beside the old one (switch or roll back), and
//! stopped. The all-in-one `llorch serve` and (next) the pool-managerd daemon both use it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use adapter_api::WorkerAdapter;
use api_types::ErrorCode;
use config_schema::Config;

use crate::artifacts::{Artifacts, ModelRef};
use crate::gated::GatedAdapter;

/// Each supervised replica's readiness-gated adapter, by (pool id, replica id) — the shape
/// orchestratord takes as `AdapterOverrides`.
pub type ReplicaAdapters = HashMap<(String, String), Arc<dyn WorkerAdapter>>;
use crate::policy::RestartConfig;
use crate::engine_kind::{EngineAdapter, EngineKind};
use crate::supervisor::{EngineSpec, ModelSource, Phase, ReplicaStatus, Supervisor};

/// One supervised replica as the metrics and registry see it.
#[derive(Debug, Clone)]
pub struct ReplicaView {
    pub pool_id: String,
    pub replica_id: String,
    pub engine: String,
    pub engine_url: String,
    /// The engine's own adapter (version and telemetry for the metrics).
    pub adapter: EngineAdapter,
    pub status: ReplicaStatus,
}

/// Model file and source of a supervised pool: a local path (`file:` prefix optional) is
/// used as is; URLs and `sha256:` catalog refs are resolved by the supervisor before each
/// start.
fn model_source(model_ref: &str, artifacts: &Arc<Artifacts>) -> (PathBuf, Option<ModelSource>) {
    match ModelRef::parse(model_ref) {
        Ok(ModelRef::Local(p)) => (p, None),
        _ => (
            PathBuf::new(),
            Some(ModelSource {
                model_ref: model_ref.to_string(),
                artifacts: artifacts.clone(),
            }),
        ),
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The engine a supervised pool runs, with its per-replica ports (Triton: a metrics port).
fn engine_kind(pool: &config_schema::PoolConfig) -> anyhow::Result<EngineKind> {
    Ok(match pool.engine {
        api_types::Engine::Llamacpp => EngineKind::LlamaCpp,
        api_types::Engine::Vllm => EngineKind::Vllm,
        api_types::Engine::Tgi => EngineKind::Tgi,
        api_types::Engine::Triton => {
            let t = pool
                .triton
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("pool {}: no [pools.triton]", pool.id))?;
            EngineKind::Triton {
                model: t.model.clone(),
                inputs: match t.inputs {
                    config_schema::TritonInputs::Vllm => triton_adapter::InputConvention::Vllm,
                    config_schema::TritonInputs::TensorrtLlm => {
                        triton_adapter::InputConvention::TensorrtLlm
                    }
                },
                metrics_port: free_port()?,
            }
        }
        e => anyhow::bail!("pool {}: engine {} is not supervised", pool.id, e.as_str()),
    })
}

/// What the engine is given as its model: the GGUF file of `model_ref` (llama.cpp; URLs and
/// catalog refs resolved before each start), the model directory (vLLM: `model_dir` at
/// start, the reloaded model_ref after a reload), the model id (TGI), or the model
/// repository (Triton).
fn engine_model(
    pool: &config_schema::PoolConfig,
    model_ref: &str,
    reloaded: bool,
    artifacts: &Arc<Artifacts>,
) -> (PathBuf, Option<ModelSource>) {
    let local = |s: &str| PathBuf::from(s.strip_prefix("file:").unwrap_or(s));
    match pool.engine {
        api_types::Engine::Vllm => match pool.vllm.as_ref().and_then(|v| v.model_dir.as_deref()) {
            Some(dir) if !reloaded => (local(dir), None),
            _ => (local(model_ref), None),
        },
        api_types::Engine::Tgi => (local(model_ref), None),
        api_types::Engine::Triton => (
            pool.triton
                .as_ref()
                .and_then(|t| t.model_repository.as_deref())
                .map(local)
                .unwrap_or_default(),
            None,
        ),
        _ => model_source(model_ref, artifacts),
    }
}

fn engine_spec(
    pool: &config_schema::PoolConfig,
    replica: &config_schema::ReplicaConfig,
    model_ref: &str,
    model_sha256: Option<String>,
    reloaded: bool,
    artifacts: &Arc<Artifacts>,
) -> anyhow::Result<EngineSpec> {
    let Some(proc_cfg) = pool.process() else {
        anyhow::bail!("pool {}: its engines are not supervised here", pool.id);
    };
    // Defence in depth: config validation already refuses this.
    if replica.devices.is_empty() && !pool.allow_cpu_inference {
        anyhow::bail!(
            "pool {} replica {}: no GPU devices and allow_cpu_inference is not set",
            pool.id,
            replica.id
        );
    }
    let (model, source) = engine_model(pool, model_ref, reloaded, artifacts);
    Ok(EngineSpec {
        pool_id: pool.id.clone(),
        replica_id: replica.id.clone(),
        kind: engine_kind(pool)?,
        binary: proc_cfg.server_binary.into(),
        model,
        model_sha256,
        source,
        port: match replica.engine_port {
            Some(port) => port,
            None => free_port()?,
        },
        slots: replica.slots,
        ctx_per_slot: pool.ctx_max,
        devices: replica.devices.clone(),
        extra_args: proc_cfg.extra_args.to_vec(),
        env: proc_cfg.env.cloned().unwrap_or_default(),
        restart: RestartConfig::default(),
        ready_timeout: Duration::from_millis(proc_cfg.ready_timeout_ms),
    })
}

/// One started replica: its supervisor, the readiness-gated adapter that serves traffic, and
/// the engine's own adapter (version, telemetry).
struct Started {
    sup: Supervisor,
    gated: Arc<dyn WorkerAdapter>,
    endpoint: ReplicaEndpoint,
}

/// Spawns the engine and wraps its adapter in the readiness gate.
fn start_replica(spec: EngineSpec, model_ref: &str) -> anyhow::Result<Started> {
    let engine = spec.kind.adapter(&spec, model_ref)?;
    let endpoint = ReplicaEndpoint {
        replica_id: spec.replica_id.clone(),
        url: spec.base_url(),
        engine: engine.clone(),
    };
    let sup = Supervisor::spawn(spec);
    let gated = GatedAdapter::new(engine.worker(), sup.subscribe());
    Ok(Started {
        sup,
        gated: Arc::new(gated),
        endpoint,
    })
}

/// Where a live replica's engine answers, and its typed adapter.
#[derive(Debug, Clone)]
pub struct ReplicaEndpoint {
    pub replica_id: String,
    /// The engine's base URL.
    pub url: String,
    pub engine: EngineAdapter,
}

/// How often followers of the registry look again although nothing rang: a slow safety net
/// (a catalog written by another process), not the way changes normally arrive.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(10);

/// The engines of `llorch serve`, by pool, with reload (start beside, switch, roll back).
pub struct Engines {
    cfg: Config,
    artifacts: Arc<Artifacts>,
    live: tokio::sync::Mutex<HashMap<String, Vec<Supervisor>>>,
    /// Per pool, aligned with `live`: each replica's engine URL and adapter.
    endpoints: std::sync::Mutex<HashMap<String, Vec<ReplicaEndpoint>>>,
    retiring: tokio::sync::Mutex<HashMap<String, Vec<Supervisor>>>,
    last_error: std::sync::Mutex<HashMap<String, String>>,
    /// Per pool: the model it serves now (model_ref, required SHA-256), switched by a reload.
    models: std::sync::Mutex<HashMap<String, (String, Option<String>)>>,
    /// Engine build per (pool, replica), with the pid it was read from: read once per engine
    /// process from the engine (llama-server `/props`, vLLM `/version`, TGI `/info`, Triton
    /// `/v2`), so a restart (new pid) reads it again.
    versions: std::sync::Mutex<HashMap<(String, String), (u32, String)>>,
    /// Rung (its generation bumped) whenever something the registry shows may have changed:
    /// a supervisor's status, a reload, a catalog write. Followers wait on it instead of
    /// polling, so an idle host does no periodic work.
    bell: Arc<tokio::sync::watch::Sender<u64>>,
}

/// Bumps the bell's generation; every subscriber's `changed()` wakes.
fn ring(bell: &tokio::sync::watch::Sender<u64>) {
    bell.send_modify(|g| *g = g.wrapping_add(1));
}

/// Rings `bell` on every change `rx` sees, until its sender is gone (the supervisor ended) or
/// the bell has no owner left. No runtime (a sync caller in a test): nothing to forward to.
fn forward_changes<T: Send + Sync + 'static>(
    mut rx: tokio::sync::watch::Receiver<T>,
    bell: &Arc<tokio::sync::watch::Sender<u64>>,
) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let bell = Arc::downgrade(bell);
    rt.spawn(async move {
        while rx.changed().await.is_ok() {
            let Some(bell) = bell.upgrade() else {
                return;
            };
            ring(&bell);
        }
    });
}

/// The digest a pool's model is pinned to: its `model_sha256`, or the digest of a
/// `sha256:` catalog ref.
fn model_digest(model_ref: &str, sha: Option<&str>) -> Option<String> {
    sha.map(str::to_string)
        .or_else(|| {
            model_ref
                .trim()
                .get(..7)
                .filter(|p| p.eq_ignore_ascii_case("sha256:"))
                .map(|_| model_ref.trim()[7..].to_string())
        })
        .map(|d| d.to_ascii_lowercase())
}

impl Engines {
    /// Starts every supervised replica of `cfg`; models from URLs are downloaded into
    /// [`crate::provision::cache_dir`], and `sha256:` refs find no catalog (see
    /// [`Engines::start_with`]).
    pub fn start(cfg: &Config) -> anyhow::Result<(Arc<Engines>, ReplicaAdapters)> {
        let artifacts = Arc::new(Artifacts::new(&crate::provision::cache_dir(), None));
        Self::start_with(cfg, artifacts)
    }

    /// [`Engines::start`] resolving model_refs through `artifacts` (download cache, catalog).
    pub fn start_with(
        cfg: &Config,
        artifacts: Arc<Artifacts>,
    ) -> anyhow::Result<(Arc<Engines>, ReplicaAdapters)> {
        let mut live: HashMap<String, Vec<Supervisor>> = HashMap::new();
        let mut endpoints: HashMap<String, Vec<ReplicaEndpoint>> = HashMap::new();
        let mut overrides = ReplicaAdapters::new();
        let bell = Arc::new(tokio::sync::watch::Sender::new(0u64));
        if let Some(c) = artifacts.catalog() {
            forward_changes(c.subscribe(), &bell);
        }
        for pool in cfg.pools.iter().filter(|p| p.supervised()) {
            for r in pool.replicas.iter().filter(|r| r.endpoint.is_none()) {
                let spec = engine_spec(
                    pool,
                    r,
                    &pool.model_ref,
                    pool.model_sha256.clone(),
                    false,
                    &artifacts,
                )?;
                let started = start_replica(spec, &pool.model_ref)?;
                forward_changes(started.sup.subscribe(), &bell);
                overrides.insert((pool.id.clone(), r.id.clone()), started.gated);
                live.entry(pool.id.clone()).or_default().push(started.sup);
                endpoints
                    .entry(pool.id.clone())
                    .or_default()
                    .push(started.endpoint);
            }
        }
        let engines = Engines {
            cfg: cfg.clone(),
            artifacts,
            live: tokio::sync::Mutex::new(live),
            endpoints: std::sync::Mutex::new(endpoints),
            retiring: tokio::sync::Mutex::new(HashMap::new()),
            last_error: std::sync::Mutex::new(HashMap::new()),
            models: std::sync::Mutex::new(
                cfg.pools
                    .iter()
                    .map(|p| (p.id.clone(), (p.model_ref.clone(), p.model_sha256.clone())))
                    .collect(),
            ),
            versions: std::sync::Mutex::new(HashMap::new()),
            bell,
        };
        Ok((Arc::new(engines), overrides))
    }

    /// Status of every live engine, as (pool id, replica index, status).
    pub async fn statuses(&self) -> Vec<(String, usize, ReplicaStatus)> {
        let live = self.live.lock().await;
        let mut out = Vec::new();
        for (pool, sups) in live.iter() {
            for (i, s) in sups.iter().enumerate() {
                out.push((pool.clone(), i, s.status()));
            }
        }
        out
    }

    /// Every live engine with its ids, endpoint and full supervision status.
    pub async fn replica_views(&self) -> Vec<ReplicaView> {
        let live = self.live.lock().await;
        let endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out = Vec::new();
        for pool in &self.cfg.pools {
            let (Some(sups), Some(eps)) = (live.get(&pool.id), endpoints.get(&pool.id)) else {
                continue;
            };
            for (sup, ep) in sups.iter().zip(eps) {
                out.push(ReplicaView {
                    pool_id: pool.id.clone(),
                    replica_id: ep.replica_id.clone(),
                    engine: pool.engine.as_str().into(),
                    engine_url: ep.url.clone(),
                    adapter: ep.engine.clone(),
                    status: sup.status(),
                });
            }
        }
        out
    }

    /// The artifacts resolver the engines use (download cache, catalog).
    pub fn artifacts(&self) -> &Arc<Artifacts> {
        &self.artifacts
    }

    /// The replica registry: every live engine with its endpoint, supervision state, engine
    /// build, and model (digest and catalog lifecycle state).
    pub async fn records(&self) -> Vec<api_types::ReplicaRecord> {
        let mut out = self.supervision_records().await;
        let models = self
            .models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let catalog = self.artifacts.catalog();
        let mut states = HashMap::new();
        for r in &mut out {
            if let Some((model_ref, sha)) = models.get(&r.pool_id) {
                r.model_ref = Some(model_ref.clone());
                r.model_digest = model_digest(model_ref, sha.as_deref());
            }
            if let (Some(d), Some(c)) = (&r.model_digest, catalog) {
                // One lookup per model and call; a model outside the catalog has no lifecycle.
                r.model_state = *states
                    .entry(d.clone())
                    .or_insert_with(|| c.get(d).ok().map(|e| e.state));
            }
            if r.model_state == Some(api_types::ModelState::Retired) && !r.ready {
                // Say why it stopped: a stopped engine alone would read like a fault.
                r.last_error = Some("model retired in the catalog: engine unloaded".into());
            }
            r.engine_version = self.engine_version(r).await;
        }
        out
    }

    /// The engine build of a Ready replica, cached per engine process.
    async fn engine_version(&self, r: &api_types::ReplicaRecord) -> Option<String> {
        let key = (r.pool_id.clone(), r.replica_id.clone());
        let pid = r.pid?;
        if let Some((p, v)) = self
            .versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && *p == pid
        {
            return Some(v.clone());
        }
        if !r.ready {
            return None;
        }
        let engine = self
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&r.pool_id)?
            .iter()
            .find(|e| e.replica_id == r.replica_id && e.url == r.engine_url)?
            .engine
            .clone();
        // The same form the engine's adapter reports, so both views agree.
        let v = tokio::time::timeout(Duration::from_secs(2), engine.version())
            .await
            .ok()??;
        self.versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (pid, v.clone()));
        Some(v)
    }

    async fn supervision_records(&self) -> Vec<api_types::ReplicaRecord> {
        let live = self.live.lock().await;
        let endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out = Vec::new();
        for pool in &self.cfg.pools {
            let (Some(sups), Some(eps)) = (live.get(&pool.id), endpoints.get(&pool.id)) else {
                continue;
            };
            for (sup, ep) in sups.iter().zip(eps) {
                let st = sup.status();
                out.push(api_types::ReplicaRecord {
                    pool_id: pool.id.clone(),
                    replica_id: ep.replica_id.clone(),
                    engine: pool.engine.as_str().into(),
                    engine_url: ep.url.clone(),
                    phase: st.phase.name().into(),
                    ready: st.phase == Phase::Ready,
                    restarts: st.restarts,
                    circuit_open: matches!(st.phase, Phase::BreakerOpen { .. }),
                    last_error: st.last_error,
                    cpu: st.cpu,
                    pid: st.pid,
                    engine_version: None,
                    model_ref: None,
                    model_digest: None,
                    model_state: None,
                });
            }
        }
        out
    }

    /// Waits until every live engine is Ready or has failed once; true when all are Ready.
    pub async fn wait_preloaded(&self, limit: Duration) -> bool {
        let live = self.live.lock().await;
        let mut all = true;
        for s in live.values().flatten() {
            let st = s
                .wait_for(limit, |st| {
                    st.phase == Phase::Ready || st.last_error.is_some()
                })
                .await;
            if st.is_none_or(|st| st.phase != Phase::Ready) {
                tracing::error!(status = ?s.status(), "engine not ready; its pool answers POOL_UNREADY");
                all = false;
            }
        }
        all
    }

    /// Unloads pools whose model the catalog has Retired (SPEC §2: Retired unloads): their
    /// engines are stopped, so the GPU memory is given back, and their replicas stay in the
    /// registry as stopped. Retired is final in the catalog; a pool comes back only through a
    /// reload with another model. Returns how many engines this call stopped.
    pub async fn unload_retired(&self) -> usize {
        let Some(catalog) = self.artifacts.catalog() else {
            return 0;
        };
        let models = self
            .models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut stopped = 0;
        let mut live = self.live.lock().await;
        for (pool, sups) in live.iter_mut() {
            let Some(digest) = models
                .get(pool)
                .and_then(|(m, sha)| model_digest(m, sha.as_deref()))
            else {
                continue;
            };
            let retired = catalog
                .get(&digest)
                .is_ok_and(|e| e.state == api_types::ModelState::Retired);
            if retired {
                for s in sups.iter_mut() {
                    if s.stop() {
                        stopped += 1;
                        tracing::info!(pool_id = %pool, model_digest = %digest, "model retired: engine unloaded");
                    }
                }
            }
        }
        stopped
    }

    /// Unloads pools whose model becomes Retired, on every catalog write (and every
    /// [`RECHECK_INTERVAL`], in case another process wrote the catalog file) while these
    /// engines live. Without a catalog nothing can be retired, and nothing runs.
    pub fn spawn_lifecycle_watch(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(mut writes) = self.artifacts.catalog().map(|c| c.subscribe()) else {
            return;
        };
        let weak = Arc::downgrade(self);
        rt.spawn(async move {
            loop {
                let Some(engines) = weak.upgrade() else {
                    return;
                };
                writes.borrow_and_update();
                engines.unload_retired().await;
                drop(engines);
                tokio::select! {
                    r = writes.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(RECHECK_INTERVAL) => {}
                }
            }
        });
    }

    pub async fn shutdown(&self) {
        for (_, sups) in self.live.lock().await.drain() {
            for s in sups {
                s.shutdown().await;
            }
        }
        for (_, sups) in self.retiring.lock().await.drain() {
            for s in sups {
                s.shutdown().await;
            }
        }
    }

    fn set_error(&self, pool: &str, e: String) {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pool.to_string(), e);
        ring(&self.bell);
    }

    /// Wakes on every change of what [`Engines::records`] may show. Mark the receiver seen
    /// (`borrow_and_update`) before reading the records, so no change slips in between.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.bell.subscribe()
    }
}

impl Engines {
    /// Starts the new model beside the old one on every supervised replica of the pool;
    /// returns the new Ready adapters, or rolls back (stops every new engine) on the first
    /// failure. The old engines keep running until [`Engines::retire_old`].
    pub async fn reload(
        &self,
        pool_id: &str,
        new_model_ref: &str,
        new_model_sha256: Option<&str>,
    ) -> Result<Vec<(String, Arc<dyn WorkerAdapter>)>, ErrorCode> {
        let Some(pool) = self.cfg.pool(pool_id) else {
            return Err(ErrorCode::NotFound);
        };
        let Some(proc_cfg) = pool.process() else {
            self.set_error(pool_id, "pool's engines are not supervised here".into());
            return Err(ErrorCode::PoolUnavailable);
        };
        let mut started = Vec::new();
        let mut adapters = Vec::new();
        let mut urls = Vec::new();
        for r in pool.replicas.iter().filter(|r| r.endpoint.is_none()) {
            let spec = engine_spec(
                pool,
                r,
                new_model_ref,
                new_model_sha256.map(String::from),
                true,
                &self.artifacts,
            )
            .map_err(|_| ErrorCode::Internal)?;
            let s = start_replica(spec, new_model_ref).map_err(|_| ErrorCode::Internal)?;
            forward_changes(s.sup.subscribe(), &self.bell);
            started.push(s.sup);
            urls.push(s.endpoint);
            adapters.push((r.id.clone(), s.gated));
        }
        // The first failure of any new engine rolls the whole reload back: never half.
        let limit = Duration::from_millis(proc_cfg.ready_timeout_ms);
        let mut failure = None;
        for s in &started {
            let st = s
                .wait_for(limit, |st| {
                    st.phase == Phase::Ready || st.last_error.is_some()
                })
                .await;
            match st {
                Some(st) if st.phase == Phase::Ready => {}
                Some(st) => {
                    let why = st.last_error.unwrap_or_default();
                    let code = if why.starts_with("UNTRUSTED_ARTIFACT") {
                        ErrorCode::UntrustedArtifact
                    } else if why.starts_with("MODEL_DEPRECATED") {
                        ErrorCode::ModelDeprecated
                    } else {
                        ErrorCode::PoolUnready
                    };
                    failure = Some((code, why));
                    break;
                }
                None => {
                    failure = Some((
                        ErrorCode::PoolUnready,
                        format!("not ready within {} ms", limit.as_millis()),
                    ));
                    break;
                }
            }
        }
        if let Some((code, why)) = failure {
            for s in started {
                s.shutdown().await;
            }
            self.set_error(pool_id, why);
            return Err(code);
        }
        let old = self.live.lock().await.insert(pool_id.to_string(), started);
        self.models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                pool_id.to_string(),
                (
                    new_model_ref.to_string(),
                    new_model_sha256.map(String::from),
                ),
            );
        self.endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pool_id.to_string(), urls);
        ring(&self.bell);
        if let Some(old) = old {
            self.retiring
                .lock()
                .await
                .entry(pool_id.to_string())
                .or_default()
                .extend(old);
        }
        Ok(adapters)
    }

    /// Stops the engines a reload replaced.
    pub async fn retire_old(&self, pool_id: &str) {
        let old = self
            .retiring
            .lock()
            .await
            .remove(pool_id)
            .unwrap_or_default();
        for s in old {
            s.shutdown().await;
        }
    }

    /// Why the pool's last reload failed.
    pub fn last_error(&self, pool_id: &str) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(pool_id)
            .cloned()
    }
}
