//! pool-managerd: owns engine processes. Provisions engine binaries and verifies model
//! artifacts ([`provision`]), supervises one engine per replica ([`supervisor`]) under a
//! restart policy with a circuit breaker ([`policy`]), and gates each replica's adapter on the
//! supervisor's readiness ([`gated::GatedAdapter`]).
//!
//! Must never depend on orchestratord; it talks to engines through adapter crates only.

pub mod engines;
pub mod gated;
pub mod policy;
pub mod provision;
pub mod registry;
pub mod supervisor;
