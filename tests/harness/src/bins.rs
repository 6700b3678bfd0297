//! Where the product binaries are: cargo puts every bin target of the workspace in the same
//! directory as this test's own executable's parent (`target/<profile>/`), and
//! `cargo test --workspace` builds them before any test runs. A binary older than one of the
//! sources it was built from (its cargo dep-info file `<name>.d` lists them) is refused, so a
//! suite never passes against yesterday's build.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::{HarnessError, Result};

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn package_of(name: &str) -> &'static str {
    match name {
        "llorch" => "llama-orch-cli",
        "orchestratord" => "orchestratord",
        "pool-managerd" => "pool-managerd",
        "llorch-adapterd" => "llorch-adapterd",
        _ => "<its package>",
    }
}

/// `target/<profile>/` of the running test (env `LLORCH_BIN_DIR` overrides).
fn bin_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("LLORCH_BIN_DIR") {
        return Ok(PathBuf::from(d));
    }
    let exe = std::env::current_exe().map_err(|err| HarnessError::Io {
        what: "locating the test executable".into(),
        err,
    })?;
    // target/<profile>/deps/<test>-<hash> → target/<profile>
    Ok(exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default())
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Path of the workspace binary `name`, checked to exist and to be newer than its sources.
pub fn binary(name: &str) -> Result<PathBuf> {
    let dir = bin_dir()?;
    let path = dir.join(name);
    let package = package_of(name);
    let Some(built) = mtime(&path) else {
        return Err(HarnessError::MissingBinary {
            path: path.display().to_string(),
            package,
            name: name.into(),
        });
    };
    // `<name>.d`: "<binary>: <source> <source> …" (spaces in paths are escaped as `\ `).
    let deps = std::fs::read_to_string(dir.join(format!("{name}.d"))).unwrap_or_default();
    let root = workspace_root();
    let list = deps.split_once(": ").map(|(_, l)| l).unwrap_or("");
    for src in list.replace("\\ ", "\u{0}").split_whitespace() {
        let src = PathBuf::from(src.replace('\u{0}', " "));
        let ours = src.starts_with(&root);
        let newer = mtime(&src).is_some_and(|m| m > built);
        // A source outside this checkout under a path like ours means the binary was built
        // from another checkout of the project; rebuilding here is the only safe answer.
        let shown = src.to_string_lossy();
        let foreign = !ours && shown.contains("/crates/") && !shown.contains("/.cargo/");
        if (ours && newer) || foreign {
            return Err(HarnessError::StaleBinary {
                path: path.display().to_string(),
                source_file: src.display().to_string(),
                package,
                name: name.into(),
            });
        }
    }
    Ok(path)
}
