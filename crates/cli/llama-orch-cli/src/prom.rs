//! A small reader of the Prometheus text exposition format (0.0.4), enough for `llorch top`:
//! samples with their labels and values; comments, `HELP` and `TYPE` lines are skipped.

use std::collections::BTreeMap;

/// One sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, k: &str) -> &str {
        self.labels.get(k).map(String::as_str).unwrap_or("")
    }
}

/// Parses a scrape; lines that are not valid samples are an error naming the line.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(parse_line(line).ok_or_else(|| format!("/metrics line {}: `{line}`", n + 1))?);
    }
    Ok(out)
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find('=')?;
            let key = rest[..eq].trim().to_string();
            let r = rest[eq + 1..].trim_start().strip_prefix('"')?;
            let (value, after) = quoted(r)?;
            labels.insert(key, value);
            rest = after;
        }
    }
    let mut parts = rest.split_whitespace();
    let value = match parts.next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Reads a label value up to its closing quote (after the opening one), unescaping `\\`, `\"`
/// and `\n`; returns the value and the text after the quote.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut v = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((v, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => v.push('\n'),
                other => v.push(other),
            },
            c => v.push(c),
        }
    }
    None
}

/// Sum of the samples named `name`, grouped by the value of `label`.
pub fn sum_by(samples: &[Sample], name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == name) {
        *m.entry(s.label(label).to_string()).or_insert(0.0) += s.value;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples_and_skips_comments() {
        let text = "# HELP x y\n# TYPE llorch_queue_depth gauge\n\
            llorch_queue_depth{pool_id=\"p\",priority=\"batch\"} 3\n\
            llorch_queue_depth{pool_id=\"p\",priority=\"interactive\"} 2\n\
            llorch_queue_depth{pool_id=\"q\",priority=\"batch\"} 1\n\
            up 1 1700000000\n\
            weird{a=\"x\\\"y,z}\",b=\"\\\\\"} +Inf\n";
        let s = parse(text).expect("parses");
        assert_eq!(s.len(), 5);
        assert_eq!(s[3].name, "up");
        assert!(s[3].labels.is_empty());
        assert_eq!(s[4].label("a"), "x\"y,z}");
        assert_eq!(s[4].label("b"), "\\");
        assert!(s[4].value.is_infinite());
        let by = sum_by(&s, "llorch_queue_depth", "pool_id");
        assert_eq!(by.get("p"), Some(&5.0));
        assert_eq!(by.get("q"), Some(&1.0));
    }

    #[test]
    fn malformed_lines_are_errors() {
        for bad in ["x{a=\"1\" 2", "x{a=1} 2", "x", "x{a=\"1\"} notanumber"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
