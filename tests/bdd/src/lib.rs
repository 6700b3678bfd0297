//! Harness of the behaviour journeys in `features/` (the cucumber runner is `tests/bdd/main.rs`):
//! it finds (builds, if need be) the real `orchestratord` and `pool-managerd` binaries, starts
//! them as child processes the systemd way (socket activation on a free loopback port, READY=1
//! over sd_notify) with configs that use the deterministic mock engine, and talks to them only
//! over the public HTTP/SSE API.
//!
//! It must not depend on the daemons' libraries (orchestratord, pool-managerd, api-types): the
//! journeys see what a client sees, JSON and headers, so a change of the wire is a failing
//! journey, not a silently recompiled one. `daemon-kit` is used only for its socket-activation
//! spawner.

pub mod bins;
pub mod config;
pub mod daemon;
pub mod http;

pub use bins::{binary, prepare};
pub use config::{ALICE_KEY, BOB_KEY, OPERATOR_KEY, OrchConfig};
pub use daemon::Daemon;
pub use http::{Event, OpenStream, Reply};
