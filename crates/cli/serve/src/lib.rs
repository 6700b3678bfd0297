//! `llorch serve`: the all-in-one mode for first-time users and `nix run`. One process runs
//! the orchestrator, a supervisor per llama.cpp replica (pool-managerd's library) and the
//! replicas' adapters in-process: the same library code as the separate daemons, wired
//! together without sockets between them.
//!
//! Without `--config` it serves an embedded default: one CPU pool with SmolLM2-135M-Instruct on
//! the llama-server that `cargo xtask fetch-engine` provisioned (recorded in
//! `~/.cache/llama-orch/provisioned.json`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use adapter_api::WorkerAdapter;
use anyhow::Context;
use api_types::ErrorCode;
use config_schema::Config;
use llamacpp_adapter::{LlamaCppAdapter, LlamaCppConfig};
use orchestratord::PoolController;
use pool_managerd::gated::GatedAdapter;
use pool_managerd::policy::RestartConfig;
use pool_managerd::supervisor::{EngineSpec, Phase, ReplicaStatus, Supervisor};

/// `$XDG_CACHE_HOME/llama-orch` or `~/.cache/llama-orch`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("llama-orch")
}

/// The embedded default config, filled in from the provisioned engine record.
pub fn default_config(listen: &str) -> anyhow::Result<Config> {
    let record = cache_dir().join("provisioned.json");
    let text = std::fs::read_to_string(&record).with_context(|| {
        format!(
            "{} not found: provision the engine first with `cargo xtask fetch-engine`, or pass --config",
            record.display()
        )
    })?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", record.display()))?;
    let field = |k: &str| {
        v[k].as_str()
            .map(String::from)
            .with_context(|| format!("{} lacks `{k}`", record.display()))
    };
    let toml = format!(
        r#"
[server]
listen = "{listen}"

[[auth.api_keys]]
key = "dev-data-key"
tenant = "dev"
role = "data"

[[auth.api_keys]]
key = "dev-control-key"
tenant = "ops"
role = "control"

[[pools]]
id = "smollm2"
engine = "llamacpp"
model_ref = "{model}"
model_sha256 = "{sha}"
ctx_max = 2048
allow_cpu_inference = true
llamacpp = {{ server_binary = "{server}" }}

[[pools.replicas]]
id = "cpu0"
slots = 2
"#,
        model = field("model")?,
        sha = field("model_sha256")?,
        server = field("llama_server")?,
    );
    Ok(config_schema::parse_str(
        &toml,
        "(embedded default config)",
    )?)
}

/// Model path of a supervised pool: `model_ref` is a local path (`file:` prefix optional).
fn model_path(model_ref: &str) -> &Path {
    Path::new(model_ref.strip_prefix("file:").unwrap_or(model_ref))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn engine_spec(
    pool: &config_schema::PoolConfig,
    proc_cfg: &config_schema::LlamaCppProcessConfig,
    replica: &config_schema::ReplicaConfig,
    model_ref: &str,
    model_sha256: Option<String>,
) -> anyhow::Result<EngineSpec> {
    Ok(EngineSpec {
        pool_id: pool.id.clone(),
        replica_id: replica.id.clone(),
        binary: proc_cfg.server_binary.clone().into(),
        model: model_path(model_ref).to_path_buf(),
        model_sha256,
        port: free_port()?,
        slots: replica.slots,
        ctx_per_slot: pool.ctx_max,
        devices: replica.devices.clone(),
        extra_args: proc_cfg.extra_args.clone(),
        restart: RestartConfig::default(),
        ready_timeout: Duration::from_millis(proc_cfg.ready_timeout_ms),
    })
}

/// Spawns the engine and wraps its adapter in the readiness gate.
fn start_replica(
    spec: EngineSpec,
    model_ref: &str,
) -> anyhow::Result<(Supervisor, Arc<dyn WorkerAdapter>)> {
    let engine = LlamaCppAdapter::new(LlamaCppConfig::new(spec.base_url(), model_ref))?;
    let sup = Supervisor::spawn(spec);
    let gated = GatedAdapter::new(Arc::new(engine), sup.subscribe());
    Ok((sup, Arc::new(gated)))
}

/// The engines of `llorch serve`, by pool, with reload (start beside, switch, roll back).
pub struct Engines {
    cfg: Config,
    live: tokio::sync::Mutex<HashMap<String, Vec<Supervisor>>>,
    retiring: tokio::sync::Mutex<HashMap<String, Vec<Supervisor>>>,
    last_error: std::sync::Mutex<HashMap<String, String>>,
}

impl Engines {
    /// Starts every supervised replica of `cfg`.
    pub fn start(cfg: &Config) -> anyhow::Result<(Arc<Engines>, orchestratord::AdapterOverrides)> {
        let mut live: HashMap<String, Vec<Supervisor>> = HashMap::new();
        let mut overrides = orchestratord::AdapterOverrides::new();
        for pool in &cfg.pools {
            let Some(proc_cfg) = &pool.llamacpp else {
                continue;
            };
            for r in pool.replicas.iter().filter(|r| r.endpoint.is_none()) {
                let spec = engine_spec(
                    pool,
                    proc_cfg,
                    r,
                    &pool.model_ref,
                    pool.model_sha256.clone(),
                )?;
                let (sup, adapter) = start_replica(spec, &pool.model_ref)?;
                overrides.insert((pool.id.clone(), r.id.clone()), adapter);
                live.entry(pool.id.clone()).or_default().push(sup);
            }
        }
        let engines = Engines {
            cfg: cfg.clone(),
            live: tokio::sync::Mutex::new(live),
            retiring: tokio::sync::Mutex::new(HashMap::new()),
            last_error: std::sync::Mutex::new(HashMap::new()),
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
    }
}

#[async_trait::async_trait]
impl PoolController for Engines {
    async fn reload(
        &self,
        pool_id: &str,
        new_model_ref: &str,
        new_model_sha256: Option<&str>,
    ) -> Result<Vec<(String, Arc<dyn WorkerAdapter>)>, ErrorCode> {
        let Some(pool) = self.cfg.pool(pool_id) else {
            return Err(ErrorCode::NotFound);
        };
        let Some(proc_cfg) = &pool.llamacpp else {
            self.set_error(pool_id, "pool's engines are not supervised here".into());
            return Err(ErrorCode::PoolUnavailable);
        };
        let mut started = Vec::new();
        let mut adapters = Vec::new();
        for r in pool.replicas.iter().filter(|r| r.endpoint.is_none()) {
            let spec = engine_spec(
                pool,
                proc_cfg,
                r,
                new_model_ref,
                new_model_sha256.map(String::from),
            )
            .map_err(|_| ErrorCode::Internal)?;
            let (sup, adapter) =
                start_replica(spec, new_model_ref).map_err(|_| ErrorCode::Internal)?;
            started.push(sup);
            adapters.push((r.id.clone(), adapter));
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

    async fn retire_old(&self, pool_id: &str) {
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

    fn last_error(&self, pool_id: &str) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(pool_id)
            .cloned()
    }
}

pub use daemon_kit::init_logging;

/// Runs until SIGTERM/SIGINT: engines preload first, then the API serves.
pub async fn serve(config: Option<PathBuf>, listen: Option<String>) -> anyhow::Result<()> {
    let mut cfg = match &config {
        Some(p) => config_schema::load_file(p)?,
        None => default_config(listen.as_deref().unwrap_or("127.0.0.1:8080"))?,
    };
    if let Some(l) = listen {
        cfg.server.listen = l;
    }
    let (engines, overrides) = Engines::start(&cfg)?;
    // Preload (ORCH-3001): the API opens once every engine is Ready or has failed, so the first
    // requests do not meet a cold pool.
    engines.wait_preloaded(Duration::from_secs(600)).await;
    let listener = daemon_kit::Listener::from_systemd_or_bind(&cfg.server.listen).await?;
    daemon_kit::spawn_watchdog();
    let result = orchestratord::serve_managed(
        listener,
        cfg,
        overrides,
        Some(engines.clone() as Arc<dyn PoolController>),
        daemon_kit::shutdown_signal(),
        || daemon_kit::notify_ready("serving"),
        daemon_kit::notify_stopping,
    )
    .await;
    engines.shutdown().await;
    result
}
