//! [`TritonAdapter`]: the worker contract (SPEC §5) over NVIDIA Triton Inference Server's HTTP
//! API: the generate extension's `POST /v2/models/{m}/generate_stream` (SSE) for tokens,
//! `GET /v2/health/ready` + `/v2/models/{m}/ready` for loading vs ready, `/v2/models/{m}/config`
//! to check that the model can stream the configured input convention, `GET /v2` for the
//! engine version, and the metrics port (`nv_` families) parsed into [`TritonMetrics`].
//!
//! Two input conventions ([`InputConvention`]): the vLLM backend (`sampling_parameters` JSON
//! string) and the TensorRT-LLM ensemble (one input per parameter).
//!
//! Text is decoded here, from bytes: Triton copies BYTES outputs raw into its JSON, so an
//! event may hold part of a character; [`utf8::Utf8Assembler`] joins the parts. A final
//! `data: {"error":…}` on the 200 stream is a typed error. Cancel (and dropping the stream)
//! closes the HTTP connection, which cancels the request inside Triton.
//!
//! Triton has no slots; the adapter admits at most `slots` concurrent jobs per replica
//! (REPLICA_EXHAUSTED beyond) and reports them as busy slots.
//!
//! Depends on adapter-api only; the engine-native API never leaves this crate.

mod metrics;
pub mod utf8;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapter_api::{
    GenerateRequest, WorkerAdapter, WorkerError, WorkerEvent, WorkerHealth, WorkerProperties,
    WorkerState, WorkerStream,
};
use api_types::{EndEvent, ErrorCode, FinishReason, TokenEvent};
use tokio::sync::{mpsc, watch};

pub use metrics::TritonMetrics;
pub use wire::{InputConvention, ModelConfig, StreamChunk};

/// Tunables of the adapter.
#[derive(Debug, Clone)]
pub struct TritonConfig {
    /// Triton's HTTP endpoint, e.g. `http://127.0.0.1:8000`.
    pub base_url: String,
    /// The Triton model name (the model repository's directory), e.g. `ensemble`.
    pub model: String,
    /// What the pool calls the model (reported in properties).
    pub model_ref: String,
    pub inputs: InputConvention,
    /// Triton's metrics endpoint; `None` = the HTTP endpoint's host on port 8002.
    pub metrics_url: Option<String>,
    /// Concurrent jobs this replica admits.
    pub slots: u32,
    pub ctx_max: u32,
    /// Sampling temperature when a request carries no resolved sampling; the model's default
    /// when `None`.
    pub temperature: Option<f32>,
}

impl TritonConfig {
    pub fn new(
        base_url: impl Into<String>,
        model: impl Into<String>,
        inputs: InputConvention,
    ) -> Self {
        let model = model.into();
        TritonConfig {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            model_ref: model.clone(),
            model,
            inputs,
            metrics_url: None,
            slots: 1,
            ctx_max: 4096,
            temperature: None,
        }
    }

    /// The metrics URL (`metrics_url`, else port 8002 of the HTTP endpoint's host).
    pub fn metrics_url(&self) -> String {
        if let Some(u) = &self.metrics_url {
            return u.clone();
        }
        let rest = self
            .base_url
            .strip_prefix("http://")
            .unwrap_or(&self.base_url);
        let authority = rest.split('/').next().unwrap_or(rest);
        let host = match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => &authority[..i],
            _ => authority,
        };
        format!("http://{host}:8002/metrics")
    }
}

struct Job {
    cancel: Arc<tokio::sync::Notify>,
    done: watch::Receiver<bool>,
}

pub struct TritonAdapter {
    cfg: TritonConfig,
    http: reqwest::Client,
    jobs: Arc<Mutex<HashMap<String, Job>>>,
    /// The model config passed [`ModelConfig::check`] (checked once, when first ready).
    config_ok: Mutex<bool>,
}

fn transport(e: reqwest::Error) -> WorkerError {
    WorkerError::new(ErrorCode::WorkerReset, format!("triton unreachable: {e}"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads at most `cap` bytes of a body (the rest is never read).
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    while buf.len() < cap {
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c[..c.len().min(cap - buf.len())]),
            _ => break,
        }
    }
    buf
}

impl TritonAdapter {
    pub fn new(cfg: TritonConfig) -> Result<Self, WorkerError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| WorkerError::new(ErrorCode::Internal, format!("http client: {e}")))?;
        Ok(TritonAdapter {
            cfg,
            http,
            jobs: Arc::new(Mutex::new(HashMap::new())),
            config_ok: Mutex::new(false),
        })
    }

    pub fn config(&self) -> &TritonConfig {
        &self.cfg
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.cfg.base_url)
    }

    fn model_path(&self, suffix: &str) -> String {
        self.url(&format!("/v2/models/{}{suffix}", self.cfg.model))
    }

    /// A GET (idempotent: retried once when a pooled connection turns out closed, e.g.
    /// after Triton restarted, so that such a race does not read as an engine error).
    async fn get(&self, url: String) -> Result<(u16, Vec<u8>), reqwest::Error> {
        let mut retried = false;
        loop {
            match self
                .http
                .get(&url)
                .timeout(Duration::from_secs(10))
                .send()
                .await
            {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    return Ok((status, read_capped(resp, 4 << 20).await));
                }
                Err(e) if !retried && !e.is_timeout() && !e.is_connect() => retried = true,
                Err(e) => return Err(e),
            }
        }
    }

    /// `GET /v2`: Triton's server metadata (the version is the engine version).
    pub async fn server_metadata(&self) -> Result<wire::ServerMetadata, WorkerError> {
        let (status, body) = self.get(self.url("/v2")).await.map_err(transport)?;
        if status != 200 {
            return Err(wire::error_from_body(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| {
            WorkerError::new(
                ErrorCode::WorkerReset,
                format!("unexpected triton /v2 response: {e}"),
            )
        })
    }

    /// `GET /v2/models/{m}/config`.
    pub async fn model_config(&self) -> Result<ModelConfig, WorkerError> {
        let (status, body) = self
            .get(self.model_path("/config"))
            .await
            .map_err(transport)?;
        if status != 200 {
            return Err(wire::error_from_body(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| {
            WorkerError::new(
                ErrorCode::WorkerReset,
                format!(
                    "unexpected triton model config: {}",
                    wire::clip(&e.to_string(), 200)
                ),
            )
        })
    }

    /// Scrapes Triton's metrics port for this adapter's model.
    pub async fn metrics(&self) -> Result<TritonMetrics, WorkerError> {
        let resp = self
            .http
            .get(self.cfg.metrics_url())
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status().as_u16();
        let body = read_capped(resp, 16 << 20).await;
        if status != 200 {
            return Err(wire::error_from_body(status, &body));
        }
        Ok(TritonMetrics::parse(
            &String::from_utf8_lossy(&body),
            &self.cfg.model,
        ))
    }

    fn sampling<'a>(&self, req: &'a GenerateRequest) -> wire::Sampling<'a> {
        let mut s = wire::Sampling {
            max_tokens: req.max_tokens,
            seed: req.seed,
            temperature: self.cfg.temperature,
            ..Default::default()
        };
        if let Some(r) = &req.sampling {
            s.temperature = Some(r.temperature);
            s.top_p = Some(r.top_p);
            s.top_k = Some(r.top_k);
            s.min_p = Some(r.min_p);
            s.repetition_penalty = Some(r.repeat_penalty);
            s.stop = &r.stop;
        }
        s
    }
}

/// Removes a job's record when its relay ends, however it ends.
struct JobRelease {
    jobs: Arc<Mutex<HashMap<String, Job>>>,
    job_id: String,
    done: watch::Sender<bool>,
}

impl Drop for JobRelease {
    fn drop(&mut self) {
        lock(&self.jobs).remove(&self.job_id);
        let _ = self.done.send(true);
    }
}

#[async_trait::async_trait]
impl WorkerAdapter for TritonAdapter {
    async fn health(&self) -> Result<WorkerHealth, WorkerError> {
        let loading = |m: String| Ok(WorkerHealth::unsupervised(WorkerState::Loading, Some(m)));
        let error = |m: String| Ok(WorkerHealth::unsupervised(WorkerState::Error, Some(m)));
        // Triton listens only once its models are loaded: refused = still starting.
        let (status, body) = match self.get(self.url("/v2/health/ready")).await {
            Ok(r) => r,
            Err(e) if e.is_connect() => {
                return loading(format!("triton not accepting connections yet: {e}"));
            }
            Err(e) => return error(format!("triton health probe failed: {e}")),
        };
        match status {
            200 => {}
            // Not ready (Triton answers 400, not 503): models still loading.
            400 | 503 => return loading("triton server not ready".into()),
            s => return error(wire::error_from_body(s, &body).message),
        }
        let (status, body) = match self.get(self.model_path("/ready")).await {
            Ok(r) => r,
            Err(e) if e.is_connect() => {
                return loading(format!("triton not accepting connections yet: {e}"));
            }
            Err(e) => return error(format!("triton health probe failed: {e}")),
        };
        match status {
            200 => {}
            400 | 503 => {
                // Also the answer for a model Triton does not know: tell the two apart.
                if let Ok((404, body)) = self.get(self.model_path("/config")).await {
                    return error(wire::error_from_body(404, &body).message);
                }
                return loading(format!(
                    "model `{}` not ready: {}",
                    self.cfg.model,
                    wire::clip(&String::from_utf8_lossy(&body), 200)
                ));
            }
            s => return error(wire::error_from_body(s, &body).message),
        }
        if !*lock(&self.config_ok) {
            match self.model_config().await {
                Ok(c) => match c.check(self.cfg.inputs) {
                    Ok(()) => *lock(&self.config_ok) = true,
                    Err(m) => return error(m),
                },
                Err(e) => return error(e.message),
            }
        }
        Ok(WorkerHealth::unsupervised(WorkerState::Ready, None))
    }

    async fn properties(&self) -> Result<WorkerProperties, WorkerError> {
        let meta = self.server_metadata().await?;
        Ok(WorkerProperties {
            engine: "triton".into(),
            engine_version: format!("triton-{}", meta.version),
            model_ref: self.cfg.model_ref.clone(),
            ctx_max: self.cfg.ctx_max,
            slots_total: self.cfg.slots,
            slots_busy: lock(&self.jobs).len() as u32,
            interruptible_decode: false,
        })
    }

    async fn generate(&self, req: GenerateRequest) -> Result<WorkerStream, WorkerError> {
        if req.messages.is_some() {
            return Err(WorkerError::new(
                ErrorCode::InvalidParams,
                "the Triton adapter takes prompts only: Triton has no chat-template endpoint",
            ));
        }
        let cancel = Arc::new(tokio::sync::Notify::new());
        let (done_tx, done_rx) = watch::channel(false);
        {
            let mut jobs = lock(&self.jobs);
            if jobs.contains_key(&req.job_id) {
                return Err(WorkerError::new(
                    ErrorCode::InvalidParams,
                    "job_id already running",
                ));
            }
            if jobs.len() >= self.cfg.slots as usize {
                return Err(WorkerError::new(
                    ErrorCode::ReplicaExhausted,
                    "all slots of this Triton replica are busy",
                ));
            }
            jobs.insert(
                req.job_id.clone(),
                Job {
                    cancel: cancel.clone(),
                    done: done_rx,
                },
            );
        }
        let release = JobRelease {
            jobs: self.jobs.clone(),
            job_id: req.job_id.clone(),
            done: done_tx,
        };
        let body = wire::generate_body(
            self.cfg.inputs,
            &req.job_id,
            &req.prompt,
            &self.sampling(&req),
        );
        let resp = self
            .http
            .post(self.model_path("/generate_stream"))
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    WorkerError::new(
                        ErrorCode::PoolUnready,
                        format!("triton not accepting connections: {e}"),
                    )
                } else {
                    transport(e)
                }
            })?;
        let status = resp.status().as_u16();
        if status != 200 {
            let body = read_capped(resp, wire::MAX_ERROR_BODY_BYTES).await;
            return Err(wire::error_from_body(status, &body));
        }
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(relay(resp, tx, cancel, release, req.max_tokens));
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn cancel(&self, job_id: &str) -> Result<(), WorkerError> {
        let job = lock(&self.jobs)
            .get(job_id)
            .map(|j| (j.cancel.clone(), j.done.clone()));
        let Some((cancel, mut done)) = job else {
            return Ok(());
        };
        cancel.notify_one();
        // The relay has dropped the response: the connection is closed, which Triton turns
        // into a cancel of the request (the model sees `is_cancelled()`).
        let _ = done.wait_for(|d| *d).await;
        Ok(())
    }
}

type Tx = mpsc::Sender<Result<WorkerEvent, WorkerError>>;

/// Turns the bytes of a `generate_stream` body into text pieces: SSE framing on bytes, the
/// tolerant event scanner, and UTF-8 reassembly across events. Independent of the transport,
/// so any split of the body into reads gives the same text.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    sse: wire::SseSplitter,
    text: utf8::Utf8Assembler,
    /// Engine responses that carried text (≈ tokens).
    pub responses: u32,
    pub finish_reason: Option<FinishReason>,
    pub prompt_tokens: Option<u32>,
    pub output_tokens: Option<u32>,
    first: Option<Instant>,
}

impl StreamDecoder {
    /// Feeds body bytes: the text now complete (one piece per engine response that completed
    /// characters), and the error that ends the stream, if one came (after those pieces).
    pub fn feed(&mut self, bytes: &[u8]) -> (Vec<String>, Option<WorkerError>) {
        let mut out = Vec::new();
        let events = match self.sse.push(bytes) {
            Ok(ev) => ev,
            Err(e) => return (out, Some(e)),
        };
        for data in events {
            let chunk = match wire::parse_chunk(&data) {
                Ok(c) => c,
                Err(e) => return (out, Some(e)),
            };
            self.first.get_or_insert_with(Instant::now);
            if let Some(b) = &chunk.text
                && !b.is_empty()
            {
                self.responses += 1;
                let t = self.text.push(b);
                if !t.is_empty() {
                    out.push(t);
                }
            }
            match chunk.finish_reason.as_deref() {
                Some("length") => self.finish_reason = Some(FinishReason::Length),
                Some("stop") => self.finish_reason = Some(FinishReason::Stop),
                _ => {}
            }
            self.prompt_tokens = chunk.num_input_tokens.or(self.prompt_tokens);
            self.output_tokens = chunk.num_output_tokens.or(self.output_tokens);
        }
        (out, None)
    }

    /// The body ended cleanly (Triton has no end marker): the dangling bytes of an unfinished
    /// character as U+FFFD, or an error when the body ended inside an event.
    pub fn finish(&mut self) -> Result<Option<String>, WorkerError> {
        if self.sse.leftover().iter().any(|b| !b.is_ascii_whitespace()) {
            return Err(WorkerError::new(
                ErrorCode::WorkerReset,
                "triton stream ended inside an event",
            ));
        }
        let rest = self.text.finish();
        Ok((!rest.is_empty()).then_some(rest))
    }

    /// Milliseconds since the first response.
    pub fn decode_ms(&self) -> u64 {
        self.first.map_or(0, |f| f.elapsed().as_millis() as u64)
    }
}

/// Reads Triton's SSE bytes and forwards tokens; dropping `resp` closes the connection.
async fn relay(
    mut resp: reqwest::Response,
    tx: Tx,
    cancel: Arc<tokio::sync::Notify>,
    _release: JobRelease,
    max_tokens: u32,
) {
    let mut d = StreamDecoder::default();
    let mut i: u32 = 0;
    loop {
        let next = tokio::select! {
            c = resp.chunk() => c,
            _ = cancel.notified() => return,
            _ = tx.closed() => return,
        };
        let bytes = match next {
            Ok(Some(b)) => b,
            Ok(None) => break,
            Err(e) => {
                let _ = tx
                    .send(Err(WorkerError::new(
                        ErrorCode::WorkerReset,
                        format!("triton stream broke: {e}"),
                    )))
                    .await;
                return;
            }
        };
        let (pieces, err) = d.feed(&bytes);
        for t in pieces {
            if tx
                .send(Ok(WorkerEvent::Token(TokenEvent { t, i })))
                .await
                .is_err()
            {
                return;
            }
            i += 1;
        }
        if let Some(e) = err {
            let _ = tx.send(Err(e)).await;
            return;
        }
    }
    match d.finish() {
        Err(e) => {
            let _ = tx.send(Err(e)).await;
            return;
        }
        Ok(Some(t)) => {
            if tx
                .send(Ok(WorkerEvent::Token(TokenEvent { t, i })))
                .await
                .is_err()
            {
                return;
            }
            i += 1;
        }
        Ok(None) => {}
    }
    let produced = d.output_tokens.unwrap_or(d.responses);
    let finish_reason = d.finish_reason.or(Some(if produced >= max_tokens {
        FinishReason::Length
    } else {
        FinishReason::Stop
    }));
    let _ = tx
        .send(Ok(WorkerEvent::End(EndEvent {
            tokens_out: i,
            decode_ms: d.decode_ms(),
            finish_reason,
            prompt_tokens: d.prompt_tokens,
        })))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What Triton writes for one response whose `text_output` holds `bytes`: `"`, `\\` and
    /// control characters escaped, every other byte copied raw.
    fn triton_event(bytes: &[u8]) -> Vec<u8> {
        let mut d =
            b"data: {\"id\":\"j\",\"model_name\":\"m\",\"model_version\":\"1\",\"text_output\":\""
                .to_vec();
        for &b in bytes {
            match b {
                b'"' => d.extend_from_slice(b"\\\""),
                b'\\' => d.extend_from_slice(b"\\\\"),
                0..=0x1f => d.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
                _ => d.push(b),
            }
        }
        d.extend_from_slice(b"\"}\n\n");
        d
    }

    fn cut(len: usize, cuts: &[prop::sample::Index]) -> Vec<usize> {
        let mut p: Vec<usize> = cuts.iter().map(|c| c.index(len + 1)).collect();
        p.push(len);
        p.sort_unstable();
        p
    }

    proptest! {
        /// Any text, cut into engine responses at arbitrary byte boundaries (inside
        /// characters), framed as Triton frames it, and read back in arbitrary network reads,
        /// decodes to exactly the text: no character lost, doubled or replaced.
        #[test]
        fn any_text_any_response_split_any_read_split(
            text in "(\\PC|[\"\\\\\n\t]|[é日本語🦀ñ€𝄞])*",
            response_cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
            read_cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
        ) {
            let bytes = text.as_bytes();
            let mut body = Vec::new();
            let mut last = 0;
            for p in cut(bytes.len(), &response_cuts) {
                if p > last {
                    body.extend(triton_event(&bytes[last..p]));
                }
                last = p;
            }
            let mut d = StreamDecoder::default();
            let mut out = String::new();
            let mut last = 0;
            for p in cut(body.len(), &read_cuts) {
                let (pieces, err) = d.feed(&body[last..p]);
                prop_assert!(err.is_none(), "{err:?}");
                for t in pieces {
                    prop_assert!(!t.is_empty());
                    out.push_str(&t);
                }
                last = p;
            }
            prop_assert_eq!(d.finish().unwrap(), None);
            prop_assert_eq!(out, text);
        }

        /// Arbitrary body bytes: a typed result or text, never a panic.
        #[test]
        fn any_body_bytes_never_panic(reads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let mut d = StreamDecoder::default();
            for r in &reads {
                if d.feed(r).1.is_some() {
                    break;
                }
            }
            let _ = d.finish();
        }
    }

    #[test]
    fn metrics_url_defaults_to_port_8002() {
        let c = TritonConfig::new("http://127.0.0.1:8000/", "m", InputConvention::Vllm);
        assert_eq!(c.metrics_url(), "http://127.0.0.1:8002/metrics");
        let c = TritonConfig::new("http://[::1]:9", "m", InputConvention::Vllm);
        assert_eq!(c.metrics_url(), "http://[::1]:8002/metrics");
        let c = TritonConfig::new("http://triton", "m", InputConvention::Vllm);
        assert_eq!(c.metrics_url(), "http://triton:8002/metrics");
    }
}
