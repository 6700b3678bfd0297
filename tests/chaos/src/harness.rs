//! A small libtest-compatible runner (`harness = false`): runs the scenarios one after another
//! (they measure memory and latency, so they must not compete with each other), catches each
//! one's panic, prints the chaos table and libtest's closing line. Understands the usual test
//! arguments: name filters, `--exact`, `--skip NAME`, `--list`, `--ignored` (none are).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

/// One scenario: a name (the test's name) and the function that runs it (panics on failure).
pub struct Scenario {
    pub name: &'static str,
    pub run: fn(),
}

static VERDICTS: Mutex<BTreeMap<String, &'static str>> = Mutex::new(BTreeMap::new());

/// Runs the selected scenarios and reports like libtest.
pub fn main(scenarios: &[Scenario]) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut filters = Vec::new();
    let mut skips = Vec::new();
    let (mut exact, mut list, mut ignored) = (false, false, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--exact" => exact = true,
            "--list" => list = true,
            "--ignored" => ignored = true,
            "--skip" => skips.extend(it.next().cloned()),
            // Flags that take a value as the next argument.
            "--test-threads" | "--format" | "--color" | "--logfile" | "-Z" => {
                it.next();
            }
            s if s.starts_with('-') => {}
            s => filters.push(s.to_string()),
        }
    }
    let matches = |name: &str, pat: &str| {
        if exact {
            name == pat
        } else {
            name.contains(pat)
        }
    };
    let selected: Vec<&Scenario> = scenarios
        .iter()
        .filter(|s| filters.is_empty() || filters.iter().any(|f| matches(s.name, f)))
        .filter(|s| !skips.iter().any(|f| matches(s.name, f)))
        .filter(|_| !ignored)
        .collect();
    if list {
        for s in &selected {
            println!("{}: test", s.name);
        }
        return ExitCode::SUCCESS;
    }
    let filtered_out = scenarios.len() - selected.len();
    println!("\nrunning {} tests", selected.len());
    let start = Instant::now();
    let mut failed = Vec::new();
    for s in &selected {
        println!("\n=== chaos scenario: {} ===", s.name);
        let t = Instant::now();
        let ok = std::panic::catch_unwind(s.run).is_ok();
        let secs = t.elapsed().as_secs_f64();
        let verdict = if ok { "ok" } else { "FAILED" };
        VERDICTS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(s.name.to_string(), verdict);
        println!("test {} ... {verdict} ({secs:.1} s)", s.name);
        if !ok {
            failed.push(s.name);
        }
    }
    println!("\nchaos table:\n");
    print!(
        "{}",
        crate::report::table(|name| {
            VERDICTS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(name)
                .copied()
                .unwrap_or("?")
        })
    );
    if !failed.is_empty() {
        println!("\nfailures:");
        for f in &failed {
            println!("    {f}");
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed; 0 ignored; 0 measured; {} filtered out; finished in {:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        selected.len() - failed.len(),
        failed.len(),
        filtered_out,
        start.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(101)
    }
}
