//! `pool-managerd`: the pool manager daemon. `serve` supervises every replica of the config's
//! supervised pools (`[pools.llamacpp]`, `[pools.vllm]`, `[pools.tgi]`, `[pools.triton]` with
//! `server_binary`) and serves the replica registry, the model catalog and `/metrics`
//! (socket-activated, sd_notify);
//! `provision-engine` builds llama-server; `digest` prints a file's SHA-256.

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
    /// Supervise the config's engines and serve the replica registry API.
    Serve {
        #[arg(long)]
        config: PathBuf,
        /// `IP:port` or `unix:/path.sock`; ignored when systemd passes a socket.
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: String,
    },
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

async fn serve(config: PathBuf, listen: String) -> anyhow::Result<()> {
    let cfg = config_schema::load_file(&config)?;
    let (pm, _adapters) = pool_managerd::daemon::PoolManager::start(&cfg)?;
    // Preload before READY=1: dependents start once the engines are up (or known broken).
    pm.engines
        .wait_preloaded(std::time::Duration::from_secs(600))
        .await;
    let listener = daemon_kit::Listener::from_systemd_or_bind(&listen).await?;
    tracing::info!(listen = %listener.describe(), catalog = %pm.catalog.path().display(), "serving the replica registry, catalog and metrics");
    daemon_kit::spawn_watchdog();
    daemon_kit::notify_ready("engines preloaded");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let result = listener
        .serve(pm.router(stop_rx), async move {
            daemon_kit::shutdown_signal().await;
            daemon_kit::notify_stopping();
            let _ = stop_tx.send(true);
        })
        .await;
    pm.engines.shutdown().await;
    Ok(result?)
}

fn main() -> ExitCode {
    daemon_kit::init_logging();
    let args = Args::parse();
    let result = match args.command {
        Cmd::Serve { config, listen } => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(serve(config, listen)),
            Err(e) => Err(e.into()),
        },
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
