//! A scrape of a Prometheus text exposition (`/metrics`): samples by name and labels.

use std::collections::BTreeMap;

/// One scrape: `(name, labels) → value`, labels as written (`k="v",…`).
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    // Label values here never contain `",` or escaped quotes (ids, versions, codes).
    s.split("\",")
        .filter_map(|kv| {
            let (k, v) = kv.split_once("=\"")?;
            Some((k.trim().to_string(), v.trim_end_matches('"').to_string()))
        })
        .collect()
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let value: f64 = value.trim().parse().ok()?;
                let (name, labels) = match series.split_once('{') {
                    Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
                    None => (series, BTreeMap::new()),
                };
                Some((name.to_string(), labels, value))
            })
            .collect();
        Scrape { samples }
    }

    /// Sum of `name` over the series whose labels include every `(key, value)` of `with`
    /// (0 when there is none: a counter never incremented is not exported).
    pub fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.series(name, with).map(|(_, v)| v).sum()
    }

    /// The series of `name` matching `with`, with their labels.
    pub fn series<'a>(
        &'a self,
        name: &'a str,
        with: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = (&'a BTreeMap<String, String>, f64)> + 'a {
        self.samples
            .iter()
            .filter(move |(n, labels, _)| {
                n == name
                    && with
                        .iter()
                        .all(|(k, v)| labels.get(*k).is_some_and(|x| x == v))
            })
            .map(|(_, labels, v)| (labels, *v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_matching_series_only() {
        let s = Scrape::parse(
            "# HELP x y\nllorch_tokens_out_total{pool_id=\"p\",replica_id=\"r0\",engine=\"llamacpp\"} 5\n\
             llorch_tokens_out_total{pool_id=\"p\",replica_id=\"r1\",engine=\"llamacpp\"} 7\n\
             llorch_up 1\n",
        );
        assert_eq!(s.sum("llorch_tokens_out_total", &[]), 12.0);
        assert_eq!(
            s.sum("llorch_tokens_out_total", &[("replica_id", "r1")]),
            7.0
        );
        assert_eq!(
            s.sum("llorch_tokens_out_total", &[("replica_id", "r2")]),
            0.0
        );
        assert_eq!(s.sum("llorch_up", &[]), 1.0);
    }
}
