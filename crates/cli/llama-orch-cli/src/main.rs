//! `llorch` binary: parses the command line and hands over to [`llama_orch_cli::run`].

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = llama_orch_cli::Cli::parse();
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let code = llama_orch_cli::run(cli, &mut out, &mut err).await;
    std::process::exit(code);
}
