//! The replica registry API of the pool-managerd daemon: what runs where and whether it is
//! Ready, for orchestratord (and operators) to follow.
//! - `GET /v1/replicas` → `[ReplicaRecord]`
//! - `GET /v1/replicas/watch` → SSE: a `snapshot` event (the whole list) at once and after
//!   every change
//! - `GET /healthz`

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::{Json, Router};
use futures::Stream;

use crate::engines::Engines;

use crate::engines::RECHECK_INTERVAL;

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

/// The registry's snapshots, one at once and one after every change (woken by the engines'
/// bell, rechecked every [`RECHECK_INTERVAL`] as a safety net): the in-process form of
/// `/v1/replicas/watch` (`llorch serve`).
pub fn changes(engines: Arc<Engines>) -> impl Stream<Item = Vec<api_types::ReplicaRecord>> {
    let bell = engines.subscribe();
    futures::stream::unfold(
        (engines, bell, None),
        |(engines, mut bell, last)| async move {
            loop {
                bell.borrow_and_update();
                let now = engines.records().await;
                if last.as_ref() != Some(&now) {
                    return Some((now.clone(), (engines, bell, Some(now))));
                }
                tokio::select! {
                    r = bell.changed() => if r.is_err() { return None },
                    _ = tokio::time::sleep(RECHECK_INTERVAL) => {}
                }
            }
        },
    )
}

async fn list(State(r): State<Registry>) -> Json<Vec<api_types::ReplicaRecord>> {
    Json(r.engines.records().await)
}

async fn watch(State(r): State<Registry>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let bell = r.engines.subscribe();
    let init = (r, bell, None::<Vec<api_types::ReplicaRecord>>);
    let stream = futures::stream::unfold(init, |(mut r, mut bell, last)| async move {
        loop {
            if *r.stopping.borrow() {
                return None;
            }
            bell.borrow_and_update();
            let now = r.engines.records().await;
            if last.as_ref() != Some(&now) {
                let data = serde_json::to_string(&now).unwrap_or_else(|_| "[]".into());
                let ev = Event::default().event("snapshot").data(data);
                return Some((Ok(ev), (r, bell, Some(now))));
            }
            tokio::select! {
                _ = bell.changed() => {}
                _ = tokio::time::sleep(RECHECK_INTERVAL) => {}
                _ = r.stopping.changed() => {}
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
