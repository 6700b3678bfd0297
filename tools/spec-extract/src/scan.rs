//! Finds the test sources of the repository and the ORCH-id citations in them.
//!
//! Test sources are: every `.rs` file with a `tests` directory in its path (crates' integration
//! tests and the top-level `tests/` crates), the `#[cfg(test)]` items of every other `.rs` file
//! (inline `mod tests { … }` and out-of-line `mod tests;` files), and every `.feature` file.

use std::path::{Path, PathBuf};

/// One citation: ids `lo..=hi` cited at `file:line`, inside `item` (a test fn, a scenario, or
/// the whole file for module docs).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Citation {
    pub lo: u32,
    pub hi: u32,
    pub file: String,
    pub line: usize,
    pub item: String,
}

const SKIP_DIRS: [&str; 4] = ["target", ".git", "node_modules", "result"];

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        if entry.file_type()?.is_dir() {
            if !SKIP_DIRS.iter().any(|s| name == *s) && !name.to_string_lossy().starts_with('.') {
                walk(&path, out)?;
            }
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// Parses ORCH citations in one line: `ORCH-3014`, `ORCH-3008–3011` and spec-style lists
/// `ORCH-2001, 3004, 3075–3077`. Returns inclusive ranges.
pub fn ids_in_line(line: &str) -> Vec<(u32, u32)> {
    fn number(s: &str) -> Option<(u32, &str)> {
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        if end == 0 {
            return None;
        }
        Some((s[..end].parse().ok()?, &s[end..]))
    }
    fn group(s: &str) -> Option<((u32, u32), &str)> {
        let (lo, rest) = number(s)?;
        for dash in ["–", "-"] {
            if let Some(after) = rest.strip_prefix(dash)
                && let Some((hi, rest)) = number(after)
                && hi >= lo
            {
                return Some(((lo, hi), rest));
            }
        }
        Some(((lo, lo), rest))
    }
    let mut out = Vec::new();
    let mut s = line;
    while let Some(i) = s.find("ORCH-") {
        s = &s[i + 5..];
        let Some((g, mut rest)) = group(s) else {
            continue;
        };
        out.push(g);
        // A list continues with ", NNNN" (four digits, as the spec writes it).
        while let Some(after) = rest.strip_prefix(", ") {
            match group(after) {
                Some((g, r)) if after.chars().take_while(char::is_ascii_digit).count() == 4 => {
                    out.push(g);
                    rest = r;
                }
                _ => break,
            }
        }
        s = rest;
    }
    out
}

/// Byte ranges (as line ranges) of `#[cfg(test)]` items in Rust source, plus the names of
/// out-of-line test modules (`#[cfg(test)] mod tests;`).
fn cfg_test_regions(src: &str) -> (Vec<(usize, usize)>, Vec<String>) {
    let bytes = src.as_bytes();
    let line_of = |pos: usize| src[..pos].matches('\n').count();
    let mut regions = Vec::new();
    let mut modules = Vec::new();
    let mut from = 0;
    while let Some(i) = src[from..].find("#[cfg(test)]") {
        let start = from + i;
        let after = start + "#[cfg(test)]".len();
        let brace = src[after..].find('{').map(|p| p + after);
        let semi = src[after..].find(';').map(|p| p + after);
        match (brace, semi) {
            (Some(b), semi) if semi.is_none_or(|s| b < s) => {
                let end = matching_brace(bytes, b).unwrap_or(bytes.len());
                regions.push((line_of(start), line_of(end)));
                from = end.min(bytes.len());
            }
            (_, Some(s)) => {
                let decl = src[after..s].trim();
                if let Some(name) = decl
                    .strip_prefix("mod ")
                    .or_else(|| decl.strip_prefix("pub mod "))
                {
                    modules.push(name.trim().to_string());
                }
                from = s;
            }
            _ => break,
        }
    }
    (regions, modules)
}

/// Index of the `}` closing the `{` at `open`, skipping strings, chars and comments.
fn matching_brace(b: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b'r' if matches!(b.get(i + 1), Some(b'#' | b'"'))
                && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) =>
            {
                let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
                if b.get(i + 1 + hashes) == Some(&b'"') {
                    i += 2 + hashes;
                    let close: Vec<u8> = std::iter::once(b'"')
                        .chain(std::iter::repeat_n(b'#', hashes))
                        .collect();
                    while i < b.len() && !b[i..].starts_with(&close) {
                        i += 1;
                    }
                    i += close.len() - 1;
                }
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'\'' if b.get(i + 2) == Some(&b'\'') => i += 2,
            b'\'' if b.get(i + 1) == Some(&b'\\') => {
                while i + 1 < b.len() && b[i + 1] != b'\'' {
                    i += 1;
                }
                i += 1;
            }
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn fn_name(line: &str) -> Option<String> {
    let t = line.trim_start();
    let i = t.find("fn ")?;
    let prefix = &t[..i];
    if !prefix
        .split_whitespace()
        .all(|w| matches!(w, "pub" | "async" | "unsafe" | "const" | "pub(crate)"))
    {
        return None;
    }
    let name: String = t[i + 3..]
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// The item a citation on `lines[at]` belongs to: module docs → the file; a comment or
/// attribute above a fn → that fn; otherwise the nearest fn declared before it.
fn rust_item(lines: &[&str], at: usize, file: &str) -> String {
    let here = lines[at].trim_start();
    if here.starts_with("//!") {
        return file.to_string();
    }
    if here.starts_with("//") || here.starts_with("#[") {
        for l in lines.iter().skip(at + 1).take(30) {
            let t = l.trim_start();
            if let Some(n) = fn_name(l) {
                return format!("{file}::{n}");
            }
            if !(t.starts_with("//") || t.starts_with("#[") || t.is_empty()) {
                break;
            }
        }
    }
    lines[..=at]
        .iter()
        .rev()
        .find_map(|l| fn_name(l))
        .map(|n| format!("{file}::{n}"))
        .unwrap_or_else(|| file.to_string())
}

fn feature_item(lines: &[&str], at: usize, file: &str) -> String {
    lines[..=at]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with("Scenario") || l.starts_with("Feature:"))
        .map(|l| format!("{file}: {l}"))
        .unwrap_or_else(|| file.to_string())
}

fn cite(out: &mut Vec<Citation>, lines: &[&str], range: (usize, usize), file: &str, feature: bool) {
    for (n, line) in lines.iter().enumerate().take(range.1 + 1).skip(range.0) {
        for (lo, hi) in ids_in_line(line) {
            let item = if feature {
                feature_item(lines, n, file)
            } else {
                rust_item(lines, n, file)
            };
            out.push(Citation {
                lo,
                hi,
                file: file.to_string(),
                line: n + 1,
                item,
            });
        }
    }
}

/// All citations in the test sources under `root`, sorted.
pub fn scan(root: &Path) -> std::io::Result<Vec<Citation>> {
    let mut files = Vec::new();
    walk(root, &mut files)?;
    files.sort();
    let mut out = Vec::new();
    let mut extra_test_files = Vec::new();
    for path in &files {
        let rel = path.strip_prefix(root).unwrap_or(path);
        let rel_s = rel.to_string_lossy().to_string();
        let ext = path.extension().and_then(|e| e.to_str());
        let in_tests_dir = rel.components().any(|c| c.as_os_str() == "tests");
        match ext {
            Some("feature") => {
                let text = std::fs::read_to_string(path)?;
                let lines: Vec<&str> = text.lines().collect();
                cite(&mut out, &lines, (0, lines.len()), &rel_s, true);
            }
            Some("rs") if in_tests_dir => {
                let text = std::fs::read_to_string(path)?;
                let lines: Vec<&str> = text.lines().collect();
                cite(&mut out, &lines, (0, lines.len()), &rel_s, false);
            }
            Some("rs") => {
                let text = std::fs::read_to_string(path)?;
                let lines: Vec<&str> = text.lines().collect();
                let (regions, modules) = cfg_test_regions(&text);
                for r in regions {
                    cite(&mut out, &lines, r, &rel_s, false);
                }
                let dir = path.parent().unwrap_or(root);
                let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                for m in modules {
                    let mut candidates =
                        vec![dir.join(format!("{m}.rs")), dir.join(&m).join("mod.rs")];
                    if !matches!(stem, "lib" | "main" | "mod") {
                        candidates.insert(0, dir.join(stem).join(format!("{m}.rs")));
                    }
                    if let Some(f) = candidates.into_iter().find(|c| c.is_file()) {
                        extra_test_files.push(f);
                    }
                }
            }
            _ => {}
        }
    }
    extra_test_files.sort();
    extra_test_files.dedup();
    for path in extra_test_files {
        let rel_s = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .to_string();
        let text = std::fs::read_to_string(&path)?;
        let lines: Vec<&str> = text.lines().collect();
        cite(&mut out, &lines, (0, lines.len()), &rel_s, false);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Ids are assembled at run time so that this file cites nothing itself.
    fn orch(rest: &str) -> String {
        format!("{}-{rest}", "ORCH")
    }

    #[test]
    fn parses_single_ranges_and_lists() {
        assert_eq!(
            ids_in_line(&format!("x ({}).", orch("3014"))),
            vec![(3014, 3014)]
        );
        assert_eq!(ids_in_line(&orch("3008–3011")), vec![(3008, 3011)]);
        assert_eq!(
            ids_in_line(&format!("({})", orch("2001, 3004, 3075–3077, 3091"))),
            vec![(2001, 2001), (3004, 3004), (3075, 3077), (3091, 3091)]
        );
        assert_eq!(
            ids_in_line(&format!("{}, 12 tokens", orch("3016"))),
            vec![(3016, 3016)]
        );
        assert_eq!(ids_in_line("ORCHESTRA-1 and ORCH-x"), vec![]);
    }

    #[test]
    fn finds_cfg_test_regions_and_items() {
        let src = format!(
            "fn prod() {{ /* {} */ }}\n#[cfg(test)]\nmod tests {{\n    /// Proves {}.\n    #[test]\n    fn proves() {{\n        let s = \"}}\";\n    }}\n}}\n#[cfg(test)]\nmod more;\n",
            orch("1"),
            orch("2")
        );
        let (regions, modules) = cfg_test_regions(&src);
        assert_eq!(regions, vec![(1, 8)]);
        assert_eq!(modules, vec!["more".to_string()]);
        let lines: Vec<&str> = src.lines().collect();
        let mut out = Vec::new();
        for r in regions {
            cite(&mut out, &lines, r, "f.rs", false);
        }
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!((out[0].lo, out[0].item.as_str()), (2, "f.rs::proves"));
    }
}
