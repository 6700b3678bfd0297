//! `orchestratord`: loads the config, takes the socket from systemd or binds one, serves, and
//! speaks sd_notify (READY, WATCHDOG, STOPPING).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use orchestratord::Listener;

#[derive(Parser)]
#[command(version, about = "llama-orch orchestrator daemon")]
struct Args {
    /// Appliance config (TOML).
    #[arg(long, short, env = "LLORCH_CONFIG")]
    config: Option<PathBuf>,
    /// Validate a config file and exit (non-zero with file:line messages when invalid): what
    /// the daemons would refuse, including the files it names (policy modules, model files,
    /// llama-server binaries, state and cache directories).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
    /// Address to bind when systemd passes no socket; overrides server.listen.
    #[arg(long)]
    listen: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(path) = args.check_config {
        return match config_schema::check_file(&path) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let Some(config) = args.config else {
        eprintln!("orchestratord: --config FILE is required (see examples/dev-mock.toml)");
        return ExitCode::from(2);
    };
    let mut cfg = match config_schema::load_file(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(l) = args.listen {
        cfg.server.listen = l;
    }
    daemon_kit::init_logging();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("orchestratord: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "orchestratord failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: config_schema::Config) -> anyhow::Result<()> {
    let listener = Listener::from_systemd_or_bind(&cfg.server.listen).await?;
    daemon_kit::spawn_watchdog();
    orchestratord::serve(
        listener,
        cfg,
        daemon_kit::shutdown_signal(),
        || daemon_kit::notify_ready("serving"),
        daemon_kit::notify_stopping,
    )
    .await
}
