//! `llorch-tgi-sim`: see the library (`llorch_tgi_sim`) and the README.

use llorch_tgi_sim::{Args, Parser};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    llorch_tgi_sim::run(Args::parse()).await
}
