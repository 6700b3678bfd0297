//! [`HttpWorker`]: a [`WorkerAdapter`] that speaks the worker protocol to an adapter daemon.

use std::time::Duration;

use api_types::{ErrorCode, StreamErrorEvent, sse_event};
use eventsource_stream::Eventsource;
use futures::StreamExt;

use crate::{
    GenerateRequest, WorkerAdapter, WorkerError, WorkerEvent, WorkerHealth, WorkerProperties,
    WorkerStream,
};

/// Where an adapter daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(std::path::PathBuf),
    Http(String),
}

impl Endpoint {
    /// Parses `unix:/abs/path.sock` or `http://host:port`.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.starts_with('/') {
                return Ok(Endpoint::Unix(p.into()));
            }
        } else if s.starts_with("http://") {
            return Ok(Endpoint::Http(s.trim_end_matches('/').to_string()));
        }
        Err(format!(
            "`{s}` is not `unix:/abs/path.sock` or `http://host:port`"
        ))
    }
}

pub struct HttpWorker {
    client: reqwest::Client,
    base: String,
}

impl HttpWorker {
    pub fn new(endpoint: &Endpoint) -> Result<HttpWorker, WorkerError> {
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(30));
        let (builder, base) = match endpoint {
            Endpoint::Unix(p) => (builder.unix_socket(p.clone()), "http://worker".to_string()),
            Endpoint::Http(b) => (builder, b.clone()),
        };
        let client = builder
            .build()
            .map_err(|e| WorkerError::new(ErrorCode::Internal, format!("http client: {e}")))?;
        Ok(HttpWorker { client, base })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, WorkerError> {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(transport)?;
        let resp = check(resp).await?;
        resp.json::<T>().await.map_err(|e| {
            WorkerError::new(
                ErrorCode::WorkerReset,
                format!("bad worker response to {path}: {e}"),
            )
        })
    }
}

fn transport(e: reqwest::Error) -> WorkerError {
    WorkerError::new(ErrorCode::WorkerReset, format!("worker unreachable: {e}"))
}

/// Turns a non-2xx worker response into its typed error (or WORKER_RESET if it is garbage).
async fn check(resp: reqwest::Response) -> Result<reqwest::Response, WorkerError> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    Err(match serde_json::from_str::<StreamErrorEvent>(&body) {
        Ok(e) => WorkerError::from_event(e),
        Err(_) => WorkerError::new(ErrorCode::WorkerReset, format!("worker answered {status}")),
    })
}

fn parse_event(name: &str, data: &str) -> Result<WorkerEvent, WorkerError> {
    let bad = |e: serde_json::Error| {
        WorkerError::new(
            ErrorCode::WorkerReset,
            format!("bad `{name}` event from worker: {e}"),
        )
    };
    match name {
        sse_event::TOKEN => Ok(WorkerEvent::Token(serde_json::from_str(data).map_err(bad)?)),
        sse_event::END => Ok(WorkerEvent::End(serde_json::from_str(data).map_err(bad)?)),
        sse_event::ERROR => Err(WorkerError::from_event(
            serde_json::from_str(data).map_err(bad)?,
        )),
        other => Err(WorkerError::new(
            ErrorCode::WorkerReset,
            format!("unknown worker event `{other}`"),
        )),
    }
}

#[async_trait::async_trait]
impl WorkerAdapter for HttpWorker {
    async fn health(&self) -> Result<WorkerHealth, WorkerError> {
        self.get_json("/health").await
    }

    async fn properties(&self) -> Result<WorkerProperties, WorkerError> {
        self.get_json("/properties").await
    }

    async fn generate(&self, req: GenerateRequest) -> Result<WorkerStream, WorkerError> {
        let resp = self
            .client
            .post(format!("{}/generate", self.base))
            .json(&req)
            .send()
            .await
            .map_err(transport)?;
        let resp = check(resp).await?;
        let events = resp.bytes_stream().eventsource().map(|item| match item {
            Ok(ev) => parse_event(&ev.event, &ev.data),
            Err(e) => Err(WorkerError::new(
                ErrorCode::WorkerReset,
                format!("worker stream broke: {e}"),
            )),
        });
        Ok(Box::pin(events))
    }

    async fn cancel(&self, job_id: &str) -> Result<(), WorkerError> {
        let resp = self
            .client
            .post(format!("{}/cancel/{job_id}", self.base))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(transport)?;
        check(resp).await.map(|_| ())
    }
}
