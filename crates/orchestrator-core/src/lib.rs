//! Pure scheduling logic of llama-orch: bounded priority queues with full policies, admission
//! checks, replica placement, sessions, seeds and start-time prediction.
//!
//! Everything here is plain data and functions: no I/O, no clock (callers pass `now_ms`), no
//! tokio/axum/reqwest. That keeps it property-testable (see `tests/`) and lets orchestratord
//! hold it behind one mutex. Do not add runtime dependencies to this crate.

pub mod admission;
pub mod placement;
pub mod predict;
pub mod queue;
pub mod seed;
pub mod session;

pub use admission::{
    AdmissionError, AdmissionInput, ModelLimits, check_admission, estimate_prompt_tokens,
};
pub use placement::{
    PlacementDecision, PlacementRequest, ReplicaState, ReplicaView, choose_replica,
};
pub use predict::{ServiceTimeEstimator, on_time_probability};
pub use queue::{EnqueueOutcome, FullPolicy, PoolQueue};
pub use seed::seed_from_task_id;
pub use session::{SessionError, SessionStore, SessionTurn, SessionView};
