//! llama-server's native wire format, as observed from llama.cpp b1-0c1e570 (vendored by
//! llama-cpp-python 0.3.36). Only the fields the adapter needs; unknown fields are ignored
//! because llama.cpp adds fields often.

use adapter_api::WorkerError;
use api_types::ErrorCode;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize)]
pub struct CompletionRequest<'a> {
    pub prompt: &'a str,
    pub n_predict: u32,
    pub stream: bool,
    pub seed: u64,
    pub id_slot: u32,
    pub cache_prompt: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat_penalty: Option<f32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grammar: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<&'a serde_json::Value>,
}

impl<'a> CompletionRequest<'a> {
    /// Maps the resolved sampling (profile v1) onto llama-server's fields; `None` keeps the
    /// engine's defaults (with the adapter's configured temperature, if any).
    pub fn with_sampling(mut self, s: Option<&'a api_types::Sampling>) -> Self {
        let Some(s) = s else { return self };
        self.temperature = Some(s.temperature);
        self.top_p = Some(s.top_p);
        self.top_k = Some(s.top_k);
        self.min_p = Some(s.min_p);
        self.repeat_penalty = Some(s.repeat_penalty);
        self.stop = &s.stop;
        self.grammar = s.grammar.as_deref();
        self.json_schema = s.json_schema.as_ref();
        self
    }
}

/// `POST /apply-template` body: the model's chat template renders `messages` into a prompt.
#[derive(Debug, Serialize)]
pub struct ApplyTemplate<'a> {
    pub messages: &'a [api_types::ChatMessage],
}

#[derive(Debug, Deserialize)]
pub struct Applied {
    pub prompt: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Timings {
    pub predicted_ms: f64,
}

/// One `data:` line of a streaming `/completion`.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionChunk {
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub stop: bool,
    #[serde(default)]
    pub timings: Option<Timings>,
    /// Final chunk: `eos`, `word` (a stop string matched) or `limit` (n_predict reached).
    #[serde(default)]
    pub stop_type: Option<String>,
    /// Prompt tokens the engine evaluated.
    #[serde(default)]
    pub tokens_evaluated: Option<u32>,
}

impl CompletionChunk {
    pub fn finish_reason(&self) -> Option<api_types::FinishReason> {
        match self.stop_type.as_deref()? {
            "limit" => Some(api_types::FinishReason::Length),
            "eos" | "word" => Some(api_types::FinishReason::Stop),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct GenerationSettings {
    pub n_ctx: u32,
}

/// `/props`.
#[derive(Debug, Clone, Deserialize)]
pub struct Props {
    pub default_generation_settings: GenerationSettings,
    pub total_slots: u32,
    #[serde(default)]
    pub build_info: String,
    #[serde(default)]
    pub model_path: String,
}

/// One element of `/slots`.
#[derive(Debug, Clone, Deserialize)]
pub struct Slot {
    pub id: u32,
    #[serde(default)]
    pub n_ctx: u32,
    pub is_processing: bool,
}

/// llama-server's error body: `{"error":{"code","message","type"}}`.
#[derive(Debug, Clone, Deserialize)]
pub struct EngineError {
    #[serde(default)]
    pub code: u16,
    #[serde(default)]
    pub message: String,
    #[serde(default, rename = "type")]
    pub kind: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: EngineError,
}

/// Maps llama-server's error types to the public codes (ORCH-3058).
pub fn map_error(e: &EngineError) -> WorkerError {
    let code = match e.kind.as_str() {
        "invalid_request_error" | "exceed_context_size_error" | "not_supported_error" => {
            ErrorCode::InvalidParams
        }
        "unavailable_error" => ErrorCode::PoolUnready,
        "authentication_error" | "permission_error" | "not_found_error" => ErrorCode::Internal,
        _ if e.code == 503 => ErrorCode::PoolUnready,
        _ => ErrorCode::Internal,
    };
    WorkerError::new(
        code,
        format!(
            "llama-server: {}",
            clip(&e.message, MAX_ENGINE_MESSAGE_BYTES)
        ),
    )
}

/// How much of an engine's error message reaches clients: enough for any real llama-server
/// message, while a misbehaving engine cannot make error envelopes arbitrarily large.
pub const MAX_ENGINE_MESSAGE_BYTES: usize = 512;

use adapter_api::engine_stream::clip;

pub fn error_from_body(status: u16, body: &[u8]) -> WorkerError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => map_error(&b.error),
        Err(_) => WorkerError::new(
            if status == 503 {
                ErrorCode::PoolUnready
            } else {
                ErrorCode::WorkerReset
            },
            format!("llama-server answered HTTP {status}"),
        ),
    }
}

/// Parses one SSE `data:` payload; an `{"error":…}` payload becomes the mapped error.
pub fn parse_chunk(data: &str) -> Result<CompletionChunk, WorkerError> {
    if let Ok(b) = serde_json::from_str::<ErrorBody>(data) {
        return Err(map_error(&b.error));
    }
    serde_json::from_str(data).map_err(|e| {
        // serde quotes offending values: bound what an engine can put into the message.
        let detail = e.to_string();
        WorkerError::new(
            ErrorCode::WorkerReset,
            format!(
                "bad llama-server chunk: {}",
                clip(&detail, MAX_ENGINE_MESSAGE_BYTES)
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever an engine sends as a chunk or an error body, the adapter gets a typed
        /// result (never a panic), and an error's message stays bounded.
        #[test]
        fn any_engine_bytes_give_a_typed_bounded_result(
            text in "\\PC{0,600}",
            body in prop::collection::vec(any::<u8>(), 0..700),
            status in 100u16..600,
            message in "\\PC{0,2000}",
        ) {
            let bound = "bad llama-server chunk: ".len() + MAX_ENGINE_MESSAGE_BYTES;
            // Arbitrary text, and a JSON string (which serde quotes back in its error).
            for chunk in [text.clone(), serde_json::json!(message).to_string()] {
                if let Err(e) = parse_chunk(&chunk) {
                    prop_assert!(e.message.len() <= bound, "{}", e.message);
                }
            }
            prop_assert!(error_from_body(status, &body).message.len() <= bound);
            let wrapped = serde_json::json!({"error": {"message": message, "type": "server_error", "code": status}});
            let e = error_from_body(status, wrapped.to_string().as_bytes());
            prop_assert!(e.message.len() <= bound);
            prop_assert!(e.message.starts_with("llama-server: "));
        }
    }

    // Captured from a real llama-server (see module docs).
    const TOKEN: &str = r#"{"index":0,"content":" beauty","tokens":[6122],"stop":false,"id_slot":-1,"tokens_predicted":2,"tokens_evaluated":7}"#;
    const FINAL: &str = r#"{"index":0,"content":"","tokens":[],"id_slot":1,"stop":true,"tokens_predicted":5,"tokens_evaluated":7,"stop_type":"limit","timings":{"cache_n":0,"prompt_n":7,"prompt_ms":314.44,"predicted_n":5,"predicted_ms":69.528}}"#;
    const CTX: &str = r#"{"error":{"code":400,"message":"request (401 tokens) exceeds the available context size (256 tokens), try increasing it","type":"exceed_context_size_error","n_prompt_tokens":401,"n_ctx":256}}"#;
    const LOADING: &str =
        r#"{"error":{"message":"Loading model","type":"unavailable_error","code":503}}"#;

    #[test]
    fn parses_captured_chunks() {
        let t = parse_chunk(TOKEN).unwrap();
        assert_eq!((t.content.as_str(), t.stop), (" beauty", false));
        let f = parse_chunk(FINAL).unwrap();
        assert!(f.stop && f.content.is_empty());
        assert_eq!(f.finish_reason(), Some(api_types::FinishReason::Length));
        assert_eq!(f.tokens_evaluated, Some(7));
        assert_eq!(f.timings.unwrap().predicted_ms, 69.528);
    }

    /// Every resolved sampling field reaches llama-server under its own name; without
    /// sampling, the engine's defaults stay (no field sent).
    #[test]
    fn sampling_maps_onto_completion_fields() {
        let s = api_types::Sampling {
            profile: "v1".into(),
            temperature: 0.3,
            top_p: 0.5,
            top_k: 7,
            min_p: 0.1,
            repeat_penalty: 1.1,
            stop: vec!["\n\n".into()],
            grammar: Some("root ::= \"a\"".into()),
            json_schema: None,
        };
        let base = || CompletionRequest {
            prompt: "p",
            n_predict: 4,
            stream: true,
            seed: 1,
            id_slot: 0,
            cache_prompt: true,
            temperature: None,
            top_p: None,
            top_k: None,
            min_p: None,
            repeat_penalty: None,
            stop: &[],
            grammar: None,
            json_schema: None,
        };
        let v = serde_json::to_value(base().with_sampling(Some(&s))).unwrap();
        assert_eq!(v["temperature"], 0.3f32 as f64);
        assert_eq!(v["top_p"], 0.5);
        assert_eq!(v["top_k"], 7);
        assert_eq!(v["min_p"], 0.1f32 as f64);
        assert_eq!(v["repeat_penalty"], 1.1f32 as f64);
        assert_eq!(v["stop"], serde_json::json!(["\n\n"]));
        assert_eq!(v["grammar"], "root ::= \"a\"");
        assert!(v.get("json_schema").is_none());
        let v = serde_json::to_value(base().with_sampling(None)).unwrap();
        for k in [
            "temperature",
            "top_p",
            "top_k",
            "min_p",
            "repeat_penalty",
            "stop",
            "grammar",
        ] {
            assert!(v.get(k).is_none(), "{k} sent without sampling");
        }
    }

    /// llama-server's errors become the public error codes (ORCH-3058).
    #[test]
    fn maps_engine_errors() {
        assert_eq!(parse_chunk(CTX).unwrap_err().code, ErrorCode::InvalidParams);
        assert_eq!(
            error_from_body(503, LOADING.as_bytes()).code,
            ErrorCode::PoolUnready
        );
        assert_eq!(error_from_body(500, b"<html>").code, ErrorCode::WorkerReset);
        assert_eq!(
            parse_chunk("{not json").unwrap_err().code,
            ErrorCode::WorkerReset
        );
    }
}
