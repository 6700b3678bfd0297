//! TGI's router wire format (text-generation-inference 3.3.x, `shared/engines/tgi.md`). Only the
//! fields the adapter needs; unknown fields are ignored.

use adapter_api::{GenerateRequest, WorkerError};
use api_types::{ErrorCode, FinishReason};
use serde::{Deserialize, Serialize};

pub use adapter_api::engine_stream::{MAX_ENGINE_MESSAGE_BYTES, clip};

/// `POST /generate_stream` body.
#[derive(Debug, Serialize)]
pub struct GenerateStreamRequest<'a> {
    pub inputs: &'a str,
    pub parameters: Parameters<'a>,
}

/// `GenerateParameters`, as the adapter sends them. Greedy is `do_sample: false` with no
/// temperature/top_k/top_p (TGI rejects `temperature: 0` with 422 and treats any warper as
/// sampling).
#[derive(Debug, Serialize, PartialEq)]
pub struct Parameters<'a> {
    pub do_sample: bool,
    pub max_new_tokens: u32,
    pub seed: u64,
    /// Always requested: the last event then carries finish reason and token counts.
    pub details: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grammar: Option<Grammar<'a>>,
}

/// TGI's `grammar` parameter (`{"type":"json","value":<schema>}`); TGI has no GBNF.
#[derive(Debug, Serialize, PartialEq)]
pub struct Grammar<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub value: &'a serde_json::Value,
}

impl<'a> Parameters<'a> {
    /// Maps a worker request onto TGI's parameters. Temperature 0 (or no sampling at all) is
    /// greedy: `do_sample: false` and no warpers. Settings TGI cannot express are refused
    /// (INVALID_PARAMS) rather than silently dropped, except `min_p`, which TGI lacks: it is
    /// not applied (documented in the README).
    pub fn from_request(req: &'a GenerateRequest) -> Result<Self, WorkerError> {
        let mut p = Parameters {
            do_sample: false,
            max_new_tokens: req.max_tokens,
            seed: req.seed,
            details: true,
            temperature: None,
            top_k: None,
            top_p: None,
            repetition_penalty: None,
            stop: &[],
            grammar: None,
        };
        if req.max_tokens == 0 {
            return Err(WorkerError::new(
                ErrorCode::InvalidParams,
                "tgi: max_tokens must be at least 1",
            ));
        }
        let Some(s) = req.sampling.as_ref() else {
            return Ok(p);
        };
        if s.grammar.is_some() {
            return Err(WorkerError::new(
                ErrorCode::InvalidParams,
                "tgi: GBNF grammars are not supported by TGI (use json_schema)",
            ));
        }
        p.stop = &s.stop;
        p.grammar = s.json_schema.as_ref().map(|v| Grammar {
            kind: "json",
            value: v,
        });
        if s.repeat_penalty > 0.0 && s.repeat_penalty != 1.0 {
            p.repetition_penalty = Some(s.repeat_penalty);
        }
        if s.is_greedy() || s.temperature <= 0.0 {
            return Ok(p);
        }
        p.do_sample = true;
        p.temperature = Some(s.temperature);
        // TGI: 0 < top_p < 1 and top_k > 0; the "off" values are left out.
        if s.top_p > 0.0 && s.top_p < 1.0 {
            p.top_p = Some(s.top_p);
        }
        if s.top_k > 0 {
            p.top_k = Some(s.top_k);
        }
        Ok(p)
    }
}

/// `POST /chat_tokenize` body (TGI's OpenAI `ChatRequest`; only the chat is sent).
#[derive(Debug, Serialize)]
pub struct ChatTokenizeRequest<'a> {
    pub model: &'static str,
    pub messages: &'a [api_types::ChatMessage],
}

/// `POST /chat_tokenize` answer (schema `ChatTokenizeResponse`): the chat rendered with the
/// model's own template.
#[derive(Debug, Deserialize)]
pub struct ChatTokenizeResponse {
    pub templated_text: String,
}

/// `GET /info` (schema `Info`), the fields the adapter reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Info {
    pub model_id: String,
    pub max_concurrent_requests: u32,
    #[serde(default)]
    pub max_input_tokens: Option<u32>,
    pub max_total_tokens: u32,
    #[serde(default)]
    pub max_stop_sequences: Option<u32>,
    pub version: String,
    #[serde(default)]
    pub sha: Option<String>,
}

impl Info {
    /// `tgi-<version>` plus `+<sha>` (the first 12 characters) when the build reports one.
    pub fn engine_version(&self) -> String {
        match self.sha.as_deref().filter(|s| !s.is_empty()) {
            Some(sha) => format!("tgi-{}+{}", clip(&self.version, 64), clip(sha, 12)),
            None => format!("tgi-{}", clip(&self.version, 64)),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Token {
    #[serde(default)]
    pub id: u32,
    pub text: String,
    #[serde(default)]
    pub logprob: Option<f32>,
    #[serde(default)]
    pub special: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct StreamDetails {
    pub finish_reason: String,
    #[serde(default)]
    pub generated_tokens: Option<u32>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub input_length: Option<u32>,
}

impl StreamDetails {
    pub fn finish_reason(&self) -> Option<FinishReason> {
        match self.finish_reason.as_str() {
            "length" => Some(FinishReason::Length),
            "eos_token" | "stop_sequence" => Some(FinishReason::Stop),
            _ => None,
        }
    }
}

/// One `data:` event of `/generate_stream`: a token; the last one has `generated_text`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct StreamResponse {
    #[serde(default)]
    pub index: Option<u32>,
    pub token: Token,
    #[serde(default)]
    pub generated_text: Option<String>,
    #[serde(default)]
    pub details: Option<StreamDetails>,
}

/// `{"error":"…","error_type":"…"}` (schema `ErrorResponse`).
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorResponse {
    pub error: String,
    #[serde(default)]
    pub error_type: String,
}

/// TGI's `error_type`s (router/src/infer/mod.rs) → public codes. `overloaded` is backpressure
/// (REPLICA_EXHAUSTED, retried by the scheduler); validation-like types are the client's
/// (INVALID_PARAMS); a failed or cut generation is the engine's (WORKER_RESET).
pub fn map_error(error_type: &str, message: &str, status: Option<u16>) -> WorkerError {
    let code = match error_type {
        "overloaded" => ErrorCode::ReplicaExhausted,
        "validation" | "template_error" | "missing_template_variable" | "tool_error" => {
            ErrorCode::InvalidParams
        }
        "generation" | "incomplete_generation" | "incomplete_generation_stream" => {
            ErrorCode::WorkerReset
        }
        "healthcheck" => ErrorCode::PoolUnready,
        "stream_serialization_error" => ErrorCode::Internal,
        _ => match status {
            Some(429) => ErrorCode::ReplicaExhausted,
            Some(422) => ErrorCode::InvalidParams,
            Some(503) => ErrorCode::PoolUnready,
            Some(424) | Some(502) | Some(504) => ErrorCode::WorkerReset,
            _ => ErrorCode::Internal,
        },
    };
    WorkerError::new(
        code,
        format!(
            "tgi {}: {}",
            clip(error_type, 40),
            clip(message, MAX_ENGINE_MESSAGE_BYTES)
        ),
    )
}

/// An HTTP error answer: TGI's JSON body, or axum's plain-text extractor rejection.
pub fn error_from_body(status: u16, body: &[u8]) -> WorkerError {
    if let Ok(e) = serde_json::from_slice::<ErrorResponse>(body) {
        return map_error(&e.error_type, &e.error, Some(status));
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_ENGINE_MESSAGE_BYTES)]);
    let code = match status {
        429 => ErrorCode::ReplicaExhausted,
        422 => ErrorCode::InvalidParams,
        503 => ErrorCode::PoolUnready,
        // 400/415: our request was malformed in TGI's eyes — an adapter bug, not the client's.
        400..=499 => ErrorCode::Internal,
        _ => ErrorCode::WorkerReset,
    };
    WorkerError::new(
        code,
        format!(
            "tgi answered HTTP {status}: {}",
            clip(text.trim(), MAX_ENGINE_MESSAGE_BYTES)
        ),
    )
}

/// One parsed `data:` payload of `/generate_stream`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Token(Box<StreamResponse>),
    Error(WorkerError),
}

/// Parses one SSE `data:` payload; an error payload becomes the mapped error, anything that
/// is neither a token nor an error is WORKER_RESET with a bounded message.
pub fn parse_event(data: &str) -> Event {
    if let Ok(t) = serde_json::from_str::<StreamResponse>(data) {
        return Event::Token(Box::new(t));
    }
    if let Ok(e) = serde_json::from_str::<ErrorResponse>(data) {
        return Event::Error(map_error(&e.error_type, &e.error, None));
    }
    let detail = match serde_json::from_str::<serde_json::Value>(data) {
        Ok(_) => "not a TGI stream event".to_string(),
        Err(e) => e.to_string(),
    };
    Event::Error(WorkerError::new(
        ErrorCode::WorkerReset,
        format!("bad tgi event: {}", clip(&detail, MAX_ENGINE_MESSAGE_BYTES)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use test_fixtures::fake_engine::{sampling, wire_req as req};

    // The two events of tgi.md, byte for byte.
    const TOKEN: &str = r#"{"index":1,"token":{"id":1034,"text":" the","logprob":-0.52,"special":false},"generated_text":null,"details":null}"#;
    const LAST: &str = r#"{"index":8,"token":{"id":2,"text":"</s>","logprob":-0.1,"special":true},"generated_text":"full text","details":{"finish_reason":"eos_token","generated_tokens":8,"seed":42,"input_length":5}}"#;
    const OVERLOADED: &str = r#"{"error":"Model is overloaded","error_type":"overloaded"}"#;

    #[test]
    fn parses_the_documented_events() {
        let Event::Token(t) = parse_event(TOKEN) else {
            panic!()
        };
        assert_eq!(
            (t.index, t.token.id, t.token.text.as_str()),
            (Some(1), 1034, " the")
        );
        assert!(t.generated_text.is_none() && t.details.is_none());
        let Event::Token(l) = parse_event(LAST) else {
            panic!()
        };
        assert!(l.token.special);
        let d = l.details.unwrap();
        assert_eq!(d.finish_reason(), Some(FinishReason::Stop));
        assert_eq!(
            (d.generated_tokens, d.input_length, d.seed),
            (Some(8), Some(5), Some(42))
        );
        let Event::Error(e) = parse_event(OVERLOADED) else {
            panic!()
        };
        assert_eq!(e.code, ErrorCode::ReplicaExhausted);
        assert!(e.retriable);
    }

    #[test]
    fn error_types_map_to_public_codes() {
        for (t, code) in [
            ("validation", ErrorCode::InvalidParams),
            ("overloaded", ErrorCode::ReplicaExhausted),
            ("generation", ErrorCode::WorkerReset),
            ("incomplete_generation", ErrorCode::WorkerReset),
            ("incomplete_generation_stream", ErrorCode::WorkerReset),
            ("template_error", ErrorCode::InvalidParams),
            ("stream_serialization_error", ErrorCode::Internal),
            ("healthcheck", ErrorCode::PoolUnready),
        ] {
            assert_eq!(map_error(t, "m", None).code, code, "{t}");
        }
        assert_eq!(
            error_from_body(429, OVERLOADED.as_bytes()).code,
            ErrorCode::ReplicaExhausted
        );
        // axum's extractor rejection: plain text.
        assert_eq!(
            error_from_body(422, b"Failed to deserialize the JSON body").code,
            ErrorCode::InvalidParams
        );
        assert_eq!(error_from_body(500, b"<html>").code, ErrorCode::WorkerReset);
        assert_eq!(error_from_body(415, b"Expected").code, ErrorCode::Internal);
    }

    #[test]
    fn greedy_is_do_sample_false_without_temperature() {
        for r in [req(None), req(Some(sampling(0.0)))] {
            let v = serde_json::to_value(Parameters::from_request(&r).unwrap()).unwrap();
            assert_eq!(v["do_sample"], false);
            assert_eq!(v["seed"], 7);
            assert_eq!(v["max_new_tokens"], 8);
            assert_eq!(v["details"], true);
            for k in ["temperature", "top_k", "top_p"] {
                assert!(v.get(k).is_none(), "{k} sent for greedy: {v}");
            }
        }
        let v = serde_json::to_value(Parameters::from_request(&req(Some(sampling(0.0)))).unwrap())
            .unwrap();
        assert_eq!(v["stop"], serde_json::json!(["\n\n"]));
    }

    #[test]
    fn sampling_maps_onto_tgi_parameters() {
        let v = serde_json::to_value(Parameters::from_request(&req(Some(sampling(0.7)))).unwrap())
            .unwrap();
        assert_eq!(v["do_sample"], true);
        assert_eq!(v["temperature"], 0.7f32 as f64);
        assert_eq!(v["top_p"], 0.9f32 as f64);
        assert_eq!(v["top_k"], 40);
        assert_eq!(v["repetition_penalty"], 1.1f32 as f64);
        // top_p 1 and top_k 0 are "off": TGI would refuse them, so they are left out.
        let mut s = sampling(0.7);
        s.top_p = 1.0;
        s.top_k = 0;
        s.repeat_penalty = 1.0;
        let r = req(Some(s));
        let v = serde_json::to_value(Parameters::from_request(&r).unwrap()).unwrap();
        for k in ["top_p", "top_k", "repetition_penalty"] {
            assert!(v.get(k).is_none(), "{k}: {v}");
        }
        let mut s = sampling(0.7);
        s.grammar = Some("root ::= \"a\"".into());
        assert_eq!(
            Parameters::from_request(&req(Some(s))).unwrap_err().code,
            ErrorCode::InvalidParams
        );
        let mut s = sampling(0.7);
        s.json_schema = Some(serde_json::json!({"type": "object"}));
        let r = req(Some(s));
        let v = serde_json::to_value(Parameters::from_request(&r).unwrap()).unwrap();
        assert_eq!(
            v["grammar"],
            serde_json::json!({"type": "json", "value": {"type": "object"}})
        );
    }

    #[test]
    fn engine_version_from_info() {
        let i: Info = serde_json::from_str(
            r#"{"model_id":"m","max_concurrent_requests":128,"max_total_tokens":2048,"version":"3.3.6-dev0","sha":"db931fcf0123456789"}"#,
        )
        .unwrap();
        assert_eq!(i.engine_version(), "tgi-3.3.6-dev0+db931fcf0123");
    }

    proptest! {
        /// Whatever an engine sends as an event or an error body, the adapter gets a typed
        /// result (never a panic), and an error's message stays bounded.
        #[test]
        fn any_engine_bytes_give_a_typed_bounded_result(
            text in "\\PC{0,600}",
            body in prop::collection::vec(any::<u8>(), 0..700),
            status in 100u16..600,
            message in "\\PC{0,2000}",
        ) {
            let bound = 80 + MAX_ENGINE_MESSAGE_BYTES;
            for data in [text.clone(), serde_json::json!(message).to_string(),
                         serde_json::json!({"error": message, "error_type": text}).to_string()] {
                if let Event::Error(e) = parse_event(&data) {
                    prop_assert!(e.message.len() <= bound, "{}", e.message);
                }
            }
            prop_assert!(error_from_body(status, &body).message.len() <= bound);
            let wrapped = serde_json::json!({"error": message, "error_type": "generation"});
            let e = error_from_body(status, wrapped.to_string().as_bytes());
            prop_assert!(e.message.len() <= bound);
        }
    }
}
