//! Unauthenticated operational endpoints: liveness, readiness, Prometheus. (`/openapi.json`
//! is served by [`crate::openapi`], which lists these handlers.)

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use crate::state::AppState;

#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "Process is alive")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, description = "Every pool has a Ready replica"), (status = 503, description = "Not ready")))]
pub async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if state.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    observe_tenant_tasks(&state);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// `llorch_tenant_tasks{pool_id, tenant, state}`, counted from the pools' queues and running
/// sets at scrape time (no bookkeeping to drift). Every tenant of an API key gets a sample per
/// pool and state, zeros included, so the family is always there and a tenant's line drops to 0
/// rather than vanishing.
fn observe_tenant_tasks(state: &AppState) {
    use std::collections::BTreeMap;
    let g = &state.metrics.tenant_tasks;
    g.reset();
    for (i, pool) in state.pools.iter().enumerate() {
        let mut counts: BTreeMap<String, (i64, i64)> = state
            .cfg
            .auth
            .api_keys
            .iter()
            .map(|k| (k.tenant.clone(), (0, 0)))
            .collect();
        {
            let ps = state.pool_sched(i);
            for (tenant, n) in ps.queue.depth_by_tenant() {
                counts.entry(tenant.to_string()).or_default().0 += n as i64;
            }
            for r in ps.running.values() {
                counts.entry(r.task.tenant.clone()).or_default().1 += 1;
            }
        }
        for (tenant, (queued, running)) in counts {
            g.with_label_values(&[pool.id.as_str(), tenant.as_str(), "queued"])
                .set(queued);
            g.with_label_values(&[pool.id.as_str(), tenant.as_str(), "running"])
                .set(running);
        }
    }
}
