//! The public error envelope (ORCH-2006, 3093) and its stable codes.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Stable error codes. The first twelve come from SPEC §1; the last five are the auth and
/// lookup codes SPEC leaves to "401/403 auth errors" and to plain HTTP (see docs/api/errors.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    AdmissionReject,
    QueueFullDropLru,
    InvalidParams,
    PoolUnready,
    PoolUnavailable,
    ReplicaExhausted,
    DecodeTimeout,
    WorkerReset,
    Internal,
    DeadlineUnmet,
    ModelDeprecated,
    UntrustedArtifact,
    /// Missing or unknown API key (401).
    Unauthenticated,
    /// Valid key, wrong role for the endpoint (403).
    Forbidden,
    /// Unknown task or session, or one owned by another tenant (404: no existence oracle).
    NotFound,
    /// The task already reached a terminal state (409).
    TaskFinished,
    /// Terminal stream event of a task canceled by its client (never an HTTP status).
    Canceled,
    /// The task finished and its event log was evicted from the replay store to keep within
    /// the retention budget (410): it will not come back.
    TaskEvicted,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::AdmissionReject => "ADMISSION_REJECT",
            ErrorCode::QueueFullDropLru => "QUEUE_FULL_DROP_LRU",
            ErrorCode::InvalidParams => "INVALID_PARAMS",
            ErrorCode::PoolUnready => "POOL_UNREADY",
            ErrorCode::PoolUnavailable => "POOL_UNAVAILABLE",
            ErrorCode::ReplicaExhausted => "REPLICA_EXHAUSTED",
            ErrorCode::DecodeTimeout => "DECODE_TIMEOUT",
            ErrorCode::WorkerReset => "WORKER_RESET",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::DeadlineUnmet => "DEADLINE_UNMET",
            ErrorCode::ModelDeprecated => "MODEL_DEPRECATED",
            ErrorCode::UntrustedArtifact => "UNTRUSTED_ARTIFACT",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::TaskFinished => "TASK_FINISHED",
            ErrorCode::Canceled => "CANCELED",
            ErrorCode::TaskEvicted => "TASK_EVICTED",
        }
    }

    /// The one place where codes map to HTTP status codes.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::AdmissionReject | ErrorCode::QueueFullDropLru => 429,
            ErrorCode::InvalidParams | ErrorCode::DeadlineUnmet => 400,
            ErrorCode::ModelDeprecated | ErrorCode::TaskEvicted => 410,
            ErrorCode::PoolUnready | ErrorCode::PoolUnavailable | ErrorCode::ReplicaExhausted => {
                503
            }
            ErrorCode::DecodeTimeout => 504,
            ErrorCode::WorkerReset => 502,
            ErrorCode::Internal => 500,
            ErrorCode::UntrustedArtifact => 422,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::TaskFinished | ErrorCode::Canceled => 409,
        }
    }

    /// Whether retrying the same request later can succeed.
    pub fn retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::AdmissionReject
                | ErrorCode::QueueFullDropLru
                | ErrorCode::PoolUnready
                | ErrorCode::PoolUnavailable
                | ErrorCode::ReplicaExhausted
                | ErrorCode::DecodeTimeout
                | ErrorCode::WorkerReset
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Body of every non-2xx response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorEnvelope {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retriable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// Full-queue policy that produced a 429 (`reject`, `drop-lru`, `shed-low-priority`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_label: Option<String>,
    pub correlation_id: String,
}
