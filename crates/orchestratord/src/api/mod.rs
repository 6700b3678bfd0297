//! HTTP handlers, one module per resource. Handlers validate and translate; the state
//! operations they call own the behaviour.

pub mod auth;
pub mod control;
pub mod openai;
pub mod openai_map;
pub mod ops;
pub mod sessions;
pub(crate) mod sse;
pub mod tasks;
