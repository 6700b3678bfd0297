//! Turns a replica's config into its [`WorkerAdapter`]: the worker-protocol client for a
//! replica with an `endpoint`, the in-process TGI or vLLM adapter for a tgi or vllm replica
//! with an `engine_url`, or the in-process deterministic mock (engine = "mock"), which is
//! a development/test stand-in and is reported as engine "mock" everywhere. A replica of a pool
//! with a `[pools.triton]` section talks to its Triton server directly (in-process adapter).

use std::sync::Arc;
use std::time::Duration;

use adapter_api::WorkerAdapter;
use adapter_api::client::{Endpoint, HttpWorker};
use api_types::Engine;
use config_schema::{PoolConfig, ReplicaConfig};
use mock_adapter::{MockAdapter, MockBehaviour};

pub fn adapter_for(
    pool: &PoolConfig,
    replica: &ReplicaConfig,
) -> anyhow::Result<Arc<dyn WorkerAdapter>> {
    if let (Some(url), Engine::Tgi) = (&replica.engine_url, pool.engine) {
        let mut cfg = tgi_adapter::TgiConfig::new(url, pool.model_ref.clone());
        cfg.slots = Some(replica.slots);
        return Ok(Arc::new(tgi_adapter::TgiAdapter::new(cfg)?));
    }
    if let (Some(url), Engine::Vllm) = (&replica.engine_url, pool.engine) {
        let mut cfg = vllm_adapter::VllmConfig::new(url, pool.model_ref.clone());
        cfg.slots = replica.slots;
        return Ok(Arc::new(vllm_adapter::VllmAdapter::new(cfg)?));
    }
    if let (Engine::Triton, Some(t), Some(ep)) = (pool.engine, &pool.triton, &replica.endpoint) {
        return Ok(Arc::new(triton(pool, replica, t, ep)?));
    }
    if let Some(ep) = &replica.endpoint {
        let endpoint = Endpoint::parse(ep).map_err(anyhow::Error::msg)?;
        return Ok(Arc::new(HttpWorker::new(&endpoint)?));
    }
    match pool.engine {
        Engine::Mock => {
            let m = replica.mock.unwrap_or_default();
            Ok(Arc::new(MockAdapter::new(
                pool.model_ref.clone(),
                MockBehaviour {
                    slots: replica.slots,
                    ctx_max: pool.ctx_max,
                    tokens_per_second: m.tokens_per_second,
                    first_token_latency: Duration::from_millis(m.first_token_latency_ms),
                    error_after_tokens: m.error_after_tokens,
                    stall_after_tokens: m.stall_after_tokens,
                    disconnect_after_tokens: m.disconnect_after_tokens,
                    interruptible: m.interruptible,
                    engine_build: m.engine_build,
                },
            )))
        }
        e if pool.supervised() => anyhow::bail!(
            "pool {} replica {}: supervised {} replicas run under `llorch serve`; \
             with orchestratord alone, run pool-managerd and reach the engine through the \
             replica's endpoint (llama.cpp: llorch-adapterd) or engine_url (vLLM, TGI)",
            pool.id,
            replica.id,
            e.as_str()
        ),
        e => anyhow::bail!(
            "pool {} replica {}: engine {} needs an adapter endpoint",
            pool.id,
            replica.id,
            e.as_str()
        ),
    }
}

/// The in-process Triton adapter for a replica whose endpoint is Triton's HTTP endpoint.
fn triton(
    pool: &PoolConfig,
    replica: &ReplicaConfig,
    t: &config_schema::TritonConfig,
    endpoint: &str,
) -> anyhow::Result<triton_adapter::TritonAdapter> {
    use triton_adapter::{InputConvention, TritonAdapter, TritonConfig};
    let mut c = TritonConfig::new(
        endpoint,
        t.model.clone(),
        match t.inputs {
            config_schema::TritonInputs::Vllm => InputConvention::Vllm,
            config_schema::TritonInputs::TensorrtLlm => InputConvention::TensorrtLlm,
        },
    );
    c.model_ref = pool.model_ref.clone();
    c.metrics_url = t.metrics_url.clone();
    c.slots = replica.slots;
    c.ctx_max = pool.ctx_max;
    TritonAdapter::new(c).map_err(|e| {
        anyhow::anyhow!(
            "pool {} replica {}: triton adapter: {}",
            pool.id,
            replica.id,
            e.message
        )
    })
}
