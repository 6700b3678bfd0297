//! A parser for the Prometheus text exposition format (0.0.4), enough to lint a scrape: family
//! names and types from `# TYPE`, help from `# HELP`, and every sample's name and label set.

use std::collections::{BTreeMap, BTreeSet};

/// One sample line: `name{label="value",…} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    pub line: String,
}

/// A parsed scrape: declared types and help texts, and all samples in order.
#[derive(Debug, Default, Clone)]
pub struct Scrape {
    pub types: BTreeMap<String, String>,
    pub help: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

/// A line the parser could not read.
#[derive(Debug)]
pub struct ParseError {
    pub line_no: usize,
    pub line: String,
    pub why: &'static str,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}: {}", self.line_no, self.why, self.line)
    }
}

impl std::error::Error for ParseError {}

/// Parses label pairs after the opening `{`; returns them and the rest after `}`.
fn parse_labels(mut s: &str) -> Result<(BTreeMap<String, String>, &str), &'static str> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let eq = s.find('=').ok_or("label without `=`")?;
        let key = s[..eq].trim().to_string();
        s = s[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated escape"),
                },
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value"),
            }
        };
        if labels.insert(key, value).is_some() {
            return Err("duplicate label");
        }
        s = &s[end + 1..];
    }
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => v.parse().ok(),
    }
}

/// Parses a whole scrape.
pub fn parse(text: &str) -> Result<Scrape, ParseError> {
    let mut out = Scrape::default();
    for (i, raw) in text.lines().enumerate() {
        let err = |why| ParseError {
            line_no: i + 1,
            line: raw.to_string(),
            why,
        };
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest
                .split_once(' ')
                .ok_or_else(|| err("TYPE without a type"))?;
            out.types.insert(name.to_string(), ty.trim().to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.help.insert(name.to_string(), help.trim().to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| err("sample without a value"))?;
        let name = line[..name_end].to_string();
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end + 1..]).map_err(err)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let value = rest
            .split_whitespace()
            .next()
            .and_then(parse_value)
            .ok_or_else(|| err("sample value is not a number"))?;
        out.samples.push(Sample {
            name,
            labels,
            value,
            line: line.to_string(),
        });
    }
    Ok(out)
}

impl Scrape {
    /// The family a sample belongs to: histogram/summary series map to their family name.
    pub fn family_of(&self, sample_name: &str) -> String {
        if self.types.contains_key(sample_name) {
            return sample_name.to_string();
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = sample_name.strip_suffix(suffix)
                && matches!(
                    self.types.get(base).map(String::as_str),
                    Some("histogram" | "summary")
                )
            {
                return base.to_string();
            }
        }
        sample_name.to_string()
    }

    /// Every family named in the scrape (typed or not), with its type (`untyped` if none).
    pub fn families(&self) -> BTreeMap<String, String> {
        let mut out = self.types.clone();
        for s in &self.samples {
            out.entry(self.family_of(&s.name))
                .or_insert_with(|| "untyped".to_string());
        }
        out
    }

    /// Samples of one family.
    pub fn samples_of<'a>(&'a self, family: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| self.family_of(&s.name) == family)
    }

    /// Sum of a family's plain samples (not `_bucket`/`_sum`/`_count`) whose labels include
    /// all `(key, value)` pairs.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }
}

/// Label names of a sample, without the histogram's `le` and the summary's `quantile`.
pub fn label_names(s: &Sample) -> BTreeSet<String> {
    s.labels
        .keys()
        .filter(|k| *k != "le" && *k != "quantile")
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_types_help_labels_and_escapes() {
        let s = parse(
            "# HELP a_total Things.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"u,o\"} 3\n\
             # TYPE h_seconds histogram\nh_seconds_bucket{le=\"+Inf\"} 1\nh_seconds_sum 0.5\n\
             h_seconds_count 1\nbare 2\n",
        )
        .unwrap();
        assert_eq!(s.types["a_total"], "counter");
        assert_eq!(s.help["a_total"], "Things.");
        assert_eq!(s.samples[0].labels["y"], "q\"u,o");
        assert_eq!(s.family_of("h_seconds_bucket"), "h_seconds");
        assert_eq!(s.families()["bare"], "untyped");
        assert_eq!(s.value("a_total", &[("x", "1")]), Some(3.0));
        assert_eq!(s.value("a_total", &[("x", "2")]), None);
        assert!(label_names(&s.samples[1]).is_empty());
    }

    #[test]
    fn rejects_malformed_lines() {
        assert!(parse("a{x=1} 2\n").is_err());
        assert!(parse("a{x=\"1\" 2\n").is_err());
        assert!(parse("a{x=\"1\"} two\n").is_err());
    }
}
