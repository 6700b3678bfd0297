//! The worker contract between orchestratord and engine adapters (SPEC §5): the
//! [`WorkerAdapter`] trait, and the worker protocol that carries it across a process boundary
//! (HTTP + SSE over a unix socket or TCP): [`server::router`] exposes any adapter, and
//! [`client::HttpWorker`] is an adapter that talks to such a server. [`prom`] parses engines'
//! Prometheus text; [`engine_stream`] holds what HTTP engine adapters share (a bounded SSE
//! reader of an engine's response body, the job and slot table).
//!
//! Must not depend on any engine adapter or on orchestratord; engines depend on this crate.

pub mod client;
pub mod engine_stream;
pub mod prom;
pub mod server;

use std::pin::Pin;

pub use api_types::worker::{GenerateRequest, WorkerHealth, WorkerProperties, WorkerState};
use api_types::{EndEvent, ErrorCode, StreamErrorEvent, TokenEvent};
use futures::Stream;

/// One item of a generation stream. A well-behaved stream yields `Token`s with gap-free
/// indices and then exactly one `End`; a stream that stops without `End` means the worker
/// died (WORKER_RESET).
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    Token(TokenEvent),
    End(EndEvent),
}

/// A typed failure of a worker or of the transport to it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct WorkerError {
    pub code: ErrorCode,
    pub message: String,
    pub retriable: bool,
}

impl WorkerError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WorkerError {
            code,
            message: message.into(),
            retriable: code.retriable(),
        }
    }

    pub fn to_event(&self, engine: Option<String>) -> StreamErrorEvent {
        StreamErrorEvent {
            code: self.code,
            message: self.message.clone(),
            engine,
            retriable: Some(self.retriable),
            retry_after_ms: None,
        }
    }

    pub fn from_event(e: StreamErrorEvent) -> Self {
        WorkerError {
            code: e.code,
            retriable: e.retriable.unwrap_or(e.code.retriable()),
            message: e.message,
        }
    }
}

pub type WorkerStream = Pin<Box<dyn Stream<Item = Result<WorkerEvent, WorkerError>> + Send>>;

/// What every engine adapter provides. Dropping a [`WorkerStream`] must stop the job and free
/// its engine slot; [`WorkerAdapter::cancel`] does the same for a job by id and returns once
/// the slot is free again.
#[async_trait::async_trait]
pub trait WorkerAdapter: Send + Sync + 'static {
    async fn health(&self) -> Result<WorkerHealth, WorkerError>;
    async fn properties(&self) -> Result<WorkerProperties, WorkerError>;
    async fn generate(&self, req: GenerateRequest) -> Result<WorkerStream, WorkerError>;
    async fn cancel(&self, job_id: &str) -> Result<(), WorkerError>;
}
