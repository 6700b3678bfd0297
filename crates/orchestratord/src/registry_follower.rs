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
//! This module is the feed's transport only; what a snapshot does to the replicas and pools is
//! [`AppState::apply_registry`] (health) and [`AppState::set_lifecycle`] (lifecycle).
//!
//! While the feed is down every registry gate is lifted and the probes alone decide, as
//! without a registry; the outage is logged once (warn), not per retry, and exported as
//! `llorch_registry_feed_up`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapter_api::client::Endpoint;
use api_types::ReplicaRecord;
use eventsource_stream::Eventsource;
use futures::StreamExt;

pub use crate::state::RegistryFeed;
use crate::state::{AppState, lock};

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
