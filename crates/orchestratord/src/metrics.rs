//! Prometheus families of orchestratord (SPEC §7). Names and label sets are a contract checked
//! by `tests/metrics-contract` (contract.toml + the live linter); change both together.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub tasks_enqueued: IntCounterVec,
    pub tasks_started: IntCounterVec,
    pub tasks_canceled: IntCounterVec,
    pub tasks_rejected: IntCounterVec,
    pub tasks_completed: IntCounterVec,
    pub tasks_failed: IntCounterVec,
    pub queue_depth: IntGaugeVec,
    /// Set at each scrape from the pools' queues and running sets (see `api::ops::metrics`).
    pub tenant_tasks: IntGaugeVec,
    pub first_token_latency: HistogramVec,
    pub decode_duration: HistogramVec,
    pub tokens_in: IntCounterVec,
    pub tokens_out: IntCounterVec,
    pub backpressure_events: IntCounterVec,
    pub replica_slots_busy: IntGaugeVec,
    pub replica_slots_total: IntGaugeVec,
    pub replica_ready: IntGaugeVec,
    pub sessions_active: IntGauge,
    pub replica_restarts: IntCounterVec,
    pub replica_circuit_open: IntGaugeVec,
    pub admission_share: GaugeVec,
    pub deadlines_met_ratio: GaugeVec,
    pub preemptions: IntCounterVec,
    pub quota_rejections: IntCounterVec,
    pub queue_wait: HistogramVec,
    pub start_prediction_error: HistogramVec,
    pub priority_inversions: IntCounterVec,
    /// 1 while the pool-managerd registry feed is connected (0 when down or not configured).
    pub registry_feed_up: IntGauge,
    /// Bytes held by the event logs of finished tasks kept for replay.
    pub task_log_bytes: IntGauge,
    /// Finished tasks kept for replay.
    pub task_log_tasks: IntGauge,
    /// The byte budget of the replay store (configured or derived).
    pub task_log_budget_bytes: IntGauge,
    /// Finished tasks evicted from the replay store, by the limit that evicted them.
    pub task_log_evictions: IntCounterVec,
}

fn plain_gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("static metric definition");
    r.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

/// Latency buckets in seconds, 1 ms … 60 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn float_gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )
    .expect("static metric definition");
    r.register(Box::new(h.clone()))
        .expect("metric registered once");
    h
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        const POOL_PRIO: &[&str] = &["pool_id", "priority"];
        const ENGINE: &[&str] = &["pool_id", "replica_id", "engine", "engine_version"];
        Metrics {
            tasks_enqueued: counter(
                &r,
                "llorch_tasks_enqueued_total",
                "Tasks admitted to a queue (an admission counter: engine, no version yet).",
                &["pool_id", "engine", "priority"],
            ),
            tasks_started: counter(
                &r,
                "llorch_tasks_started_total",
                "Tasks dispatched to a replica.",
                &[
                    "pool_id",
                    "replica_id",
                    "engine",
                    "engine_version",
                    "priority",
                ],
            ),
            tasks_canceled: counter(
                &r,
                "llorch_tasks_canceled_total",
                "Tasks canceled, by reason (client_request, client_disconnect, shutdown); \
                 engine_version is the build the pool serves.",
                &["pool_id", "engine", "engine_version", "reason"],
            ),
            tasks_rejected: counter(
                &r,
                "llorch_tasks_rejected_total",
                "Tasks refused at admission or evicted from a queue, by error code (an \
                 admission counter: engine, no version).",
                &["pool_id", "engine", "reason"],
            ),
            tasks_completed: counter(
                &r,
                "llorch_tasks_completed_total",
                "Tasks that ended with `end`.",
                ENGINE,
            ),
            tasks_failed: counter(
                &r,
                "llorch_tasks_failed_total",
                "Tasks that ended with an `error` after dispatch, by code.",
                &["pool_id", "replica_id", "engine", "engine_version", "code"],
            ),
            queue_depth: gauge(
                &r,
                "llorch_queue_depth",
                "Tasks waiting in a pool queue; engine_version is the build the pool serves.",
                &["pool_id", "engine", "engine_version", "priority"],
            ),
            tenant_tasks: gauge(
                &r,
                "llorch_tenant_tasks",
                "Tasks of a tenant in a pool now, by state (queued, running).",
                &["pool_id", "tenant", "state"],
            ),
            first_token_latency: histogram(
                &r,
                "llorch_first_token_latency_seconds",
                "Admission to first token, queue time included.",
                &["pool_id", "engine", "engine_version", "priority"],
            ),
            decode_duration: histogram(
                &r,
                "llorch_decode_duration_seconds",
                "Dispatch to end of a completed task.",
                &["pool_id", "engine", "engine_version"],
            ),
            tokens_in: counter(
                &r,
                "llorch_tokens_in_total",
                "Prompt tokens (estimated) of dispatched tasks.",
                ENGINE,
            ),
            tokens_out: counter(
                &r,
                "llorch_tokens_out_total",
                "Tokens streamed to clients.",
                ENGINE,
            ),
            backpressure_events: counter(
                &r,
                "llorch_backpressure_events_total",
                "Full-queue events, by the policy that handled them.",
                &["pool_id", "policy"],
            ),
            replica_slots_busy: gauge(
                &r,
                "llorch_replica_slots_busy",
                "Slots of a replica running a task.",
                ENGINE,
            ),
            replica_slots_total: gauge(&r, "llorch_replica_slots", "Slots of a replica.", ENGINE),
            replica_ready: gauge(
                &r,
                "llorch_replica_ready",
                "1 when the replica takes work. cpu=\"true\" marks CPU inference.",
                &["pool_id", "replica_id", "engine", "engine_version", "cpu"],
            ),
            sessions_active: {
                let g = IntGauge::new("llorch_sessions_active", "Live sessions.")
                    .expect("static metric definition");
                r.register(Box::new(g.clone()))
                    .expect("metric registered once");
                g
            },
            replica_restarts: counter(
                &r,
                "llorch_replica_restarts_total",
                "Engine restarts of a replica after crashes or failed starts.",
                &["pool_id", "replica_id", "engine"],
            ),
            replica_circuit_open: gauge(
                &r,
                "llorch_replica_circuit_open",
                "1 while a replica's restart circuit breaker is open.",
                &["pool_id", "replica_id", "engine"],
            ),
            admission_share: float_gauge(
                &r,
                "llorch_admission_share_ratio",
                "Share of recent dispatches per tenant and priority (EWMA over ~100 dispatches); tracks the configured weights under contention.",
                &["tenant", "priority"],
            ),
            deadlines_met_ratio: float_gauge(
                &r,
                "llorch_deadlines_met_ratio",
                "Of the tasks with a deadline that ended, the fraction that completed in time.",
                &["priority"],
            ),
            preemptions: counter(
                &r,
                "llorch_preemptions_total",
                "Preemptions: soft (queued work shed) or hard (running work interrupted).",
                &["mode", "engine"],
            ),
            quota_rejections: counter(
                &r,
                "llorch_quota_rejections_total",
                "Submissions refused by a tenant quota, by quota.",
                &["tenant", "quota"],
            ),
            queue_wait: histogram(
                &r,
                "llorch_queue_wait_seconds",
                "Admission to dispatch.",
                POOL_PRIO,
            ),
            start_prediction_error: histogram(
                &r,
                "llorch_start_prediction_error_seconds",
                "Absolute error of predicted_start_ms against the real wait, at dispatch.",
                POOL_PRIO,
            ),
            priority_inversions: counter(
                &r,
                "llorch_priority_inversions_total",
                "Dispatch rounds that left interactive work waiting while a slot was free (must stay 0).",
                &["pool_id"],
            ),
            registry_feed_up: {
                let g = IntGauge::new(
                    "llorch_registry_feed_up",
                    "1 while pool-managerd's replica registry feed is connected; 0 when it is down (adapter probes only) or not configured.",
                )
                .expect("static metric definition");
                r.register(Box::new(g.clone()))
                    .expect("metric registered once");
                g
            },
            task_log_bytes: plain_gauge(
                &r,
                "llorch_task_log_bytes",
                "Bytes held by the event logs of finished tasks kept for replay.",
            ),
            task_log_tasks: plain_gauge(
                &r,
                "llorch_task_log_tasks",
                "Finished tasks kept for replay.",
            ),
            task_log_budget_bytes: plain_gauge(
                &r,
                "llorch_task_log_budget_bytes",
                "Byte budget of the replay store (server.task_log_budget_bytes, or derived from the memory limit).",
            ),
            task_log_evictions: counter(
                &r,
                "llorch_task_log_evictions_total",
                "Finished tasks evicted from the replay store before task_retention_ms, by the limit that evicted them (bytes, tasks, tenant_tasks).",
                &["reason"],
            ),
            registry: r,
        }
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding our own well-formed families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
