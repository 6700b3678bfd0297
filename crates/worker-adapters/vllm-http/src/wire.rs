//! vLLM's OpenAI-compatible wire format (vLLM 0.32, `shared/engines/vllm.md` and the real
//! captures in `vllm-here.md`). Only the fields the adapter needs; unknown fields are ignored,
//! and `null` is accepted wherever vLLM may send it.

use adapter_api::{GenerateRequest, WorkerError};
use api_types::{ErrorCode, FinishReason};
use serde::{Deserialize, Serialize};

pub use adapter_api::engine_stream::{MAX_ENGINE_MESSAGE_BYTES, clip};

/// `stream_options`: the usage chunk (`choices: []`) before `[DONE]` carries the token counts.
#[derive(Debug, Serialize, PartialEq)]
pub struct StreamOptions {
    pub include_usage: bool,
}

/// `structured_outputs` (vLLM ≥ 0.12): a JSON schema or a grammar the output must match.
#[derive(Debug, Serialize, PartialEq)]
pub struct StructuredOutputs<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grammar: Option<&'a str>,
}

/// One chat message as OpenAI spells it.
#[derive(Debug, Serialize, PartialEq)]
pub struct Message<'a> {
    pub role: &'static str,
    pub content: &'a str,
}

/// `POST /v1/completions` (with `prompt`) or `POST /v1/chat/completions` (with `messages`).
#[derive(Debug, Serialize, PartialEq)]
pub struct CompletionRequest<'a> {
    pub model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Message<'a>>>,
    pub max_tokens: u32,
    /// Per-request generator (vLLM's seed is a signed 64-bit integer: the top bit is dropped).
    pub seed: i64,
    pub stream: bool,
    pub stream_options: StreamOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub structured_outputs: Option<StructuredOutputs<'a>>,
}

/// The seed vLLM receives for ours: the low 63 bits (vLLM validates `seed` as a signed long).
pub fn engine_seed(seed: u64) -> i64 {
    (seed & (i64::MAX as u64)) as i64
}

impl<'a> CompletionRequest<'a> {
    /// Maps a worker request. Temperature 0 is greedy (vLLM's own meaning); no sampling
    /// settings at all sends only `max_tokens` and `seed` (the engine's defaults).
    pub fn from_request(req: &'a GenerateRequest, model: &'a str) -> Result<Self, WorkerError> {
        if req.max_tokens == 0 {
            return Err(WorkerError::new(
                ErrorCode::InvalidParams,
                "vllm: max_tokens must be at least 1",
            ));
        }
        let (prompt, messages) = match &req.messages {
            Some(m) => (
                None,
                Some(
                    m.iter()
                        .map(|m| Message {
                            role: m.role.as_str(),
                            content: &m.content,
                        })
                        .collect(),
                ),
            ),
            None => (Some(req.prompt.as_str()), None),
        };
        let mut r = CompletionRequest {
            model,
            prompt,
            messages,
            max_tokens: req.max_tokens,
            seed: engine_seed(req.seed),
            stream: true,
            stream_options: StreamOptions {
                include_usage: true,
            },
            temperature: None,
            top_p: None,
            top_k: None,
            min_p: None,
            repetition_penalty: None,
            stop: &[],
            structured_outputs: None,
        };
        let Some(s) = req.sampling.as_ref() else {
            return Ok(r);
        };
        r.stop = &s.stop;
        if s.json_schema.is_some() || s.grammar.is_some() {
            r.structured_outputs = Some(StructuredOutputs {
                json: s.json_schema.as_ref(),
                grammar: s.grammar.as_deref().filter(|_| s.json_schema.is_none()),
            });
        }
        if s.repeat_penalty > 0.0 && s.repeat_penalty != 1.0 {
            r.repetition_penalty = Some(s.repeat_penalty);
        }
        if s.is_greedy() || s.temperature <= 0.0 {
            r.temperature = Some(0.0);
            return Ok(r);
        }
        r.temperature = Some(s.temperature);
        if s.top_p > 0.0 && s.top_p <= 1.0 {
            r.top_p = Some(s.top_p);
        }
        if s.top_k > 0 {
            r.top_k = Some(s.top_k);
        }
        if s.min_p > 0.0 && s.min_p <= 1.0 {
            r.min_p = Some(s.min_p);
        }
        Ok(r)
    }
}

/// `GET /v1/models` → `data[]`.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelList {
    #[serde(default)]
    pub data: Vec<ModelCard>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModelCard {
    pub id: String,
    #[serde(default)]
    pub root: Option<String>,
    #[serde(default)]
    pub max_model_len: Option<u32>,
}

/// `GET /version` → `{"version":"0.32.0"}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Version {
    pub version: String,
}

/// The OpenAI chat delta (`choices[].delta.content`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Delta {
    #[serde(default)]
    pub content: Option<String>,
}

/// One `choices[]` element of a stream chunk: completions carry `text`, chat `delta`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Choice {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub delta: Option<Delta>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

impl Choice {
    pub fn content(&self) -> &str {
        self.text
            .as_deref()
            .or(self.delta.as_ref().and_then(|d| d.content.as_deref()))
            .unwrap_or("")
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: Option<u32>,
    #[serde(default)]
    pub completion_tokens: Option<u32>,
}

/// One `data:` chunk of a completion stream. The usage chunk has `choices: []`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Chunk {
    pub choices: Vec<Choice>,
    #[serde(default)]
    pub usage: Option<Usage>,
    #[serde(default)]
    pub system_fingerprint: Option<String>,
}

/// vLLM's `finish_reason` → ours. `stop` = EOS, a stop string or a stop token; `length` =
/// `max_tokens`, or the context end (vLLM clamps `max_tokens` silently to the context left).
/// `abort` and `error` are engine failures here, not finishes.
pub fn finish_reason(s: &str) -> Option<FinishReason> {
    match s {
        "stop" => Some(FinishReason::Stop),
        "length" => Some(FinishReason::Length),
        _ => None,
    }
}

/// The error object: nested `{"error":{message,type,param,code}}` (vLLM ≥ ~0.11) or flat
/// `{"object":"error",message,type,param,code}` (older releases).
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorInfo {
    #[serde(default)]
    pub message: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub code: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
struct Nested {
    error: ErrorInfo,
}

#[derive(Debug, Clone, Deserialize)]
struct Flat {
    object: String,
    #[serde(flatten)]
    info: ErrorInfo,
}

/// FastAPI's own rejections (`{"detail": …}`).
#[derive(Debug, Clone, Deserialize)]
struct Detail {
    detail: serde_json::Value,
}

/// Parses either error shape.
pub fn parse_error(body: &[u8]) -> Option<ErrorInfo> {
    if let Ok(n) = serde_json::from_slice::<Nested>(body) {
        return Some(n.error);
    }
    match serde_json::from_slice::<Flat>(body) {
        Ok(f) if f.object == "error" => Some(f.info),
        _ => None,
    }
}

/// A vLLM error → public code, by the exception type vLLM names and else by HTTP status
/// (the body's `code` when the status is not known, e.g. inside a stream). Client mistakes
/// (a prompt longer than the context, a bad parameter) are INVALID_PARAMS; a model this
/// replica does not serve is a configuration fault (INTERNAL); backpressure is
/// REPLICA_EXHAUSTED; a dead or failing engine is WORKER_RESET.
pub fn map_error(info: &ErrorInfo, status: Option<u16>) -> WorkerError {
    let status = status.or_else(|| {
        info.code
            .as_ref()
            .and_then(|c| {
                c.as_u64()
                    .or_else(|| c.as_str().and_then(|s| s.parse().ok()))
            })
            .and_then(|c| u16::try_from(c).ok())
    });
    let kind = info.kind.as_deref().unwrap_or("");
    let code = match kind {
        "BadRequestError" | "Bad Request" | "ValidationError" | "invalid_request_error" => {
            ErrorCode::InvalidParams
        }
        "NotFoundError" => ErrorCode::Internal,
        "EngineDeadError" | "EngineGenerateError" | "InternalServerError" => ErrorCode::WorkerReset,
        "ServiceUnavailableError" => ErrorCode::PoolUnready,
        "TooManyRequests" | "RateLimitError" => ErrorCode::ReplicaExhausted,
        _ => by_status(status),
    };
    WorkerError::new(
        code,
        format!(
            "vllm {}: {}",
            clip(if kind.is_empty() { "error" } else { kind }, 40),
            clip(&info.message, MAX_ENGINE_MESSAGE_BYTES)
        ),
    )
}

fn by_status(status: Option<u16>) -> ErrorCode {
    match status {
        Some(400) | Some(422) => ErrorCode::InvalidParams,
        Some(429) => ErrorCode::ReplicaExhausted,
        Some(503) => ErrorCode::PoolUnready,
        Some(404) => ErrorCode::Internal,
        Some(s) if (400..500).contains(&s) => ErrorCode::Internal,
        _ => ErrorCode::WorkerReset,
    }
}

/// An HTTP error answer: vLLM's JSON (either shape), FastAPI's `detail`, or plain text.
pub fn error_from_body(status: u16, body: &[u8]) -> WorkerError {
    if let Some(info) = parse_error(body) {
        return map_error(&info, Some(status));
    }
    let text = match serde_json::from_slice::<Detail>(body) {
        Ok(d) => d.detail.to_string(),
        Err(_) => {
            String::from_utf8_lossy(&body[..body.len().min(MAX_ENGINE_MESSAGE_BYTES)]).into_owned()
        }
    };
    WorkerError::new(
        by_status(Some(status)),
        format!(
            "vllm answered HTTP {status}: {}",
            clip(text.trim(), MAX_ENGINE_MESSAGE_BYTES)
        ),
    )
}

/// One parsed `data:` payload of a completion stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Chunk(Box<Chunk>),
    Done,
    Error(WorkerError),
}

/// Parses one SSE `data:` payload; `[DONE]` ends the stream, an error payload becomes the
/// mapped error, anything else is WORKER_RESET with a bounded message.
pub fn parse_event(data: &str) -> Event {
    if data.trim() == "[DONE]" {
        return Event::Done;
    }
    if let Ok(c) = serde_json::from_str::<Chunk>(data) {
        return Event::Chunk(Box::new(c));
    }
    if let Some(e) = parse_error(data.as_bytes()) {
        return Event::Error(map_error(&e, None));
    }
    let detail = match serde_json::from_str::<serde_json::Value>(data) {
        Ok(_) => "not a vLLM stream chunk".to_string(),
        Err(e) => e.to_string(),
    };
    Event::Error(WorkerError::new(
        ErrorCode::WorkerReset,
        format!(
            "bad vllm event: {}",
            clip(&detail, MAX_ENGINE_MESSAGE_BYTES)
        ),
    ))
}

#[cfg(test)]
mod tests;
