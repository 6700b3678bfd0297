//! The replica registry API of the pool-managerd daemon: what runs where and whether it is
//! Ready, for orchestratord (and operators) to follow.
//! - `GET /v1/replicas` → `[ReplicaRecord]`
//! - `GET /v1/replicas/watch` → SSE: a `snapshot` event (the whole list) at once and after
//!   every change
//! - `GET /healthz`

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::{Json, Router};
use futures::Stream;

use crate::engines::Engines;

/// How often the watch feed compares the registry with what it last sent.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Clone)]
struct Registry {
    engines: Arc<Engines>,
    /// Becomes true on shutdown: open feeds end so graceful shutdown can complete and
    /// followers reconnect to the next instance.
    stopping: tokio::sync::watch::Receiver<bool>,
}

pub fn router(engines: Arc<Engines>, stopping: tokio::sync::watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/v1/replicas", get(list))
        .route("/v1/replicas/watch", get(watch))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(Registry { engines, stopping })
}

/// The registry's snapshots, one at once and one after every change (checked every
/// [`WATCH_INTERVAL`]): the in-process form of `/v1/replicas/watch` (`llorch serve`).
pub fn changes(engines: Arc<Engines>) -> impl Stream<Item = Vec<api_types::ReplicaRecord>> {
    futures::stream::unfold((engines, None), |(engines, last)| async move {
        loop {
            let now = engines.records().await;
            if last.as_ref() != Some(&now) {
                return Some((now.clone(), (engines, Some(now))));
            }
            tokio::time::sleep(WATCH_INTERVAL).await;
        }
    })
}

async fn list(State(r): State<Registry>) -> Json<Vec<api_types::ReplicaRecord>> {
    Json(r.engines.records().await)
}

async fn watch(State(r): State<Registry>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let init = (r, None::<Vec<api_types::ReplicaRecord>>);
    let stream = futures::stream::unfold(init, |(mut r, last)| async move {
        loop {
            if *r.stopping.borrow() {
                return None;
            }
            let now = r.engines.records().await;
            if last.as_ref() != Some(&now) {
                let data = serde_json::to_string(&now).unwrap_or_else(|_| "[]".into());
                let ev = Event::default().event("snapshot").data(data);
                return Some((Ok(ev), (r, Some(now))));
            }
            tokio::select! {
                _ = tokio::time::sleep(WATCH_INTERVAL) => {}
                _ = r.stopping.changed() => {}
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
