//! Prometheus families of pool-managerd (SPEC §7), same conventions as orchestratord's:
//! `llorch_` prefix, base units, `_total` counters. Names and label sets are a contract
//! checked by `tests/metrics-contract` (contract.toml); change both together (and docs/operations.md).
//!
//! Values are refreshed at scrape time from the supervisors, the catalog, NVML and each
//! Ready engine's own `/metrics` (llama-server `--metrics`), folded into per-replica families
//! labelled {pool_id, replica_id, engine, engine_version}.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use api_types::VerificationResult;
use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::catalog::Catalog;
use crate::engine_kind::{EngineAdapter, EngineFigures, external_adapter};

use crate::engines::{Engines, ReplicaView};
use crate::gpu::Gpus;
use crate::supervisor::Phase;

/// How long one engine scrape may take before the replica's engine families are skipped.
const ENGINE_SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

const REPLICA: &[&str] = &["pool_id", "replica_id", "engine"];
const ENGINE: &[&str] = &["pool_id", "replica_id", "engine", "engine_version"];
const PHASES: [&str; 6] = [
    "starting",
    "ready",
    "backoff",
    "breaker_open",
    "failed",
    "stopped",
];

pub struct PmMetrics {
    registry: Registry,
    replica_ready: IntGaugeVec,
    replica_state: IntGaugeVec,
    replica_restarts: IntCounterVec,
    replica_circuit_open: IntGaugeVec,
    preload_outcomes: IntCounterVec,
    catalog_verifications: IntCounterVec,
    model_state: IntGaugeVec,
    gpu_utilization: GaugeVec,
    gpu_memory_used: IntGaugeVec,
    gpu_memory_total: IntGaugeVec,
    kv_cache_usage: GaugeVec,
    engine_requests_processing: IntGaugeVec,
    engine_requests_deferred: IntGaugeVec,
    engine_prompt_tokens: IntCounterVec,
    engine_generated_tokens: IntCounterVec,
    /// Last value seen of each source counter, by (family, labels…): our counters advance by
    /// the difference, so they stay monotonic across engine restarts and reloads.
    seen: Mutex<HashMap<Vec<String>, u64>>,
    /// engine_version by engine URL (`/props` once per engine process).
    versions: Mutex<HashMap<String, String>>,
    /// Replicas whose engine runs outside our supervision but is scraped directly
    /// ([`PmMetrics::with_external`]): (pool_id, replica_id, engine URL, adapter).
    external: Vec<(String, String, String, EngineAdapter)>,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    reg(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition"),
    )
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    reg(
        r,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition"),
    )
}

fn fgauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    reg(
        r,
        GaugeVec::new(Opts::new(name, help), labels).expect("static metric definition"),
    )
}

impl Default for PmMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl PmMetrics {
    pub fn new() -> Self {
        let r = Registry::new();
        PmMetrics {
            replica_ready: gauge(
                &r,
                "llorch_replica_ready",
                "1 when the replica's engine is Ready (model loaded, one-token decode answered, self-test passed).",
                &["pool_id", "replica_id", "engine", "engine_version", "cpu"],
            ),
            replica_state: gauge(
                &r,
                "llorch_replica_state",
                "1 for the supervisor phase the replica is in (starting, ready, backoff, breaker_open, failed, stopped).",
                &["pool_id", "replica_id", "engine", "cpu", "state"],
            ),
            replica_restarts: counter(
                &r,
                "llorch_replica_restarts_total",
                "Engine restarts after a crash or failed start.",
                REPLICA,
            ),
            replica_circuit_open: gauge(
                &r,
                "llorch_replica_circuit_open",
                "1 while the replica's restart circuit breaker is open.",
                REPLICA,
            ),
            preload_outcomes: counter(
                &r,
                "llorch_preload_outcomes_total",
                "Engine starts by outcome: ready (loaded and decoded) or failed.",
                &["pool_id", "replica_id", "engine", "outcome"],
            ),
            catalog_verifications: counter(
                &r,
                "llorch_catalog_verifications_total",
                "Catalog artifact verifications by result (passed, mismatch, unavailable).",
                &["result"],
            ),
            model_state: gauge(
                &r,
                "llorch_model_state",
                "1 for the lifecycle state of each catalog entry.",
                &["model_id", "state"],
            ),
            gpu_utilization: fgauge(
                &r,
                "llorch_gpu_utilization_ratio",
                "Share of the last NVML sample period a kernel ran on the GPU (NVML hosts only).",
                &["device"],
            ),
            gpu_memory_used: gauge(
                &r,
                "llorch_gpu_memory_used_bytes",
                "GPU memory in use (NVML hosts only).",
                &["device"],
            ),
            gpu_memory_total: gauge(
                &r,
                "llorch_gpu_memory_total_bytes",
                "GPU memory installed (NVML hosts only).",
                &["device"],
            ),
            kv_cache_usage: fgauge(
                &r,
                "llorch_kv_cache_usage_ratio",
                "Share of the engine's KV cache in use, where the engine reports it.",
                ENGINE,
            ),
            engine_requests_processing: gauge(
                &r,
                "llorch_engine_requests_processing",
                "Requests the engine is decoding now.",
                ENGINE,
            ),
            engine_requests_deferred: gauge(
                &r,
                "llorch_engine_requests_deferred",
                "Requests waiting inside the engine for a slot.",
                ENGINE,
            ),
            engine_prompt_tokens: counter(
                &r,
                "llorch_engine_prompt_tokens_total",
                "Prompt tokens the engine processed (cached tokens excluded).",
                ENGINE,
            ),
            engine_generated_tokens: counter(
                &r,
                "llorch_engine_generated_tokens_total",
                "Tokens the engine generated.",
                ENGINE,
            ),
            registry: r,
            seen: Mutex::new(HashMap::new()),
            versions: Mutex::new(HashMap::new()),
            external: Vec::new(),
        }
    }

    /// Also scrapes the engines of `cfg`'s replicas that run outside our supervision and
    /// that this process reaches directly: Triton servers of `[pools.triton]` replicas (their
    /// HTTP `endpoint`), and vLLM and TGI servers named by a replica's `engine_url` (behind an
    /// adapter daemon's `endpoint` the URL is the daemon's). Their `nv_`, `vllm:` and `tgi_`
    /// metrics are folded into the same engine families as the supervised engines'.
    pub fn with_external(mut self, cfg: &config_schema::Config) -> Self {
        for pool in cfg.pools.iter().filter(|p| !p.supervised()) {
            for r in &pool.replicas {
                match external_adapter(pool, r) {
                    Some((url, Ok(a))) => {
                        self.external.push((pool.id.clone(), r.id.clone(), url, a))
                    }
                    Some((_, Err(e))) => {
                        tracing::warn!(pool_id = %pool.id, error = %e.message, "metrics: no scraper")
                    }
                    None => {}
                }
            }
        }
        self
    }

    /// Folds the external engines' metrics into the engine families.
    async fn external_replicas(&self) {
        let scrapes = futures::future::join_all(self.external.iter().map(|(_, _, url, a)| {
            self.scrape_engine(url, a.version(), async { a.figures().await.ok() })
        }))
        .await;
        for ((pool, replica, _, a), scraped) in self.external.iter().zip(scrapes) {
            let Some((version, m)) = scraped else {
                continue;
            };
            let labels = [
                pool.as_str(),
                replica.as_str(),
                a.engine(),
                version.as_str(),
            ];
            self.engine_figures(&labels, m);
        }
    }

    /// One engine's version (asked once per server URL, then remembered) and metrics, within
    /// [`ENGINE_SCRAPE_TIMEOUT`]; None when either does not answer in time. `version` is only
    /// awaited when the URL's version is not known yet.
    async fn scrape_engine<M>(
        &self,
        url: &str,
        version: impl Future<Output = Option<String>>,
        metrics: impl Future<Output = Option<M>>,
    ) -> Option<(String, M)> {
        let known = self
            .versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(url)
            .cloned();
        let work = async {
            let version = match known {
                Some(k) => k,
                None => {
                    let k = version.await?;
                    self.versions
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(url.to_owned(), k.clone());
                    k
                }
            };
            Some((version, metrics.await?))
        };
        tokio::time::timeout(ENGINE_SCRAPE_TIMEOUT, work)
            .await
            .ok()
            .flatten()
    }

    pub fn catalog_verification(&self, result: VerificationResult) {
        self.catalog_verifications
            .with_label_values(&[result.as_str()])
            .inc();
    }

    /// Advances `c` by how much `value` grew since the last scrape (a drop means the source
    /// restarted from zero).
    /// One engine's figures into the engine families (labels: pool, replica, engine,
    /// engine_version): llama.cpp and vLLM report the same five, under their own names.
    fn engine_figures(&self, labels: &[&str; 4], f: EngineFigures) {
        if let Some(r) = f.kv_cache_usage_ratio {
            self.kv_cache_usage.with_label_values(labels).set(r);
        }
        if let Some(n) = f.requests_processing {
            self.engine_requests_processing
                .with_label_values(labels)
                .set(n as i64);
        }
        if let Some(n) = f.requests_deferred {
            self.engine_requests_deferred
                .with_label_values(labels)
                .set(n as i64);
        }
        if let Some(n) = f.prompt_tokens_total {
            self.advance(&self.engine_prompt_tokens, "prompt", labels, n as u64);
        }
        if let Some(n) = f.generated_tokens_total {
            self.advance(&self.engine_generated_tokens, "generated", labels, n as u64);
        }
    }

    fn advance(&self, c: &IntCounterVec, family: &str, labels: &[&str], value: u64) {
        let mut key = vec![family.to_string()];
        key.extend(labels.iter().map(|s| s.to_string()));
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let last = seen.insert(key, value).unwrap_or(0);
        let delta = if value >= last { value - last } else { value };
        // Touch the series even at 0 so it exists from the first scrape.
        c.with_label_values(labels).inc_by(delta);
    }

    /// Refreshes every family and renders the text exposition format.
    pub async fn render(
        &self,
        engines: Option<&Engines>,
        catalog: Option<&Catalog>,
        gpus: &Gpus,
    ) -> String {
        if let Some(engines) = engines {
            let views = engines.replica_views().await;
            let scrapes = futures::future::join_all(views.iter().map(|v| self.scrape(v))).await;
            self.replica_ready.reset();
            self.replica_state.reset();
            self.replica_circuit_open.reset();
            self.kv_cache_usage.reset();
            self.engine_requests_processing.reset();
            self.engine_requests_deferred.reset();
            for (v, scraped) in views.iter().zip(scrapes) {
                self.replica(v, scraped);
            }
        }
        self.external_replicas().await;
        if let Some(cat) = catalog {
            self.model_state.reset();
            match cat.list() {
                Ok(entries) => {
                    for e in entries {
                        for s in api_types::ModelState::ALL {
                            self.model_state
                                .with_label_values(&[e.id.as_str(), s.as_str()])
                                .set(i64::from(e.state == s));
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "metrics: cannot read the catalog"),
            }
        }
        for g in gpus.list() {
            let dev = g.index.to_string();
            if let Some(u) = g.utilization_ratio {
                self.gpu_utilization.with_label_values(&[&dev]).set(u);
            }
            self.gpu_memory_used
                .with_label_values(&[&dev])
                .set(i64::try_from(g.memory_used_bytes).unwrap_or(i64::MAX));
            self.gpu_memory_total
                .with_label_values(&[&dev])
                .set(i64::try_from(g.memory_total_bytes).unwrap_or(i64::MAX));
        }
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// The engine's version and metrics, for Ready supervised replicas of every engine
    /// (llama.cpp `llamacpp:`, vLLM `vllm:`, TGI `tgi_`, Triton `nv_`); None when it does not
    /// answer in time (its engine families are then left out of this scrape).
    async fn scrape(&self, v: &ReplicaView) -> Option<(String, EngineFigures)> {
        if v.status.phase != Phase::Ready {
            return None;
        }
        self.scrape_engine(&v.engine_url, v.adapter.version(), async {
            match v.adapter.figures().await {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::debug!(pool_id = %v.pool_id, replica_id = %v.replica_id, error = %e.message, "engine /metrics scrape failed");
                    None
                }
            }
        })
        .await
    }

    fn replica(&self, v: &ReplicaView, scraped: Option<(String, EngineFigures)>) {
        let st = &v.status;
        let cpu = if st.cpu { "true" } else { "false" };
        let ids = [v.pool_id.as_str(), v.replica_id.as_str(), v.engine.as_str()];
        let version = scraped
            .as_ref()
            .map(|(k, _)| k.clone())
            .or_else(|| {
                self.versions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&v.engine_url)
                    .cloned()
            })
            .unwrap_or_else(|| "unknown".into());
        self.replica_ready
            .with_label_values(&[ids[0], ids[1], ids[2], &version, cpu])
            .set(i64::from(st.phase == Phase::Ready));
        for p in PHASES {
            self.replica_state
                .with_label_values(&[ids[0], ids[1], ids[2], cpu, p])
                .set(i64::from(st.phase.name() == p));
        }
        self.replica_circuit_open
            .with_label_values(&ids)
            .set(i64::from(matches!(st.phase, Phase::BreakerOpen { .. })));
        self.advance(
            &self.replica_restarts,
            "restarts",
            &ids,
            u64::from(st.restarts),
        );
        for (outcome, n) in [("ready", st.starts_ready), ("failed", st.starts_failed)] {
            self.advance(
                &self.preload_outcomes,
                "preload",
                &[ids[0], ids[1], ids[2], outcome],
                u64::from(n),
            );
        }
        let Some((version, m)) = scraped else {
            return;
        };
        let labels = [ids[0], ids[1], ids[2], version.as_str()];
        self.engine_figures(&labels, m);
    }
}
