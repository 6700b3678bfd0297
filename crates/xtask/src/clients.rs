//! The client packages the compatibility tests drive: the official `openai` Python package,
//! pinned, in its own venv at `~/.cache/llama-orch/clients-venv` (a marker file names the pin;
//! a different pin rebuilds the venv). Run by `fetch-engine`, so `cargo xtask ci` from a fresh
//! clone has it; the tests fail, never skip, when it is missing.

use std::path::Path;
use std::process::Command;

/// The `openai` release the tests are written against.
pub const OPENAI_PIN: &str = "openai==3.51.0";
const MARKER: &str = "llorch-pin";

pub fn fetch_clients(cache: &Path, python: &str) -> Result<(), String> {
    let venv = cache.join("clients-venv");
    let marker = venv.join(MARKER);
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(OPENAI_PIN)
        && venv.join("bin/python").is_file()
    {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(&venv);
    super::sh(
        Command::new(python).args(["-m", "venv"]).arg(&venv),
        "creating the clients venv",
    )?;
    super::sh(
        Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            OPENAI_PIN,
        ]),
        &format!("pip install {OPENAI_PIN}"),
    )?;
    std::fs::write(&marker, OPENAI_PIN).map_err(|e| e.to_string())?;
    eprintln!("xtask: {OPENAI_PIN} ready in {}", venv.display());
    Ok(())
}
