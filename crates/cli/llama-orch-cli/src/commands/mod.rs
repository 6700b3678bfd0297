//! The control-plane commands: each takes the parsed arguments, calls the server through
//! [`Client`] and renders the answer as text or, with `--output json`, as the server's own
//! JSON documents.

mod catalog;
mod generate;
mod pools;
mod top;

use std::io::Write;

pub(crate) use generate::generate;
pub use pools::PoolView;
pub use top::{Frame, PoolLoad, PoolTenantLoad, TenantLoad};

use crate::Failure;
use crate::client::Client;
use crate::control_args::{ControlCommand, OutputFormat};
use crate::error::{CliError, EXIT_OK};

/// Options every control-plane command shares.
pub(crate) struct Opts {
    pub output: OutputFormat,
    /// `--catalog-url`; `None` = the orchestrator's `--url`.
    pub catalog_url: Option<String>,
}

impl Opts {
    pub fn json(&self) -> bool {
        self.output == OutputFormat::Json
    }
}

pub(crate) async fn run(
    client: &Client,
    opts: &Opts,
    cmd: ControlCommand,
    out: &mut (impl Write + ?Sized),
    err: &mut (impl Write + ?Sized),
) -> Result<i32, Failure> {
    match cmd {
        ControlCommand::Pools { pool } => pools::list(client, opts, pool.as_deref(), out).await,
        ControlCommand::Drain { pool, deadline } => {
            pools::drain(client, opts, &pool, deadline, out, err).await
        }
        ControlCommand::Reload {
            pool,
            model_ref,
            sha256,
        } => pools::reload(client, opts, &pool, model_ref, sha256, out, err).await,
        ControlCommand::Capabilities => pools::capabilities(client, opts, out).await,
        ControlCommand::Catalog(c) => {
            let catalog = match &opts.catalog_url {
                Some(url) => client.rebase(url).map_err(|e| match e {
                    CliError::Usage(m) => CliError::Usage(m.replace("--url", "--catalog-url")),
                    other => other,
                })?,
                None => client.clone(),
            };
            let result = catalog::run(&catalog, opts, c, out, err).await;
            if let Err(Failure::Cli(
                e @ CliError::Api {
                    status: 404,
                    envelope,
                    ..
                },
            )) = &result
                && envelope.message.contains("route")
            {
                err.write_all(crate::format_error(e).as_bytes())?;
                writeln!(
                    err,
                    "hint: {} serves no catalog; pool-managerd and `llorch serve` do \
                     (--catalog-url / LLORCH_CATALOG_URL)",
                    catalog.base_url()
                )?;
                return Ok(e.exit_code());
            }
            result
        }
        ControlCommand::Top(args) => top::run(client, opts, &args, out).await,
        // Handled by `generate` before a client exists; kept here for completeness.
        ControlCommand::Completions { .. } | ControlCommand::Man { .. } => {
            Ok(generate(&crate::Command::Control(cmd), out, err).unwrap_or(EXIT_OK))
        }
    }
}
