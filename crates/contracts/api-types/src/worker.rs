//! The internal worker protocol between orchestratord and an adapter (SPEC §5).
//!
//! Transport: HTTP/1.1 over a unix socket or TCP.
//! - `GET  /health`          → [`WorkerHealth`]
//! - `GET  /properties`      → [`WorkerProperties`]
//! - `POST /generate`        ← [`GenerateRequest`], → SSE of `token` / `end` / `error` events
//!   whose data are [`crate::TokenEvent`], [`crate::EndEvent`], [`crate::StreamErrorEvent`]
//! - `POST /cancel/{job_id}` → 204 once the engine slot is free again
//!
//! Engine-native endpoints never leave the adapter.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    Loading,
    Ready,
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerHealth {
    pub state: WorkerState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Engine restarts since the worker started (0 when nobody supervises the engine).
    #[serde(default)]
    pub restarts: u32,
    /// The supervisor's circuit breaker is open: no restarts for a while (ORCH-3053).
    #[serde(default)]
    pub circuit_open: bool,
}

impl WorkerHealth {
    /// Health of an engine nobody restarts (restarts 0, breaker closed).
    pub fn unsupervised(state: WorkerState, last_error: Option<String>) -> Self {
        WorkerHealth {
            state,
            last_error,
            restarts: 0,
            circuit_open: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerProperties {
    pub engine: String,
    pub engine_version: String,
    pub model_ref: String,
    pub ctx_max: u32,
    pub slots_total: u32,
    pub slots_busy: u32,
    /// Whether decode can be interrupted mid-token (hard preemption, ORCH-3086).
    pub interruptible_decode: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    pub job_id: String,
    /// The prompt text; empty when `messages` is given.
    pub prompt: String,
    /// A chat: the adapter renders it with the model's chat template (llama.cpp:
    /// `POST /apply-template`), then decodes like a prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<crate::ChatMessage>>,
    /// Resolved sampler settings; absent = the engine's own defaults (self-tests, benches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<crate::Sampling>,
    pub max_tokens: u32,
    pub seed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler_profile_version: Option<String>,
    #[serde(default)]
    pub strict_determinism: bool,
}
