//! Pure scheduling logic of llama-orch: weighted fair queuing with EDF and full policies,
//! admission checks, tenant quotas, replica placement, preemption choices, sessions with
//! budgets and KV residency, seeds, and start/finish-time prediction.
//!
//! Everything here is plain data and functions: no I/O, no clock (callers pass `now_ms`), no
//! tokio/axum/reqwest. That keeps it property-testable (see `tests/`) and lets orchestratord
//! hold it behind one mutex. Do not add runtime dependencies to this crate.

pub mod admission;
pub mod placement;
pub mod predict;
pub mod preempt;
pub mod queue;
pub mod quota;
pub mod seed;
pub mod session;
pub mod share;

pub use admission::{
    AdmissionError, AdmissionInput, ModelLimits, check_admission, estimate_prompt_tokens,
};
pub use placement::{
    PlacementDecision, PlacementRequest, ReplicaIdentity, ReplicaState, ReplicaView,
    choose_replica, set_membership_conflict,
};
pub use predict::{DecodeRate, ServiceTimeEstimator, on_time_probability, pool_service_ms};
pub use preempt::{RunningView, hard_preemption_victim};
pub use queue::{Dispatched, EnqueueOutcome, FlowKey, FullPolicy, PoolQueue, Weights};
pub use quota::{QuotaBook, QuotaKind, QuotaViolation, TenantQuota};
pub use seed::seed_from_task_id;
pub use session::{SessionError, SessionStore, SessionTurn, SessionView};
pub use share::ShareTracker;
