//! Where the daemon binaries are. `CARGO_BIN_EXE_*` exists only inside a binary's own
//! package, so this crate asks cargo for them: `cargo build -p PKG --bin BIN` in the same
//! target directory and profile as the running test (a no-op when `cargo test --workspace`
//! already built them), reading the executable's path from cargo's JSON messages. The env
//! var `LLORCH_BDD_BIN_<BIN>` (e.g. `LLORCH_BDD_BIN_ORCHESTRATORD`) names a prebuilt binary
//! instead. Any failure is an error that stops the run: a missing binary is never a skip.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, bail};

fn cache() -> &'static Mutex<HashMap<String, PathBuf>> {
    static CACHE: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The path of binary `bin` of workspace package `package` (built by [`prepare`] or here).
pub fn binary(package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = cache().lock().unwrap_or_else(|e| e.into_inner()).get(bin) {
        return Ok(p.clone());
    }
    prepare(&[(package, bin)])?;
    cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(bin)
        .cloned()
        .with_context(|| format!("{bin} was not prepared"))
}

/// Finds or builds every `(package, bin)` in one cargo run, before any scenario starts, so
/// that no build competes with the journeys for the CPU.
pub fn prepare(wanted: &[(&str, &str)]) -> anyhow::Result<()> {
    let mut to_build = Vec::new();
    for (package, bin) in wanted {
        let var = env_name(bin);
        if let Some(p) = std::env::var_os(&var) {
            let p = PathBuf::from(p);
            if !p.is_file() {
                bail!("{var}={} is not a file", p.display());
            }
            cache()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(bin.to_string(), p);
        } else {
            to_build.push((*package, *bin));
        }
    }
    if to_build.is_empty() {
        return Ok(());
    }
    let built = build(&to_build)?;
    cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(built);
    Ok(())
}

fn env_name(bin: &str) -> String {
    format!(
        "LLORCH_BDD_BIN_{}",
        bin.to_ascii_uppercase().replace('-', "_")
    )
}

fn build(wanted: &[(&str, &str)]) -> anyhow::Result<HashMap<String, PathBuf>> {
    let exe = std::env::current_exe().context("path of the test executable")?;
    // <target-dir>/<profile>/deps/<test-exe>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable is not under <target>/<profile>/deps")?;
    let target_dir = profile_dir
        .parent()
        .context("test executable is not under <target>/<profile>/deps")?;
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("profile directory name")?;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&workspace).arg("build");
    for (package, _) in wanted {
        cmd.args(["-p", package]);
    }
    for (_, bin) in wanted {
        cmd.args(["--bin", bin]);
    }
    cmd.args(["--message-format", "json-render-diagnostics"])
        .arg("--target-dir")
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let what = format!("{:?}", cmd.get_args().collect::<Vec<_>>());
    eprintln!("bdd: {} {what}", Path::new(&cargo).display());
    let out = cmd
        .output()
        .with_context(|| format!("running {} build", Path::new(&cargo).display()))?;
    if !out.status.success() {
        bail!(
            "cargo build failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut found = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        for (_, bin) in wanted {
            if msg["target"]["name"] == *bin
                && let Some(exe) = msg["executable"].as_str()
            {
                found.insert(bin.to_string(), PathBuf::from(exe));
            }
        }
    }
    for (_, bin) in wanted {
        match found.get(*bin) {
            Some(p) if p.is_file() => {}
            Some(p) => bail!("cargo reported {} for {bin}, which is missing", p.display()),
            None => bail!("cargo build named no executable for {bin}"),
        }
    }
    Ok(found)
}
