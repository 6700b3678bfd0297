//! OrchQueue v1 data-plane types (SPEC §1).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What kind of work a task asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// Text continuation of `prompt`.
    Completion,
    /// A reply to `messages`, rendered by the model's chat template.
    Chat,
    Embedding,
    Rerank,
}

/// Engines a task may ask for explicitly.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    Llamacpp,
    Vllm,
    Tgi,
    Triton,
    /// Deterministic stand-in engine for development, tests and benchmarks.
    Mock,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Llamacpp => "llamacpp",
            Engine::Vllm => "vllm",
            Engine::Tgi => "tgi",
            Engine::Triton => "triton",
            Engine::Mock => "mock",
        }
    }
}

/// Scheduling priority class. Order matters: `Interactive` is served before `Batch`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    ToSchema,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Interactive,
    Batch,
}

impl Priority {
    pub const ALL: [Priority; 2] = [Priority::Interactive, Priority::Batch];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Batch => "batch",
        }
    }

    /// Dense index, usable for per-priority arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Determinism {
    Strict,
    BestEffort,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KvHint {
    Reuse,
    Cold,
}

/// Body of `POST /v1/tasks` (ORCH-2001). Unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    /// Client-chosen id (1–128 chars of `[A-Za-z0-9._:-]`); the server assigns a UUID if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Tenant comes from the API key; if given it must equal the key's tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub workload: Workload,
    #[schema(min_length = 1)]
    pub model_ref: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<Engine>,
    /// Context window the task needs, in tokens; must not exceed the pool's `ctx_max`.
    #[schema(minimum = 1)]
    pub ctx: u32,
    #[serde(default = "default_priority")]
    pub priority: Priority,
    /// Sampling seed; derived deterministically from task_id when absent (ORCH-3045).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub determinism: Option<Determinism>,
    /// Names how absent sampling fields are filled in and values normalized: only `v1` exists
    /// (absent = `v1`); see docs/api/README.md#sampling. Same profile + seed + parameters on one
    /// replica set = the same tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler_profile_version: Option<String>,
    /// Text to continue (workload `completion`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Conversation to answer (workload `chat`), 1–256 messages; the engine applies the
    /// model's chat template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<crate::ChatMessage>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Vec<String>>,
    /// Sampling temperature in [0, 2]; 0 = greedy. Default (profile v1): 0.8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 2.0)]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass in (0, 1]. Default: 0.95.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub top_p: Option<f32>,
    /// Keep the k most likely tokens, 0–1000 (0 = off). Default: 40.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 1000)]
    pub top_k: Option<u32>,
    /// Drop tokens below min_p × the top token's probability, in [0, 1]. Default: 0.05.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub min_p: Option<f32>,
    /// Repetition penalty in (0, 2] (1 = off). Default: 1.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0.0, maximum = 2.0)]
    pub repeat_penalty: Option<f32>,
    /// Up to 4 stop sequences (1–256 bytes each). The stream ends before the first match, with
    /// `finish_reason: stop`; the matched text is not emitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    /// GBNF grammar the output must match (at most one of `grammar` and `json_schema`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grammar: Option<String>,
    /// JSON Schema (an object) the output must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub json_schema: Option<serde_json::Value>,
    #[schema(minimum = 1)]
    pub max_tokens: u32,
    /// Relative deadline from submission, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_hint: Option<KvHint>,
}

fn default_priority() -> Priority {
    Priority::Interactive
}

/// 202 body of `POST /v1/tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskAccepted {
    pub task_id: String,
    /// Number of tasks ahead of this one in its pool's dispatch order (0 = next).
    pub queue_position: u32,
    pub predicted_start_ms: u64,
    /// Suggested delay before opening the stream; 0 when it can be opened at once.
    pub backoff_ms: u64,
    /// Relative URL of the SSE stream (same as the `Location` header).
    pub stream_url: String,
    /// The session's token budget left after this turn's reservation (also the
    /// `X-Tokens-Budget-Remaining` header); absent without a budget or session. The same
    /// name in the `metrics` event and `GET /v1/sessions/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_budget_remaining: Option<u64>,
    /// The session's decode-time budget left (also `X-Time-Budget-Remaining-Ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_budget_remaining_ms: Option<u64>,
}

/// `started` SSE event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StartedEvent {
    pub queue_position: u32,
    pub predicted_start_ms: u64,
    /// Estimated probability of finishing by `deadline_ms` (1.0 without a deadline).
    #[serde(default = "one")]
    pub on_time_probability: f64,
}

fn one() -> f64 {
    1.0
}

/// `token` SSE event: token text `t` at index `i` (0-based, gap-free).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenEvent {
    pub t: String,
    pub i: u32,
}

/// `metrics` SSE event. Fields are additive: clients must ignore ones they do not know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricsEvent {
    pub queue_depth: u32,
    pub on_time_probability: f64,
    pub kv_warmth: bool,
    /// The session's token budget left after this turn's reservation (absent: no token
    /// budget or no session). One name with the 202 body, its header and the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_budget_remaining: Option<u64>,
    /// The session's decode-time budget left (absent: no budget or no session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_budget_remaining_ms: Option<u64>,
}

/// `end` SSE event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EndEvent {
    pub tokens_out: u32,
    pub decode_ms: u64,
    /// `stop` (end of sequence or a stop sequence) or `length` (max_tokens reached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<crate::FinishReason>,
    /// Prompt tokens as counted by the engine (absent when the engine does not report them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u32>,
}

/// `error` SSE event; terminal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StreamErrorEvent {
    pub code: crate::ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retriable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// One event of a task stream, as carried in SSE (`event:` name + JSON `data:`).
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Started(StartedEvent),
    Token(TokenEvent),
    Metrics(MetricsEvent),
    End(EndEvent),
    Error(StreamErrorEvent),
}

impl StreamEvent {
    pub fn name(&self) -> &'static str {
        use crate::sse_event::*;
        match self {
            StreamEvent::Started(_) => STARTED,
            StreamEvent::Token(_) => TOKEN,
            StreamEvent::Metrics(_) => METRICS,
            StreamEvent::End(_) => END,
            StreamEvent::Error(_) => ERROR,
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, StreamEvent::End(_) | StreamEvent::Error(_))
    }

    /// JSON payload for the SSE `data:` line (single line, no newlines).
    pub fn data_json(&self) -> String {
        let r = match self {
            StreamEvent::Started(e) => serde_json::to_string(e),
            StreamEvent::Token(e) => serde_json::to_string(e),
            StreamEvent::Metrics(e) => serde_json::to_string(e),
            StreamEvent::End(e) => serde_json::to_string(e),
            StreamEvent::Error(e) => serde_json::to_string(e),
        };
        // Serializing these plain structs cannot fail (no maps with non-string keys).
        r.unwrap_or_else(|_| "{}".to_string())
    }

    /// Parses an SSE event back from its name and data (used by clients and tests).
    pub fn parse(name: &str, data: &str) -> Result<StreamEvent, String> {
        use crate::sse_event::*;
        let e = |err: serde_json::Error| format!("bad `{name}` event data: {err}");
        Ok(match name {
            STARTED => StreamEvent::Started(serde_json::from_str(data).map_err(e)?),
            TOKEN => StreamEvent::Token(serde_json::from_str(data).map_err(e)?),
            METRICS => StreamEvent::Metrics(serde_json::from_str(data).map_err(e)?),
            END => StreamEvent::End(serde_json::from_str(data).map_err(e)?),
            ERROR => StreamEvent::Error(serde_json::from_str(data).map_err(e)?),
            other => return Err(format!("unknown event `{other}`")),
        })
    }
}

/// `GET /v1/sessions/{id}` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    pub session_id: String,
    pub ttl_ms_remaining: u64,
    pub turns: u32,
    pub kv_bytes: u64,
    pub kv_warmth: bool,
    /// Token budget left (absent when `sessions.token_budget` is not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_budget_remaining: Option<u64>,
    /// Decode-time budget left (absent when `sessions.time_budget_ms` is not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_budget_remaining_ms: Option<u64>,
}
