//! vLLM's Prometheus `/metrics` (prefix `vllm:`, labels `engine`, `model_name`), parsed
//! leniently into typed values: a line that is not `name[{labels}] value [timestamp]` with a
//! finite number is skipped, never an error and never a panic. Series of every engine index
//! and model name are summed.
//!
//! The first five fields have the same meaning and names as the llama.cpp adapter's
//! `EngineMetrics`, so a pool manager folds either engine into the same replica families.

use adapter_api::prom::{label, parse_sample};

/// What vLLM reports about its work. Every field is optional: a family appears only once the
/// engine exports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VllmMetrics {
    /// `vllm:prompt_tokens_total`: prompt tokens processed.
    pub prompt_tokens_total: Option<f64>,
    /// `vllm:generation_tokens_total`: tokens generated.
    pub tokens_predicted_total: Option<f64>,
    /// `vllm:num_requests_running`: requests in the running batch.
    pub requests_processing: Option<f64>,
    /// `vllm:num_requests_waiting`: requests queued for the batch.
    pub requests_deferred: Option<f64>,
    /// `vllm:kv_cache_usage_perc` (a fraction 0..1; the pre-0.11 name
    /// `vllm:gpu_cache_usage_perc` when the new one is absent).
    pub kv_cache_usage_ratio: Option<f64>,
    /// `vllm:prompt_tokens_cached_total`: prompt tokens served from the prefix cache.
    pub prompt_tokens_cached_total: Option<f64>,
    /// `vllm:request_success_total` by `finished_reason`.
    pub finished_stop: Option<f64>,
    pub finished_length: Option<f64>,
    pub finished_abort: Option<f64>,
    pub finished_error: Option<f64>,
    /// `vllm:num_preemptions_total`.
    pub preemptions_total: Option<f64>,
}

impl VllmMetrics {
    pub fn parse(text: &str) -> VllmMetrics {
        let mut m = VllmMetrics::default();
        let mut old_kv: Option<f64> = None;
        for (name, labels, v) in text.lines().filter_map(parse_sample) {
            let Some(family) = name.strip_prefix("vllm:") else {
                continue;
            };
            let reason = label(&labels, "finished_reason");
            let slot = match (family, reason) {
                ("prompt_tokens_total", _) => &mut m.prompt_tokens_total,
                ("generation_tokens_total", _) => &mut m.tokens_predicted_total,
                ("num_requests_running", _) => &mut m.requests_processing,
                ("num_requests_waiting", _) => &mut m.requests_deferred,
                ("kv_cache_usage_perc", _) => &mut m.kv_cache_usage_ratio,
                ("gpu_cache_usage_perc", _) => &mut old_kv,
                ("prompt_tokens_cached_total", _) => &mut m.prompt_tokens_cached_total,
                ("request_success_total", Some("stop")) => &mut m.finished_stop,
                ("request_success_total", Some("length")) => &mut m.finished_length,
                ("request_success_total", Some("abort")) => &mut m.finished_abort,
                ("request_success_total", Some("error")) => &mut m.finished_error,
                ("num_preemptions_total", _) => &mut m.preemptions_total,
                _ => continue,
            };
            *slot = Some(slot.unwrap_or(0.0) + v);
        }
        if m.kv_cache_usage_ratio.is_none() {
            m.kv_cache_usage_ratio = old_kv;
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Lines as vLLM 0.32.0 serves them (vllm-here.md §5).
    const REAL: &str = "# HELP vllm:num_requests_running Number of requests in model execution batches.\n\
        # TYPE vllm:num_requests_running gauge\n\
        vllm:num_requests_running{engine=\"0\",model_name=\"smollm2-135m\"} 1.0\n\
        vllm:num_requests_waiting{engine=\"0\",model_name=\"smollm2-135m\"} 2.0\n\
        vllm:num_requests_waiting_by_reason{engine=\"0\",model_name=\"smollm2-135m\",reason=\"capacity\"} 0.0\n\
        vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"smollm2-135m\"} 0.00275\n\
        vllm:prompt_tokens_total{engine=\"0\",model_name=\"smollm2-135m\"} 41.0\n\
        vllm:generation_tokens_total{engine=\"0\",model_name=\"smollm2-135m\"} 2135.0\n\
        vllm:request_success_total{engine=\"0\",finished_reason=\"stop\",model_name=\"smollm2-135m\"} 3.0\n\
        vllm:request_success_total{engine=\"0\",finished_reason=\"length\",model_name=\"smollm2-135m\"} 6.0\n\
        vllm:request_success_total{engine=\"0\",finished_reason=\"abort\",model_name=\"smollm2-135m\"} 0.0\n\
        vllm:e2e_request_latency_seconds_sum{engine=\"0\",model_name=\"smollm2-135m\"} 184.52869200706482\n\
        process_resident_memory_bytes 8.1e+08\n";

    #[test]
    fn parses_vllm_families() {
        let m = VllmMetrics::parse(REAL);
        assert_eq!(m.requests_processing, Some(1.0));
        assert_eq!(m.requests_deferred, Some(2.0));
        assert_eq!(m.kv_cache_usage_ratio, Some(0.00275));
        assert_eq!(m.prompt_tokens_total, Some(41.0));
        assert_eq!(m.tokens_predicted_total, Some(2135.0));
        assert_eq!(m.finished_stop, Some(3.0));
        assert_eq!(m.finished_length, Some(6.0));
        assert_eq!(m.finished_abort, Some(0.0));
        assert_eq!(m.finished_error, None);
    }

    #[test]
    fn old_kv_name_and_two_engines() {
        let m = VllmMetrics::parse(
            "vllm:gpu_cache_usage_perc{engine=\"0\"} 0.5\n\
             vllm:num_requests_running{engine=\"0\"} 1\nvllm:num_requests_running{engine=\"1\"} 2\n",
        );
        assert_eq!(m.kv_cache_usage_ratio, Some(0.5));
        assert_eq!(m.requests_processing, Some(3.0));
    }

    #[test]
    fn bad_lines_are_ignored() {
        let m = VllmMetrics::parse(
            "vllm:num_requests_running\nvllm:num_requests_running abc\n\
             vllm:request_success_total{finished_reason=\"stop 1\n\
             vllm:kv_cache_usage_perc NaN\n{} 3\nvllm:prompt_tokens_total 1e999\n\
             vllm:num_requests_waiting 2\n",
        );
        assert_eq!(
            m,
            VllmMetrics {
                requests_deferred: Some(2.0),
                ..Default::default()
            }
        );
    }

    proptest! {
        #[test]
        fn any_text_parses_without_panic(s in "\\PC*") {
            let _ = VllmMetrics::parse(&s);
        }

        #[test]
        fn metric_like_lines(lines in prop::collection::vec("vllm:[a-z_]{0,12}[{} \"=a-z0-9.,\\\\-]{0,24}", 0..20)) {
            let _ = VllmMetrics::parse(&lines.join("\n"));
        }
    }
}
