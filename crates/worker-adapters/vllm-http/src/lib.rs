//! [`VllmAdapter`]: the worker contract over vLLM's OpenAI-compatible server (SPEC §5;
//! wire format in `shared/engines/vllm.md`, real captures of vLLM 0.32 in `vllm-here.md`).
//! `POST /v1/completions` (chats: `/v1/chat/completions`) streamed with
//! `stream_options.include_usage` for tokens, finish reason and prompt tokens; `GET /health`
//! (and connection refused: vLLM serves HTTP only once the engine is up) for loading vs ready;
//! `GET /v1/models` for the served name and `max_model_len` (→ ctx_max); `GET /version`
//! (→ engine_version); `GET /metrics` (`vllm:` families) parsed into [`VllmMetrics`].
//!
//! vLLM validates before it opens the stream, so request errors are HTTP errors with a JSON
//! body (nested `{"error":{…}}` or the older flat shape), mapped to typed codes; an error
//! inside a stream (`data: {"error":…}`) ends the job with its typed code. vLLM clamps
//! `max_tokens` silently to the context left: that finish is `length`, like `max_tokens`.
//!
//! Cancel closes the stream's connection: vLLM aborts the request in the engine
//! (`vllm:num_requests_running` drops). vLLM has no cancel-by-id, so cancel returns once our
//! side has closed.
//!
//! Depends on adapter-api only; the engine-native API never leaves this crate.

mod metrics;
mod wire;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapter_api::engine_stream::{EngineEvents, JobGuard, JobTable};
use adapter_api::{
    GenerateRequest, WorkerAdapter, WorkerError, WorkerEvent, WorkerHealth, WorkerProperties,
    WorkerState, WorkerStream,
};
use api_types::{EndEvent, ErrorCode, FinishReason, TokenEvent};
use tokio::sync::{Notify, mpsc};

pub use adapter_api::engine_stream::MAX_EVENT_BYTES;
pub use metrics::VllmMetrics;
pub use wire::{
    Chunk, CompletionRequest, MAX_ENGINE_MESSAGE_BYTES, ModelCard, engine_seed, error_from_body,
    parse_event,
};

/// Tunables of the adapter.
#[derive(Debug, Clone)]
pub struct VllmConfig {
    /// Base URL of the vLLM server, e.g. `http://127.0.0.1:8000`.
    pub base_url: String,
    pub model_ref: String,
    /// The name sent as `model` (`--served-model-name`); `None`: the first id `/v1/models`
    /// lists.
    pub served_model_name: Option<String>,
    /// Most concurrent streams this adapter opens (the replica's `slots`; vLLM's
    /// `--max-num-seqs` is the engine's own limit and it queues beyond it).
    pub slots: u32,
}

impl VllmConfig {
    pub fn new(base_url: impl Into<String>, model_ref: impl Into<String>) -> Self {
        VllmConfig {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            model_ref: model_ref.into(),
            served_model_name: None,
            slots: 1,
        }
    }
}

pub struct VllmAdapter {
    cfg: VllmConfig,
    http: reqwest::Client,
    model: Mutex<Option<ModelCard>>,
    jobs: JobTable,
}

fn transport(e: reqwest::Error) -> WorkerError {
    WorkerError::new(ErrorCode::WorkerReset, format!("vllm unreachable: {e}"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn bad_json(what: &str, e: serde_json::Error) -> WorkerError {
    WorkerError::new(
        ErrorCode::WorkerReset,
        format!(
            "unexpected vllm {what} response: {}",
            wire::clip(&e.to_string(), MAX_ENGINE_MESSAGE_BYTES)
        ),
    )
}

/// Bodies the adapter reads whole (`/v1/models`, `/version`, `/metrics`, error answers).
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

impl VllmAdapter {
    pub fn new(cfg: VllmConfig) -> Result<Self, WorkerError> {
        let http = adapter_api::engine_stream::http_client()?;
        Ok(VllmAdapter {
            cfg,
            http,
            model: Mutex::new(None),
            jobs: JobTable::default(),
        })
    }

    pub fn config(&self) -> &VllmConfig {
        &self.cfg
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.cfg.base_url)
    }

    /// A bounded body: an engine that streams an endless answer cannot grow our memory.
    async fn read_body(mut resp: reqwest::Response) -> Result<Vec<u8>, WorkerError> {
        let mut body = Vec::new();
        while let Some(c) = resp.chunk().await.map_err(transport)? {
            if body.len() + c.len() > MAX_BODY_BYTES {
                body.extend_from_slice(&c[..MAX_BODY_BYTES - body.len()]);
                break;
            }
            body.extend_from_slice(&c);
        }
        Ok(body)
    }

    async fn get_bytes(&self, path: &str) -> Result<Vec<u8>, WorkerError> {
        let resp = self
            .http
            .get(self.url(path))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status();
        let body = Self::read_body(resp).await?;
        if !status.is_success() {
            return Err(error_from_body(status.as_u16(), &body));
        }
        Ok(body)
    }

    /// `GET /v1/models`: the card of the configured served name (or the first one).
    pub async fn model_card(&self) -> Result<ModelCard, WorkerError> {
        let body = self.get_bytes("/v1/models").await?;
        let list: wire::ModelList =
            serde_json::from_slice(&body).map_err(|e| bad_json("/v1/models", e))?;
        let card =
            match &self.cfg.served_model_name {
                Some(want) => list
                    .data
                    .into_iter()
                    .find(|m| &m.id == want)
                    .ok_or_else(|| {
                        WorkerError::new(
                            ErrorCode::PoolUnready,
                            format!(
                                "vllm does not serve `{}` (check --served-model-name)",
                                wire::clip(want, 256)
                            ),
                        )
                    })?,
                None => list.data.into_iter().next().ok_or_else(|| {
                    WorkerError::new(ErrorCode::PoolUnready, "vllm lists no model")
                })?,
            };
        *lock(&self.model) = Some(card.clone());
        Ok(card)
    }

    async fn cached_model(&self) -> Result<ModelCard, WorkerError> {
        if let Some(m) = lock(&self.model).clone() {
            return Ok(m);
        }
        self.model_card().await
    }

    /// `vllm-<GET /version>`; `vllm-unknown` where the server has no `/version`.
    pub async fn engine_version(&self) -> Result<String, WorkerError> {
        match self.get_bytes("/version").await {
            Ok(b) => {
                let v: wire::Version =
                    serde_json::from_slice(&b).map_err(|e| bad_json("/version", e))?;
                Ok(format!("vllm-{}", wire::clip(&v.version, 64)))
            }
            Err(e) if e.message.contains("HTTP 404") || e.message.contains("NotFound") => {
                Ok("vllm-unknown".into())
            }
            Err(e) => Err(e),
        }
    }

    /// Scrapes vLLM's `/metrics` (`vllm:` families).
    pub async fn metrics(&self) -> Result<VllmMetrics, WorkerError> {
        let body = self.get_bytes("/metrics").await?;
        Ok(VllmMetrics::parse(&String::from_utf8_lossy(&body)))
    }

    /// Streams the adapter holds open now.
    pub fn in_flight(&self) -> u32 {
        self.jobs.in_flight()
    }
}

#[async_trait::async_trait]
impl WorkerAdapter for VllmAdapter {
    async fn health(&self) -> Result<WorkerHealth, WorkerError> {
        let resp = match self
            .http
            .get(self.url("/health"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(r) => r,
            // vLLM starts its HTTP server only after the engine is up: refused = loading.
            Err(e) if e.is_connect() || e.is_timeout() => {
                return Ok(WorkerHealth::unsupervised(
                    WorkerState::Loading,
                    Some(format!("vllm not accepting connections yet: {e}")),
                ));
            }
            Err(e) => return Err(transport(e)),
        };
        let status = resp.status().as_u16();
        let body = Self::read_body(resp).await.unwrap_or_default();
        if status != 200 {
            // 503: EngineDeadError (empty body).
            let mut e = error_from_body(status, &body);
            if body.is_empty() {
                e.message = format!("vllm /health answered HTTP {status} (engine dead?)");
            }
            return Ok(WorkerHealth::unsupervised(
                WorkerState::Error,
                Some(e.message),
            ));
        }
        match self.model_card().await {
            Ok(_) => Ok(WorkerHealth::unsupervised(WorkerState::Ready, None)),
            Err(e) if e.code == ErrorCode::PoolUnready => Ok(WorkerHealth::unsupervised(
                WorkerState::Error,
                Some(e.message),
            )),
            Err(e) => Err(e),
        }
    }

    async fn properties(&self) -> Result<WorkerProperties, WorkerError> {
        let card = self.model_card().await?;
        Ok(WorkerProperties {
            engine: "vllm".into(),
            engine_version: self.engine_version().await?,
            model_ref: self.cfg.model_ref.clone(),
            ctx_max: card.max_model_len.unwrap_or(0),
            slots_total: self.cfg.slots.max(1),
            slots_busy: self.in_flight(),
            interruptible_decode: false,
        })
    }

    async fn generate(&self, req: GenerateRequest) -> Result<WorkerStream, WorkerError> {
        let card = self.cached_model().await?;
        let body = CompletionRequest::from_request(&req, &card.id)?;
        let guard = self
            .jobs
            .claim(&req.job_id, self.cfg.slots.max(1), "vllm slots")?;
        let cancel = guard.cancel.clone();
        let path = if req.messages.is_some() {
            "/v1/chat/completions"
        } else {
            "/v1/completions"
        };
        let canceled = || WorkerError::new(ErrorCode::Canceled, "canceled before the first token");
        let resp = tokio::select! {
            r = self.http.post(self.url(path)).json(&body).send() => r.map_err(transport)?,
            _ = cancel.notified() => return Err(canceled()),
        };
        let status = resp.status();
        if !status.is_success() {
            let body = tokio::select! {
                b = Self::read_body(resp) => b.unwrap_or_default(),
                _ = cancel.notified() => return Err(canceled()),
            };
            return Err(error_from_body(
                status.as_u16(),
                &body[..body.len().min(64 * 1024)],
            ));
        }
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(relay(EngineEvents::new("vllm", resp), tx, cancel, guard));
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn cancel(&self, job_id: &str) -> Result<(), WorkerError> {
        // The relay drops the response (closing the connection) before the slot is free.
        self.jobs.cancel(job_id).await;
        Ok(())
    }
}

type Tx = mpsc::Sender<Result<WorkerEvent, WorkerError>>;

/// Forwards vLLM's chunks as tokens; returns (dropping the response, which closes the
/// connection and makes vLLM abort the request) on the end, an error, a cancel or a consumer
/// that left. The end is sent at `[DONE]` (or a clean close) after a finish reason; a stream
/// that ends without one is WORKER_RESET.
async fn relay(mut events: EngineEvents, tx: Tx, cancel: Arc<Notify>, _guard: JobGuard) {
    let started = Instant::now();
    let mut i: u32 = 0;
    let mut finish: Option<FinishReason> = None;
    let mut prompt_tokens = None;
    loop {
        let data = tokio::select! {
            d = events.next() => d,
            _ = cancel.notified() => return,
            _ = tx.closed() => return,
        };
        let ev = match data {
            None if finish.is_some() => wire::Event::Done,
            None => wire::Event::Error(WorkerError::new(
                ErrorCode::WorkerReset,
                "vllm stream ended without a finish reason",
            )),
            Some(Err(e)) => wire::Event::Error(e),
            Some(Ok(d)) => parse_event(&d),
        };
        let chunk = match ev {
            wire::Event::Chunk(c) => c,
            wire::Event::Error(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
            wire::Event::Done => {
                let item = match finish {
                    Some(f) => Ok(WorkerEvent::End(EndEvent {
                        tokens_out: i,
                        decode_ms: started.elapsed().as_millis() as u64,
                        finish_reason: Some(f),
                        prompt_tokens,
                    })),
                    None => Err(WorkerError::new(
                        ErrorCode::WorkerReset,
                        "vllm ended the stream without a finish reason",
                    )),
                };
                let _ = tx.send(item).await;
                return;
            }
        };
        if let Some(u) = &chunk.usage {
            prompt_tokens = u.prompt_tokens.or(prompt_tokens);
        }
        // We ask for one completion (n = 1): only choice 0 counts.
        for choice in chunk.choices.iter().filter(|c| c.index == 0) {
            let text = choice.content();
            if !text.is_empty() && finish.is_none() {
                let t = TokenEvent {
                    t: text.to_string(),
                    i,
                };
                if tx.send(Ok(WorkerEvent::Token(t))).await.is_err() {
                    return;
                }
                i += 1;
            }
            if let Some(r) = choice.finish_reason.as_deref() {
                match wire::finish_reason(r) {
                    Some(f) => finish = finish.or(Some(f)),
                    None => {
                        let _ = tx
                            .send(Err(WorkerError::new(
                                ErrorCode::WorkerReset,
                                format!("vllm finished the request with `{}`", wire::clip(r, 40)),
                            )))
                            .await;
                        return;
                    }
                }
            }
        }
    }
}
