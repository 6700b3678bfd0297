//! [`PoolManager`]: the parts of the pool-managerd daemon — engines, model catalog, artifacts
//! resolver, metrics — opened from one config, and the HTTP service over them. `llorch serve`
//! opens the same thing and mounts [`PoolManager::catalog_router`] beside orchestratord's API.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use config_schema::Config;

use crate::artifacts::Artifacts;
use crate::catalog::{Catalog, state_dir};
use crate::catalog_api::{self, CatalogApi};
use crate::engines::{Engines, ReplicaAdapters};
use crate::http::KeyRing;
use crate::metrics::PmMetrics;

#[derive(Clone)]
pub struct PoolManager {
    pub engines: Arc<Engines>,
    pub catalog: Arc<Catalog>,
    pub artifacts: Arc<Artifacts>,
    pub metrics: Arc<PmMetrics>,
    keys: KeyRing,
}

impl PoolManager {
    /// Opens the catalog (in `pool_manager.state_dir`, `$STATE_DIRECTORY` or
    /// `~/.local/state/llama-orch`) and starts every supervised replica of `cfg`.
    pub fn start(cfg: &Config) -> anyhow::Result<(PoolManager, ReplicaAdapters)> {
        let dir = state_dir(cfg.pool_manager.state_dir.as_deref());
        let catalog = Arc::new(Catalog::open(&dir)?);
        let cache = cfg
            .pool_manager
            .cache_dir
            .as_ref()
            .map(std::path::PathBuf::from)
            .unwrap_or_else(crate::provision::cache_dir);
        let artifacts = Arc::new(Artifacts::new(&cache, Some(catalog.clone())));
        let (engines, adapters) = Engines::start_with(cfg, artifacts.clone())?;
        engines.spawn_lifecycle_watch();
        Ok((
            PoolManager {
                engines,
                catalog,
                artifacts,
                metrics: Arc::new(PmMetrics::new().with_external(cfg)),
                keys: KeyRing::new(&cfg.auth),
            },
            adapters,
        ))
    }

    /// The catalog API (control key), with its own error-envelope layer so that it can be
    /// merged into another router.
    pub fn catalog_router(&self) -> Router {
        catalog_api::router(CatalogApi {
            catalog: self.catalog.clone(),
            artifacts: self.artifacts.clone(),
            keys: self.keys.clone(),
            metrics: self.metrics.clone(),
        })
    }

    /// `GET path` → [`PoolManager::metrics_text`].
    pub fn metrics_router(&self, path: &str) -> Router {
        Router::new()
            .route(path, get(metrics))
            .with_state(self.clone())
    }

    /// The pool manager's Prometheus text (replicas, engines, catalog, GPUs).
    pub async fn metrics_text(&self) -> String {
        self.metrics
            .render(Some(&self.engines), Some(&self.catalog), crate::gpu::gpus())
            .await
    }

    /// The daemon's whole HTTP service: replica registry and feed, catalog, `/metrics`,
    /// `/healthz`; unknown routes get the error envelope.
    pub fn router(&self, stopping: tokio::sync::watch::Receiver<bool>) -> Router {
        crate::registry::router(self.engines.clone(), stopping)
            .merge(self.catalog_router())
            .merge(self.metrics_router("/metrics"))
            .fallback(crate::http::fallback)
            .layer(axum::middleware::from_fn(crate::http::correlation))
    }
}

async fn metrics(State(pm): State<PoolManager>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        pm.metrics_text().await,
    )
}
