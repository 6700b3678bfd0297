//! Following pool-managerd's replica registry (SPEC §4, ARCHITECTURE: orchestratord "learns
//! replicas and readiness from pool-managerd").
//!
//! Sources, one per process:
//! - `pool_manager.registry_url` (`unix:/…sock` or `http://host:port`): on every (re)connect
//!   the full list from `GET /v1/replicas`, then the `snapshot` events of the SSE feed
//!   `GET /v1/replicas/watch`; reconnects with exponential backoff.
//! - in process (`llorch serve`): the [`crate::PoolController`] hands out the same snapshots as
//!   a stream ([`RegistryFeed`]), without a socket in between.
//!
//! Each snapshot is applied per replica (matched by pool id + replica id of our config):
//! - registry Unready takes the replica out of placement at once (no waiting for the 1 s
//!   adapter probe); the probe cannot bring it back while the registry says Unready;
//! - registry Ready makes us probe at once, so a restarted engine takes work without waiting
//!   for the next tick (the adapter must still answer: the probe stays the liveness check);
//! - engine_version, restarts, circuit_open, last_error are taken over;
//! - the model's catalog lifecycle state: Deprecated → new submissions get MODEL_DEPRECATED
//!   and the pool drains (running work may finish); Retired → the same, running work is
//!   canceled and the replicas are Unready (unloaded); back to Active/Canary → a drain that
//!   the catalog caused is lifted.
//!
//! While the feed is down every registry gate is lifted and the probes alone decide, as
//! without a registry; the outage is logged once (warn), not per retry, and exported as
//! `llorch_registry_feed_up`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapter_api::client::Endpoint;
use api_types::{ErrorCode, ModelState, ReplicaRecord};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use futures::stream::BoxStream;
use orchestrator_core::ReplicaState;

use crate::error::ApiError;
use crate::state::{AppState, Pool};

/// Registry snapshots from an in-process pool manager.
pub type RegistryFeed = BoxStream<'static, Vec<ReplicaRecord>>;

/// What the registry last said about one of our replicas.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryReplica {
    pub ready: bool,
    pub phase: String,
    pub last_error: Option<String>,
    /// The engine build pool-managerd read from the engine itself; it wins over what the
    /// adapter reports.
    pub engine_version: Option<String>,
    /// Digest of the model file the engine loaded (part of the replica set identity).
    pub model_digest: Option<String>,
}

impl RegistryReplica {
    fn unready_reason(&self) -> String {
        match &self.last_error {
            Some(e) => format!("pool-managerd: {} ({e})", self.phase),
            None => format!("pool-managerd: {}", self.phase),
        }
    }
}

/// A pool's model lifecycle as the catalog reports it, and the drain it caused.
#[derive(Default)]
pub struct Lifecycle {
    pub state: Option<ModelState>,
    /// We drained the pool because of the catalog (not an operator): lift it when the model
    /// becomes servable again.
    drained_by_catalog: bool,
    drain: Option<tokio::task::JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The refusal for a new task on a pool whose model is Deprecated or Retired.
pub fn lifecycle_refusal(pool: &Pool) -> Option<ApiError> {
    let state = lock(&pool.lifecycle).state?;
    matches!(state, ModelState::Deprecated | ModelState::Retired).then(|| {
        ApiError::new(
            ErrorCode::ModelDeprecated,
            format!(
                "model `{}` is {} in the catalog: it takes no new sessions or tasks",
                pool.model_ref(),
                state.as_str()
            ),
        )
    })
}

/// Whether the pool's model is Retired (its replicas stay Unready). Lock order: a pool's
/// lifecycle before the scheduler, never the other way round, so call this before `sched()`.
pub fn is_retired(pool: &Pool) -> bool {
    lock(&pool.lifecycle).state == Some(ModelState::Retired)
}

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
    /// Applies one registry snapshot (see the module docs).
    pub fn apply_registry(self: &Arc<Self>, records: &[ReplicaRecord]) {
        let mut take_out = Vec::new();
        let mut probe_now = false;
        {
            let mut s = self.sched();
            for (pi, pool) in self.pools.iter().enumerate() {
                let ps = &mut s.pools[pi];
                for (ri, r) in pool.replicas.iter().enumerate() {
                    let Some(rec) = records
                        .iter()
                        .find(|x| x.pool_id == pool.id && x.replica_id == r.id)
                    else {
                        // Not supervised by pool-managerd: the probe alone decides.
                        ps.registry[ri] = None;
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
                        ps.engine_versions[ri] = v.clone();
                    }
                    let labels = [pool.id.as_str(), r.id.as_str(), pool.engine.as_str()];
                    self.metrics
                        .replica_restarts
                        .with_label_values(&labels)
                        .inc_by(u64::from(rec.restarts.saturating_sub(ps.restarts[ri])));
                    ps.restarts[ri] = rec.restarts;
                    ps.circuit_open[ri] = rec.circuit_open;
                    self.metrics
                        .replica_circuit_open
                        .with_label_values(&labels)
                        .set(i64::from(rec.circuit_open));
                    let state = ps.replicas[ri].state;
                    if !rec.ready {
                        ps.last_errors[ri] = Some(view.unready_reason());
                        if state == ReplicaState::Ready {
                            take_out.push((pi, ri, view.unready_reason()));
                        }
                    } else if state != ReplicaState::Ready {
                        probe_now = true;
                    }
                    ps.registry[ri] = Some(view);
                }
            }
        }
        for (pi, ri, why) in take_out {
            self.mark_replica_unready(pi, ri, &why);
        }
        for (pi, pool) in self.pools.iter().enumerate() {
            // All replicas of a pool serve one model; a snapshot without the pool says nothing.
            if let Some(rec) = records.iter().find(|x| x.pool_id == pool.id) {
                self.set_lifecycle(pi, rec.model_state);
            }
        }
        if probe_now {
            let state = self.clone();
            tokio::spawn(async move { state.probe_replicas().await });
        }
    }

    /// The feed is gone: every registry gate is lifted, the probes alone decide.
    fn forget_registry(&self) {
        let mut s = self.sched();
        for ps in &mut s.pools {
            ps.registry.iter_mut().for_each(|r| *r = None);
        }
    }

    /// Acts on a change of a pool's model lifecycle state.
    pub fn set_lifecycle(self: &Arc<Self>, pool_idx: usize, to: Option<ModelState>) {
        let pool = &self.pools[pool_idx];
        let mut lc = lock(&pool.lifecycle);
        if lc.state == to {
            return;
        }
        lc.state = to;
        tracing::info!(pool_id = %pool.id, model_ref = %pool.model_ref(), state = to.map_or("none", |s| s.as_str()), "model lifecycle changed");
        let blocked = |s: Option<ModelState>| {
            matches!(s, Some(ModelState::Deprecated) | Some(ModelState::Retired))
        };
        if blocked(to) {
            if let Some(h) = lc.drain.take() {
                h.abort();
            }
            let already = self.sched().pools[pool_idx].draining;
            if !already {
                lc.drained_by_catalog = true;
            }
            // Deprecated: running work may finish (it is bounded by the wall timeout);
            // Retired: unload now.
            let grace = if to == Some(ModelState::Retired) {
                Duration::ZERO
            } else {
                Duration::from_millis(self.cfg.timeouts.wall_ms)
            };
            let state = self.clone();
            lc.drain = Some(tokio::spawn(async move {
                state
                    .drain_because(pool_idx, grace, crate::state::DrainCause::ModelLifecycle)
                    .await;
            }));
            if to == Some(ModelState::Retired) {
                drop(lc);
                let n = pool.replicas.len();
                for ri in 0..n {
                    self.mark_replica_unready(
                        pool_idx,
                        ri,
                        "model retired in the catalog (unloaded)",
                    );
                }
            }
        } else if lc.drained_by_catalog {
            if let Some(h) = lc.drain.take() {
                h.abort();
            }
            lc.drained_by_catalog = false;
            drop(lc);
            self.sched().pools[pool_idx].draining = false;
            tracing::info!(pool_id = %pool.id, "catalog drain lifted: the model serves again");
            self.dispatch(pool_idx);
        }
    }
}

/// Starts following the registry, if there is one: the in-process feed when the controller
/// has it, else `pool_manager.registry_url`. Errors only for an unusable URL (validated
/// config makes that unreachable).
pub fn start(
    state: &Arc<AppState>,
    in_process: Option<RegistryFeed>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if let Some(feed) = in_process {
        let state = state.clone();
        return Ok(Some(tokio::spawn(follow_in_process(state, feed))));
    }
    let Some(url) = state.cfg.pool_manager.registry_url.clone() else {
        return Ok(None);
    };
    let endpoint = Endpoint::parse(&url).map_err(anyhow::Error::msg)?;
    let builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(2));
    let (builder, base) = match endpoint {
        Endpoint::Unix(p) => (builder.unix_socket(p), "http://pool-managerd".to_string()),
        Endpoint::Http(b) => (builder, b),
    };
    let client = builder.build()?;
    let state = state.clone();
    Ok(Some(tokio::spawn(follow_http(state, client, base, url))))
}

async fn follow_in_process(state: Arc<AppState>, mut feed: RegistryFeed) {
    state.metrics.registry_feed_up.set(1);
    while let Some(records) = feed.next().await {
        state.apply_registry(&records);
    }
    state.metrics.registry_feed_up.set(0);
    state.forget_registry();
}

/// Longest silence on the feed (pool-managerd sends keep-alives every 15 s) before we
/// reconnect.
const FEED_SILENCE: Duration = Duration::from_secs(45);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A connection that lasted this long resets the backoff (a flapping feed does not).
const STABLE: Duration = Duration::from_secs(10);

async fn follow_http(state: Arc<AppState>, client: reqwest::Client, base: String, url: String) {
    let mut backoff = BACKOFF_MIN;
    let mut down_logged = false;
    loop {
        let connected_at = Instant::now();
        let (connected, result) = follow_feed(&state, &client, &base, &url).await;
        state.metrics.registry_feed_up.set(0);
        state.forget_registry();
        if connected {
            down_logged = false;
            if connected_at.elapsed() >= STABLE {
                backoff = BACKOFF_MIN;
            }
        }
        if !down_logged {
            // Once per outage: a down pool-managerd must not flood the log.
            tracing::warn!(registry = %url, error = %result, "registry feed unavailable: following adapter probes until it is back");
            down_logged = true;
        } else {
            tracing::debug!(registry = %url, error = %result, "registry feed still unavailable");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection: snapshot, then the feed until it ends or fails. Returns whether it got
/// connected, and why it stopped.
async fn follow_feed(
    state: &Arc<AppState>,
    client: &reqwest::Client,
    base: &str,
    url: &str,
) -> (bool, String) {
    let list = match client
        .get(format!("{base}/v1/replicas"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .and_then(|r| r.error_for_status())
    {
        Ok(r) => r.json::<Vec<ReplicaRecord>>().await,
        Err(e) => return (false, format!("GET /v1/replicas: {e}")),
    };
    let records = match list {
        Ok(l) => l,
        Err(e) => return (false, format!("GET /v1/replicas: bad body: {e}")),
    };
    let resp = match client
        .get(format!("{base}/v1/replicas/watch"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
    {
        Ok(r) => r,
        Err(e) => return (false, format!("GET /v1/replicas/watch: {e}")),
    };
    state.metrics.registry_feed_up.set(1);
    tracing::info!(registry = %url, "following pool-managerd's replica registry");
    state.apply_registry(&records);
    let last_bytes = Arc::new(Mutex::new(Instant::now()));
    let stamp = last_bytes.clone();
    let mut feed = resp
        .bytes_stream()
        .inspect(move |_| *lock(&stamp) = Instant::now())
        .eventsource();
    loop {
        let silence = lock(&last_bytes).elapsed();
        let Some(left) = FEED_SILENCE.checked_sub(silence) else {
            return (true, format!("feed silent for {} s", silence.as_secs()));
        };
        let ev = match tokio::time::timeout(left, feed.next()).await {
            Err(_) => continue,
            Ok(None) => return (true, "feed ended (pool-managerd stopping?)".into()),
            Ok(Some(Err(e))) => return (true, format!("feed broke: {e}")),
            Ok(Some(Ok(ev))) => ev,
        };
        if ev.event != "snapshot" {
            continue;
        }
        match serde_json::from_str::<Vec<ReplicaRecord>>(&ev.data) {
            Ok(records) => state.apply_registry(&records),
            Err(e) => return (true, format!("bad snapshot event: {e}")),
        }
    }
}
