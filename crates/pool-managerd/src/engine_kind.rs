//! What differs between the engines pool-managerd supervises: [`EngineKind`] builds each
//! engine's command line and environment, and [`EngineAdapter`] is the adapter that probes
//! readiness, runs the startup self-test and reads the engine's telemetry. Everything else
//! (spawning in its own process group, log forwarding, restart policy, stop) is shared
//! ([`crate::supervisor`], [`crate::readiness`]).

use std::path::Path;
use std::sync::Arc;

use adapter_api::{WorkerAdapter, WorkerError};
use llamacpp_adapter::{LlamaCppAdapter, LlamaCppConfig};
use tgi_adapter::{TgiAdapter, TgiConfig};
use tokio::process::Command;
use triton_adapter::{InputConvention, TritonAdapter, TritonConfig};
use vllm_adapter::{VllmAdapter, VllmConfig};

use crate::supervisor::EngineSpec;

/// The engine a supervised replica runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineKind {
    /// `llama-server -m <gguf> --metrics --host 127.0.0.1 --port P -np <slots> -c <ctx×slots>`.
    LlamaCpp,
    /// `vllm serve <model dir> --host 127.0.0.1 --port P --max-num-seqs <slots>
    /// --max-model-len <ctx> --seed 0`.
    Vllm,
    /// `text-generation-launcher --model-id <model> --hostname 127.0.0.1 --port P
    /// --max-concurrent-requests <slots>`.
    Tgi,
    /// `tritonserver --model-repository=<dir> --http-address=127.0.0.1 --http-port=P
    /// --metrics-port=M --allow-grpc=false --exit-timeout-secs=5`, serving `model`.
    Triton {
        model: String,
        inputs: InputConvention,
        metrics_port: u16,
    },
}

impl EngineKind {
    /// The engine's name as in configs and metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            EngineKind::LlamaCpp => "llamacpp",
            EngineKind::Vllm => "vllm",
            EngineKind::Tgi => "tgi",
            EngineKind::Triton { .. } => "triton",
        }
    }

    /// The engine's command line and environment for `spec`, serving `model` (a GGUF file, a
    /// model directory, a hub id or a Triton model repository). The process setup (group,
    /// device mask, pipes) is the supervisor's.
    pub fn command(&self, spec: &EngineSpec, model: &Path) -> Command {
        let mut cmd = Command::new(&spec.binary);
        let port = spec.port.to_string();
        let slots = spec.slots.to_string();
        match self {
            EngineKind::LlamaCpp => {
                cmd.arg("-m")
                    .arg(model)
                    // Prometheus /metrics, folded into pool-managerd's replica metrics.
                    .arg("--metrics")
                    .args(["--host", "127.0.0.1", "--port", &port])
                    .args(["-np", &slots])
                    .args([
                        "-c",
                        &(spec.ctx_per_slot.saturating_mul(spec.slots)).to_string(),
                    ]);
            }
            EngineKind::Vllm => {
                cmd.arg("serve")
                    .arg(model)
                    .args(["--host", "127.0.0.1", "--port", &port])
                    .args(["--max-num-seqs", &slots])
                    .args(["--max-model-len", &spec.ctx_per_slot.to_string()])
                    // Same global seed on every replica; tasks carry their own seed.
                    .args(["--seed", "0"])
                    // Local model directories only, and no usage reports.
                    .env("HF_HUB_OFFLINE", "1")
                    .env("VLLM_NO_USAGE_STATS", "1")
                    .env("DO_NOT_TRACK", "1");
            }
            EngineKind::Tgi => {
                cmd.arg("--model-id")
                    .arg(model)
                    .args(["--hostname", "127.0.0.1", "--port", &port])
                    .args(["--max-concurrent-requests", &slots]);
            }
            EngineKind::Triton { metrics_port, .. } => {
                cmd.arg(format!("--model-repository={}", model.display()))
                    .arg("--http-address=127.0.0.1")
                    .arg(format!("--http-port={port}"))
                    .arg(format!("--metrics-port={metrics_port}"))
                    // HTTP only: a gRPC port per replica would collide at its default.
                    .arg("--allow-grpc=false")
                    // Stop within the supervisor's 5 s grace (its default is 30 s).
                    .arg("--exit-timeout-secs=5");
            }
        }
        cmd.args(&spec.extra_args).envs(&spec.env);
        cmd
    }

    /// The adapter of this engine at `spec`'s port (slots and context from `spec`).
    pub fn adapter(
        &self,
        spec: &EngineSpec,
        model_ref: &str,
    ) -> Result<EngineAdapter, WorkerError> {
        let url = spec.base_url();
        Ok(match self {
            EngineKind::LlamaCpp => EngineAdapter::LlamaCpp(Arc::new(LlamaCppAdapter::new(
                LlamaCppConfig::new(url, model_ref),
            )?)),
            EngineKind::Vllm => {
                let mut c = VllmConfig::new(url, model_ref);
                c.slots = spec.slots;
                EngineAdapter::Vllm(Arc::new(VllmAdapter::new(c)?))
            }
            EngineKind::Tgi => {
                let mut c = TgiConfig::new(url, model_ref);
                c.slots = Some(spec.slots);
                EngineAdapter::Tgi(Arc::new(TgiAdapter::new(c)?))
            }
            EngineKind::Triton {
                model,
                inputs,
                metrics_port,
            } => {
                let mut c = TritonConfig::new(url, model.clone(), *inputs);
                c.model_ref = model_ref.to_string();
                c.metrics_url = Some(format!("http://127.0.0.1:{metrics_port}/metrics"));
                c.slots = spec.slots;
                c.ctx_max = spec.ctx_per_slot;
                EngineAdapter::Triton(Arc::new(TritonAdapter::new(c)?))
            }
        })
    }
}

/// One engine's figures for the engine metric families, whatever the engine calls them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EngineFigures {
    pub kv_cache_usage_ratio: Option<f64>,
    pub requests_processing: Option<f64>,
    pub requests_deferred: Option<f64>,
    pub prompt_tokens_total: Option<f64>,
    pub generated_tokens_total: Option<f64>,
    /// The counter a finished decode advances (the self-test's telemetry check): generated
    /// tokens, or for Triton (whose models report no tokens) successful requests.
    pub decodes_counted: Option<f64>,
}

/// The typed adapter of a supervised engine: the [`WorkerAdapter`] that serves traffic, plus
/// the engine's version and telemetry.
#[derive(Clone)]
pub enum EngineAdapter {
    LlamaCpp(Arc<LlamaCppAdapter>),
    Vllm(Arc<VllmAdapter>),
    Tgi(Arc<TgiAdapter>),
    Triton(Arc<TritonAdapter>),
}

impl std::fmt::Debug for EngineAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EngineAdapter({})", self.decode_counter_name())
    }
}

/// The adapter of an engine that runs outside our supervision but that pool-managerd reaches
/// directly for its metrics: a Triton replica's HTTP `endpoint`, a vLLM or TGI replica's
/// `engine_url`. None for replicas behind an adapter daemon.
pub fn external_adapter(
    pool: &config_schema::PoolConfig,
    r: &config_schema::ReplicaConfig,
) -> Option<(String, Result<EngineAdapter, WorkerError>)> {
    use api_types::Engine;
    let adapter = match (pool.engine, &pool.triton, &r.endpoint, &r.engine_url) {
        (Engine::Triton, Some(t), Some(ep), _) => {
            let inputs = match t.inputs {
                config_schema::TritonInputs::Vllm => InputConvention::Vllm,
                config_schema::TritonInputs::TensorrtLlm => InputConvention::TensorrtLlm,
            };
            let mut c = TritonConfig::new(ep, t.model.clone(), inputs);
            c.metrics_url = t.metrics_url.clone();
            (
                ep.clone(),
                TritonAdapter::new(c).map(|a| EngineAdapter::Triton(Arc::new(a))),
            )
        }
        (Engine::Vllm, _, _, Some(url)) => (
            url.clone(),
            VllmAdapter::new(VllmConfig::new(url, pool.model_ref.clone()))
                .map(|a| EngineAdapter::Vllm(Arc::new(a))),
        ),
        (Engine::Tgi, _, _, Some(url)) => (
            url.clone(),
            TgiAdapter::new(TgiConfig::new(url, pool.model_ref.clone()))
                .map(|a| EngineAdapter::Tgi(Arc::new(a))),
        ),
        _ => return None,
    };
    Some(adapter)
}

impl EngineAdapter {
    /// The engine's name as in configs and metrics labels.
    pub fn engine(&self) -> &'static str {
        match self {
            EngineAdapter::LlamaCpp(_) => "llamacpp",
            EngineAdapter::Vllm(_) => "vllm",
            EngineAdapter::Tgi(_) => "tgi",
            EngineAdapter::Triton(_) => "triton",
        }
    }

    pub fn worker(&self) -> Arc<dyn WorkerAdapter> {
        match self {
            EngineAdapter::LlamaCpp(a) => a.clone(),
            EngineAdapter::Vllm(a) => a.clone(),
            EngineAdapter::Tgi(a) => a.clone(),
            EngineAdapter::Triton(a) => a.clone(),
        }
    }

    /// The engine's metric that counts finished decodes (named in self-test failures).
    pub fn decode_counter_name(&self) -> &'static str {
        match self {
            EngineAdapter::LlamaCpp(_) => "llamacpp:tokens_predicted_total",
            EngineAdapter::Vllm(_) => "vllm:generation_tokens_total",
            EngineAdapter::Tgi(_) => "tgi_request_generated_tokens",
            EngineAdapter::Triton(_) => "nv_inference_request_success",
        }
    }

    /// The engine build, in the form its adapter reports as `engine_version`.
    pub async fn version(&self) -> Option<String> {
        match self {
            EngineAdapter::LlamaCpp(a) => {
                Some(format!("llamacpp-{}", a.props().await.ok()?.build_info))
            }
            EngineAdapter::Vllm(a) => a.engine_version().await.ok(),
            EngineAdapter::Tgi(a) => Some(a.info().await.ok()?.engine_version()),
            EngineAdapter::Triton(a) => Some(format!(
                "triton-{}",
                a.server_metadata().await.ok()?.version
            )),
        }
    }

    /// The engine's own metrics (`/metrics`: `llamacpp:`, `vllm:`, `tgi_`, `nv_`) as
    /// [`EngineFigures`].
    pub async fn figures(&self) -> Result<EngineFigures, WorkerError> {
        Ok(match self {
            EngineAdapter::LlamaCpp(a) => {
                let m = a.metrics().await?;
                EngineFigures {
                    kv_cache_usage_ratio: m.kv_cache_usage_ratio,
                    requests_processing: m.requests_processing,
                    requests_deferred: m.requests_deferred,
                    prompt_tokens_total: m.prompt_tokens_total,
                    generated_tokens_total: m.tokens_predicted_total,
                    decodes_counted: m.tokens_predicted_total,
                }
            }
            EngineAdapter::Vllm(a) => {
                let m = a.metrics().await?;
                EngineFigures {
                    kv_cache_usage_ratio: m.kv_cache_usage_ratio,
                    requests_processing: m.requests_processing,
                    requests_deferred: m.requests_deferred,
                    prompt_tokens_total: m.prompt_tokens_total,
                    generated_tokens_total: m.tokens_predicted_total,
                    decodes_counted: m.tokens_predicted_total,
                }
            }
            EngineAdapter::Tgi(a) => {
                let m = a.metrics().await?;
                EngineFigures {
                    kv_cache_usage_ratio: None,
                    requests_processing: m.requests_processing,
                    requests_deferred: m.requests_deferred,
                    prompt_tokens_total: m.prompt_tokens_total,
                    generated_tokens_total: m.tokens_predicted_total,
                    decodes_counted: m.tokens_predicted_total,
                }
            }
            EngineAdapter::Triton(a) => {
                let m = a.metrics().await?;
                EngineFigures {
                    kv_cache_usage_ratio: None,
                    // Triton exports no "processing now" count; pending = waiting inside.
                    requests_processing: None,
                    requests_deferred: m.pending_requests,
                    prompt_tokens_total: m.prompt_tokens_total,
                    generated_tokens_total: m.generation_tokens_total,
                    // Finished requests (decoupled models) or inferences, whichever counts.
                    decodes_counted: match (m.request_success_total, m.inference_count_total) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    },
                }
            }
        })
    }
}
