//! The one TOML config of the llama-orch appliance: its types, strict loading (unknown keys
//! are errors that name the file, line and key path), semantic validation, and the JSON Schema
//! emitted to `docs/config.schema.json`.
//!
//! Depends only on api-types and serde/toml/schemars: no I/O beyond reading the file it is
//! given (and, in [`check_file`] only, read-only checks of the files that file names), no
//! runtime. `~/` in paths is expanded against `$HOME` at load.

mod load;
mod paths;
mod retention;
mod supervised;
mod types;

pub use load::{
    ConfigError, MAX_POLICY_FUEL, MAX_POLICY_MEMORY_BYTES, MIN_POLICY_MEMORY_BYTES, load_file,
    parse_str,
};
pub use paths::{check_file, check_files, local_model_path};
pub use retention::{MAX_TASK_LOG_BUDGET_BYTES, MAX_TASK_LOG_TASKS, MIN_TASK_LOG_BUDGET_BYTES};
pub use types::*;

/// JSON Schema of [`Config`], pretty-printed with a trailing newline (the committed form).
pub fn json_schema_pretty() -> String {
    let schema = schemars::schema_for!(Config);
    let mut s = serde_json::to_string_pretty(&schema).unwrap_or_default();
    s.push('\n');
    s
}
