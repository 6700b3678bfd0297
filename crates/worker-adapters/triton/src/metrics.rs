//! Triton's Prometheus metrics (the separate metrics port, `:8002/metrics` by default), parsed
//! into typed values for one model. Lenient like the llama.cpp adapter's parser: a line that
//! is not `name[{labels}] value [timestamp]` with a finite value is skipped, never an error and
//! never a panic.
//!
//! Per-model families carry `model` and `version` labels; they are summed over the versions
//! of the configured model. Families observed on tritonserver 2.51.0 on CPU:
//! `nv_inference_request_success`, `nv_inference_request_failure{reason}`,
//! `nv_inference_count`, `nv_inference_exec_count`, `nv_inference_pending_request_count`,
//! `nv_inference_request_duration_us`, `nv_inference_queue_duration_us`,
//! `nv_inference_compute_{input,infer,output}_duration_us`, `nv_cpu_utilization`,
//! `nv_cpu_memory_{used,total}_bytes` (and `nv_gpu_*` on GPU machines). The vLLM backend adds
//! `vllm:` token counters with the same `model` label (not seen here: no vLLM on CPU Triton).

use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TritonMetrics {
    /// `nv_inference_request_success`: requests that completed (counter).
    pub request_success_total: Option<f64>,
    /// `nv_inference_request_failure`, summed over `reason` (counter).
    pub request_failure_total: Option<f64>,
    /// `nv_inference_request_failure` by `reason` (OTHER, BACKEND, CANCELED, REJECTED).
    pub request_failure_by_reason: BTreeMap<String, f64>,
    /// `nv_inference_count`: inferences performed (batch elements; counter).
    pub inference_count_total: Option<f64>,
    /// `nv_inference_exec_count`: model executions (batches; counter).
    pub exec_count_total: Option<f64>,
    /// `nv_inference_pending_request_count`: requests queued, not yet executing (gauge).
    pub pending_requests: Option<f64>,
    /// `nv_inference_request_duration_us` (counter of microseconds).
    pub request_duration_us_total: Option<f64>,
    /// `nv_inference_queue_duration_us` (counter of microseconds).
    pub queue_duration_us_total: Option<f64>,
    /// `nv_cpu_utilization`, 0..=1 (gauge).
    pub cpu_utilization: Option<f64>,
    /// `nv_cpu_memory_used_bytes` (gauge).
    pub cpu_memory_used_bytes: Option<f64>,
    /// `nv_gpu_utilization` by `gpu_uuid`, 0..=1 (GPU machines only).
    pub gpu_utilization: BTreeMap<String, f64>,
    /// `nv_gpu_memory_used_bytes` by `gpu_uuid` (GPU machines only).
    pub gpu_memory_used_bytes: BTreeMap<String, f64>,
    /// `vllm:prompt_tokens_total`: re-exported by the vLLM backend (with its metrics enabled),
    /// labelled by `model` like the `nv_` families (counter).
    pub prompt_tokens_total: Option<f64>,
    /// `vllm:generation_tokens_total` (vLLM backend, counter).
    pub generation_tokens_total: Option<f64>,
}

use adapter_api::prom::{label, parse_sample};

impl TritonMetrics {
    /// Parses a Triton `/metrics` body for `model` (all its versions); unknown families,
    /// other models and malformed lines are ignored.
    pub fn parse(text: &str, model: &str) -> TritonMetrics {
        let mut m = TritonMetrics::default();
        let add = |slot: &mut Option<f64>, v: f64| *slot = Some(slot.unwrap_or(0.0) + v);
        for (name, labels, v) in text.lines().filter_map(parse_sample) {
            if let Some(family) = name.strip_prefix("vllm:") {
                if label(&labels, "model") == Some(model) {
                    match family {
                        "prompt_tokens_total" => add(&mut m.prompt_tokens_total, v),
                        "generation_tokens_total" => add(&mut m.generation_tokens_total, v),
                        _ => {}
                    }
                }
                continue;
            }
            let Some(family) = name.strip_prefix("nv_") else {
                continue;
            };
            match family {
                "cpu_utilization" => m.cpu_utilization = Some(v),
                "cpu_memory_used_bytes" => m.cpu_memory_used_bytes = Some(v),
                "gpu_utilization" | "gpu_memory_used_bytes" => {
                    let uuid = label(&labels, "gpu_uuid").unwrap_or("").to_string();
                    let map = if family == "gpu_utilization" {
                        &mut m.gpu_utilization
                    } else {
                        &mut m.gpu_memory_used_bytes
                    };
                    map.insert(uuid, v);
                }
                _ if label(&labels, "model") != Some(model) => {}
                "inference_request_success" => add(&mut m.request_success_total, v),
                "inference_request_failure" => {
                    add(&mut m.request_failure_total, v);
                    let reason = label(&labels, "reason").unwrap_or("").to_string();
                    *m.request_failure_by_reason.entry(reason).or_default() += v;
                }
                "inference_count" => add(&mut m.inference_count_total, v),
                "inference_exec_count" => add(&mut m.exec_count_total, v),
                "inference_pending_request_count" => add(&mut m.pending_requests, v),
                "inference_request_duration_us" => add(&mut m.request_duration_us_total, v),
                "inference_queue_duration_us" => add(&mut m.queue_duration_us_total, v),
                _ => {}
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Captured from tritonserver 2.51.0 (CPU) after streamed requests to model `llm`.
    const REAL: &str = include_str!("../testdata/metrics-2.51.0.txt");

    #[test]
    fn parses_real_triton_output() {
        let m = TritonMetrics::parse(REAL, "llm");
        assert_eq!(m.request_success_total, Some(3.0), "{m:?}");
        assert_eq!(
            TritonMetrics::parse(REAL, "bytes").request_success_total,
            Some(4.0)
        );
        assert!(m.request_failure_total.is_some());
        assert!(m.request_failure_by_reason.contains_key("CANCELED"));
        assert!(m.pending_requests.is_some());
        assert!(m.cpu_utilization.is_some());
        let other = TritonMetrics::parse(REAL, "no-such-model");
        assert_eq!(other.request_success_total, None);
        assert_eq!(other.cpu_utilization, m.cpu_utilization);
    }

    #[test]
    fn labels_versions_and_bad_lines() {
        let text = "nv_inference_request_success{model=\"a\",version=\"1\"} 2\n\
                    nv_inference_request_success{version=\"2\",model=\"a\"} 3 1700000000\n\
                    nv_inference_request_success{model=\"b\",version=\"1\"} 100\n\
                    nv_inference_request_failure{model=\"a\",reason=\"BACK\\\"END\",version=\"1\"} 1\n\
                    nv_inference_count{model=\"a\"\n\
                    nv_inference_exec_count{model=\"a\"} NaN\n\
                    nv_inference_pending_request_count{model=\"a\",version=\"1\"} 4\n\
                    nv_gpu_utilization{gpu_uuid=\"GPU-1\"} 0.5\n\
                    vllm:prompt_tokens_total{model=\"a\",version=\"1\"} 7\n\
                    vllm:generation_tokens_total{model=\"a\",version=\"1\"} 12\n\
                    vllm:generation_tokens_total{model=\"b\",version=\"1\"} 99\n";
        let m = TritonMetrics::parse(text, "a");
        assert_eq!(m.request_success_total, Some(5.0));
        assert_eq!(m.request_failure_by_reason.get("BACK\"END"), Some(&1.0));
        assert_eq!(m.inference_count_total, None);
        assert_eq!(m.exec_count_total, None);
        assert_eq!(m.pending_requests, Some(4.0));
        assert_eq!(m.gpu_utilization.get("GPU-1"), Some(&0.5));
        assert_eq!(
            (m.prompt_tokens_total, m.generation_tokens_total),
            (Some(7.0), Some(12.0))
        );
    }

    proptest! {
        #[test]
        fn any_text_parses_without_panic(s in "\\PC*", lines in prop::collection::vec("nv_[a-z_]{0,12}[{} \"=a-z0-9.,\\\\-]{0,24}", 0..20)) {
            let _ = TritonMetrics::parse(&s, "a");
            let _ = TritonMetrics::parse(&lines.join("\n"), "a");
        }
    }
}
