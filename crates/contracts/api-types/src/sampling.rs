//! Sampling, stop sequences, output constraints and chat messages (SPEC §1, issue 14 item 0):
//! what a task may ask of the sampler, and the normalized form every engine adapter receives.
//!
//! A task's sampling fields are optional; the orchestrator resolves them under a named
//! *sampler profile* ([`SAMPLER_PROFILE_V1`]) into a [`Sampling`] with every value explicit, so
//! that no engine build's own defaults decide the result and every replica of a replica set
//! samples identically for the same (prompt, seed, parameters).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The one sampler profile served today; `sampler_profile_version` absent means this one.
pub const SAMPLER_PROFILE_V1: &str = "v1";

/// Defaults of profile `v1` for fields a task leaves out. They are llama.cpp's own defaults of
/// the pinned build, written down here so that an engine build whose defaults change does not
/// change results within the profile.
pub mod defaults_v1 {
    pub const TEMPERATURE: f32 = 0.8;
    pub const TOP_P: f32 = 0.95;
    pub const TOP_K: u32 = 40;
    pub const MIN_P: f32 = 0.05;
    pub const REPEAT_PENALTY: f32 = 1.0;
}

/// Bounds checked at admission (INVALID_PARAMS naming the field otherwise).
pub mod bounds {
    /// `temperature` in `[0, MAX_TEMPERATURE]`; 0 is greedy.
    pub const MAX_TEMPERATURE: f32 = 2.0;
    /// `top_k` in `[0, MAX_TOP_K]`; 0 disables the filter.
    pub const MAX_TOP_K: u32 = 1000;
    /// `repeat_penalty` in `(0, MAX_REPEAT_PENALTY]`; 1 disables it.
    pub const MAX_REPEAT_PENALTY: f32 = 2.0;
    /// At most this many stop sequences, each 1..=MAX_STOP_BYTES bytes.
    pub const MAX_STOPS: usize = 4;
    pub const MAX_STOP_BYTES: usize = 256;
    /// Largest `grammar` (GBNF text) and `json_schema` (serialized) accepted.
    pub const MAX_CONSTRAINT_BYTES: usize = 16 * 1024;
    /// At most this many chat messages per task.
    pub const MAX_MESSAGES: usize = 256;
}

/// Author of a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChatRole {
    System,
    User,
    Assistant,
}

impl ChatRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ChatRole::System => "system",
            ChatRole::User => "user",
            ChatRole::Assistant => "assistant",
        }
    }
}

/// One message of a `chat` task; the model's chat template turns the list into its prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    pub role: ChatRole,
    pub content: String,
}

/// Why a stream ended normally (the `end` event's `finish_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended (end-of-sequence) or a stop sequence matched (not included in the text).
    Stop,
    /// `max_tokens` reached.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// The resolved sampler settings an adapter receives (worker protocol): every value explicit.
/// Adapters map each field to their engine; a field an engine cannot honour is an
/// INVALID_PARAMS refusal, never silently dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Sampling {
    /// The profile that produced these values (`v1`).
    pub profile: String,
    /// 0 = greedy (the adapter also sets top_k = 1).
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: u32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// GBNF grammar the output must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grammar: Option<String>,
    /// JSON Schema the output must match (the engine converts it to a grammar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub json_schema: Option<serde_json::Value>,
}

impl Sampling {
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}
