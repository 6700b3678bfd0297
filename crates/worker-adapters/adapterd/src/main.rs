//! `llorch-adapterd`: hosts one engine adapter for one replica and serves it over the worker
//! protocol (HTTP+SSE) on a unix socket or TCP, socket-activated under systemd. orchestratord
//! reaches real engines only through this daemon, so an engine crash or adapter restart never
//! takes the orchestrator down.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use adapter_api::WorkerAdapter;
use clap::{Parser, ValueEnum};
use daemon_kit::Listener;
use llamacpp_adapter::{LlamaCppAdapter, LlamaCppConfig};
use mock_adapter::{MockAdapter, MockBehaviour};
use tgi_adapter::{TgiAdapter, TgiConfig};
use triton_adapter::{InputConvention, TritonAdapter, TritonConfig};
use vllm_adapter::{VllmAdapter, VllmConfig};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum EngineKind {
    /// The deterministic stand-in (development, tests, benchmarks).
    Mock,
    /// llama.cpp's llama-server at `--engine-url`.
    Llamacpp,
    /// Hugging Face TGI's router at `--engine-url`.
    Tgi,
    /// NVIDIA Triton Inference Server at `--engine-url` (model `--triton-model`).
    Triton,
    /// vLLM's OpenAI-compatible server at `--engine-url`.
    Vllm,
}

/// `--triton-inputs`: the model's input convention.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum TritonInputs {
    Vllm,
    TensorrtLlm,
}

#[derive(Parser)]
#[command(
    version,
    about = "Hosts one engine adapter behind the llama-orch worker protocol"
)]
struct Args {
    #[arg(long, value_enum)]
    engine: EngineKind,
    /// `unix:/abs/path.sock` or `IP:port`; ignored when systemd passes a socket.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    #[arg(long, default_value = "mock:tiny")]
    model_ref: String,
    /// Base URL of the engine (llamacpp, tgi, triton, vllm), e.g. http://127.0.0.1:8081.
    #[arg(long, required_if_eq_any([("engine", "llamacpp"), ("engine", "tgi"), ("engine", "triton"), ("engine", "vllm")]))]
    engine_url: Option<String>,
    /// Triton: the model name in Triton's model repository.
    #[arg(long, required_if_eq("engine", "triton"))]
    triton_model: Option<String>,
    /// Triton: the model's input convention.
    #[arg(long, value_enum, default_value = "vllm")]
    triton_inputs: TritonInputs,
    /// Triton: the metrics endpoint (default: port 8002 of the engine URL's host).
    #[arg(long)]
    triton_metrics_url: Option<String>,
    /// vLLM: the name to request (`--served-model-name`; default: the first `/v1/models` id).
    #[arg(long)]
    served_model_name: Option<String>,
    #[arg(long, default_value_t = 4)]
    slots: u32,
    #[arg(long, default_value_t = 4096)]
    ctx_max: u32,
    /// Mock: tokens per second per stream (0 = unthrottled).
    #[arg(long, default_value_t = 0)]
    tokens_per_second: u32,
    #[arg(long, default_value_t = 0)]
    first_token_latency_ms: u64,
    #[arg(long)]
    error_after_tokens: Option<u32>,
    #[arg(long)]
    stall_after_tokens: Option<u32>,
    #[arg(long)]
    disconnect_after_tokens: Option<u32>,
}

fn adapter(a: &Args) -> anyhow::Result<Arc<dyn WorkerAdapter>> {
    Ok(match a.engine {
        EngineKind::Llamacpp => {
            let url = a.engine_url.clone().unwrap_or_default();
            Arc::new(LlamaCppAdapter::new(LlamaCppConfig::new(
                url,
                a.model_ref.clone(),
            ))?)
        }
        EngineKind::Tgi => {
            let mut cfg = TgiConfig::new(
                a.engine_url.clone().unwrap_or_default(),
                a.model_ref.clone(),
            );
            cfg.slots = Some(a.slots);
            Arc::new(TgiAdapter::new(cfg)?)
        }
        EngineKind::Triton => {
            let mut c = TritonConfig::new(
                a.engine_url.clone().unwrap_or_default(),
                a.triton_model.clone().unwrap_or_default(),
                match a.triton_inputs {
                    TritonInputs::Vllm => InputConvention::Vllm,
                    TritonInputs::TensorrtLlm => InputConvention::TensorrtLlm,
                },
            );
            c.model_ref = a.model_ref.clone();
            c.metrics_url = a.triton_metrics_url.clone();
            c.slots = a.slots;
            c.ctx_max = a.ctx_max;
            Arc::new(TritonAdapter::new(c)?)
        }
        EngineKind::Vllm => {
            let mut c = VllmConfig::new(
                a.engine_url.clone().unwrap_or_default(),
                a.model_ref.clone(),
            );
            c.served_model_name = a.served_model_name.clone();
            c.slots = a.slots;
            Arc::new(VllmAdapter::new(c)?)
        }
        EngineKind::Mock => Arc::new(MockAdapter::new(
            a.model_ref.clone(),
            MockBehaviour {
                slots: a.slots,
                ctx_max: a.ctx_max,
                tokens_per_second: a.tokens_per_second,
                first_token_latency: Duration::from_millis(a.first_token_latency_ms),
                error_after_tokens: a.error_after_tokens,
                stall_after_tokens: a.stall_after_tokens,
                disconnect_after_tokens: a.disconnect_after_tokens,
                interruptible: false,
                engine_build: None,
            },
        )),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    daemon_kit::init_logging();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "llorch-adapterd failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let listener = Listener::from_systemd_or_bind(&args.listen).await?;
    let router = adapter_api::server::router(adapter(&args)?);
    tracing::info!(engine = ?args.engine, listen = %listener.describe(), "serving worker protocol");
    daemon_kit::spawn_watchdog();
    daemon_kit::notify_ready("serving");
    listener
        .serve(router, async {
            daemon_kit::shutdown_signal().await;
            daemon_kit::notify_stopping();
        })
        .await?;
    Ok(())
}
