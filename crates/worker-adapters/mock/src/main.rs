//! `llorch-mock-worker`: serves the mock engine over the worker protocol, on a unix socket or
//! a TCP address, so the protocol path (HttpWorker ↔ server::router) runs for real in tests.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use llorch_mock_adapter::{MockAdapter, MockBehaviour};

#[derive(Parser)]
#[command(about = "Mock engine worker speaking the llama-orch worker protocol")]
struct Args {
    /// `unix:/path.sock` or `IP:port`.
    #[arg(long)]
    listen: String,
    #[arg(long, default_value = "mock:tiny")]
    model_ref: String,
    #[arg(long, default_value_t = 4)]
    slots: u32,
    #[arg(long, default_value_t = 4096)]
    ctx_max: u32,
    #[arg(long, default_value_t = 0)]
    tokens_per_second: u32,
    #[arg(long, default_value_t = 0)]
    first_token_latency_ms: u64,
    #[arg(long)]
    error_after_tokens: Option<u32>,
    #[arg(long)]
    stall_after_tokens: Option<u32>,
    #[arg(long)]
    disconnect_after_tokens: Option<u32>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let a = Args::parse();
    let behaviour = MockBehaviour {
        slots: a.slots,
        ctx_max: a.ctx_max,
        tokens_per_second: a.tokens_per_second,
        first_token_latency: Duration::from_millis(a.first_token_latency_ms),
        error_after_tokens: a.error_after_tokens,
        stall_after_tokens: a.stall_after_tokens,
        disconnect_after_tokens: a.disconnect_after_tokens,
    };
    let app = adapter_api::server::router(Arc::new(MockAdapter::new(a.model_ref, behaviour)));
    if let Some(path) = a.listen.strip_prefix("unix:") {
        let _ = std::fs::remove_file(path);
        let l = tokio::net::UnixListener::bind(path)?;
        eprintln!("llorch-mock-worker listening on unix:{path}");
        axum::serve(l, app).await
    } else {
        let l = tokio::net::TcpListener::bind(&a.listen).await?;
        eprintln!("llorch-mock-worker listening on {}", l.local_addr()?);
        axum::serve(l, app).await
    }
}
