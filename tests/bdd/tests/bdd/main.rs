//! The behaviour journeys: every `features/*.feature` (Gherkin) run by cucumber against the
//! real daemons (see the `llorch_bdd` harness). A `harness = false` test, so `cargo test
//! --workspace` runs it. The run fails (exit status 1) on any failed, undefined, ambiguous or
//! skipped step, a feature that does not parse or names no ORCH requirement id, or an empty
//! run; it ends with a table of counts.
//!
//! `LLORCH_BDD_NAME=<regex>` runs only the scenarios whose name matches (for working on one).

mod counts;
mod steps;
mod world;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use cucumber::{World as _, WriterExt as _, cli, writer};

use counts::{Counted, Counts};
use world::Journey;

fn features_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("features")
}

/// Every feature file must say which requirements it proves (`@ORCH-nnnn` tags or an
/// `ORCH-nnnn` line in its description).
fn check_requirement_ids(dir: &Path) -> Result<usize, String> {
    let mut files = 0;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_none_or(|e| e != "feature") {
            continue;
        }
        files += 1;
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let names_id = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .any(|w| {
                w.strip_prefix("ORCH-")
                    .is_some_and(|n| n.len() == 4 && n.bytes().all(|b| b.is_ascii_digit()))
            });
        if !names_id {
            return Err(format!(
                "{} names no ORCH-nnnn requirement id",
                path.display()
            ));
        }
    }
    Ok(files)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let started = Instant::now();
    let dir = features_dir();
    let files = match check_requirement_ids(&dir) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("bdd: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = llorch_bdd::prepare(&[
        ("orchestratord", "orchestratord"),
        ("pool-managerd", "pool-managerd"),
    ]) {
        eprintln!("bdd: the daemons under test are not available: {e:#}");
        return ExitCode::FAILURE;
    }
    let counts = Counts::shared();
    let mut opts = cli::Opts::<_, _, _, cli::Empty>::default();
    let filter = std::env::var("LLORCH_BDD_NAME").ok();
    if let Some(f) = &filter {
        match regex::Regex::new(f) {
            Ok(re) => opts.re_filter = Some(re),
            Err(e) => {
                eprintln!("bdd: LLORCH_BDD_NAME is not a regex: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    Journey::cucumber()
        .with_writer(Counted::new(
            writer::Basic::stdout().summarized(),
            counts.clone(),
        ))
        .fail_on_skipped()
        .max_concurrent_scenarios(4)
        .with_cli(opts)
        .run(&dir)
        .await;
    let c = counts.lock().unwrap_or_else(|e| e.into_inner()).clone();
    println!("{}", c.table(files, started.elapsed()));
    match c.verdict(files, filter.is_some()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("bdd: FAILED: {why}");
            ExitCode::FAILURE
        }
    }
}
