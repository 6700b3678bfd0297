//! The Nix checks that run without nixpkgs (Debian's `nix-bin` is enough): see `tests/nix.rs`
//! and docs/nixos.md, "What is verified where". This library only finds `nix-instantiate`.

use std::path::PathBuf;
use std::process::Command;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `nix-instantiate`, or a panic that says how to get it: these checks never skip.
pub fn nix_instantiate() -> Command {
    let ok = Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "nix-instantiate is missing: the Nix checks need it (install Debian's `nix-bin`; \
         .ci/run does). They never skip."
    );
    let mut c = Command::new("nix-instantiate");
    c.current_dir(repo());
    c
}

/// Evaluates a Nix expression strictly and returns its JSON (panics with Nix's message).
pub fn eval_json(expr: &str) -> String {
    let out = nix_instantiate()
        .args(["--eval", "--strict", "--json", "-E", expr])
        .output()
        .expect("running nix-instantiate");
    assert!(
        out.status.success(),
        "nix-instantiate --eval of `{expr}` failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 from nix-instantiate")
}
