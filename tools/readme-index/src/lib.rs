//! The crate index: every workspace crate has a README.md that says what it is for, what it
//! must not depend on and how to test it, and `docs/crates.md` lists them all (crate, path,
//! one-line purpose). [`check`] finds crates without a README or READMEs without those
//! sections; [`render`] produces the index that `tests/fresh.rs` compares with the committed
//! one (`cargo xtask regen` rewrites it).
//!
//! README shape: a `# title`, then the purpose — the first paragraph after the title, or the
//! first paragraph under a heading naming "purpose"; its first sentence is the index line —
//! then a heading containing "depend" (what the crate must not depend on) and a heading
//! containing "test" (how to test it), each with some text under it.
//!
//! Must not depend on: any product crate; it reads Cargo.toml and README files as text.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const INDEX: &str = "docs/crates.md";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[derive(Deserialize)]
struct WorkspaceToml {
    workspace: Workspace,
}

#[derive(Deserialize)]
struct Workspace {
    members: Vec<String>,
}

#[derive(Deserialize)]
struct PackageToml {
    package: Package,
}

#[derive(Deserialize)]
struct Package {
    name: String,
}

/// One workspace member.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    /// Relative to the repository root.
    pub path: String,
}

/// The workspace members listed in the root Cargo.toml (no globs are used there), sorted by
/// path.
pub fn members(root: &Path) -> Result<Vec<Member>, String> {
    let read =
        |p: PathBuf| std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()));
    let ws: WorkspaceToml =
        toml::from_str(&read(root.join("Cargo.toml"))?).map_err(|e| format!("Cargo.toml: {e}"))?;
    let mut out = Vec::new();
    for path in ws.workspace.members {
        let manifest = root.join(&path).join("Cargo.toml");
        let pkg: PackageToml =
            toml::from_str(&read(manifest)?).map_err(|e| format!("{path}/Cargo.toml: {e}"))?;
        out.push(Member {
            name: pkg.package.name,
            path,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// A README's sections: (heading, body) pairs, the title's heading being level 1.
fn sections(text: &str) -> Vec<(usize, String, String)> {
    let mut out: Vec<(usize, String, String)> = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        let level = line.chars().take_while(|c| *c == '#').count();
        if !in_code && (1..=6).contains(&level) && line[level..].starts_with(' ') {
            out.push((level, line[level..].trim().to_string(), String::new()));
        } else if let Some(last) = out.last_mut() {
            last.2.push_str(line);
            last.2.push('\n');
        }
    }
    out
}

fn first_paragraph(body: &str) -> String {
    body.split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .find(|p| !p.is_empty() && !p.starts_with("```") && !p.starts_with('|'))
        .unwrap_or_default()
}

/// The first sentence of a paragraph.
pub fn first_sentence(p: &str) -> String {
    let end = p
        .match_indices(". ")
        .map(|(i, _)| i)
        .find(|&i| !p[..i].ends_with("e.g") && !p[..i].ends_with("i.e"))
        .map(|i| i + 1)
        .unwrap_or(p.len());
    p[..end].trim().to_string()
}

/// What a README says, or why it does not say enough.
pub fn parse_readme(text: &str) -> Result<String, Vec<String>> {
    let s = sections(text);
    let mut problems = Vec::new();
    let Some((1, _, title_body)) = s.first() else {
        return Err(vec!["does not start with a `# title`".into()]);
    };
    let has = |word: &str| {
        s.iter()
            .skip(1)
            .find(|(_, h, _)| h.to_lowercase().contains(word))
    };
    let purpose = match has("purpose") {
        Some((_, _, body)) => first_paragraph(body),
        None => first_paragraph(title_body),
    };
    if purpose.is_empty() {
        problems.push("no purpose (a paragraph after the title, or a `## Purpose` section)".into());
    }
    for (word, what) in [
        ("depend", "## Must not depend on"),
        ("test", "## How to test"),
    ] {
        match has(word) {
            None => problems.push(format!(
                "no `{what}` section (a heading containing \"{word}\")"
            )),
            Some((_, h, body)) if body.trim().is_empty() => {
                problems.push(format!("section `{h}` is empty"))
            }
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        Ok(first_sentence(&purpose))
    } else {
        Err(problems)
    }
}

/// One indexed crate.
#[derive(Debug, Clone)]
pub struct Entry {
    pub member: Member,
    pub purpose: String,
}

/// All members with their README purpose, or every problem found (one line each).
pub fn check(root: &Path) -> Result<Vec<Entry>, Vec<String>> {
    let members = members(root).map_err(|e| vec![e])?;
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for m in members {
        let readme = format!("{}/README.md", m.path);
        match std::fs::read_to_string(root.join(&readme)) {
            Err(_) => problems.push(format!("{} ({readme}): no README.md", m.name)),
            Ok(text) => match parse_readme(&text) {
                Ok(purpose) => entries.push(Entry { member: m, purpose }),
                Err(ps) => problems.extend(ps.into_iter().map(|p| format!("{readme}: {p}"))),
            },
        }
    }
    if problems.is_empty() {
        Ok(entries)
    } else {
        Err(problems)
    }
}

/// `docs/crates.md`.
pub fn render(entries: &[Entry]) -> String {
    let mut s = String::from(
        "# Crates\n\nGenerated by `cargo xtask regen` from the workspace members and their README.md files\n\
         (the first sentence of each README's purpose); do not edit. Each README also says what the\n\
         crate must not depend on and how to test it.\n\n| crate | path | purpose |\n|---|---|---|\n",
    );
    for e in entries {
        s.push_str(&format!(
            "| `{}` | [{}]({}/README.md) | {} |\n",
            e.member.name,
            e.member.path,
            relative_to_docs(&e.member.path),
            e.purpose.replace('|', "\\|")
        ));
    }
    s
}

fn relative_to_docs(path: &str) -> String {
    format!("../{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# x\n\nDoes one thing well. More words.\n\n## Must not depend on\n\nanything.\n\n## How to test\n\n`cargo test -p x`\n";

    #[test]
    fn a_complete_readme_gives_its_first_sentence() {
        assert_eq!(parse_readme(GOOD).unwrap(), "Does one thing well.");
        let with_heading = GOOD.replace(
            "\nDoes one thing well. More words.\n",
            "\n## Purpose\n\nFrom a section.\n",
        );
        assert_eq!(parse_readme(&with_heading).unwrap(), "From a section.");
    }

    #[test]
    fn missing_sections_are_named() {
        let e =
            parse_readme(&GOOD.replace("## How to test\n\n`cargo test -p x`\n", "")).unwrap_err();
        assert!(e[0].contains("How to test"), "{e:?}");
        let e = parse_readme(&GOOD.replace("anything.\n", "")).unwrap_err();
        assert!(e[0].contains("is empty"), "{e:?}");
        let e = parse_readme("no title\n").unwrap_err();
        assert!(e[0].contains("title"), "{e:?}");
        let e =
            parse_readme("# x\n\n## Must not depend on\n\na\n\n## How to test\n\nb\n").unwrap_err();
        assert!(e[0].contains("no purpose"), "{e:?}");
    }

    #[test]
    fn headings_inside_code_blocks_do_not_count() {
        let text = "# x\n\nP.\n\n```sh\n# Must not depend on\n# test\n```\n";
        assert_eq!(parse_readme(text).unwrap_err().len(), 2);
    }

    #[test]
    fn first_sentence_skips_abbreviations() {
        assert_eq!(
            first_sentence("Runs e.g. a thing. Then more."),
            "Runs e.g. a thing."
        );
        assert_eq!(first_sentence("No full stop"), "No full stop");
    }
}
