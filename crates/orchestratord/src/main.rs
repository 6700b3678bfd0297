//! `orchestratord`: loads the config, takes the socket from systemd or binds one, serves, and
//! speaks sd_notify (READY, WATCHDOG, STOPPING).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use orchestratord::Listener;
use sd_notify::NotifyState;

#[derive(Parser)]
#[command(version, about = "llama-orch orchestrator daemon")]
struct Args {
    /// Appliance config (TOML).
    #[arg(long, short, env = "LLORCH_CONFIG")]
    config: Option<PathBuf>,
    /// Validate a config file and exit (non-zero with file:line messages when invalid).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
    /// Address to bind when systemd passes no socket; overrides server.listen.
    #[arg(long)]
    listen: Option<String>,
}

fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // systemd sets JOURNAL_STREAM when stderr goes to the journal: log natively there so the
    // structured fields (job_id, pool_id, …) stay queryable.
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(layer) = tracing_journald::layer()
    {
        tracing_subscriber::registry()
            .with(filter)
            .with(layer)
            .init();
        return;
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(path) = args.check_config {
        return match config_schema::load_file(&path) {
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
    init_logging();
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
    let listener = match Listener::from_systemd()? {
        Some(l) => {
            tracing::info!("using socket passed by systemd");
            l
        }
        None => Listener::bind(&cfg.server.listen).await?,
    };
    if let Some(period) = sd_notify::watchdog_enabled() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period / 2);
            loop {
                tick.tick().await;
                let _ = sd_notify::notify(&[NotifyState::Watchdog]);
            }
        });
    }
    orchestratord::serve(
        listener,
        cfg,
        shutdown_signal(),
        || {
            let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
        },
        || {
            let _ = sd_notify::notify(&[NotifyState::Stopping]);
        },
    )
    .await
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}
