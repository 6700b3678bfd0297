//! Building [`AppState`] from a validated config: one [`PoolSched`] per pool (behind its own
//! lock), the shared books (sessions, quotas, shares), the policy plugins, and the zero of
//! every counter operators alert on.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use config_schema::{Config, FullPolicy as CfgFullPolicy, Role};
use orchestrator_core::{
    FullPolicy, PoolQueue, QuotaBook, ReplicaState, ReplicaView, ServiceTimeEstimator,
    SessionStore, ShareTracker, TenantQuota, Weights,
};

use super::{AppState, Pool, PoolController, PoolSched, ReplicaSched, retention};
use crate::auth::KeyRing;
use crate::metrics::Metrics;

impl AppState {
    pub fn new(
        cfg: Config,
        pools: Vec<Pool>,
        controller: Option<Arc<dyn PoolController>>,
    ) -> anyhow::Result<Arc<Self>> {
        let metrics = Metrics::new();
        let policy = policy_host::PolicyHost::new(&metrics.registry)
            .map_err(|e| anyhow::anyhow!("policy host: {e:?}"))?;
        crate::plugins::install_configured(&cfg, &policy)?;
        let weights = Weights {
            priority: [
                cfg.priorities.interactive_weight,
                cfg.priorities.batch_weight,
            ],
            tenants: cfg
                .tenants
                .iter()
                .map(|t| (t.id.clone(), t.weight))
                .collect(),
            default_tenant: 1,
        };
        let sched_pools = pools
            .iter()
            .zip(&cfg.pools)
            .map(|(p, pc)| {
                let q = cfg.queue_for(pc);
                let policy = match q.full_policy {
                    CfgFullPolicy::Reject => FullPolicy::Reject,
                    CfgFullPolicy::DropLru => FullPolicy::DropLru,
                    CfgFullPolicy::ShedLowPriority => FullPolicy::ShedLowPriority,
                };
                Mutex::new(PoolSched {
                    queue: PoolQueue::new(q.capacity, policy, weights.clone()),
                    replicas: p
                        .replicas
                        .iter()
                        .zip(&pc.replicas)
                        .map(|(r, rc)| {
                            ReplicaSched::new(ReplicaView {
                                id: r.id.clone(),
                                state: ReplicaState::Unready,
                                slots_total: rc.slots,
                                slots_busy: 0,
                                devices: r.devices.clone(),
                            })
                        })
                        .collect(),
                    estimator: ServiceTimeEstimator::default(),
                    running: HashMap::new(),
                    preempting: None,
                    draining: false,
                    queue_gauge_version: None,
                })
            })
            .collect();
        let s = &cfg.sessions;
        let quota = |l: config_schema::TenantLimits| TenantQuota {
            max_concurrent: l.max_concurrent,
            requests_per_second: l.requests_per_second,
            burst: l.burst.unwrap_or(1),
            tokens_per_minute: l.tokens_per_minute,
        };
        let sessions = SessionStore::new(s.ttl_ms, s.max_turns, s.max_sessions)
            .with_budgets(s.token_budget, s.time_budget_ms)
            .with_kv_residency(s.kv_sessions_per_replica);
        let quotas = QuotaBook::new(
            quota(cfg.tenant_defaults),
            cfg.tenants
                .iter()
                .map(|t| (t.id.clone(), quota(t.limits())))
                .collect(),
        );
        // Export the zero of counters operators alert on, before the first event.
        for pool in &pools {
            metrics.priority_inversions.with_label_values(&[&pool.id]);
            for mode in ["soft", "hard"] {
                metrics
                    .preemptions
                    .with_label_values(&[mode, pool.engine.as_str()]);
            }
        }
        for key in cfg.auth.api_keys.iter().filter(|k| k.role == Role::Data) {
            let l = cfg.tenant_limits(&key.tenant);
            for (set, quota) in [
                (l.max_concurrent.is_some(), "max_concurrent"),
                (l.requests_per_second.is_some(), "requests_per_second"),
                (l.tokens_per_minute.is_some(), "tokens_per_minute"),
            ] {
                if set {
                    metrics
                        .quota_rejections
                        .with_label_values(&[&key.tenant, quota]);
                }
            }
        }
        let retention_limits = retention::Limits::from_config(&cfg.server);
        metrics
            .task_log_budget_bytes
            .set(i64::try_from(retention_limits.bytes).unwrap_or(i64::MAX));
        for why in ["bytes", "tasks", "tenant_tasks"] {
            metrics.task_log_evictions.with_label_values(&[why]);
        }
        Ok(Arc::new(AppState {
            policy,
            keys: KeyRing::new(&cfg.auth),
            metrics,
            pool_scheds: sched_pools,
            sessions: Mutex::new(sessions),
            quotas: Mutex::new(quotas),
            shares: Mutex::new(ShareTracker::default()),
            deadlines: Mutex::new([(0, 0); 2]),
            tasks: Mutex::new(HashMap::new()),
            retention: Mutex::new(retention::RetentionBook::new(retention_limits)),
            epoch: Instant::now(),
            shutting_down: AtomicBool::new(false),
            controller,
            reloading: tokio::sync::Mutex::new(()),
            upkeep_bell: tokio::sync::Notify::new(),
            pools,
            cfg,
        }))
    }
}
