//! `llorch serve`: the all-in-one mode for first-time users and `nix run`. One process runs
//! the orchestrator, a supervisor per llama.cpp replica (pool-managerd's library) and the
//! replicas' adapters in-process: the same library code as the separate daemons, wired
//! together without sockets between them.
//!
//! Without `--config` it serves an embedded default: one CPU pool with SmolLM2-135M-Instruct on
//! the llama-server that `cargo xtask fetch-engine` provisioned (recorded in
//! `~/.cache/llama-orch/provisioned.json`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use config_schema::Config;
use llamacpp_adapter::{LlamaCppAdapter, LlamaCppConfig};
use pool_managerd::gated::GatedAdapter;
use pool_managerd::policy::RestartConfig;
use pool_managerd::supervisor::{EngineSpec, Phase, Supervisor};

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

/// Starts a supervisor per supervised replica; returns them with their gated adapters.
pub fn start_engines(
    cfg: &Config,
) -> anyhow::Result<(Vec<Supervisor>, orchestratord::AdapterOverrides)> {
    let mut sups = Vec::new();
    let mut overrides = orchestratord::AdapterOverrides::new();
    for pool in &cfg.pools {
        let Some(proc_cfg) = &pool.llamacpp else {
            continue;
        };
        for r in pool.replicas.iter().filter(|r| r.endpoint.is_none()) {
            let spec = EngineSpec {
                pool_id: pool.id.clone(),
                replica_id: r.id.clone(),
                binary: proc_cfg.server_binary.clone().into(),
                model: model_path(&pool.model_ref).to_path_buf(),
                model_sha256: pool.model_sha256.clone(),
                port: free_port()?,
                slots: r.slots,
                ctx_per_slot: pool.ctx_max,
                devices: r.devices.clone(),
                extra_args: proc_cfg.extra_args.clone(),
                restart: RestartConfig::default(),
                ready_timeout: Duration::from_millis(proc_cfg.ready_timeout_ms),
            };
            let engine =
                LlamaCppAdapter::new(LlamaCppConfig::new(spec.base_url(), pool.model_ref.clone()))?;
            let sup = Supervisor::spawn(spec);
            let gated = GatedAdapter::new(Arc::new(engine), sup.subscribe());
            overrides.insert(
                (pool.id.clone(), r.id.clone()),
                Arc::new(gated) as Arc<dyn adapter_api::WorkerAdapter>,
            );
            sups.push(sup);
        }
    }
    Ok((sups, overrides))
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
    let (sups, overrides) = start_engines(&cfg)?;
    // Preload (ORCH-3001): the API opens once every engine is Ready or has given up, so the
    // first requests do not meet a cold pool.
    for s in &sups {
        let limit = Duration::from_secs(600);
        let st = s
            .wait_for(limit, |st| {
                !matches!(st.phase, Phase::Starting | Phase::Backoff { .. })
            })
            .await;
        match st {
            Some(st) if st.phase == Phase::Ready => {}
            other => {
                tracing::error!(status = ?other, "engine not ready; serving anyway, its pool answers POOL_UNREADY")
            }
        }
    }
    let listener = daemon_kit::Listener::from_systemd_or_bind(&cfg.server.listen).await?;
    daemon_kit::spawn_watchdog();
    let result = orchestratord::serve_with(
        listener,
        cfg,
        overrides,
        daemon_kit::shutdown_signal(),
        || daemon_kit::notify_ready("serving"),
        daemon_kit::notify_stopping,
    )
    .await;
    for s in sups {
        s.shutdown().await;
    }
    result
}
