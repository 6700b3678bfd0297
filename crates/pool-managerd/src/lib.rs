//! pool-managerd: owns engine processes. Provisions engine binaries ([`provision`]) and model
//! artifacts by model_ref — local file, resumable http(s) download, or `sha256:` catalog entry
//! — always checksummed before load ([`artifacts`]); keeps the model catalog in an embedded
//! SQLite database ([`catalog`], HTTP API in [`catalog_api`]); reads GPUs through NVML
//! ([`gpu`]); supervises one engine per replica — llama.cpp, vLLM, TGI or Triton
//! ([`engine_kind`]) — ([`supervisor`]) under a restart policy with a circuit breaker
//! ([`policy`]), Ready after the startup self-test ([`readiness`]); gates each replica's adapter on the supervisor's readiness
//! ([`gated::GatedAdapter`]); publishes the replica registry ([`registry`]) and Prometheus
//! metrics ([`metrics`]); [`daemon`] composes the daemon's HTTP service.
//!
//! Must never depend on orchestratord; it talks to engines through adapter crates only.

pub mod artifacts;
pub mod catalog;
pub mod catalog_api;
pub mod daemon;
pub mod engine_kind;
pub mod engines;
pub mod gated;
pub mod gpu;
pub mod http;
pub mod metrics;
pub mod policy;
pub mod provision;
pub mod readiness;
pub mod registry;
pub mod supervisor;
