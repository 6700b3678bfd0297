//! orchestratord: the public OrchQueue v1 HTTP/SSE server of llama-orch and its control plane.
//!
//! Map of this crate:
//! - [`app`] builds the axum router and [`serve`] runs it on a listener (TCP or unix, passed by
//!   systemd or bound here) until a shutdown signal, then drains.
//! - [`state`] holds the scheduler state (orchestrator-core types behind one mutex), the task
//!   table and the replicas, and the operations that change them together (submit, cancel,
//!   dispatch, drain, reload through a [`PoolController`]); [`runner`] drives one task on one
//!   replica with the watchdog.
//! - [`task`] is a task's event log: the single place that enforces stream order and makes
//!   cancel race-free (no token is appended after a cancel is acknowledged).
//! - [`api`] has the HTTP handlers; [`error`] maps every failure once to the error envelope;
//!   [`auth`], [`metrics`], [`openapi`] are what their names say; [`policy`] loads the pools'
//!   WebAssembly policy plugins and builds the snapshots their hooks decide on.
//! - [`registry_follower`] follows pool-managerd's replica registry (readiness, restarts,
//!   engine versions, model lifecycle) beside the adapter probes.
//!
//! Engines are reached only through `adapter-api` ([`adapter_api::WorkerAdapter`]): over the
//! worker protocol for real engines, or the in-process mock stand-in. This crate must not
//! import engine adapter crates.

pub mod admission;
pub mod api;
pub mod app;
pub mod auth;
pub mod completion;
pub mod dispatch;
pub mod engines;
pub mod error;
pub mod health;
pub mod lifecycle;
pub mod metrics;
pub mod openapi;
pub mod plugins;
pub mod policy;
pub mod registry_follower;
pub mod runner;
pub mod state;
pub mod task;

pub use app::{
    AdapterOverrides, Listener, LocalServer, build, build_managed, build_with, serve,
    serve_managed, serve_with,
};
pub use state::PoolController;
