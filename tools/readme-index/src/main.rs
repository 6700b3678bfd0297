//! `llorch-readme-index`: writes docs/crates.md and fails when a workspace crate lacks a README
//! or a README lacks its purpose, must-not-depend-on or how-to-test section. Must not depend on
//! product crates (see lib.rs).

use std::process::ExitCode;

fn main() -> ExitCode {
    let root = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(llorch_readme_index::repo_root);
    match llorch_readme_index::check(&root) {
        Ok(entries) => {
            let out = root.join(llorch_readme_index::INDEX);
            if let Err(e) = std::fs::write(&out, llorch_readme_index::render(&entries)) {
                eprintln!("readme-index: {}: {e}", out.display());
                return ExitCode::FAILURE;
            }
            println!(
                "readme-index: wrote {} ({} crates)",
                llorch_readme_index::INDEX,
                entries.len()
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("readme-index: FAILED, {} problem(s):", problems.len());
            for p in problems {
                eprintln!("  {p}");
            }
            ExitCode::FAILURE
        }
    }
}
