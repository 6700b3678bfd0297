//! Command-line arguments of `llorch` (clap derive).

use std::fmt;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::control_args::{CatalogCommand, ControlCommand, OutputFormat, TopArgs};

/// Default orchestrator URL when neither `--url` nor `LLORCH_URL` is given.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Command-line client of the llama-orch orchestrator (OrchQueue v1).
#[derive(Debug, Clone, Parser)]
#[command(name = "llorch", version, about)]
pub struct Cli {
    /// Base URL of orchestratord.
    #[arg(long, global = true, env = "LLORCH_URL", default_value = DEFAULT_URL)]
    pub url: String,

    /// API key, sent as `Authorization: Bearer <key>`. Prefer the environment variable: command
    /// lines are visible to other local users.
    #[arg(long, global = true, env = "LLORCH_API_KEY", hide_env_values = true)]
    pub api_key: Option<ApiKey>,

    /// Output format: `text` for people, `json` for scripts (one JSON document per command;
    /// `submit` and `top` write one JSON object per line).
    #[arg(long, global = true, value_enum, env = "LLORCH_OUTPUT", default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Base URL of the catalog API (pool-managerd). Default: `--url` (`llorch serve` serves the
    /// catalog on the orchestrator's port; a stand-alone orchestratord does not).
    #[arg(long, global = true, env = "LLORCH_CATALOG_URL")]
    pub catalog_url: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Submit a completion task and stream its tokens.
    Submit(SubmitArgs),
    /// Cancel a queued or running task.
    Cancel {
        /// Id of the task to cancel.
        task_id: String,
    },
    /// Inspect or end a session.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Run the all-in-one server: orchestrator + supervised llama.cpp engines in one process.
    Serve {
        /// Appliance config (TOML); default: one llama.cpp pool on the provisioned engine.
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        /// Address to listen on (overrides server.listen).
        #[arg(long)]
        listen: Option<String>,
    },
    /// The control plane: pools, drain, reload, catalog, capabilities, top, completions, man.
    #[command(flatten)]
    Control(ControlCommand),
}

#[derive(Debug, Clone, Subcommand)]
pub enum SessionCommand {
    /// Print a session's state as JSON.
    Get {
        /// Session id.
        session_id: String,
    },
    /// End a session and free its KV cache.
    Delete {
        /// Session id.
        session_id: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    /// Model reference the task runs on (as configured on the server).
    #[arg(long)]
    pub model_ref: String,

    /// Prompt text; `-` (or leaving the flag out) reads it from stdin, dropping one trailing
    /// newline.
    #[arg(long)]
    pub prompt: Option<String>,

    /// Maximum number of tokens to generate.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: u32,

    /// Context window the task needs, in tokens.
    #[arg(long, default_value_t = 2048)]
    pub ctx: u32,

    /// Scheduling priority class.
    #[arg(long, value_enum, default_value_t = PriorityArg::Interactive)]
    pub priority: PriorityArg,

    /// Session to continue (reuses its KV cache where possible).
    #[arg(long)]
    pub session_id: Option<String>,

    /// Sampling seed (the server derives one from the task id when absent).
    #[arg(long)]
    pub seed: Option<u64>,

    /// Client-chosen task id (the server assigns one when absent).
    #[arg(long)]
    pub task_id: Option<String>,

    /// Relative deadline from submission, in milliseconds.
    #[arg(long)]
    pub deadline_ms: Option<u64>,

    /// Only enqueue the task: print its id and queue position, do not stream.
    #[arg(long)]
    pub no_stream: bool,

    /// Print machine-readable JSON lines (`{"event": ..., "data": ...}`) on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `--priority` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PriorityArg {
    Interactive,
    Batch,
}

impl From<PriorityArg> for api_types::Priority {
    fn from(p: PriorityArg) -> Self {
        match p {
            PriorityArg::Interactive => api_types::Priority::Interactive,
            PriorityArg::Batch => api_types::Priority::Batch,
        }
    }
}

/// An API key. Its `Debug` output is redacted so that it never shows up in logs or panics, and
/// it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// The key itself; use only to build the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl FromStr for ApiKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("the API key must not be empty".to_string());
        }
        // Must be usable as an HTTP header value; do not echo the key in the message.
        if s.bytes().any(|b| b.is_ascii_control()) {
            return Err("the API key contains control characters".to_string());
        }
        Ok(ApiKey(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let mut v = vec!["llorch", "--url", "http://h:1"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v)
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn submit_defaults() {
        let cli = parse(&["submit", "--model-ref", "m", "--prompt", "hi"]).expect("parses");
        let Command::Submit(a) = cli.command else {
            panic!("not submit")
        };
        assert_eq!(a.model_ref, "m");
        assert_eq!(a.prompt.as_deref(), Some("hi"));
        assert_eq!(a.max_tokens, 64);
        assert_eq!(a.ctx, 2048);
        assert_eq!(a.priority, PriorityArg::Interactive);
        assert!(!a.no_stream && !a.json);
        assert_eq!(cli.url, "http://h:1");
    }

    #[test]
    fn submit_all_flags() {
        let cli = parse(&[
            "submit",
            "--model-ref",
            "m",
            "--prompt",
            "-",
            "--max-tokens",
            "5",
            "--ctx",
            "512",
            "--priority",
            "batch",
            "--session-id",
            "s1",
            "--seed",
            "7",
            "--task-id",
            "t1",
            "--deadline-ms",
            "900",
            "--no-stream",
            "--json",
            "--api-key",
            "k",
        ])
        .expect("parses");
        assert_eq!(cli.api_key, Some(ApiKey::new("k")));
        let Command::Submit(a) = cli.command else {
            panic!("not submit")
        };
        assert_eq!(a.prompt.as_deref(), Some("-"));
        assert_eq!((a.max_tokens, a.ctx), (5, 512));
        assert_eq!(a.priority, PriorityArg::Batch);
        assert_eq!(a.session_id.as_deref(), Some("s1"));
        assert_eq!(a.seed, Some(7));
        assert_eq!(a.task_id.as_deref(), Some("t1"));
        assert_eq!(a.deadline_ms, Some(900));
        assert!(a.no_stream && a.json);
    }

    #[test]
    fn submit_requires_model_ref_and_rejects_bad_values() {
        assert!(parse(&["submit", "--prompt", "x"]).is_err());
        assert!(parse(&["submit", "--model-ref", "m", "--priority", "urgent"]).is_err());
        assert!(parse(&["submit", "--model-ref", "m", "--max-tokens", "-1"]).is_err());
        assert!(parse(&["submit", "--model-ref", "m", "--api-key", ""]).is_err());
    }

    #[test]
    fn other_subcommands() {
        let cli = parse(&["cancel", "t9"]).expect("parses");
        assert!(matches!(cli.command, Command::Cancel { task_id } if task_id == "t9"));
        let cli = parse(&["session", "get", "s"]).expect("parses");
        assert!(
            matches!(cli.command, Command::Session(SessionCommand::Get { session_id }) if session_id == "s")
        );
        let cli = parse(&["session", "delete", "s"]).expect("parses");
        assert!(matches!(
            cli.command,
            Command::Session(SessionCommand::Delete { session_id }) if session_id == "s"
        ));
        assert!(parse(&["session"]).is_err());
        assert!(parse(&["cancel"]).is_err());
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli =
            Cli::try_parse_from(["llorch", "cancel", "t", "--url", "http://x:2"]).expect("parses");
        assert_eq!(cli.url, "http://x:2");
    }

    #[test]
    fn api_key_debug_is_redacted() {
        let cli = parse(&["--api-key", "sekrit-123", "cancel", "t"]).expect("parses");
        let dbg = format!("{cli:?}");
        assert!(!dbg.contains("sekrit-123"), "{dbg}");
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn priority_maps_to_wire_type() {
        assert_eq!(
            api_types::Priority::from(PriorityArg::Interactive),
            api_types::Priority::Interactive
        );
        assert_eq!(
            api_types::Priority::from(PriorityArg::Batch),
            api_types::Priority::Batch
        );
    }
}
