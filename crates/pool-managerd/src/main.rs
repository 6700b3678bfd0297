//! `pool-managerd`: the pool manager daemon. This release provides the engine provisioning
//! command; the supervising daemon mode with its replica registry API is in progress (see
//! README "Status"). `llorch serve` runs the supervisor in-process today.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "llama-orch pool manager")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build llama-server from a llama.cpp source tarball (cached by digest); prints its path.
    ProvisionEngine {
        #[arg(long)]
        source: PathBuf,
        #[arg(long)]
        cache: PathBuf,
        /// cmake to use (default: cmake on PATH).
        #[arg(long, default_value = "cmake")]
        cmake: PathBuf,
    },
    /// Print a file's SHA-256 (the digest model_sha256 expects).
    Digest { file: PathBuf },
}

fn main() -> ExitCode {
    daemon_kit::init_logging();
    let args = Args::parse();
    let result = match args.command {
        Cmd::ProvisionEngine {
            source,
            cache,
            cmake,
        } => pool_managerd::provision::build_llama_server(&source, &cache, &cmake)
            .map(|p| println!("{}", p.display())),
        Cmd::Digest { file } => pool_managerd::provision::sha256_file(&file)
            .map(|d| println!("{d}"))
            .map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pool-managerd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
