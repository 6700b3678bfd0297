//! The Prometheus contract of llama-orch as data, and its linter.
//!
//! `contract.toml` (next to this crate's Cargo.toml) lists every `llorch_` family that
//! orchestratord and pool-managerd expose: type, unit, exact label set, which daemon exports it.
//! [`lint`] checks a parsed scrape of one daemon against it and against Prometheus naming
//! conventions; [`promtool_check`] runs `promtool check metrics` when promtool is installed.
//! The live test (`tests/contract.rs`) starts the real daemons ([`daemons`]) and lints their
//! scrapes after real traffic.
//!
//! Must not depend on: the daemons' crates (orchestratord, pool-managerd) — the contract is
//! checked from the outside, over HTTP, against real binaries; a library link would let the
//! test read the registries instead of what a Prometheus server sees.

pub mod daemons;
pub mod scrape;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

pub use scrape::{Sample, Scrape, parse};

/// One documented family.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Family {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub unit: String,
    pub labels: Vec<String>,
    pub exporters: Vec<String>,
    #[serde(default)]
    pub optional: bool,
    #[serde(default)]
    pub reason: Option<String>,
    pub doc: String,
}

/// The whole contract file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    pub family: Vec<Family>,
}

pub const EXPORTERS: [&str; 2] = ["orchestratord", "pool-managerd"];
const TYPES: [&str; 3] = ["counter", "gauge", "histogram"];
/// Units a name carries as its suffix (base units only).
const SUFFIX_UNITS: [&str; 3] = ["seconds", "bytes", "ratio"];
/// Dimensionless units: the name carries no unit suffix.
const PLAIN_UNITS: [&str; 2] = ["count", "state"];
/// Name parts that betray a non-base unit or a unit-less percentage.
const NON_BASE_UNITS: [&str; 14] = [
    "milliseconds",
    "microseconds",
    "nanoseconds",
    "ms",
    "us",
    "ns",
    "minutes",
    "hours",
    "days",
    "kilobytes",
    "megabytes",
    "gigabytes",
    "percent",
    "bits",
];

pub fn contract_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("contract.toml")
}

/// Loads and validates `contract.toml`: parse errors, duplicate names, unknown types, units or
/// exporters, optional families without a reason, and names against the conventions.
pub fn load() -> Result<Contract, String> {
    let path = contract_path();
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let c: Contract = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let problems = c.self_check();
    if problems.is_empty() {
        Ok(c)
    } else {
        Err(format!(
            "{}: {} problem(s):\n  {}",
            path.display(),
            problems.len(),
            problems.join("\n  ")
        ))
    }
}

fn snake_case(s: &str) -> bool {
    !s.is_empty()
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.contains("__")
        && !s.ends_with('_')
}

/// Prometheus naming conventions for a family of type `kind` (unit known when documented).
pub fn naming_problems(name: &str, kind: &str, unit: Option<&str>) -> Vec<String> {
    let mut p = Vec::new();
    if !name.starts_with("llorch_") {
        p.push(format!("`{name}`: family names start with `llorch_`"));
    }
    if !snake_case(name) {
        p.push(format!("`{name}`: family names are snake_case ([a-z0-9_])"));
    }
    let is_counter = kind == "counter";
    if is_counter != name.ends_with("_total") {
        p.push(if is_counter {
            format!("`{name}`: counters end in `_total`")
        } else {
            format!("`{name}`: only counters end in `_total` (this is a {kind})")
        });
    }
    let stem = name.strip_suffix("_total").unwrap_or(name);
    for part in stem.split('_') {
        if NON_BASE_UNITS.contains(&part) {
            p.push(format!(
                "`{name}`: `{part}` is not a base unit (use seconds, bytes or ratio)"
            ));
        }
    }
    if kind == "histogram" && !(stem.ends_with("_seconds") || stem.ends_with("_bytes")) {
        p.push(format!(
            "`{name}`: histograms measure seconds or bytes and say so in the suffix"
        ));
    }
    if let Some(unit) = unit {
        if SUFFIX_UNITS.contains(&unit) && !stem.ends_with(&format!("_{unit}")) {
            p.push(format!(
                "`{name}`: unit {unit} must be the name's suffix `_{unit}`"
            ));
        }
        if PLAIN_UNITS.contains(&unit)
            && SUFFIX_UNITS
                .iter()
                .any(|u| stem.ends_with(&format!("_{u}")))
        {
            p.push(format!(
                "`{name}`: unit {unit} but the name carries a unit suffix"
            ));
        }
    }
    p
}

impl Contract {
    /// Problems in the contract file itself.
    pub fn self_check(&self) -> Vec<String> {
        let mut p = Vec::new();
        let mut seen = BTreeSet::new();
        for f in &self.family {
            if !seen.insert(&f.name) {
                p.push(format!("`{}` is documented twice", f.name));
            }
            if !TYPES.contains(&f.kind.as_str()) {
                p.push(format!("`{}`: unknown type `{}`", f.name, f.kind));
            }
            if !SUFFIX_UNITS.contains(&f.unit.as_str()) && !PLAIN_UNITS.contains(&f.unit.as_str()) {
                p.push(format!("`{}`: unknown unit `{}`", f.name, f.unit));
            }
            if f.exporters.is_empty()
                || f.exporters.iter().any(|e| !EXPORTERS.contains(&e.as_str()))
            {
                p.push(format!(
                    "`{}`: exporters must be among {EXPORTERS:?}",
                    f.name
                ));
            }
            if f.optional && f.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
                p.push(format!("`{}`: optional = true needs a reason", f.name));
            }
            if !f.optional && f.reason.is_some() {
                p.push(format!("`{}`: reason given but not optional", f.name));
            }
            let mut labels = BTreeSet::new();
            for l in &f.labels {
                if !snake_case(l) {
                    p.push(format!("`{}`: label `{l}` is not snake_case", f.name));
                }
                if l == "le" || l == "quantile" {
                    p.push(format!("`{}`: label `{l}` is reserved", f.name));
                }
                if !labels.insert(l) {
                    p.push(format!("`{}`: label `{l}` listed twice", f.name));
                }
            }
            p.extend(naming_problems(&f.name, &f.kind, Some(&f.unit)));
        }
        p
    }

    pub fn get(&self, name: &str) -> Option<&Family> {
        self.family.iter().find(|f| f.name == name)
    }

    /// Families one daemon exports.
    pub fn of<'a>(&'a self, exporter: &'a str) -> impl Iterator<Item = &'a Family> + 'a {
        self.family
            .iter()
            .filter(move |f| f.exporters.iter().any(|e| e == exporter))
    }
}

/// One way a scrape breaks the contract.
#[derive(Debug, Clone, PartialEq)]
pub enum Violation {
    Undocumented {
        name: String,
        kind: String,
    },
    NotExportedHere {
        name: String,
    },
    Missing {
        name: String,
    },
    WrongType {
        name: String,
        want: String,
        got: String,
    },
    WrongLabels {
        name: String,
        want: BTreeSet<String>,
        got: BTreeSet<String>,
        sample: String,
    },
    Naming(String),
    NoHelp {
        name: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Undocumented { name, kind } => write!(
                f,
                "undocumented family `{name}` ({kind}): add it to tests/metrics-contract/contract.toml or stop exposing it"
            ),
            Violation::NotExportedHere { name } => write!(
                f,
                "`{name}` is documented, but not for this daemon: fix its `exporters` in contract.toml"
            ),
            Violation::Missing { name } => write!(
                f,
                "documented family `{name}` is missing from the scrape (mark it optional only if its source can be absent, with a reason)"
            ),
            Violation::WrongType { name, want, got } => {
                write!(f, "`{name}`: type {got}, the contract says {want}")
            }
            Violation::WrongLabels {
                name,
                want,
                got,
                sample,
            } => write!(
                f,
                "`{name}`: labels {got:?}, the contract says {want:?} (sample `{sample}`)"
            ),
            Violation::Naming(p) => write!(f, "naming: {p}"),
            Violation::NoHelp { name } => write!(f, "`{name}`: no # HELP text"),
        }
    }
}

/// Checks one daemon's scrape against the contract. Empty means it conforms.
pub fn lint(contract: &Contract, exporter: &str, scrape: &Scrape) -> Vec<Violation> {
    let mut v = Vec::new();
    let families = scrape.families();
    for (name, kind) in &families {
        let documented = contract.get(name);
        v.extend(
            naming_problems(name, kind, documented.map(|f| f.unit.as_str()))
                .into_iter()
                .map(Violation::Naming),
        );
        if scrape.help.get(name).is_none_or(|h| h.is_empty()) {
            v.push(Violation::NoHelp { name: name.clone() });
        }
        let Some(fam) = documented else {
            v.push(Violation::Undocumented {
                name: name.clone(),
                kind: kind.clone(),
            });
            continue;
        };
        if !fam.exporters.iter().any(|e| e == exporter) {
            v.push(Violation::NotExportedHere { name: name.clone() });
        }
        if &fam.kind != kind {
            v.push(Violation::WrongType {
                name: name.clone(),
                want: fam.kind.clone(),
                got: kind.clone(),
            });
        }
        let want: BTreeSet<String> = fam.labels.iter().cloned().collect();
        // One report per distinct wrong label set, not one per sample.
        let mut reported = BTreeMap::new();
        for s in scrape.samples_of(name) {
            let got = scrape::label_names(s);
            if got != want && !reported.contains_key(&got) {
                reported.insert(got.clone(), ());
                v.push(Violation::WrongLabels {
                    name: name.clone(),
                    want: want.clone(),
                    got,
                    sample: s.line.clone(),
                });
            }
        }
    }
    for fam in contract.of(exporter) {
        if !fam.optional && !families.contains_key(&fam.name) {
            v.push(Violation::Missing {
                name: fam.name.clone(),
            });
        }
    }
    v
}

/// Panics with every violation, one per line, when the scrape breaks the contract.
pub fn assert_conforms(contract: &Contract, exporter: &str, scrape: &Scrape) {
    let v = lint(contract, exporter, scrape);
    assert!(
        v.is_empty(),
        "{exporter}'s /metrics breaks the metrics contract ({} violation(s)):\n  {}",
        v.len(),
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

/// What `promtool check metrics` said about a scrape.
pub enum Promtool {
    NotFound,
    Clean,
    Problems(String),
}

/// Runs `promtool check metrics` on `text` when promtool is on PATH.
pub fn promtool_check(text: &str) -> Promtool {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        return Promtool::NotFound;
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(text.as_bytes());
    }
    match child.wait_with_output() {
        Ok(out) if out.status.success() => Promtool::Clean,
        Ok(out) => Promtool::Problems(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => Promtool::Problems(format!("promtool did not finish: {e}")),
    }
}

/// Runs promtool when present and fails on its findings; otherwise says plainly that the
/// check was skipped.
pub fn assert_promtool_clean(exporter: &str, text: &str) {
    match promtool_check(text) {
        Promtool::NotFound => println!("promtool not found: SKIPPED promtool check ({exporter})"),
        Promtool::Clean => println!("promtool check metrics: {exporter} clean"),
        Promtool::Problems(p) => panic!("promtool check metrics on {exporter}'s scrape:\n{p}"),
    }
}

#[cfg(test)]
mod tests;
