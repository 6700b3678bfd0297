//! Prometheus families of the policy host, registered on the caller's registry so that they
//! appear on the daemon's own `/metrics`.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::Hook;

/// `(name, type, labels)` of every family the host registers, for the metrics contract.
pub const METRIC_NAMES: &[(&str, &str, &[&str])] = &[
    (
        "llorch_policy_decisions_total",
        "counter",
        &["pool_id", "plugin", "hook", "decision"],
    ),
    (
        "llorch_policy_fallbacks_total",
        "counter",
        &["pool_id", "plugin", "hook", "reason"],
    ),
    (
        "llorch_policy_call_duration_seconds",
        "histogram",
        &["pool_id", "hook"],
    ),
];

pub(crate) struct Metrics {
    decisions: IntCounterVec,
    fallbacks: IntCounterVec,
    latency: HistogramVec,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let decisions = IntCounterVec::new(
            Opts::new(
                METRIC_NAMES[0].0,
                "Decisions taken by policy plugins (hook = admission|placement; decision = \
                 admit|reject|reprioritize|place|defer).",
            ),
            METRIC_NAMES[0].2,
        )?;
        let fallbacks = IntCounterVec::new(
            Opts::new(
                METRIC_NAMES[1].0,
                "Policy plugin calls whose answer was not used; the built-in decision applied \
                 (reason = out_of_fuel|memory_limit|trap|malformed|host).",
            ),
            METRIC_NAMES[1].2,
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                METRIC_NAMES[2].0,
                "Wall time of one policy plugin call: serialization, instantiation, execution \
                 and answer validation.",
            )
            .buckets(vec![
                10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3,
                50e-3, 100e-3,
            ]),
            METRIC_NAMES[2].2,
        )?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(fallbacks.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(Metrics {
            decisions,
            fallbacks,
            latency,
        })
    }

    pub fn decided(
        &self,
        pool_id: &str,
        plugin: &str,
        hook: Hook,
        decision: &str,
        elapsed: Duration,
    ) {
        self.decisions
            .with_label_values(&[pool_id, plugin, hook.as_str(), decision])
            .inc();
        self.observe(pool_id, hook, elapsed);
    }

    pub fn fallback(
        &self,
        pool_id: &str,
        plugin: &str,
        hook: Hook,
        reason: &str,
        elapsed: Duration,
    ) {
        self.fallbacks
            .with_label_values(&[pool_id, plugin, hook.as_str(), reason])
            .inc();
        self.observe(pool_id, hook, elapsed);
    }

    fn observe(&self, pool_id: &str, hook: Hook, elapsed: Duration) {
        self.latency
            .with_label_values(&[pool_id, hook.as_str()])
            .observe(elapsed.as_secs_f64());
    }
}
