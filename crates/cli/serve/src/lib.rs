//! `llorch serve`: the all-in-one mode for first-time users and `nix run`. One process runs
//! the orchestrator, a supervisor per llama.cpp replica (pool-managerd's library) and the
//! replicas' adapters in-process: the same library code as the separate daemons, wired
//! together without sockets between them.
//!
//! The pool manager's model catalog API and metrics are mounted on the same socket.
//!
//! Without `--config` it serves an embedded default: one CPU pool with SmolLM2-135M-Instruct on
//! the llama-server that `cargo xtask fetch-engine` provisioned (recorded in
//! `~/.cache/llama-orch/provisioned.json`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use adapter_api::WorkerAdapter;
use anyhow::Context;
use api_types::ErrorCode;
use config_schema::Config;
use orchestratord::PoolController;
pub use pool_managerd::engines::Engines;

pub use pool_managerd::provision::cache_dir;

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
openai_compat = true

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

/// Adapts pool-managerd's [`Engines`] to the orchestrator's reload hook.
pub struct ServeController(pub Arc<Engines>);

#[async_trait::async_trait]
impl PoolController for ServeController {
    async fn reload(
        &self,
        pool_id: &str,
        new_model_ref: &str,
        new_model_sha256: Option<&str>,
    ) -> Result<Vec<(String, Arc<dyn WorkerAdapter>)>, ErrorCode> {
        self.0
            .reload(pool_id, new_model_ref, new_model_sha256)
            .await
    }

    async fn retire_old(&self, pool_id: &str) {
        self.0.retire_old(pool_id).await
    }

    fn last_error(&self, pool_id: &str) -> Option<String> {
        self.0.last_error(pool_id)
    }

    /// The same registry pool-managerd serves, without a socket: readiness, restarts and the
    /// catalog lifecycle of each pool's model reach orchestratord as they change.
    fn registry_feed(&self) -> Option<orchestratord::registry_follower::RegistryFeed> {
        Some(Box::pin(pool_managerd::registry::changes(self.0.clone())))
    }
}

/// The reload hook for orchestratord over these engines.
pub fn controller(engines: Arc<Engines>) -> Arc<dyn PoolController> {
    Arc::new(ServeController(engines))
}

pub use daemon_kit::init_logging;

/// Where `llorch serve` exposes the pool manager's own metrics (orchestratord has `/metrics`;
/// both export e.g. `llorch_replica_ready`, so they are two scrape targets, not one page).
pub const POOL_MANAGER_METRICS_PATH: &str = "/metrics/pool-manager";

/// Runs until SIGTERM/SIGINT: engines preload first, then the API serves.
pub async fn serve(config: Option<PathBuf>, listen: Option<String>) -> anyhow::Result<()> {
    let mut cfg = match &config {
        Some(p) => config_schema::load_file(p)?,
        None => default_config(listen.as_deref().unwrap_or("127.0.0.1:8080"))?,
    };
    if let Some(l) = listen {
        cfg.server.listen = l;
    }
    let listener = daemon_kit::Listener::from_systemd_or_bind(&cfg.server.listen).await?;
    daemon_kit::spawn_watchdog();
    serve_on(
        listener,
        cfg,
        daemon_kit::shutdown_signal(),
        || daemon_kit::notify_ready("serving"),
        daemon_kit::notify_stopping,
    )
    .await
}

/// [`serve`] on a given listener with a given shutdown signal (tests, embedding): starts the
/// pool manager (engines, model catalog), preloads, and serves orchestratord's API with the
/// catalog API (`/v1/catalog/models…`) and [`POOL_MANAGER_METRICS_PATH`] mounted beside it.
pub async fn serve_on(
    listener: daemon_kit::Listener,
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce() + Send,
    on_stopping: impl FnOnce() + Send + 'static,
) -> anyhow::Result<()> {
    let (pm, overrides) = pool_managerd::daemon::PoolManager::start(&cfg)?;
    // Preload (ORCH-3001): the API opens once every engine is Ready or has failed, so the first
    // requests do not meet a cold pool.
    pm.engines.wait_preloaded(Duration::from_secs(600)).await;
    let listener = listener.mount(
        pm.catalog_router()
            .merge(pm.metrics_router(POOL_MANAGER_METRICS_PATH)),
    );
    let result = orchestratord::serve_managed(
        listener,
        cfg,
        overrides,
        Some(controller(pm.engines.clone())),
        shutdown,
        on_ready,
        on_stopping,
    )
    .await;
    pm.engines.shutdown().await;
    result
}
