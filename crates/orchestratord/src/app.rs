//! Building the router from a config and serving it until shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use adapter_api::WorkerAdapter;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use config_schema::Config;

use crate::api;
use crate::state::{AppState, Pool, PoolController, Replica};

pub use daemon_kit::Listener;

/// Adapters supplied by the caller, by (pool id, replica id): how `llorch serve` hands in the
/// engines it supervises in-process.
pub type AdapterOverrides = HashMap<(String, String), Arc<dyn WorkerAdapter>>;

/// Builds the state (with one adapter per replica) and the router.
pub fn build(cfg: Config) -> anyhow::Result<(Router, Arc<AppState>)> {
    build_with(cfg, AdapterOverrides::new())
}

/// [`build`], taking some replicas' adapters from `overrides`.
pub fn build_with(
    cfg: Config,
    overrides: AdapterOverrides,
) -> anyhow::Result<(Router, Arc<AppState>)> {
    build_managed(cfg, overrides, None)
}

/// [`build_with`] plus the controller that reloads pools' engines.
pub fn build_managed(
    cfg: Config,
    mut overrides: AdapterOverrides,
    controller: Option<Arc<dyn PoolController>>,
) -> anyhow::Result<(Router, Arc<AppState>)> {
    let mut pools = Vec::new();
    for pc in &cfg.pools {
        let mut replicas = Vec::new();
        for rc in &pc.replicas {
            let adapter = match overrides.remove(&(pc.id.clone(), rc.id.clone())) {
                Some(a) => a,
                None => crate::engines::adapter_for(pc, rc)?,
            };
            replicas.push(Replica::new(rc.id.clone(), rc.devices.clone(), adapter));
        }
        pools.push(Pool::new(
            pc.id.clone(),
            pc.engine,
            pc.model_ref.clone(),
            pc.ctx_max,
            pc.allow_cpu_inference,
            cfg.queue_for(pc).full_policy,
            replicas,
        ));
    }
    let max_body = usize::try_from(cfg.server.max_body_bytes).unwrap_or(usize::MAX);
    let openai_compat = cfg.server.openai_compat;
    let state = AppState::new(cfg, pools, controller)?;
    let mut router = Router::new();
    if openai_compat {
        router = router
            .route("/v1/chat/completions", post(api::openai::chat_completions))
            .route("/v1/completions", post(api::openai::completions))
            .route("/v1/models", get(api::openai::models));
    }
    let router = router
        .route("/v1/tasks", post(api::tasks::submit))
        .route("/v1/tasks/{id}/stream", get(api::tasks::stream))
        .route("/v1/tasks/{id}/cancel", post(api::tasks::cancel))
        .route("/v1/sessions/{id}", get(api::sessions::get_session))
        .route("/v1/sessions/{id}", delete(api::sessions::delete_session))
        .route("/v1/capabilities", get(api::control::capabilities))
        .route("/v1/pools/{id}/health", get(api::control::pool_health))
        .route("/v1/pools/{id}/drain", post(api::control::drain))
        .route(
            "/v1/pools/{id}/policy/reload",
            post(api::control::reload_policy),
        )
        .route("/v1/pools/{id}/reload", post(api::control::reload))
        .route("/v1/replicasets", get(api::control::replicasets))
        .route("/healthz", get(api::ops::healthz))
        .route("/readyz", get(api::ops::readyz))
        .route("/metrics", get(api::ops::metrics))
        .route("/openapi.json", get(crate::openapi::openapi))
        .fallback(crate::error::fallback)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(crate::error::correlation))
        .with_state(state.clone());
    Ok((router, state))
}

/// Serves until `shutdown` resolves, then stops accepting, lets running streams finish for up
/// to `server.shutdown_grace_ms`, and returns. `on_ready` runs once the first replica probe is
/// done (READY=1 under systemd).
pub async fn serve(
    listener: Listener,
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce() + Send,
    on_stopping: impl FnOnce() + Send + 'static,
) -> anyhow::Result<()> {
    serve_with(
        listener,
        cfg,
        AdapterOverrides::new(),
        shutdown,
        on_ready,
        on_stopping,
    )
    .await
}

/// [`serve`] with caller-supplied adapters (see [`AdapterOverrides`]).
pub async fn serve_with(
    listener: Listener,
    cfg: Config,
    overrides: AdapterOverrides,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce() + Send,
    on_stopping: impl FnOnce() + Send + 'static,
) -> anyhow::Result<()> {
    serve_managed(
        listener,
        cfg,
        overrides,
        None,
        shutdown,
        on_ready,
        on_stopping,
    )
    .await
}

/// [`serve_with`] plus the controller that reloads pools' engines (`llorch serve`).
pub async fn serve_managed(
    listener: Listener,
    cfg: Config,
    overrides: AdapterOverrides,
    controller: Option<Arc<dyn PoolController>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce() + Send,
    on_stopping: impl FnOnce() + Send + 'static,
) -> anyhow::Result<()> {
    let feed = controller.as_ref().and_then(|c| c.registry_feed());
    let (router, state) = build_managed(cfg, overrides, controller)?;
    let follower = crate::registry_follower::start(&state, feed)?;
    state.probe_replicas().await;
    let prober = tokio::spawn(state.clone().run_upkeep());
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let drain_state = state.clone();
    let graceful = async move {
        shutdown.await;
        on_stopping();
        drain_state.begin_shutdown();
        tracing::info!(
            live_tasks = drain_state.live_tasks(),
            "shutting down: draining streams"
        );
        let _ = stop_tx.send(true);
    };
    tracing::info!(listen = %listener.describe(), "serving");
    on_ready();
    let grace = Duration::from_millis(state.cfg.server.shutdown_grace_ms);
    let deadline = async move {
        let _ = stop_rx.wait_for(|s| *s).await;
        tokio::time::sleep(grace).await;
    };
    let result = tokio::select! {
        r = listener.serve(router, graceful) => r.map_err(anyhow::Error::from),
        _ = deadline => {
            tracing::warn!("shutdown grace expired with streams still open");
            Ok(())
        }
    };
    prober.abort();
    if let Some(f) = follower {
        f.abort();
    }
    result
}

/// An orchestrator serving on an ephemeral 127.0.0.1 port in a background task, for tests,
/// benchmarks and embedding. Shuts down gracefully on [`LocalServer::stop`] or when dropped.
pub struct LocalServer {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl LocalServer {
    /// Starts serving and returns once the server is ready (first replica probe done).
    pub async fn start(
        cfg: Config,
        overrides: AdapterOverrides,
        controller: Option<Arc<dyn PoolController>>,
    ) -> anyhow::Result<LocalServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve_managed(
            Listener::Tcp(listener),
            cfg,
            overrides,
            controller,
            async move {
                // A dropped LocalServer (sender gone) stops the server too.
                let _ = stopped.await;
            },
            move || {
                let _ = ready_tx.send(());
            },
            || {},
        ));
        if ready_rx.await.is_err() {
            let err = task
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r)
                .err();
            anyhow::bail!("orchestratord stopped before it was ready: {err:?}");
        }
        Ok(LocalServer { base, stop, task })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Graceful shutdown; fails if it takes longer than 5 s.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .map_err(|_| anyhow::anyhow!("orchestratord did not stop within 5 s"))??
    }
}
