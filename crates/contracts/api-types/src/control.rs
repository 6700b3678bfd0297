//! Control-plane types (SPEC §2) that this release serves.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /v1/capabilities` (ORCH-3095, 3096).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Capabilities {
    /// Equals the OpenAPI document's `info.version`.
    pub api_version: String,
    pub engines: Vec<String>,
    pub ctx_max: u32,
    pub workloads: Vec<crate::Workload>,
    pub max_body_bytes: u64,
    pub features: Vec<String>,
    /// The quotas that apply to the calling key's tenant (ORCH-3075–3077, 3095); an absent
    /// limit is unlimited. Exceeding one is 429 ADMISSION_REJECT with Retry-After.
    pub rate_limits: RateLimits,
    /// Per engine (one entry per entry of `engines`): its context limit and capacity.
    #[serde(default)]
    pub engine_limits: Vec<EngineLimits>,
}

/// What one engine offers across the pools that run it (`GET /v1/capabilities`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EngineLimits {
    pub engine: String,
    /// Largest `ctx` a task may ask for on this engine (prompt + max_tokens must fit in it).
    pub ctx_max: u32,
    /// Pools running this engine, and the models they serve.
    pub pools: Vec<String>,
    pub models: Vec<String>,
    /// Decode slots over all its replicas, and queue places over all its pools.
    pub slots_total: u32,
    pub queue_capacity: u32,
    /// True when any of its replicas runs on CPU.
    pub cpu: bool,
}

/// A pool's load now (`GET /v1/replicasets`, and the metrics snapshot of pool health).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct PoolLoad {
    /// Slots of Ready replicas, and how many of those are free.
    pub slots_total: u32,
    pub slots_free: u32,
    /// Slots running a task, on any replica.
    pub slots_busy: u32,
    pub replicas_ready: u32,
    pub replicas_total: u32,
    pub queue_depth: u32,
    pub queue_capacity: u32,
}

/// A pool's service figures, measured on its completed tasks (absent until measured).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct SloSnapshot {
    /// When a task submitted now would start (what admission would answer).
    pub predicted_start_ms: u64,
    /// Mean dispatch-to-end time of a task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_service_ms: Option<u64>,
    /// Mean dispatch-to-first-token time over its replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_token_ms: Option<u64>,
    /// Mean decode speed of one stream over its replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_tokens_per_second: Option<f64>,
    /// Tasks with a deadline that ended on this pool, and the share that met it.
    pub deadline_tasks: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadlines_met_ratio: Option<f64>,
}

/// A tenant's quotas as `GET /v1/capabilities` reports them to that tenant.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct RateLimits {
    /// Most tasks admitted and not yet finished (queued + running), over all pools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Sustained submissions per second (token bucket).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
    /// Submissions allowed at once above the sustained rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Tokens (prompt estimate + max_tokens) per minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
}

/// Readiness of one replica as the orchestrator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaStatus {
    Ready,
    Unready,
    Draining,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaSnapshot {
    pub replica_id: String,
    pub status: ReplicaStatus,
    pub engine: String,
    pub engine_version: String,
    /// SHA-256 of the model file the replica's engine loaded, as pool-managerd reports it
    /// (ORCH-3032); absent where no supervisor reports one (adapter daemons, the mock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_digest: Option<String>,
    pub devices: Vec<u32>,
    pub slots_total: u32,
    pub slots_busy: u32,
    /// True when the replica runs on CPU (allowed only where the config says so).
    pub cpu: bool,
    /// Engine restarts so far, and whether the restart circuit breaker is open (ORCH-3053).
    pub restarts: u32,
    pub circuit_open: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// `GET /v1/pools/{id}/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PoolHealth {
    pub pool_id: String,
    pub live: bool,
    pub ready: bool,
    pub draining: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub queue_depth: u32,
    pub replicas: Vec<ReplicaSnapshot>,
    /// The pool's key metrics now: load and service figures.
    #[serde(default)]
    pub load: PoolLoad,
    #[serde(default)]
    pub slo: SloSnapshot,
}

/// One entry of `GET /v1/replicasets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaSet {
    pub pool_id: String,
    pub engine: String,
    pub model_ref: String,
    pub ctx_max: u32,
    pub queue_depth: u32,
    pub replicas: Vec<ReplicaSnapshot>,
    /// Load (slots total/free, queue) and service figures of the set.
    #[serde(default)]
    pub load: PoolLoad,
    #[serde(default)]
    pub slo: SloSnapshot,
}

/// Answer of `POST /v1/pools/{id}/policy/reload`: the plugin now installed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PolicyInfo {
    pub pool_id: String,
    pub plugin_id: String,
    /// `sha256:` prefix of the module's digest.
    pub version: String,
    /// ABI version the module exports, `major.minor`.
    pub abi: String,
}

/// `POST /v1/pools/{id}/drain` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    /// How long running tasks may continue before they are canceled; at most one day.
    #[schema(maximum = 86_400_000)]
    pub deadline_ms: u64,
}

impl DrainRequest {
    /// The longest drain deadline accepted (the schema's `maximum` says the same).
    pub const MAX_DEADLINE_MS: u64 = 24 * 3600 * 1000;
}

/// `POST /v1/pools/{id}/reload` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReloadRequest {
    #[schema(min_length = 1)]
    pub new_model_ref: String,
    /// Required SHA-256 of the new model file (UNTRUSTED_ARTIFACT on mismatch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub new_model_sha256: Option<String>,
}

/// One entry of pool-managerd's replica registry (`GET /v1/replicas`, and the `snapshot`
/// events of `GET /v1/replicas/watch`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaRecord {
    pub pool_id: String,
    pub replica_id: String,
    pub engine: String,
    /// Where the engine listens (loopback).
    pub engine_url: String,
    /// Supervisor phase: starting, ready, backoff, breaker_open, failed, stopped.
    pub phase: String,
    pub ready: bool,
    pub restarts: u32,
    pub circuit_open: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub cpu: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The engine's build as the adapters report it (e.g. `llamacpp-b1-0c1e570`), known once
    /// the replica was Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_version: Option<String>,
    /// The model the replica serves (the pool's current model_ref) and its SHA-256, when
    /// known (ORCH-3032).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_digest: Option<String>,
    /// Lifecycle state of that model in pool-managerd's catalog; absent when the model is not
    /// in the catalog (then no lifecycle applies). orchestratord refuses new work for
    /// Deprecated/Retired models and drains or unloads their pools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_state: Option<crate::ModelState>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema's `maximum` is a literal (attributes take no constants): keep it equal to
    /// the limit the handler enforces.
    #[test]
    fn drain_schema_maximum_is_the_enforced_limit() {
        let schema = serde_json::to_value(<DrainRequest as utoipa::PartialSchema>::schema())
            .expect("schema serializes");
        assert_eq!(
            schema["properties"]["deadline_ms"]["maximum"],
            serde_json::json!(DrainRequest::MAX_DEADLINE_MS)
        );
    }
}
