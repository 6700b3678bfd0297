//! The process harness of the proof suites under `tests/`: it finds the binaries cargo built
//! for this workspace (`llorch`, `orchestratord`), starts them as real child processes on a
//! free loopback port with a config written to a temporary directory, and talks to them only
//! through the public HTTP/SSE API (`/v1/tasks`, the task stream, `/v1/pools/{id}/health`,
//! `/metrics`).
//!
//! It must not depend on any server crate (orchestratord, pool-managerd, llorch-serve, the
//! adapters): a suite that linked them could test library calls instead of the product. Its
//! only project dependencies are the wire types (api-types) and test-fixtures (where the
//! provisioned engine and model are).

mod api;
mod bins;
mod daemon;
mod prom;

pub use api::{Client, Stream};
pub use bins::{binary, workspace_root};
pub use daemon::Daemon;
pub use prom::Scrape;

/// Everything that can go wrong while driving the binaries; tests turn these into failures
/// with the message, never into skips.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(
        "{path} is missing: build it first with `cargo build -p {package} --bin {name}` \
         (`cargo test --workspace` builds it)"
    )]
    MissingBinary {
        path: String,
        package: &'static str,
        name: String,
    },
    #[error(
        "{path} is older than its source {source_file}: rebuild it with \
         `cargo build -p {package} --bin {name}` (`cargo test --workspace` rebuilds it)"
    )]
    StaleBinary {
        path: String,
        source_file: String,
        package: &'static str,
        name: String,
    },
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
    #[error("{what} did not happen within {secs} s{log}")]
    Timeout {
        what: String,
        secs: u64,
        log: String,
    },
    #[error("{what} exited early with {status}{log}")]
    Exited {
        what: String,
        status: String,
        log: String,
    },
    #[error("{what}: {err}")]
    Http { what: String, err: reqwest::Error },
    #[error("{what}: HTTP {status}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{what}: {detail}")]
    Protocol { what: String, detail: String },
}

pub type Result<T> = std::result::Result<T, HarnessError>;
