//! Step definitions, by subject. Each step is one sentence of the features' vocabulary; the
//! README says how to add one.

mod catalog;
mod checks;
mod control;
mod setup;
mod tasks;
