//! `cargo xtask soak [--minutes N] [llorch-soak soak options…]`: builds orchestratord and the
//! load generator (debug, like the test suite, so CI reuses its artifacts) and runs the soak:
//! a sustained mock load on loopback for N minutes (2 by default, what CI runs), RSS sampled
//! every second, failing on growth after warm-up or RSS over the budget.

use std::path::PathBuf;
use std::process::Command;

/// Cargo's target directory (`CARGO_TARGET_DIR`, else `<root>/target`).
pub(crate) fn target_dir(root: &std::path::Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join("target"))
}

pub fn soak(root: &std::path::Path, rest: &[&str]) -> bool {
    let mut minutes = String::from("2");
    let mut pass: Vec<&str> = Vec::new();
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match *a {
            "--minutes" => match it.next() {
                Some(m) if m.parse::<f64>().is_ok_and(|m| m > 0.0) => minutes = m.to_string(),
                _ => {
                    eprintln!("xtask: --minutes needs a positive number");
                    return false;
                }
            },
            other => pass.push(other),
        }
    }
    let Ok(secs) = minutes.parse::<f64>().map(|m| (m * 60.0).round() as u64) else {
        return false;
    };
    if !super::cargo(
        &[
            "build",
            "--locked",
            "-p",
            "orchestratord",
            "-p",
            "llorch-soak",
            // Both binaries: `--bin orchestratord` alone would leave llorch-soak unbuilt on a
            // fresh clone (`cargo test` builds only its test harness).
            "--bins",
        ],
        &[],
    ) {
        return false;
    }
    let bin = target_dir(root).join("debug");
    let secs = secs.to_string();
    let mut cmd = Command::new(bin.join("llorch-soak"));
    cmd.arg("--orchestratord")
        .arg(bin.join("orchestratord"))
        .args(["soak", "--seconds", &secs])
        .args(&pass);
    eprintln!(
        "xtask: llorch-soak soak --seconds {secs} {}",
        pass.join(" ")
    );
    match cmd.status() {
        Ok(s) => s.success(),
        Err(e) => {
            eprintln!("xtask: cannot run llorch-soak: {e}");
            false
        }
    }
}
