//! `llorch` binary: parses the command line and hands over to [`llama_orch_cli::run`].

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = llama_orch_cli::Cli::parse();
    // The server half lives in llorch-serve so that the client library stays server-free.
    if let llama_orch_cli::Command::Serve { config, listen } = cli.command {
        llorch_serve::init_logging();
        if let Err(e) = llorch_serve::serve(config, listen).await {
            eprintln!("llorch serve: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let code = llama_orch_cli::run(cli, &mut out, &mut err).await;
    std::process::exit(code);
}
