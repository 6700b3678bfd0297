//! [`Engines`]: every supervised replica of an appliance config, by pool — started from the
//! config, preloaded, reloaded with a new model beside the old one (switch or roll back), and
//! stopped. The all-in-one `llorch serve` and (next) the pool-managerd daemon both use it.

mod reload;
mod spawn;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use adapter_api::WorkerAdapter;
use config_schema::Config;

use crate::artifacts::Artifacts;

/// Each supervised replica's readiness-gated adapter, by (pool id, replica id) — the shape
/// orchestratord takes as `AdapterOverrides`.
pub type ReplicaAdapters = HashMap<(String, String), Arc<dyn WorkerAdapter>>;
use crate::engine_kind::EngineAdapter;
use crate::supervisor::{Phase, ReplicaStatus, Supervisor};
pub use spawn::ReplicaEndpoint;
use spawn::{engine_spec, start_replica};

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
