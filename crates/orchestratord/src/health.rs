//! Replica health: whether a replica may take work. Probes every replica through its adapter
//! (readiness, engine version, restarts, breaker, interruptible decode — the startup self-test
//! result shows up as the adapter's health), applies pool-managerd's registry snapshots on top
//! (see [`crate::registry_follower`] for the feed itself), marks a replica unready when it
//! fails under a task, and holds out a replica whose engine build or model differs from its
//! set's (ORCH-3007). A replica that becomes Ready gets its pool dispatched.
//!
//! May touch: a pool's catalog lifecycle (read, before anything else), one pool's
//! [`PoolSched`] at a time (its [`ReplicaSched`]s), and, nested under it, the session store
//! (a replica that stops serving loses its sessions' KV). Never the queue or the task table.

use std::sync::Arc;
use std::time::Duration;

use adapter_api::WorkerState;
use api_types::ReplicaRecord;
use orchestrator_core::{ReplicaIdentity, ReplicaState};

use crate::state::{AppState, PoolSched, RegistryReplica, ReplicaSched};

/// What a probe result becomes under the registry's view: Unready while pool-managerd says
/// the replica is not Ready or the pool's model is Retired.
pub fn gate(
    retired: bool,
    registry: Option<&RegistryReplica>,
    state: ReplicaState,
    error: Option<String>,
) -> (ReplicaState, Option<String>) {
    if retired {
        return (
            ReplicaState::Unready,
            Some("model retired in the catalog (unloaded)".into()),
        );
    }
    match registry {
        Some(r) if !r.ready => (ReplicaState::Unready, Some(r.unready_reason())),
        _ => (state, error),
    }
}

impl AppState {
    /// A replica failed under a task: stop placing work on it until a probe finds it Ready.
    pub fn mark_replica_unready(&self, pool_idx: usize, replica: usize, reason: &str) {
        let mut guard = self.pool_sched(pool_idx);
        let rs = &mut guard.replicas[replica];
        if rs.view.state == ReplicaState::Ready {
            rs.view.state = ReplicaState::Unready;
            rs.last_error = Some(reason.to_string());
            let pool = &self.pools[pool_idx];
            // Its KV caches are gone (or unreachable): sessions fail over cold.
            self.sessions()
                .forget_replica(&format!("{}/{}", pool.id, pool.replicas[replica].id));
            let v = &rs.engine_version;
            let cpu = if pool.replicas[replica].devices.is_empty() {
                "true"
            } else {
                "false"
            };
            self.metrics
                .replica_ready
                .with_label_values(&[
                    pool.id.as_str(),
                    pool.replicas[replica].id.as_str(),
                    pool.engine.as_str(),
                    v.as_str(),
                    cpu,
                ])
                .set(0);
            tracing::warn!(pool_id = %pool.id, replica_id = %pool.replicas[replica].id, reason, "replica marked unready");
        }
    }

    /// Probes every replica once and records readiness and engine versions.
    pub async fn probe_replicas(self: &Arc<Self>) {
        for (pi, pool) in self.pools.iter().enumerate() {
            for (ri, r) in pool.replicas.iter().enumerate() {
                let adapter = r.adapter();
                let health = tokio::time::timeout(Duration::from_secs(5), adapter.health()).await;
                let props =
                    tokio::time::timeout(Duration::from_secs(5), adapter.properties()).await;
                let supervision = match &health {
                    Ok(Ok(h)) => Some((h.restarts, h.circuit_open)),
                    _ => None,
                };
                let interruptible = matches!(&props, Ok(Ok(p)) if p.interruptible_decode);
                let (state, version, error) = match (health, props) {
                    (Ok(Ok(h)), Ok(Ok(p))) if h.state == WorkerState::Ready => {
                        (ReplicaState::Ready, Some(p.engine_version), None)
                    }
                    (Ok(Ok(h)), _) => (
                        ReplicaState::Unready,
                        None,
                        Some(h.last_error.unwrap_or_else(|| format!("{:?}", h.state))),
                    ),
                    (Ok(Err(e)), _) => (ReplicaState::Unready, None, Some(e.to_string())),
                    (Err(_), _) => (
                        ReplicaState::Unready,
                        None,
                        Some("health probe timed out".into()),
                    ),
                };
                let retired = pool.is_retired();
                let became_ready = {
                    let mut guard = self.pool_sched(pi);
                    let ps = &mut *guard;
                    // pool-managerd's registry (when followed) can veto what the probe saw.
                    let (state, error) = gate(
                        retired,
                        ps.replicas[ri].registry.as_ref(),
                        state,
                        error.clone(),
                    );
                    let from_registry = ps.replicas[ri]
                        .registry
                        .as_ref()
                        .is_some_and(|r| r.engine_version.is_some());
                    let version = version.filter(|_| !from_registry);
                    let (state, error) = if state == ReplicaState::Ready {
                        hold_out_mixed_versions(ps, ri, version.as_deref(), state, error)
                    } else {
                        (state, error)
                    };
                    let rs = &mut ps.replicas[ri];
                    let was = rs.view.state;
                    rs.view.state = state;
                    rs.interruptible = interruptible;
                    if was == ReplicaState::Ready && state != ReplicaState::Ready {
                        self.sessions()
                            .forget_replica(&format!("{}/{}", pool.id, r.id));
                    }
                    if let Some(v) = version {
                        rs.engine_version = v;
                    }
                    if error.is_some() || state == ReplicaState::Ready {
                        rs.last_error = error.clone();
                    }
                    // Restarts and breaker come from the registry while it is followed (an
                    // adapter daemon knows nothing of its engine's restarts).
                    if let Some((restarts, open)) = supervision.filter(|_| rs.registry.is_none()) {
                        let engine_labels = [pool.id.as_str(), r.id.as_str(), pool.engine.as_str()];
                        // Always resolve the series so it is exported at 0 before the first restart.
                        let counter = self
                            .metrics
                            .replica_restarts
                            .with_label_values(&engine_labels);
                        counter.inc_by(u64::from(restarts.saturating_sub(rs.restarts)));
                        rs.restarts = restarts;
                        rs.circuit_open = open;
                        self.metrics
                            .replica_circuit_open
                            .with_label_values(&engine_labels)
                            .set(i64::from(open));
                    }
                    let v = &rs.engine_version;
                    let labels = [
                        pool.id.as_str(),
                        r.id.as_str(),
                        pool.engine.as_str(),
                        v.as_str(),
                    ];
                    let cpu = if r.devices.is_empty() {
                        "true"
                    } else {
                        "false"
                    };
                    self.metrics
                        .replica_ready
                        .with_label_values(&[labels[0], labels[1], labels[2], labels[3], cpu])
                        .set(i64::from(state == ReplicaState::Ready));
                    self.metrics
                        .replica_slots_total
                        .with_label_values(&labels)
                        .set(i64::from(rs.view.slots_total));
                    self.metrics
                        .replica_slots_busy
                        .with_label_values(&labels)
                        .set(i64::from(rs.view.slots_busy));
                    was != ReplicaState::Ready && state == ReplicaState::Ready
                };
                if let Some(e) = &error {
                    tracing::warn!(pool_id = %pool.id, replica_id = %r.id, error = %e, "replica unready");
                }
                if became_ready {
                    tracing::info!(pool_id = %pool.id, replica_id = %r.id, cpu = r.devices.is_empty(), "replica ready");
                    self.dispatch(pi);
                }
            }
        }
    }

    /// Applies one registry snapshot (see the module docs).
    pub fn apply_registry(self: &Arc<Self>, records: &[ReplicaRecord]) {
        let mut take_out = Vec::new();
        let mut probe_now = false;
        for (pi, pool) in self.pools.iter().enumerate() {
            let mut ps = self.pool_sched(pi);
            {
                for (ri, r) in pool.replicas.iter().enumerate() {
                    let rs = &mut ps.replicas[ri];
                    let Some(rec) = records
                        .iter()
                        .find(|x| x.pool_id == pool.id && x.replica_id == r.id)
                    else {
                        // Not supervised by pool-managerd: the probe alone decides.
                        rs.registry = None;
                        continue;
                    };
                    let view = RegistryReplica {
                        ready: rec.ready,
                        phase: rec.phase.clone(),
                        last_error: rec.last_error.clone(),
                        engine_version: rec.engine_version.clone(),
                        model_digest: rec.model_digest.clone(),
                    };
                    if let Some(v) = &rec.engine_version {
                        rs.engine_version = v.clone();
                    }
                    let labels = [pool.id.as_str(), r.id.as_str(), pool.engine.as_str()];
                    self.metrics
                        .replica_restarts
                        .with_label_values(&labels)
                        .inc_by(u64::from(rec.restarts.saturating_sub(rs.restarts)));
                    rs.restarts = rec.restarts;
                    rs.circuit_open = rec.circuit_open;
                    self.metrics
                        .replica_circuit_open
                        .with_label_values(&labels)
                        .set(i64::from(rec.circuit_open));
                    let state = rs.view.state;
                    if !rec.ready {
                        rs.last_error = Some(view.unready_reason());
                        if state == ReplicaState::Ready {
                            take_out.push((pi, ri, view.unready_reason()));
                        }
                    } else if state != ReplicaState::Ready {
                        probe_now = true;
                    }
                    rs.registry = Some(view);
                }
            }
        }
        for (pi, ri, why) in take_out {
            self.mark_replica_unready(pi, ri, &why);
        }
        for (pi, pool) in self.pools.iter().enumerate() {
            // All replicas of a pool serve one model. A pool's own records decide; a pool
            // pool-managerd does not supervise (a mock pool, a bare endpoint) follows the
            // records of any pool serving the same model, so a Deprecated model takes no new
            // tasks on every pool that serves it. A snapshot naming neither says nothing.
            let model = pool.model_ref();
            let rec = records
                .iter()
                .find(|x| x.pool_id == pool.id)
                .or_else(|| records.iter().find(|x| serves_model(x, &model)));
            if let Some(rec) = rec {
                self.set_lifecycle(pi, rec.model_state);
            }
        }
        if probe_now {
            let state = self.clone();
            tokio::spawn(async move { state.probe_replicas().await });
        }
    }

    /// The feed is gone: every registry gate is lifted, the probes alone decide.
    pub(crate) fn forget_registry(&self) {
        for pi in 0..self.pools.len() {
            let mut ps = self.pool_sched(pi);
            ps.replicas.iter_mut().for_each(|r| r.registry = None);
        }
    }
}

/// Whether a registry record serves `model_ref`: the same model_ref, or a `sha256:` catalog
/// ref naming its digest.
fn serves_model(rec: &ReplicaRecord, model_ref: &str) -> bool {
    rec.model_ref.as_deref() == Some(model_ref)
        || model_ref
            .strip_prefix("sha256:")
            .zip(rec.model_digest.as_deref())
            .is_some_and(|(want, have)| want.eq_ignore_ascii_case(have))
}

/// The identity a replica reports: its engine build (from the registry when pool-managerd
/// reports one, else `probed`, else what was last recorded) and, where known, its model digest.
fn replica_identity(rs: &ReplicaSched, probed: Option<&str>) -> ReplicaIdentity {
    let registry = rs.registry.as_ref();
    ReplicaIdentity {
        engine_version: registry
            .and_then(|r| r.engine_version.as_deref())
            .or(probed)
            .unwrap_or(&rs.engine_version)
            .to_string(),
        model_digest: registry.and_then(|r| r.model_digest.clone()),
    }
}

/// ORCH-3007: a replica reporting Ready joins its set only if every replica already serving
/// reports the same engine build and model; otherwise it stays out of placement (Unready) and
/// says which identity the set serves.
fn hold_out_mixed_versions(
    ps: &PoolSched,
    ri: usize,
    probed: Option<&str>,
    state: ReplicaState,
    error: Option<String>,
) -> (ReplicaState, Option<String>) {
    let me = replica_identity(&ps.replicas[ri], probed);
    let serving: Vec<ReplicaIdentity> = (0..ps.replicas.len())
        .filter(|&j| j != ri && ps.replicas[j].view.state == ReplicaState::Ready)
        .map(|j| replica_identity(&ps.replicas[j], None))
        .collect();
    match orchestrator_core::set_membership_conflict(&serving, &me) {
        None => (state, error),
        Some(set) => (
            ReplicaState::Unready,
            Some(format!(
                "held out of its replica set: the set serves {set}, this replica reports {me}; \
                 one set never mixes versions (ORCH-3007)"
            )),
        ),
    }
}
