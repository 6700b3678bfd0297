//! llama-server's Prometheus `/metrics` (served when it runs with `--metrics`), parsed into
//! typed values. The text format is parsed leniently: a line that is not `name[{labels}] value
//! [timestamp]` with a finite number is skipped, never an error and never a panic, because the
//! engine is outside our control and a bad scrape must not take the pool manager's own
//! `/metrics` down with it.

/// What llama-server reports about its work. Every field is optional: families come and go
/// between llama.cpp builds (e.g. `kv_cache_usage_ratio` was dropped in 2025, and the pinned
/// build b1-0c1e570 no longer exports it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineMetrics {
    /// `llamacpp:prompt_tokens_total`: prompt tokens processed (cached tokens excluded).
    pub prompt_tokens_total: Option<f64>,
    /// `llamacpp:tokens_predicted_total`: tokens generated.
    pub tokens_predicted_total: Option<f64>,
    /// `llamacpp:n_decode_total`: `llama_decode()` calls.
    pub decode_calls_total: Option<f64>,
    /// `llamacpp:requests_processing`: requests being decoded now.
    pub requests_processing: Option<f64>,
    /// `llamacpp:requests_deferred`: requests waiting for a slot.
    pub requests_deferred: Option<f64>,
    /// `llamacpp:kv_cache_usage_ratio` (older builds): share of the KV cache in use, 0..=1.
    pub kv_cache_usage_ratio: Option<f64>,
    /// `llamacpp:kv_cache_tokens` (older builds): tokens held in the KV cache.
    pub kv_cache_tokens: Option<f64>,
}

use adapter_api::prom::parse_sample;

impl EngineMetrics {
    /// Parses a llama-server `/metrics` body; unknown families and malformed lines are
    /// ignored.
    pub fn parse(text: &str) -> EngineMetrics {
        let mut m = EngineMetrics::default();
        // llama-server exports unlabelled samples; labels, if any, are ignored.
        for (name, _, v) in text.lines().filter_map(parse_sample) {
            let Some(family) = name.strip_prefix("llamacpp:") else {
                continue;
            };
            let slot = match family {
                "prompt_tokens_total" => &mut m.prompt_tokens_total,
                "tokens_predicted_total" => &mut m.tokens_predicted_total,
                "n_decode_total" => &mut m.decode_calls_total,
                "requests_processing" => &mut m.requests_processing,
                "requests_deferred" => &mut m.requests_deferred,
                "kv_cache_usage_ratio" => &mut m.kv_cache_usage_ratio,
                "kv_cache_tokens" => &mut m.kv_cache_tokens,
                _ => continue,
            };
            *slot = Some(v);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured verbatim from the pinned llama-server (b1-0c1e570, `--metrics`) after one
    /// 8-token completion of a 2-token prompt.
    const REAL: &str = include_str!("../testdata/metrics-b1-0c1e570.txt");

    /// The adapter's metrics scrape reads the real engine's telemetry (ORCH-3054–3057).
    #[test]
    fn parses_real_llama_server_output() {
        let m = EngineMetrics::parse(REAL);
        assert_eq!(m.prompt_tokens_total, Some(2.0));
        assert_eq!(m.tokens_predicted_total, Some(8.0));
        assert_eq!(m.decode_calls_total, Some(8.0));
        assert_eq!(m.requests_processing, Some(0.0));
        assert_eq!(m.requests_deferred, Some(0.0));
        // This build does not export KV cache usage.
        assert_eq!(m.kv_cache_usage_ratio, None);
    }

    #[test]
    fn older_builds_kv_cache_families_and_labels() {
        // The shape of the families older llama.cpp builds exported (server.cpp before 2025).
        let text = "# TYPE llamacpp:kv_cache_usage_ratio gauge\n\
                    llamacpp:kv_cache_usage_ratio 0.25\n\
                    llamacpp:kv_cache_tokens{slot=\"a}b\"} 128 1700000000000\n";
        let m = EngineMetrics::parse(text);
        assert_eq!(m.kv_cache_usage_ratio, Some(0.25));
        assert_eq!(m.kv_cache_tokens, Some(128.0));
    }

    #[test]
    fn bad_lines_are_ignored_never_panic() {
        let text = "llamacpp:prompt_tokens_total\n\
                    llamacpp:tokens_predicted_total abc\n\
                    llamacpp:requests_processing NaN\n\
                    llamacpp:requests_deferred {\n\
                    {} 3\n\
                    llamacpp:n_decode_total{unterminated=\"x 4\n\
                    \u{feff}\u{0}💥 1\n\
                    llamacpp:kv_cache_tokens 7\n";
        let m = EngineMetrics::parse(text);
        assert_eq!(
            m,
            EngineMetrics {
                kv_cache_tokens: Some(7.0),
                ..Default::default()
            }
        );
        // Arbitrary bytes-as-text: no panic.
        for s in [
            "",
            "\n\n",
            "}",
            "{\"",
            "a{b=\"\\\"}\"} 1",
            "x 1e999",
            "y -inf",
        ] {
            let _ = EngineMetrics::parse(s);
        }
        assert_eq!(
            parse_sample("a{b=\"\\\"}\"} 1"),
            Some(("a", vec![("b".to_string(), "\"}".to_string())], 1.0))
        );
        assert_eq!(parse_sample("x 1e999"), None);
    }
}

#[cfg(test)]
mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_text_parses_without_panic(s in "\\PC*") {
            let _ = EngineMetrics::parse(&s);
        }

        #[test]
        fn any_lines_of_metric_like_text(lines in proptest::collection::vec("llamacpp:[a-z_]{0,12}[{} \"=a-z0-9.\\\\-]{0,20}", 0..20)) {
            let _ = EngineMetrics::parse(&lines.join("\n"));
        }
    }
}
