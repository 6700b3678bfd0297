//! orchestratord: the public OrchQueue v1 HTTP/SSE server of llama-orch and its control plane.
//!
//! Map of this crate, in the one direction its modules import each other (api → operations →
//! state → orchestrator-core; `tests/module_cycles.rs` fails on a cycle):
//! - [`app`] builds the axum router and [`serve`] runs it on a listener (TCP or unix, passed by
//!   systemd or bound here) until a shutdown signal, then drains. [`api`] has the HTTP handlers
//!   (and the key extractors); [`openapi`] lists them and serves the document.
//! - The operations, the rooms a task walks through, each an `impl AppState` block that says
//!   what it may touch: [`admission`] (submit and its checks), [`dispatch`] (placement,
//!   preemption, starting a [`runner`], which drives one task on one replica with the
//!   watchdog), [`completion`] (release, requeue, retire, cancel, expiry), [`lifecycle`]
//!   (drain, reload through a [`PoolController`], policy reload, catalog-driven drains),
//!   [`health`] (probes, registry snapshots, marking replicas unready).
//!   [`registry_follower`] is the transport of pool-managerd's replica registry feed.
//! - [`state`] is the data: pools and replicas, each pool's scheduling state behind its own
//!   lock, the shared books (sessions, quotas, shares), the task table, and the lock order.
//! - [`task`] is a task's event log: the single place that enforces stream order and makes
//!   cancel race-free (no token is appended after a cancel is acknowledged).
//! - [`sampling`] validates a task's input and sampling fields and resolves its sampler
//!   profile (pure).
//! - [`error`] maps every failure once to the error envelope; [`auth`] is the key ring,
//!   [`metrics`] the Prometheus registry; [`plugins`] loads the pools' WebAssembly policy
//!   plugins and [`policy`] builds the snapshots their hooks decide on; [`memory`] gives the
//!   heap back to the kernel when the server goes idle.
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
pub mod memory;
pub mod metrics;
pub mod openapi;
pub mod plugins;
pub mod policy;
pub mod registry_follower;
pub mod runner;
pub mod sampling;
pub mod state;
pub mod task;
pub mod upkeep;

pub use app::{
    AdapterOverrides, Listener, LocalServer, build, build_managed, build_with, serve,
    serve_managed, serve_with,
};
pub use state::PoolController;
