//! How a supervised replica's engine is specified and started: its [`EngineKind`], the
//! model it is given, its [`EngineSpec`], and the readiness-gated adapter that serves it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use adapter_api::WorkerAdapter;

use crate::artifacts::{Artifacts, ModelRef};
use crate::engine_kind::{EngineAdapter, EngineKind};
use crate::gated::GatedAdapter;
use crate::policy::RestartConfig;
use crate::supervisor::{EngineSpec, ModelSource, Supervisor};

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

pub(super) fn engine_spec(
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
pub(super) struct Started {
    pub(super) sup: Supervisor,
    pub(super) gated: Arc<dyn WorkerAdapter>,
    pub(super) endpoint: ReplicaEndpoint,
}

/// Spawns the engine and wraps its adapter in the readiness gate.
pub(super) fn start_replica(spec: EngineSpec, model_ref: &str) -> anyhow::Result<Started> {
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
