//! The requirements map: which test proves which ORCH requirement.
//!
//! `docs/requirements.toml` keeps the requirements the product implements, each ORCH id of the
//! specification with its meaning in our own words (a range such as ORCH-3060–3073 is one
//! entry, as the spec groups it). [`scan::scan`] finds every citation of an ORCH id in the test
//! sources; [`build`] joins the two and [`render`] writes `docs/requirements.md`. The map is
//! broken — and `cargo xtask spec-map` and this crate's tests fail — when a requirement has no
//! citing test (unless it is recorded `status = "not-implemented"` with a reason), when a test
//! cites an id that is not a requirement, or when a not-implemented requirement is cited.
//!
//! Must not depend on: any product crate. It reads sources as text, so it cannot be satisfied
//! by linking the code it is meant to check.

pub mod scan;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use scan::{Citation, scan};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequirement {
    id: String,
    through: Option<String>,
    text: String,
    status: Option<String>,
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    requirement: Vec<RawRequirement>,
}

/// One requirement: ids `lo..=hi`.
#[derive(Debug, Clone, PartialEq)]
pub struct Requirement {
    pub lo: u32,
    pub hi: u32,
    pub text: String,
    /// Some(reason) when recorded as not implemented.
    pub not_implemented: Option<String>,
}

impl Requirement {
    pub fn label(&self) -> String {
        if self.lo == self.hi {
            format!("ORCH-{}", self.lo)
        } else {
            format!("ORCH-{}–{}", self.lo, self.hi)
        }
    }

    pub fn contains(&self, id: u32) -> bool {
        (self.lo..=self.hi).contains(&id)
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub const REQUIREMENTS: &str = "docs/requirements.toml";
pub const MAP: &str = "docs/requirements.md";

fn parse_id(s: &str) -> Result<u32, String> {
    s.strip_prefix("ORCH-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("`{s}` is not an ORCH-<number> id"))
}

/// Parses and validates requirements.toml text (ids well formed, no overlaps, reasons given).
pub fn parse_requirements(text: &str) -> Result<Vec<Requirement>, String> {
    let raw: RawFile = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut out: Vec<Requirement> = Vec::new();
    for r in raw.requirement {
        let lo = parse_id(&r.id)?;
        let hi = r
            .through
            .as_deref()
            .map(parse_id)
            .transpose()?
            .unwrap_or(lo);
        if hi < lo {
            return Err(format!("{}: `through` is before `id`", r.id));
        }
        let not_implemented = match (r.status.as_deref(), r.reason) {
            (None, None) => None,
            (Some("not-implemented"), Some(reason)) if !reason.trim().is_empty() => Some(reason),
            (Some("not-implemented"), _) => {
                return Err(format!("{}: not-implemented needs a reason", r.id));
            }
            (Some(other), _) => return Err(format!("{}: unknown status `{other}`", r.id)),
            (None, Some(_)) => return Err(format!("{}: reason without a status", r.id)),
        };
        if r.text.trim().is_empty() {
            return Err(format!("{}: empty text", r.id));
        }
        let req = Requirement {
            lo,
            hi,
            text: r.text.trim().to_string(),
            not_implemented,
        };
        if let Some(o) = out.iter().find(|o| o.lo <= hi && lo <= o.hi) {
            return Err(format!("{} overlaps {}", req.label(), o.label()));
        }
        out.push(req);
    }
    out.sort_by_key(|r| r.lo);
    Ok(out)
}

pub fn load_requirements(root: &Path) -> Result<Vec<Requirement>, String> {
    let path = root.join(REQUIREMENTS);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_requirements(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A requirement and the tests citing it.
#[derive(Debug, Clone)]
pub struct Row {
    pub req: Requirement,
    pub tests: BTreeSet<String>,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub rows: Vec<Row>,
    /// Citations of ids that are no requirement.
    pub unknown: Vec<Citation>,
}

impl Report {
    pub fn untested(&self) -> Vec<&Row> {
        self.rows
            .iter()
            .filter(|r| r.tests.is_empty() && r.req.not_implemented.is_none())
            .collect()
    }

    pub fn not_implemented(&self) -> Vec<&Row> {
        self.rows
            .iter()
            .filter(|r| r.req.not_implemented.is_some())
            .collect()
    }

    /// Not-implemented requirements that tests cite anyway: the record is out of date.
    pub fn cited_but_not_implemented(&self) -> Vec<&Row> {
        self.rows
            .iter()
            .filter(|r| r.req.not_implemented.is_some() && !r.tests.is_empty())
            .collect()
    }

    /// Every reason the map is broken, one line each; empty when sound.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for r in self.untested() {
            p.push(format!(
                "{} has no test citing it ({})",
                r.req.label(),
                r.req.text
            ));
        }
        for c in &self.unknown {
            let id = if c.lo == c.hi {
                format!("ORCH-{}", c.lo)
            } else {
                format!("ORCH-{}–{}", c.lo, c.hi)
            };
            p.push(format!(
                "{}:{} ({}) cites {id}, which is not in {REQUIREMENTS}",
                c.file, c.line, c.item
            ));
        }
        for r in self.cited_but_not_implemented() {
            p.push(format!(
                "{} is recorded not-implemented but tests cite it: {:?}",
                r.req.label(),
                r.tests
            ));
        }
        p
    }

    /// (requirements, ids they cover, with tests, not implemented).
    pub fn counts(&self) -> (usize, u32, usize, usize) {
        let ids = self.rows.iter().map(|r| r.req.hi - r.req.lo + 1).sum();
        let tested = self.rows.iter().filter(|r| !r.tests.is_empty()).count();
        (self.rows.len(), ids, tested, self.not_implemented().len())
    }
}

/// Joins requirements and citations.
pub fn build(reqs: &[Requirement], citations: &[Citation]) -> Report {
    let mut rows: Vec<Row> = reqs
        .iter()
        .map(|r| Row {
            req: r.clone(),
            tests: BTreeSet::new(),
        })
        .collect();
    let mut unknown = Vec::new();
    for c in citations {
        let mut known = true;
        for id in c.lo..=c.hi {
            match rows.iter_mut().find(|r| r.req.contains(id)) {
                Some(r) => {
                    r.tests.insert(c.item.clone());
                }
                None => known = false,
            }
        }
        if !known {
            unknown.push(c.clone());
        }
    }
    Report { rows, unknown }
}

/// The whole pipeline on a repository checkout.
pub fn report(root: &Path) -> Result<Report, String> {
    let reqs = load_requirements(root)?;
    let cits = scan(root).map_err(|e| format!("scanning {}: {e}", root.display()))?;
    Ok(build(&reqs, &cits))
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// `docs/requirements.md`: deterministic (sorted), so that it can be checked for freshness.
pub fn render(r: &Report) -> String {
    let (n, ids, tested, ni) = r.counts();
    let mut s = String::new();
    s.push_str("# Requirements map\n\n");
    s.push_str("Generated by `cargo xtask spec-map` (also run by `cargo xtask regen`) from\n");
    s.push_str(
        "`docs/requirements.toml` and the ORCH-id citations in the test sources; do not edit.\n",
    );
    s.push_str("A test proves a requirement by citing its id in its doc comment or name.\n\n");
    s.push_str(&format!(
        "{n} requirements ({ids} ids), {tested} with citing tests, {ni} recorded not implemented.\n\n"
    ));
    s.push_str("| id | requirement | tests |\n|---|---|---|\n");
    for row in &r.rows {
        let tests = if let Some(reason) = &row.req.not_implemented {
            format!("**not implemented**: {}", md_cell(reason))
        } else if row.tests.is_empty() {
            "**none**".to_string()
        } else {
            row.tests
                .iter()
                .map(|t| format!("`{}`", md_cell(t)))
                .collect::<Vec<_>>()
                .join("<br>")
        };
        s.push_str(&format!(
            "| {} | {} | {tests} |\n",
            row.req.label(),
            md_cell(&row.req.text)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    // Ids are assembled at run time so that this module cites nothing itself.
    fn toml_req(n: u32, extra: &str) -> String {
        format!(
            "[[requirement]]\nid = \"{}-{n}\"\ntext = \"t{n}\"\n{extra}\n",
            "ORCH"
        )
    }

    fn cite(lo: u32, hi: u32, item: &str) -> Citation {
        Citation {
            lo,
            hi,
            file: "f.rs".into(),
            line: 1,
            item: item.into(),
        }
    }

    #[test]
    fn sound_map_has_no_problems() {
        let reqs = parse_requirements(&format!(
            "{}{}",
            toml_req(1, ""),
            toml_req(5, &format!("through = \"{}-7\"", "ORCH"))
        ))
        .unwrap();
        let r = build(&reqs, &[cite(1, 1, "a"), cite(6, 6, "b")]);
        assert!(r.problems().is_empty(), "{:?}", r.problems());
        assert_eq!(r.counts(), (2, 4, 2, 0));
        let md = render(&r);
        assert!(
            md.contains(&format!("| {}-5–7 | t5 | `b` |", "ORCH")),
            "{md}"
        );
    }

    #[test]
    fn untested_unknown_and_stale_not_implemented_are_problems() {
        let not_impl = "status = \"not-implemented\"\nreason = \"later\"";
        let reqs = parse_requirements(&format!(
            "{}{}{}",
            toml_req(1, ""),
            toml_req(2, not_impl),
            toml_req(3, not_impl)
        ))
        .unwrap();
        let r = build(&reqs, &[cite(9999, 9999, "x"), cite(3, 3, "y")]);
        let p = r.problems();
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("has no test citing it"), "{p:?}");
        assert!(
            p[1].contains(&format!("cites {}-9999, which is not in", "ORCH")),
            "{p:?}"
        );
        assert!(
            p[2].contains("recorded not-implemented but tests cite it"),
            "{p:?}"
        );
        assert_eq!(r.not_implemented().len(), 2);
    }

    #[test]
    fn bad_requirement_files_are_refused() {
        let overlap = format!(
            "{}{}",
            toml_req(1, &format!("through = \"{}-3\"", "ORCH")),
            toml_req(2, "")
        );
        assert!(
            parse_requirements(&overlap)
                .unwrap_err()
                .contains("overlaps")
        );
        assert!(
            parse_requirements(&toml_req(1, "status = \"not-implemented\""))
                .unwrap_err()
                .contains("reason")
        );
        assert!(parse_requirements(&toml_req(1, "status = \"done\"")).is_err());
        assert!(parse_requirements("[[requirement]]\nid = \"X-1\"\ntext = \"t\"\n").is_err());
    }
}
