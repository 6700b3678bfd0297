//! The chaos table: one row per scenario (what was injected, what was observed, lost tasks,
//! leaked slots), recorded before a scenario asserts so that a failing row is printed too.

use std::sync::Mutex;

#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub injected: String,
    pub observed: String,
    pub lost: usize,
    pub leaked: u32,
}

static ROWS: Mutex<Vec<Row>> = Mutex::new(Vec::new());

fn rows() -> std::sync::MutexGuard<'static, Vec<Row>> {
    ROWS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Prints the row, records it for the final table, then asserts lost = 0 and leaked = 0.
pub fn record_and_check(row: Row) {
    println!(
        "  [{}] injected: {}\n  [{}] observed: {}\n  [{}] lost tasks: {}, leaked slots: {}",
        row.scenario, row.injected, row.scenario, row.observed, row.scenario, row.lost, row.leaked
    );
    rows().push(row.clone());
    assert_eq!(
        row.lost, 0,
        "[{}] lost tasks: {} (submitted tasks without a terminal event or typed error)",
        row.scenario, row.lost
    );
    assert_eq!(
        row.leaked, 0,
        "[{}] leaked slots: {} replica slots still busy after the dust settled",
        row.scenario, row.leaked
    );
}

/// The recorded rows, with each scenario's verdict from `verdict(scenario)`.
pub fn table(verdict: impl Fn(&str) -> &'static str) -> String {
    let rows = rows();
    let mut out = String::new();
    out.push_str("| scenario | injected | observed | lost | leaked | result |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for r in rows.iter() {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.scenario,
            r.injected,
            r.observed,
            r.lost,
            r.leaked,
            verdict(&r.scenario)
        ));
    }
    out
}
