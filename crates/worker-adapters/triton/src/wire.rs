//! Triton's generate-extension wire format, as observed from tritonserver 2.51.0 (see
//! `shared/engines/triton-here.md` in the project notes and this crate's README): the request
//! body for each input convention, the tolerant scanner for `generate_stream` events (whose
//! strings may hold raw, non-UTF-8 bytes), the SSE framing, and error mapping.

use adapter_api::WorkerError;
use api_types::ErrorCode;
use serde::{Deserialize, Serialize};

/// How the served model takes its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputConvention {
    /// The vLLM backend: `text_input`, `stream`, and `sampling_parameters`, a JSON *string*
    /// holding vLLM `SamplingParams` (`max_tokens`, `seed`, `temperature`, …).
    Vllm,
    /// The TensorRT-LLM `ensemble` / `tensorrt_llm_bls` models: `text_input`, `stream`, and one
    /// input per parameter (`max_tokens`, `seed`, `temperature`, `top_k`, …).
    TensorrtLlm,
}

/// The sampling a request asks for, independent of the convention.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sampling<'a> {
    pub max_tokens: u32,
    pub seed: u64,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub stop: &'a [String],
}

/// The body of `POST /v2/models/{m}/generate_stream`. Keys that name a model input become
/// tensors; other scalar keys become request parameters (ignored by models that do not read
/// them), so the `return_*` flags are harmless where a model lacks them.
pub fn generate_body(
    conv: InputConvention,
    id: &str,
    prompt: &str,
    s: &Sampling<'_>,
) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let mut m = Map::new();
    m.insert("id".into(), json!(id));
    m.insert("text_input".into(), json!(prompt));
    m.insert("stream".into(), json!(true));
    m.insert("exclude_input_in_output".into(), json!(true));
    m.insert("return_num_input_tokens".into(), json!(true));
    m.insert("return_num_output_tokens".into(), json!(true));
    match conv {
        InputConvention::Vllm => {
            let mut p = Map::new();
            p.insert("max_tokens".into(), json!(s.max_tokens));
            p.insert("seed".into(), json!(s.seed));
            let mut opt = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    p.insert(k.into(), v);
                }
            };
            opt("temperature", s.temperature.map(|v| json!(v)));
            opt("top_p", s.top_p.map(|v| json!(v)));
            opt("top_k", s.top_k.map(|v| json!(v)));
            opt("min_p", s.min_p.map(|v| json!(v)));
            opt("repetition_penalty", s.repetition_penalty.map(|v| json!(v)));
            if !s.stop.is_empty() {
                p.insert("stop".into(), json!(s.stop));
            }
            m.insert(
                "sampling_parameters".into(),
                json!(Value::Object(p).to_string()),
            );
            m.insert("return_finish_reason".into(), json!(true));
        }
        InputConvention::TensorrtLlm => {
            m.insert("max_tokens".into(), json!(s.max_tokens));
            m.insert("seed".into(), json!(s.seed));
            if let Some(t) = s.temperature {
                m.insert("temperature".into(), json!(t));
            }
            if let Some(v) = s.top_p {
                m.insert("top_p".into(), json!(v));
            }
            if let Some(v) = s.top_k {
                m.insert("top_k".into(), json!(v));
            }
            if let Some(v) = s.repetition_penalty {
                m.insert("repetition_penalty".into(), json!(v));
            }
            // Only when given: on a model without a `stop_words` input an array would be an
            // (invalid) request parameter.
            if !s.stop.is_empty() {
                m.insert("stop_words".into(), json!(s.stop));
            }
        }
    }
    Value::Object(m)
}

/// How much of an engine's error message reaches clients.
pub const MAX_ENGINE_MESSAGE_BYTES: usize = 512;
/// Largest error body read from Triton; the rest is not read at all.
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// Largest SSE event accepted; a longer one is a broken engine (WORKER_RESET).
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

pub use adapter_api::engine_stream::clip;

/// Maps a Triton error (HTTP status and message) onto the public codes. Triton's status comes
/// from its core error code: INVALID_ARG/UNKNOWN → 400, NOT_FOUND → 404, INTERNAL → 500,
/// UNSUPPORTED → 501, UNAVAILABLE → 503.
pub fn map_error(status: Option<u16>, message: &str) -> WorkerError {
    let code = match status {
        Some(400) => ErrorCode::InvalidParams,
        Some(503) => ErrorCode::PoolUnready,
        Some(404 | 500 | 501) => ErrorCode::Internal,
        Some(_) => ErrorCode::WorkerReset,
        // Inside a 200 stream: the model failed while generating.
        None => ErrorCode::Internal,
    };
    WorkerError::new(
        code,
        format!("triton: {}", clip(message.trim(), MAX_ENGINE_MESSAGE_BYTES)),
    )
}

/// An error response body (`{"error":"…"}`); anything else is a broken engine.
pub fn error_from_body(status: u16, body: &[u8]) -> WorkerError {
    match scan_object(body)
        .ok()
        .and_then(|f| f.into_iter().rev().find(|(k, _)| k == "error"))
    {
        Some((_, v)) => map_error(Some(status), &v.lossy()),
        None => WorkerError::new(
            if status == 503 {
                ErrorCode::PoolUnready
            } else {
                ErrorCode::WorkerReset
            },
            format!("triton answered HTTP {status}"),
        ),
    }
}

/// One value of a top-level event field.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// A JSON string, decoded to its bytes (raw bytes as sent, escapes resolved).
    Str(Vec<u8>),
    /// An array of strings (a BYTES output with more than one element).
    Strs(Vec<Vec<u8>>),
    /// Anything else, parsed by serde_json (strings inside lossily decoded).
    Json(serde_json::Value),
}

impl Field {
    /// All bytes of a string or string array.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        match self {
            Field::Str(b) => Some(b.clone()),
            Field::Strs(v) => Some(v.concat()),
            Field::Json(serde_json::Value::Null) => None,
            Field::Json(_) => None,
        }
    }

    pub fn lossy(&self) -> String {
        match self {
            Field::Str(_) | Field::Strs(_) => {
                String::from_utf8_lossy(&self.bytes().unwrap_or_default()).into_owned()
            }
            Field::Json(serde_json::Value::String(s)) => s.clone(),
            Field::Json(v) => v.to_string(),
        }
    }

    /// A number, or a one-element array of a number (a tensor of shape [1]).
    pub fn as_u32(&self) -> Option<u32> {
        let v = match self {
            Field::Json(serde_json::Value::Array(a)) if a.len() == 1 => &a[0],
            Field::Json(v) => v,
            _ => return None,
        };
        v.as_u64().and_then(|n| u32::try_from(n).ok())
    }
}

/// A byte-level scanner for one JSON object, tolerant of raw non-UTF-8 bytes inside strings
/// (Triton writes BYTES outputs into the JSON unescaped). Bounded: no recursion, linear time.
struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

type ScanResult<T> = Result<T, String>;

impl<'a> Scanner<'a> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> ScanResult<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected `{}` at byte {}", c as char, self.i))
        }
    }

    fn hex4(&mut self) -> ScanResult<u32> {
        let h = self
            .b
            .get(self.i..self.i + 4)
            .ok_or("truncated \\u escape")?;
        let s = std::str::from_utf8(h).map_err(|_| "bad \\u escape")?;
        let v = u32::from_str_radix(s, 16).map_err(|_| "bad \\u escape")?;
        self.i += 4;
        Ok(v)
    }

    /// A string starting at `"`: its bytes, escapes resolved, raw bytes kept as they are.
    fn string(&mut self) -> ScanResult<Vec<u8>> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            let c = self.peek().ok_or("unterminated string")?;
            self.i += 1;
            match c {
                b'"' => return Ok(out),
                b'\\' => {
                    let e = self.peek().ok_or("unterminated escape")?;
                    self.i += 1;
                    let simple = match e {
                        b'"' => Some(b'"'),
                        b'\\' => Some(b'\\'),
                        b'/' => Some(b'/'),
                        b'b' => Some(8),
                        b'f' => Some(12),
                        b'n' => Some(b'\n'),
                        b'r' => Some(b'\r'),
                        b't' => Some(b'\t'),
                        b'u' => None,
                        _ => return Err(format!("bad escape `\\{}`", e as char)),
                    };
                    if let Some(s) = simple {
                        out.push(s);
                        continue;
                    }
                    let hi = self.hex4()?;
                    let ch = if (0xD800..0xDC00).contains(&hi)
                        && self.b.get(self.i..self.i + 2) == Some(b"\\u")
                    {
                        let save = self.i;
                        self.i += 2;
                        let lo = self.hex4()?;
                        if (0xDC00..0xE000).contains(&lo) {
                            char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                        } else {
                            self.i = save;
                            None
                        }
                    } else {
                        char::from_u32(hi)
                    };
                    let ch = ch.unwrap_or(char::REPLACEMENT_CHARACTER);
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                _ => out.push(c),
            }
        }
    }

    /// Skips any JSON value that is not a top-level string and returns its raw bytes.
    fn raw_value(&mut self) -> ScanResult<&'a [u8]> {
        let start = self.i;
        let mut depth = 0usize;
        loop {
            match self.peek() {
                None if depth == 0 && self.i > start => return Ok(&self.b[start..self.i]),
                None => return Err("truncated value".into()),
                Some(b'"') => {
                    self.string()?;
                }
                Some(b'{' | b'[') => {
                    depth += 1;
                    self.i += 1;
                }
                Some(b'}' | b']') if depth == 0 => return Ok(&self.b[start..self.i]),
                Some(b'}' | b']') => {
                    depth -= 1;
                    self.i += 1;
                }
                Some(b',') if depth == 0 => return Ok(&self.b[start..self.i]),
                Some(_) => self.i += 1,
            }
        }
    }

    fn value(&mut self) -> ScanResult<Field> {
        match self.peek() {
            Some(b'"') => Ok(Field::Str(self.string()?)),
            Some(b'[') => {
                // An array of strings keeps its bytes; anything else is parsed as JSON.
                let save = self.i;
                if let Ok(v) = self.string_array() {
                    return Ok(Field::Strs(v));
                }
                self.i = save;
                self.json()
            }
            _ => self.json(),
        }
    }

    fn string_array(&mut self) -> ScanResult<Vec<Vec<u8>>> {
        self.expect(b'[')?;
        let mut v = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(v);
        }
        loop {
            self.ws();
            v.push(self.string()?);
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(v);
                }
                _ => return Err("not a string array".into()),
            }
        }
    }

    fn json(&mut self) -> ScanResult<Field> {
        let raw = self.raw_value()?;
        let text = String::from_utf8_lossy(raw);
        serde_json::from_str(text.trim())
            .map(Field::Json)
            .map_err(|e| format!("bad value: {}", clip(&e.to_string(), 120)))
    }
}

/// Scans one event payload: a JSON object whose fields are returned in order.
pub fn scan_object(data: &[u8]) -> ScanResult<Vec<(String, Field)>> {
    let mut s = Scanner { b: data, i: 0 };
    s.ws();
    s.expect(b'{')?;
    let mut fields = Vec::new();
    s.ws();
    if s.peek() == Some(b'}') {
        s.i += 1;
    } else {
        loop {
            s.ws();
            let key = String::from_utf8_lossy(&s.string()?).into_owned();
            s.ws();
            s.expect(b':')?;
            s.ws();
            let v = s.value()?;
            fields.push((key, v));
            s.ws();
            match s.peek() {
                Some(b',') => s.i += 1,
                Some(b'}') => {
                    s.i += 1;
                    break;
                }
                _ => return Err(format!("expected `,` or `}}` at byte {}", s.i)),
            }
        }
    }
    s.ws();
    if s.i != data.len() {
        return Err(format!("trailing bytes after the object at byte {}", s.i));
    }
    Ok(fields)
}

/// One parsed `generate_stream` response.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamChunk {
    /// The raw bytes of `text_output` (may end inside a character).
    pub text: Option<Vec<u8>>,
    /// vLLM backend with `return_finish_reason`: `stop` / `length` / `abort`.
    pub finish_reason: Option<String>,
    pub num_input_tokens: Option<u32>,
    pub num_output_tokens: Option<u32>,
}

/// Parses one SSE `data:` payload; `{"error":…}` becomes the mapped, typed error.
pub fn parse_chunk(data: &[u8]) -> Result<StreamChunk, WorkerError> {
    let fields = scan_object(data).map_err(|e| {
        WorkerError::new(
            ErrorCode::WorkerReset,
            format!(
                "bad triton stream event: {}",
                clip(&e, MAX_ENGINE_MESSAGE_BYTES)
            ),
        )
    })?;
    let mut c = StreamChunk::default();
    for (k, v) in &fields {
        match k.as_str() {
            "error" => return Err(map_error(None, &v.lossy())),
            "text_output" => c.text = v.bytes(),
            "finish_reason" => {
                c.finish_reason = v.bytes().map(|b| String::from_utf8_lossy(&b).into_owned())
            }
            "num_input_tokens" => c.num_input_tokens = v.as_u32(),
            "num_output_tokens" => c.num_output_tokens = v.as_u32(),
            _ => {}
        }
    }
    Ok(c)
}

/// Splits an SSE byte stream into the `data` payloads of its events, on bytes (never
/// decoding): `\n\n` or `\r\n\r\n` ends an event, `data:` lines are joined with `\n`,
/// comments and other fields are ignored.
#[derive(Debug, Default)]
pub struct SseSplitter {
    buf: Vec<u8>,
}

impl SseSplitter {
    /// Feeds bytes; returns the complete events' data, or an error when one event grows past
    /// [`MAX_EVENT_BYTES`].
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, WorkerError> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        let mut i = 0;
        let b = &self.buf;
        while i < b.len() {
            // A blank line: `\n\n`, or `\n\r\n`.
            if b[i] == b'\n' {
                let blank = if b.get(i + 1) == Some(&b'\n') {
                    Some(i + 2)
                } else if b.get(i + 1) == Some(&b'\r') && b.get(i + 2) == Some(&b'\n') {
                    Some(i + 3)
                } else {
                    None
                };
                if let Some(end) = blank {
                    if let Some(d) = event_data(&b[start..i]) {
                        out.push(d);
                    }
                    start = end;
                    i = end;
                    continue;
                }
            }
            i += 1;
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_EVENT_BYTES {
            return Err(WorkerError::new(
                ErrorCode::WorkerReset,
                format!("triton stream event larger than {MAX_EVENT_BYTES} bytes"),
            ));
        }
        Ok(out)
    }

    /// Bytes of an event that never ended (a truncated stream when non-blank).
    pub fn leftover(&self) -> &[u8] {
        &self.buf
    }
}

fn event_data(event: &[u8]) -> Option<Vec<u8>> {
    let mut data: Option<Vec<u8>> = None;
    for line in event.split(|&c| c == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(v) = line.strip_prefix(b"data:") else {
            continue;
        };
        let v = v.strip_prefix(b" ").unwrap_or(v);
        match &mut data {
            Some(d) => {
                d.push(b'\n');
                d.extend_from_slice(v);
            }
            None => data = Some(v.to_vec()),
        }
    }
    data
}

/// `GET /v2` (server metadata).
#[derive(Debug, Clone, Deserialize)]
pub struct ServerMetadata {
    #[serde(default)]
    pub name: String,
    pub version: String,
}

/// The parts of `GET /v2/models/{m}/config` the adapter checks.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelConfig {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub backend: String,
    #[serde(default)]
    pub input: Vec<TensorConfig>,
    #[serde(default)]
    pub output: Vec<TensorConfig>,
    #[serde(default)]
    pub model_transaction_policy: Option<TransactionPolicy>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TensorConfig {
    pub name: String,
    #[serde(default)]
    pub data_type: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TransactionPolicy {
    #[serde(default)]
    pub decoupled: bool,
}

impl ModelConfig {
    /// Why this model cannot serve the convention's streaming requests, if it cannot.
    pub fn check(&self, conv: InputConvention) -> Result<(), String> {
        let decoupled = self
            .model_transaction_policy
            .as_ref()
            .is_some_and(|p| p.decoupled);
        // The vLLM backend forces decoupled mode without writing it into the config.
        if !decoupled && self.backend != "vllm" {
            return Err(format!(
                "model `{}` is not decoupled (model_transaction_policy.decoupled): it cannot stream",
                self.name
            ));
        }
        let has = |n: &str| self.input.iter().any(|t| t.name == n);
        let need: &[&str] = match conv {
            InputConvention::Vllm => &["text_input", "sampling_parameters"],
            InputConvention::TensorrtLlm => &["text_input", "max_tokens"],
        };
        if let Some(m) = need.iter().find(|n| !has(n)) {
            return Err(format!(
                "model `{}` has no input `{m}`, needed by the {conv:?} input convention",
                self.name
            ));
        }
        if !self.output.iter().any(|t| t.name == "text_output") {
            return Err(format!("model `{}` has no output `text_output`", self.name));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn raw_bytes_in_strings_are_kept() {
        // Captured from tritonserver 2.51.0: the bytes `caf\xc3` copied raw into the string.
        let data =
            b"{\"model_name\":\"bytes\",\"model_version\":\"1\",\"text_output\":\"caf\xc3\"}";
        assert!(serde_json::from_slice::<serde_json::Value>(data).is_err());
        let c = parse_chunk(data).unwrap();
        assert_eq!(c.text.as_deref(), Some(&b"caf\xc3"[..]));
    }

    #[test]
    fn escapes_and_arrays() {
        let c = parse_chunk(
            br#"{"id":"j","text_output":["a\"\\\n\u00e9\ud83e\udd80", "\ud800x"],"num_output_tokens":[3],"finish_reason":"length"}"#,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(c.text.unwrap()).unwrap(),
            "a\"\\\n\u{e9}\u{1f980}\u{fffd}x"
        );
        assert_eq!(c.num_output_tokens, Some(3));
        assert_eq!(c.finish_reason.as_deref(), Some("length"));
        let c =
            parse_chunk(br#" { "text_output" : "x" , "nested": {"a":[1,{"b":"}"}]} } "#).unwrap();
        assert_eq!(c.text.as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn errors_on_a_200_stream_are_typed() {
        let e = parse_chunk(br#"{"error":"boom: model failed at token 2"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::Internal);
        assert_eq!(e.message, "triton: boom: model failed at token 2");
        for bad in [
            &b"{"[..],
            b"",
            b"[]",
            b"{\"text_output\":\"x",
            b"{\"a\":1}}",
            b"{\"a\" 1}",
            b"\xff",
        ] {
            assert_eq!(parse_chunk(bad).unwrap_err().code, ErrorCode::WorkerReset);
        }
    }

    #[test]
    fn http_errors_map_by_status() {
        let e = error_from_body(400, br#"{"error":"[request id: <id_unknown>] expected number of inputs between 1 and 2 but got 0 inputs"}"#);
        assert_eq!(e.code, ErrorCode::InvalidParams);
        assert_eq!(
            error_from_body(
                404,
                br#"{"error":"Request for unknown model: 'nope' is not found"}"#
            )
            .code,
            ErrorCode::Internal
        );
        assert_eq!(error_from_body(503, b"").code, ErrorCode::PoolUnready);
        assert_eq!(error_from_body(502, b"<html>").code, ErrorCode::WorkerReset);
    }

    #[test]
    fn sse_framing_on_bytes() {
        let mut s = SseSplitter::default();
        assert!(s.push(b"data: {\"a\":\"\xc3").unwrap().is_empty());
        let ev = s
            .push(b"\"}\n\n: comment\n\ndata:x\r\ndata: y\r\n\r\ndata: z")
            .unwrap();
        assert_eq!(ev, vec![b"{\"a\":\"\xc3\"}".to_vec(), b"x\ny".to_vec()]);
        assert_eq!(s.leftover(), b"data: z");
        let mut s = SseSplitter::default();
        assert!(s.push(&vec![b'a'; MAX_EVENT_BYTES + 1]).is_err());
    }

    #[test]
    fn request_bodies_per_convention() {
        let stop = vec!["\n\n".to_string()];
        let s = Sampling {
            max_tokens: 8,
            seed: 7,
            temperature: Some(0.0),
            top_k: Some(1),
            stop: &stop,
            ..Default::default()
        };
        let v = generate_body(InputConvention::Vllm, "j1", "Hi", &s);
        assert_eq!(v["text_input"], "Hi");
        assert_eq!(v["stream"], true);
        assert!(v.get("max_tokens").is_none());
        let p: serde_json::Value =
            serde_json::from_str(v["sampling_parameters"].as_str().unwrap()).unwrap();
        assert_eq!(
            p,
            serde_json::json!({"max_tokens":8,"seed":7,"temperature":0.0,"top_k":1,"stop":["\n\n"]})
        );
        let v = generate_body(InputConvention::TensorrtLlm, "j1", "Hi", &s);
        assert_eq!(
            (v["max_tokens"].as_u64(), v["seed"].as_u64()),
            (Some(8), Some(7))
        );
        assert_eq!(v["stop_words"], serde_json::json!(["\n\n"]));
        assert!(v.get("sampling_parameters").is_none());
    }

    proptest! {
        /// Whatever bytes an engine sends as an event or an error body: a typed result, never
        /// a panic, and a bounded message.
        #[test]
        fn any_bytes_give_a_typed_bounded_result(
            data in prop::collection::vec(any::<u8>(), 0..600),
            json_like in "[{}\\[\\]\",:a-z0-9\\\\ ]{0,80}",
            message in "\\PC{0,3000}",
            status in 100u16..600,
        ) {
            let bound = "bad triton stream event: ".len() + MAX_ENGINE_MESSAGE_BYTES;
            for d in [&data[..], json_like.as_bytes()] {
                if let Err(e) = parse_chunk(d) {
                    prop_assert!(e.message.len() <= bound, "{}", e.message);
                }
                prop_assert!(error_from_body(status, d).message.len() <= bound);
            }
            let wrapped = serde_json::json!({"error": message}).to_string();
            let e = parse_chunk(wrapped.as_bytes()).unwrap_err();
            prop_assert!(e.message.len() <= "triton: ".len() + MAX_ENGINE_MESSAGE_BYTES);
            let e = error_from_body(status, wrapped.as_bytes());
            prop_assert!(e.message.starts_with("triton: "));
        }

        /// A `text_output` string with arbitrary raw bytes comes back byte for byte.
        #[test]
        fn raw_text_output_bytes_roundtrip(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            // What Triton writes: JSON-escape `"`, `\` and control characters, copy the rest.
            let mut data = b"{\"model_name\":\"m\",\"text_output\":\"".to_vec();
            for &b in &bytes {
                match b {
                    b'"' => data.extend_from_slice(b"\\\""),
                    b'\\' => data.extend_from_slice(b"\\\\"),
                    0..=0x1f => data.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
                    _ => data.push(b),
                }
            }
            data.extend_from_slice(b"\"}");
            let c = parse_chunk(&data).unwrap();
            prop_assert_eq!(c.text.unwrap(), bytes);
        }
    }
}
