//! `llorch-spec-map`: writes docs/requirements.md and fails when a requirement has no test or a
//! test cites an unknown id. Run through `cargo xtask spec-map`. Must not depend on product
//! crates (see lib.rs).

use std::process::ExitCode;

fn main() -> ExitCode {
    let root = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(llorch_spec_extract::repo_root);
    let report = match llorch_spec_extract::report(&root) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("spec-map: {e}");
            return ExitCode::FAILURE;
        }
    };
    let out = root.join(llorch_spec_extract::MAP);
    if let Err(e) = std::fs::write(&out, llorch_spec_extract::render(&report)) {
        eprintln!("spec-map: {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    let (n, ids, tested, ni) = report.counts();
    println!(
        "spec-map: wrote {}: {n} requirements ({ids} ids), {tested} with tests, {ni} not implemented",
        llorch_spec_extract::MAP
    );
    for row in report.not_implemented() {
        println!(
            "  not implemented: {} — {}",
            row.req.label(),
            row.req.not_implemented.as_deref().unwrap_or("")
        );
    }
    let problems = report.problems();
    if problems.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!("spec-map: FAILED, {} problem(s):", problems.len());
    for p in problems {
        eprintln!("  {p}");
    }
    ExitCode::FAILURE
}
