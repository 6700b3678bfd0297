//! Harness for llama-orch's chaos scenarios (`tests/chaos.rs`): it starts the real daemons
//! (`orchestratord`, `pool-managerd`, `llorch-adapterd`, `llorch serve`) as separate processes
//! the way systemd does (socket activation, sd_notify), injects faults into them (SIGKILL,
//! restarts, stalled readers, a full disk, a connection storm) and observes only what a client
//! or an operator can see: the public HTTP/SSE API, `/metrics`, and `/proc`.
//!
//! Must not depend on: any server crate (orchestratord, pool-managerd, adapters, serve). The
//! scenarios drive binaries over sockets only; wire types come from `api-types`, process
//! plumbing from `daemon-kit::testing`.

pub mod client;
pub mod harness;
pub mod procs;
pub mod raw;
pub mod report;

/// A multi-threaded tokio runtime for one scenario (two workers: CI has two cores).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}
