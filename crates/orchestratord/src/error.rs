//! The one mapping from failures to the public error envelope (ORCH-2006, 3093) lives in
//! `llorch-http-envelope`, shared with pool-managerd; this module re-exports it under the
//! name the rest of orchestratord uses.

pub use http_envelope::{ApiError, ApiJson, CorrelationId, correlation, fallback};
