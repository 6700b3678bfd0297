//! Output helpers shared by the control-plane commands: aligned text tables and JSON documents.

use std::io::Write;

use serde::Serialize;

use crate::Failure;
use crate::error::{CliError, one_line};

/// A text table: a header row and rows of cells, printed with columns aligned by the widest
/// cell (counted in characters). Cells are server text, so each is put on one line and stripped
/// of control characters first.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.iter().map(|c| one_line(c)).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, no trailing spaces.
    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut width = vec![0usize; cols];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let mut s = String::new();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate().take(cols) {
                line.push_str(c);
                if i + 1 < cols {
                    let pad = width[i] - c.chars().count() + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            s.push_str(line.trim_end());
            s.push('\n');
        }
        s
    }
}

/// Writes `value` as pretty JSON followed by a newline.
pub fn write_json(out: &mut (impl Write + ?Sized), value: &impl Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Protocol(format!("cannot render JSON: {e}")))?;
    writeln!(out, "{text}")?;
    Ok(())
}

/// Writes `value` as one line of JSON (for streams of documents: `top`).
pub fn write_json_line(
    out: &mut (impl Write + ?Sized),
    value: &impl Serialize,
) -> Result<(), Failure> {
    let text = serde_json::to_string(value)
        .map_err(|e| CliError::Protocol(format!("cannot render JSON: {e}")))?;
    writeln!(out, "{text}")?;
    out.flush()?;
    Ok(())
}

/// `-` for an absent value.
pub fn or_dash(v: Option<&str>) -> String {
    match v {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_sanitizes_cells() {
        let mut t = Table::new(&["POOL", "STATE", "LAST ERROR"]);
        t.row(vec!["p".into(), "ready".into(), "-".into()]);
        t.row(vec![
            "long-pool".into(),
            "unready".into(),
            "boom\n\x1b[31mred".into(),
        ]);
        assert_eq!(
            t.render(),
            "POOL       STATE    LAST ERROR\n\
             p          ready    -\n\
             long-pool  unready  boom [31mred\n"
        );
    }

    #[test]
    fn dash_for_missing() {
        assert_eq!(or_dash(None), "-");
        assert_eq!(or_dash(Some("")), "-");
        assert_eq!(or_dash(Some("x")), "x");
    }
}
