//! [`GatedAdapter`]: an engine adapter whose health is the supervisor's view. The engine's own
//! `/health` turns ok as soon as the weights are in memory; the replica is Ready only after the
//! supervisor's one-token decode, and not while it is restarting.

use std::sync::Arc;

use adapter_api::{
    GenerateRequest, WorkerAdapter, WorkerError, WorkerHealth, WorkerProperties, WorkerState,
    WorkerStream,
};
use api_types::ErrorCode;
use tokio::sync::watch;

use crate::supervisor::{Phase, ReplicaStatus};

pub struct GatedAdapter {
    inner: Arc<dyn WorkerAdapter>,
    status: watch::Receiver<ReplicaStatus>,
}

impl GatedAdapter {
    pub fn new(inner: Arc<dyn WorkerAdapter>, status: watch::Receiver<ReplicaStatus>) -> Self {
        GatedAdapter { inner, status }
    }

    fn ready(&self) -> Result<(), WorkerError> {
        let s = self.status.borrow();
        if s.phase == Phase::Ready {
            Ok(())
        } else {
            Err(WorkerError::new(
                ErrorCode::PoolUnready,
                format!(
                    "replica not ready ({:?}){}",
                    s.phase,
                    s.last_error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ),
            ))
        }
    }
}

#[async_trait::async_trait]
impl WorkerAdapter for GatedAdapter {
    async fn health(&self) -> Result<WorkerHealth, WorkerError> {
        let s = self.status.borrow().clone();
        let (state, last_error) = match s.phase {
            Phase::Ready => (WorkerState::Ready, None),
            Phase::Starting | Phase::Backoff { .. } => (WorkerState::Loading, s.last_error),
            Phase::BreakerOpen { .. } | Phase::Failed | Phase::Stopped => (
                WorkerState::Error,
                s.last_error.or(Some(format!("{:?}", s.phase))),
            ),
        };
        Ok(WorkerHealth {
            state,
            last_error,
            restarts: s.restarts,
            circuit_open: matches!(s.phase, Phase::BreakerOpen { .. }),
        })
    }

    async fn properties(&self) -> Result<WorkerProperties, WorkerError> {
        self.ready()?;
        self.inner.properties().await
    }

    async fn generate(&self, req: GenerateRequest) -> Result<WorkerStream, WorkerError> {
        self.ready()?;
        self.inner.generate(req).await
    }

    async fn cancel(&self, job_id: &str) -> Result<(), WorkerError> {
        self.inner.cancel(job_id).await
    }
}
