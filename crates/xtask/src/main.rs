//! `cargo xtask …`: the developer and CI entry points, so that README, CI and humans run the
//! same commands. Deliberately dependency-free: it only sequences cargo invocations.
//!
//! - `ci`    — format check, clippy (warnings are errors), the whole test suite (`--locked`).
//! - `test`  — the whole test suite only.
//! - `regen` — rewrite the generated contracts (docs/api/openapi.json, docs/config.schema.json).
//! - `bench [--quick]` — the release-mode benchmark that prints submissions/s, added
//!   first-token latency and relayed tokens/s.

use std::process::{Command, ExitCode};

fn cargo(args: &[&str], env: &[(&str, &str)]) -> bool {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo {}", args.join(" "));
    let mut cmd = Command::new(cargo);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    match cmd.status() {
        Ok(s) => s.success(),
        Err(e) => {
            eprintln!("xtask: cannot run cargo: {e}");
            false
        }
    }
}

fn test() -> bool {
    cargo(&["test", "--workspace", "--locked"], &[])
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let ok = match args.first().map(String::as_str) {
        Some("ci") => {
            cargo(&["fmt", "--all", "--", "--check"], &[])
                && cargo(
                    &[
                        "clippy",
                        "--workspace",
                        "--all-targets",
                        "--locked",
                        "--",
                        "-D",
                        "warnings",
                    ],
                    &[],
                )
                && test()
        }
        Some("test") => test(),
        Some("regen") => cargo(
            &["test", "-p", "orchestratord", "--test", "contracts_fresh"],
            &[("LLORCH_BLESS", "1")],
        ),
        Some("bench") => {
            let mut a = vec!["run", "--release", "--locked", "-p", "llorch-bench", "--"];
            a.extend(rest);
            cargo(&a, &[])
        }
        _ => {
            eprintln!("usage: cargo xtask <ci | test | regen | bench [--quick]>");
            return ExitCode::from(2);
        }
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
