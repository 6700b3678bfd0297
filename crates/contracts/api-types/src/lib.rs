//! Wire types of llama-orch: the public OrchQueue v1 data plane, the control plane and the
//! internal worker protocol spoken between orchestratord and adapter daemons.
//!
//! These types *are* the contract: the OpenAPI document in `docs/api/openapi.json` is generated
//! from them. This crate must stay free of I/O and of any runtime (no tokio, axum, reqwest);
//! it depends only on serde and utoipa so every other crate can share it.

pub mod catalog;
pub mod catalog_api;
pub mod control;
pub mod data;
pub mod error;
pub mod openai;
pub mod sampling;
pub mod worker;

pub use catalog::*;
pub use control::*;
pub use data::*;
pub use error::*;
pub use sampling::*;

/// Version of the public API; equals the OpenAPI `info.version` (ORCH-3095).
pub const API_VERSION: &str = "1.0.0";

/// Header carrying the correlation id of a request (echoed or generated).
pub const CORRELATION_ID_HEADER: &str = "x-correlation-id";
/// Header carrying the suggested client backoff on 429 responses, in milliseconds.
pub const BACKOFF_MS_HEADER: &str = "x-backoff-ms";
/// Header carrying an API key (alternative to `Authorization: Bearer`).
pub const API_KEY_HEADER: &str = "x-api-key";

/// Names of the SSE events on `GET /v1/tasks/{id}/stream`, in contract order (ORCH-2002).
pub mod sse_event {
    pub const STARTED: &str = "started";
    pub const TOKEN: &str = "token";
    pub const METRICS: &str = "metrics";
    pub const END: &str = "end";
    pub const ERROR: &str = "error";
}
