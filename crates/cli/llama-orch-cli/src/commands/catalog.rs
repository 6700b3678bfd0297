//! `llorch catalog list|add|get|verify|activate|deprecate|retire` against the catalog API
//! (pool-managerd, or `llorch serve`).

use std::io::Write;

use api_types::{CatalogEntry, ModelState, RegisterModelRequest, VerificationResult};

use super::Opts;
use crate::Failure;
use crate::client::Client;
use crate::control_args::CatalogCommand;
use crate::error::{EXIT_CLIENT, EXIT_OK, EXIT_RETRY};
use crate::render::{Table, or_dash, write_json};

pub(super) async fn run(
    client: &Client,
    opts: &Opts,
    cmd: CatalogCommand,
    out: &mut (impl Write + ?Sized),
    err: &mut (impl Write + ?Sized),
) -> Result<i32, Failure> {
    let (entry, note) = match cmd {
        CatalogCommand::List => {
            let entries = client.catalog_list().await?;
            if opts.json() {
                write_json(out, &entries)?;
            } else if entries.is_empty() {
                writeln!(out, "no models in the catalog")?;
            } else {
                let mut t = entry_table();
                for e in &entries {
                    entry_row(&mut t, e);
                }
                out.write_all(t.render().as_bytes())?;
            }
            return Ok(EXIT_OK);
        }
        CatalogCommand::Add { model_ref, sha256 } => {
            let req = RegisterModelRequest { model_ref, sha256 };
            let (e, created) = client.catalog_register(&req).await?;
            let note = if created {
                "registered"
            } else {
                "already registered"
            };
            (e, note)
        }
        CatalogCommand::Get { id } => (client.catalog_get(&id).await?, ""),
        CatalogCommand::Verify { id } => {
            let e = client.catalog_verify(&id).await?;
            // 200 whatever the result; the exit code says it for scripts.
            let code = verify_exit_code(&e);
            show(opts, &e, "verified", out, err)?;
            return Ok(code);
        }
        CatalogCommand::Activate { id } => (set(client, &id, ModelState::Active).await?, "now"),
        CatalogCommand::Deprecate { id } => {
            (set(client, &id, ModelState::Deprecated).await?, "now")
        }
        CatalogCommand::Retire { id } => (set(client, &id, ModelState::Retired).await?, "now"),
    };
    show(opts, &entry, note, out, err)?;
    Ok(EXIT_OK)
}

async fn set(
    client: &Client,
    id: &str,
    state: ModelState,
) -> Result<CatalogEntry, crate::CliError> {
    client.catalog_set_state(id, state).await
}

/// `verify`: 0 when the artifact's digest matched, 2 on a mismatch (the artifact is wrong),
/// 3 when it could not be read or downloaded (try again later).
fn verify_exit_code(e: &CatalogEntry) -> i32 {
    match e.verification.as_ref().map(|v| v.result) {
        Some(VerificationResult::Passed) => EXIT_OK,
        Some(VerificationResult::Mismatch) => EXIT_CLIENT,
        Some(VerificationResult::Unavailable) | None => EXIT_RETRY,
    }
}

fn show(
    opts: &Opts,
    e: &CatalogEntry,
    note: &str,
    out: &mut (impl Write + ?Sized),
    err: &mut (impl Write + ?Sized),
) -> Result<(), Failure> {
    if opts.json() {
        return write_json(out, e);
    }
    if !note.is_empty() {
        writeln!(err, "{note}: {} ({})", e.id, e.state.as_str())?;
    }
    let mut t = entry_table();
    entry_row(&mut t, e);
    out.write_all(t.render().as_bytes())?;
    Ok(())
}

fn entry_table() -> Table {
    Table::new(&["ID", "STATE", "VERIFIED", "SIZE", "MODEL REF"])
}

fn entry_row(t: &mut Table, e: &CatalogEntry) {
    let verified = e.verification.as_ref().map(|v| match &v.detail {
        Some(d) => format!("{} ({d})", v.result.as_str()),
        None => v.result.as_str().to_string(),
    });
    t.row(vec![
        e.id.clone(),
        e.state.as_str().to_string(),
        or_dash(verified.as_deref()),
        or_dash(e.size_bytes.map(|b| b.to_string()).as_deref()),
        e.model_ref.clone(),
    ]);
}
