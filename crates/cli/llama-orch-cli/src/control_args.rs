//! Command-line arguments of the control-plane commands (`llorch pools`, `drain`, `reload`,
//! `catalog`, `capabilities`, `top`) and of the generated artefacts (`completions`, `man`).

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

/// `--output` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    /// Tables and sentences for people.
    #[default]
    Text,
    /// JSON for scripts: the server's own documents (api-types), unchanged.
    Json,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ControlCommand {
    /// Table of pools and their replicas: state, engine, version, slots, queue depth, last
    /// error (control key).
    Pools {
        /// Show only this pool.
        pool: Option<String>,
    },
    /// Drain a pool: no new work; running tasks get until the deadline, then are canceled;
    /// queued tasks fail (control key).
    Drain {
        /// Pool id.
        pool: String,
        /// How long running tasks may continue: `500ms`, `30s`, `5m`, `1h` or plain
        /// milliseconds; at most one day.
        #[arg(long, value_parser = parse_duration_ms)]
        deadline: u64,
    },
    /// Reload a pool with another model: started beside the old one, switched once Ready,
    /// rolled back otherwise (control key; needs a pool manager, e.g. `llorch serve`).
    Reload {
        /// Pool id.
        pool: String,
        /// The new model reference.
        #[arg(long)]
        model_ref: String,
        /// Required SHA-256 of the new model file (64 hex characters).
        #[arg(long)]
        sha256: Option<String>,
    },
    /// The model catalog (pool-managerd, or `llorch serve`; see `--catalog-url`).
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// What the server offers: API version, engines, context, limits of the caller's tenant.
    Capabilities,
    /// Live view, refreshed every interval: tasks running and queued per pool, tokens/s,
    /// dispatch shares per tenant (from `/metrics` and `/v1/replicasets`; control key).
    Top(TopArgs),
    /// Print a shell completion script for llorch on stdout.
    Completions {
        /// Shell to generate for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (roff): `llorch.1` and one per subcommand into DIR, or `llorch.1` on
    /// stdout without `--dir`.
    Man {
        /// Directory to write the pages into (created if missing).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum CatalogCommand {
    /// Every catalog entry.
    List,
    /// Register an artifact (local path or http(s) URL) under its SHA-256, in state `draft`.
    Add {
        /// Local path (`file:` prefix optional) or `http(s)://` URL.
        model_ref: String,
        /// SHA-256 of the artifact (64 hex characters); becomes the entry's id.
        #[arg(long)]
        sha256: String,
    },
    /// Show one entry.
    Get {
        /// `sha256:<digest>` or the bare digest.
        id: String,
    },
    /// Re-hash the entry's artifact and record the result (passed, mismatch, unavailable).
    Verify {
        /// `sha256:<digest>` or the bare digest.
        id: String,
    },
    /// Make a verified entry serve (state `active`).
    Activate {
        /// `sha256:<digest>` or the bare digest.
        id: String,
    },
    /// Stop new work on the model (state `deprecated`): its pools refuse tasks and drain.
    Deprecate {
        /// `sha256:<digest>` or the bare digest.
        id: String,
    },
    /// Unload the model for good (state `retired`, final).
    Retire {
        /// `sha256:<digest>` or the bare digest.
        id: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct TopArgs {
    /// Refresh interval: `500ms`, `1s`, `2s`, ... (tokens/s is measured over it).
    #[arg(long, value_parser = parse_duration_ms, default_value = "1s")]
    pub interval: u64,
    /// Show one frame and exit (same as `--iterations 1`).
    #[arg(long, conflicts_with = "iterations")]
    pub once: bool,
    /// Show this many frames and exit (default: until interrupted).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub iterations: Option<u64>,
}

impl TopArgs {
    /// Frames to show; `None` = until interrupted.
    pub fn frames(&self) -> Option<u64> {
        if self.once { Some(1) } else { self.iterations }
    }
}

/// Parses `250`, `250ms`, `30s`, `5m`, `1h` into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "ms"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 500ms, 30s, 5m, 1h)"))?;
    let factor = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m or h)")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("`{s}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let mut v = vec!["llorch"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v)
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("250"), Ok(250));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        for bad in ["", "s", "1d", "-1s", "1.5s", "99999999999999999999h"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn control_commands_parse() {
        let cli = parse(&["--output", "json", "drain", "p", "--deadline", "2s"]).expect("parses");
        assert_eq!(cli.output, OutputFormat::Json);
        assert!(matches!(
            cli.command,
            Command::Control(ControlCommand::Drain { ref pool, deadline: 2000 }) if pool == "p"
        ));
        assert!(parse(&["drain", "p"]).is_err(), "--deadline is required");
        let cli = parse(&["reload", "p", "--model-ref", "m", "--output", "json"]).expect("parses");
        assert_eq!(cli.output, OutputFormat::Json);
        assert!(matches!(
            cli.command,
            Command::Control(ControlCommand::Reload { ref model_ref, sha256: None, .. }) if model_ref == "m"
        ));
        let cli = parse(&["catalog", "add", "/m.gguf", "--sha256", "ab"]).expect("parses");
        assert!(matches!(
            cli.command,
            Command::Control(ControlCommand::Catalog(CatalogCommand::Add { .. }))
        ));
        assert!(parse(&["catalog"]).is_err());
        assert!(parse(&["catalog", "deprecate"]).is_err());
        let cli = parse(&["--catalog-url", "http://pm:1", "catalog", "list"]).expect("parses");
        assert_eq!(cli.catalog_url.as_deref(), Some("http://pm:1"));
    }

    #[test]
    fn top_frames() {
        let top = |args: &[&str]| match parse(args).expect("parses").command {
            Command::Control(ControlCommand::Top(t)) => t,
            other => panic!("not top: {other:?}"),
        };
        assert_eq!(top(&["top"]).frames(), None);
        assert_eq!(top(&["top"]).interval, 1000);
        assert_eq!(top(&["top", "--once"]).frames(), Some(1));
        assert_eq!(top(&["top", "--iterations", "3"]).frames(), Some(3));
        assert!(parse(&["top", "--iterations", "0"]).is_err());
        assert!(parse(&["top", "--once", "--iterations", "2"]).is_err());
        assert!(parse(&["--output", "yaml", "top"]).is_err());
    }
}
