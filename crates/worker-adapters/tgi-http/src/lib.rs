//! [`TgiAdapter`]: the worker contract over Hugging Face TGI's router API (SPEC §5).
//! `POST /generate_stream` for tokens, `GET /health` (and connection refused: the router binds
//! only once the model is loaded) for loading vs ready, `GET /info` for identity, limits and
//! build (→ engine_version, ctx_max), `GET /metrics` (`tgi_` families) for the pool manager.
//!
//! TGI answers every `/generate_stream` with HTTP 200 and reports even overload and
//! validation failures as an SSE event, so [`WorkerAdapter::generate`] reads the first event
//! before it returns: an `overloaded` event becomes REPLICA_EXHAUSTED (backpressure, retried
//! by the scheduler), a `validation` event INVALID_PARAMS. The adapter also keeps its own
//! in-flight count at or below `/info.max_concurrent_requests`, as tgi.md advises.
//!
//! Cancel closes the stream's connection: TGI drops the request from its queue or batch
//! (counted as `tgi_request_failure{err="dropped"}`) and frees its permit. TGI has no
//! cancel-by-id and no per-slot view, so cancel returns once our side has closed.
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
pub use metrics::TgiMetrics;
pub use wire::{Info, MAX_ENGINE_MESSAGE_BYTES, Parameters, StreamDetails, StreamResponse};

/// Tunables of the adapter.
#[derive(Debug, Clone)]
pub struct TgiConfig {
    /// Base URL of the TGI router, e.g. `http://127.0.0.1:3000`.
    pub base_url: String,
    pub model_ref: String,
    /// Most concurrent streams this adapter opens (the replica's `slots`); never more than
    /// `/info.max_concurrent_requests`. `None`: TGI's limit.
    pub slots: Option<u32>,
    /// When set, `/info.model_id` must equal it for the replica to be Ready.
    pub expected_model_id: Option<String>,
}

impl TgiConfig {
    pub fn new(base_url: impl Into<String>, model_ref: impl Into<String>) -> Self {
        TgiConfig {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            model_ref: model_ref.into(),
            slots: None,
            expected_model_id: None,
        }
    }
}

pub struct TgiAdapter {
    cfg: TgiConfig,
    http: reqwest::Client,
    info: Mutex<Option<Info>>,
    jobs: JobTable,
}

fn transport(e: reqwest::Error) -> WorkerError {
    WorkerError::new(ErrorCode::WorkerReset, format!("tgi unreachable: {e}"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TgiAdapter {
    pub fn new(cfg: TgiConfig) -> Result<Self, WorkerError> {
        let http = adapter_api::engine_stream::http_client()?;
        Ok(TgiAdapter {
            cfg,
            http,
            info: Mutex::new(None),
            jobs: JobTable::default(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.cfg.base_url)
    }

    async fn get_bytes(&self, path: &str) -> Result<bytes::Bytes, WorkerError> {
        let resp = self
            .http
            .get(self.url(path))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(wire::error_from_body(status.as_u16(), &body));
        }
        Ok(body)
    }

    /// `GET /info`, remembered for admission.
    pub async fn info(&self) -> Result<Info, WorkerError> {
        let body = self.get_bytes("/info").await?;
        let info: Info = serde_json::from_slice(&body).map_err(|e| {
            WorkerError::new(
                ErrorCode::WorkerReset,
                format!(
                    "unexpected tgi /info response: {}",
                    wire::clip(&e.to_string(), MAX_ENGINE_MESSAGE_BYTES)
                ),
            )
        })?;
        *lock(&self.info) = Some(info.clone());
        Ok(info)
    }

    async fn cached_info(&self) -> Result<Info, WorkerError> {
        if let Some(i) = lock(&self.info).clone() {
            return Ok(i);
        }
        self.info().await
    }

    fn slots_total(&self, info: &Info) -> u32 {
        let limit = info.max_concurrent_requests.max(1);
        self.cfg.slots.map_or(limit, |s| s.clamp(1, limit))
    }

    /// Scrapes TGI's `/metrics` (`tgi_` families).
    pub async fn metrics(&self) -> Result<TgiMetrics, WorkerError> {
        let body = self.get_bytes("/metrics").await?;
        Ok(TgiMetrics::parse(&String::from_utf8_lossy(&body)))
    }

    /// Renders a chat with the model's own template (`POST /chat_tokenize`, `templated_text`).
    pub async fn chat_template(
        &self,
        messages: &[api_types::ChatMessage],
    ) -> Result<String, WorkerError> {
        let resp = self
            .http
            .post(self.url("/chat_tokenize"))
            .json(&wire::ChatTokenizeRequest {
                model: "tgi",
                messages,
            })
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(wire::error_from_body(status.as_u16(), &body));
        }
        serde_json::from_slice::<wire::ChatTokenizeResponse>(&body)
            .map(|r| r.templated_text)
            .map_err(|e| {
                WorkerError::new(
                    ErrorCode::WorkerReset,
                    format!(
                        "unexpected tgi /chat_tokenize response: {}",
                        wire::clip(&e.to_string(), MAX_ENGINE_MESSAGE_BYTES)
                    ),
                )
            })
    }

    /// Streams the adapter holds open now.
    pub fn in_flight(&self) -> u32 {
        self.jobs.in_flight()
    }
}

#[derive(Debug, Default)]
struct StopFilter {
    stops: Vec<String>,
    held: String,
}

impl StopFilter {
    fn new(stops: &[String]) -> Self {
        StopFilter {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Adds token text; returns what is safe to send now.
    fn push(&mut self, text: &str) -> String {
        self.held.push_str(text);
        if self.stops.is_empty() {
            return std::mem::take(&mut self.held);
        }
        // The longest suffix of `held` that some stop sequence starts with stays held.
        let keep_from = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let rest = self.held.split_off(keep_from);
        std::mem::replace(&mut self.held, rest)
    }

    /// The end: with a stop-sequence finish, the matched sequence is cut off.
    fn finish(&mut self, stopped_by_sequence: bool) -> String {
        let mut out = std::mem::take(&mut self.held);
        if stopped_by_sequence
            && let Some(s) = self
                .stops
                .iter()
                .filter(|s| out.ends_with(s.as_str()))
                .max_by_key(|s| s.len())
        {
            out.truncate(out.len() - s.len());
        }
        out
    }
}

#[async_trait::async_trait]
impl WorkerAdapter for TgiAdapter {
    async fn health(&self) -> Result<WorkerHealth, WorkerError> {
        let resp = match self
            .http
            .get(self.url("/health"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(r) => r,
            // TGI's router binds its port only after the shards loaded: refused = loading.
            Err(e) if e.is_connect() => {
                return Ok(WorkerHealth::unsupervised(
                    WorkerState::Loading,
                    Some(format!("tgi not accepting connections yet: {e}")),
                ));
            }
            Err(e) => return Err(transport(e)),
        };
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        if status != 200 {
            return Ok(WorkerHealth::unsupervised(
                WorkerState::Error,
                Some(wire::error_from_body(status, &body).message),
            ));
        }
        let info = self.info().await?;
        if let Some(want) = &self.cfg.expected_model_id
            && &info.model_id != want
        {
            return Ok(WorkerHealth::unsupervised(
                WorkerState::Error,
                Some(format!(
                    "tgi serves model `{}`, expected `{want}`",
                    wire::clip(&info.model_id, 256)
                )),
            ));
        }
        Ok(WorkerHealth::unsupervised(WorkerState::Ready, None))
    }

    async fn properties(&self) -> Result<WorkerProperties, WorkerError> {
        let info = self.info().await?;
        Ok(WorkerProperties {
            engine: "tgi".into(),
            engine_version: info.engine_version(),
            model_ref: self.cfg.model_ref.clone(),
            ctx_max: info.max_total_tokens,
            slots_total: self.slots_total(&info),
            slots_busy: self.in_flight(),
            interruptible_decode: false,
        })
    }

    async fn generate(&self, req: GenerateRequest) -> Result<WorkerStream, WorkerError> {
        let params = Parameters::from_request(&req)?;
        let info = self.cached_info().await?;
        let guard = self
            .jobs
            .claim(&req.job_id, self.slots_total(&info), "tgi request slots")?;
        let cancel = guard.cancel.clone();
        let stops = StopFilter::new(params.stop);
        let canceled = || WorkerError::new(ErrorCode::Canceled, "canceled before the first token");
        let rendered;
        let inputs = match &req.messages {
            Some(m) => {
                rendered = tokio::select! {
                    r = self.chat_template(m) => r?,
                    _ = cancel.notified() => return Err(canceled()),
                };
                rendered.as_str()
            }
            None => req.prompt.as_str(),
        };
        let body = wire::GenerateStreamRequest {
            inputs,
            parameters: params,
        };
        let resp = tokio::select! {
            r = self.http.post(self.url("/generate_stream")).json(&body).send() => r.map_err(transport)?,
            _ = cancel.notified() => return Err(canceled()),
        };
        let status = resp.status();
        if !status.is_success() {
            let body = resp.bytes().await.unwrap_or_default();
            return Err(wire::error_from_body(
                status.as_u16(),
                &body[..body.len().min(64 * 1024)],
            ));
        }
        // TGI reports overload and validation as the first (and only) SSE event.
        let mut events = EngineEvents::new("tgi", resp);
        let first = tokio::select! {
            e = events.next() => e,
            _ = cancel.notified() => return Err(canceled()),
        };
        let first = match first {
            None => {
                return Err(WorkerError::new(
                    ErrorCode::WorkerReset,
                    "tgi stream ended before its first event",
                ));
            }
            Some(Err(e)) => return Err(e),
            Some(Ok(data)) => match wire::parse_event(&data) {
                wire::Event::Error(e) => return Err(e),
                wire::Event::Token(t) => t,
            },
        };
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(relay(*first, events, stops, tx, cancel, guard));
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn cancel(&self, job_id: &str) -> Result<(), WorkerError> {
        // The relay drops the response (closing the connection) before the slot is free.
        self.jobs.cancel(job_id).await;
        Ok(())
    }
}

type Tx = mpsc::Sender<Result<WorkerEvent, WorkerError>>;

/// Forwards TGI's token events; returns (dropping the response, which closes the connection
/// and makes TGI drop the request) on the end, an error, a cancel or a consumer that left.
async fn relay(
    first: StreamResponse,
    mut events: EngineEvents,
    mut stops: StopFilter,
    tx: Tx,
    cancel: Arc<Notify>,
    _guard: JobGuard,
) {
    let started = Instant::now();
    let mut i: u32 = 0;
    let mut next = Some(first);
    loop {
        let ev = match next.take() {
            Some(ev) => ev,
            None => {
                let data = tokio::select! {
                    d = events.next() => d,
                    _ = cancel.notified() => return,
                    _ = tx.closed() => return,
                };
                let item = match data {
                    None => Err(WorkerError::new(
                        ErrorCode::WorkerReset,
                        "tgi stream ended without its final event",
                    )),
                    Some(Err(e)) => Err(e),
                    Some(Ok(d)) => match wire::parse_event(&d) {
                        wire::Event::Token(t) => Ok(*t),
                        wire::Event::Error(e) => Err(e),
                    },
                };
                match item {
                    Ok(t) => t,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        };
        let last = ev.generated_text.is_some();
        // Special tokens (EOS) are not part of the text.
        let mut out = if ev.token.special {
            String::new()
        } else {
            stops.push(&ev.token.text)
        };
        let finish = ev.details.as_ref().and_then(StreamDetails::finish_reason);
        if last {
            let by_sequence = ev
                .details
                .as_ref()
                .is_some_and(|d| d.finish_reason == "stop_sequence");
            out.push_str(&stops.finish(by_sequence));
        }
        if !out.is_empty() {
            if tx
                .send(Ok(WorkerEvent::Token(TokenEvent { t: out, i })))
                .await
                .is_err()
            {
                return;
            }
            i += 1;
        }
        if last {
            let end = EndEvent {
                tokens_out: i,
                decode_ms: started.elapsed().as_millis() as u64,
                finish_reason: finish
                    .or(Some(FinishReason::Stop))
                    .filter(|_| ev.details.is_some()),
                prompt_tokens: ev.details.as_ref().and_then(|d| d.input_length),
            };
            let _ = tx.send(Ok(WorkerEvent::End(end))).await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_filter_holds_back_and_cuts_the_stop_sequence() {
        let mut f = StopFilter::new(&["\n\n".into(), "END".into()]);
        assert_eq!(f.push("Hello"), "Hello");
        assert_eq!(f.push(" world\n"), " world");
        assert_eq!(f.push("\n"), "");
        assert_eq!(f.finish(true), "");
        let mut f = StopFilter::new(&["END".into()]);
        assert_eq!(f.push("a E"), "a ");
        assert_eq!(f.push("x"), "Ex");
        assert_eq!(f.push("EN"), "");
        // Not a stop after all: the held text comes out at a length finish.
        assert_eq!(f.finish(false), "EN");
        let mut f = StopFilter::new(&[]);
        assert_eq!(f.push("東京"), "東京");
        let mut f = StopFilter::new(&["京都".into()]);
        assert_eq!(f.push("東京"), "東");
        assert_eq!(f.finish(false), "京");
    }
}
