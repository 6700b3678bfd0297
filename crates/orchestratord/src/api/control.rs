//! The control-plane endpoints this release serves (SPEC §2): capabilities, pool health,
//! replica sets.

use std::sync::Arc;

use std::time::Duration;

use api_types::{
    Capabilities, DrainRequest, ErrorEnvelope, PoolHealth, RateLimits, ReloadRequest, ReplicaSet,
    ReplicaStatus, Workload,
};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::api::auth::{AnyCaller, ControlCaller};
use crate::error::{ApiError, ApiJson};
use crate::state::AppState;

#[utoipa::path(get, path = "/v1/capabilities", tag = "control",
    responses((status = 200, body = Capabilities), (status = 401, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub async fn capabilities(
    State(state): State<Arc<AppState>>,
    AnyCaller(caller): AnyCaller,
) -> Json<Capabilities> {
    let mut engines: Vec<String> = state
        .pools
        .iter()
        .map(|p| p.engine.as_str().to_string())
        .collect();
    engines.sort();
    engines.dedup();
    Json(Capabilities {
        api_version: api_types::API_VERSION.into(),
        engines,
        ctx_max: state.pools.iter().map(|p| p.ctx_max).max().unwrap_or(0),
        workloads: vec![Workload::Completion, Workload::Chat],
        max_body_bytes: state.cfg.server.max_body_bytes,
        features: {
            let mut f: Vec<String> = ["sse", "sessions", "cancel", "sampling", "submit-stream"]
                .map(String::from)
                .into();
            if state.cfg.server.openai_compat {
                f.push("openai".into());
            }
            f
        },
        rate_limits: {
            let l = state.cfg.tenant_limits(&caller.tenant);
            RateLimits {
                max_concurrent: l.max_concurrent,
                requests_per_second: l.requests_per_second,
                // The bucket holds one submission when no burst is configured.
                burst: l.requests_per_second.map(|_| l.burst.unwrap_or(1)),
                tokens_per_minute: l.tokens_per_minute,
            }
        },
        engine_limits: engine_limits(&state),
    })
}

/// Per engine: the largest context, pools, models, slots and queue places (ORCH-3095).
fn engine_limits(state: &AppState) -> Vec<api_types::EngineLimits> {
    let mut out: Vec<api_types::EngineLimits> = Vec::new();
    for (i, p) in state.pools.iter().enumerate() {
        let engine = p.engine.as_str();
        let at = match out.iter().position(|e| e.engine == engine) {
            Some(at) => at,
            None => {
                out.push(api_types::EngineLimits {
                    engine: engine.into(),
                    ctx_max: 0,
                    pools: vec![],
                    models: vec![],
                    slots_total: 0,
                    queue_capacity: 0,
                    cpu: false,
                });
                out.len() - 1
            }
        };
        let (load, _) = state.pool_figures(i);
        let e = &mut out[at];
        e.ctx_max = e.ctx_max.max(p.ctx_max);
        e.pools.push(p.id.clone());
        let model = p.model_ref();
        if !e.models.contains(&model) {
            e.models.push(model);
        }
        let slots: u32 = state
            .pool_sched(i)
            .replicas
            .iter()
            .map(|r| r.view.slots_total)
            .sum();
        e.slots_total += slots;
        e.queue_capacity += load.queue_capacity;
        e.cpu |= p.cpu_allowed;
    }
    out.sort_by(|a, b| a.engine.cmp(&b.engine));
    out
}

fn pool_index(state: &AppState, id: &str) -> Result<usize, ApiError> {
    state
        .pools
        .iter()
        .position(|p| p.id == id)
        .ok_or_else(|| ApiError::not_found("pool"))
}

#[utoipa::path(get, path = "/v1/pools/{id}/health", tag = "control",
    params(("id" = String, Path, description = "pool id")),
    responses((status = 200, body = PoolHealth), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub async fn pool_health(
    State(state): State<Arc<AppState>>,
    _caller: ControlCaller,
    Path(id): Path<String>,
) -> Result<Json<PoolHealth>, ApiError> {
    let i = pool_index(&state, &id)?;
    let replicas = state.replica_snapshots(i);
    let (queue_depth, last_error) = {
        let ps = state.pool_sched(i);
        (
            ps.queue.len() as u32,
            ps.replicas.iter().find_map(|r| r.last_error.clone()),
        )
    };
    let draining = state.is_draining(i);
    let (load, slo) = state.pool_figures(i);
    Ok(Json(PoolHealth {
        pool_id: id,
        live: true,
        ready: !draining && replicas.iter().any(|r| r.status == ReplicaStatus::Ready),
        draining,
        last_error,
        queue_depth,
        replicas,
        load,
        slo,
    }))
}

#[utoipa::path(get, path = "/v1/replicasets", tag = "control",
    responses((status = 200, body = Vec<ReplicaSet>), (status = 403, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub async fn replicasets(
    State(state): State<Arc<AppState>>,
    ControlCaller(_caller): ControlCaller,
) -> Json<Vec<ReplicaSet>> {
    let sets = state
        .pools
        .iter()
        .enumerate()
        .map(|(i, p)| {
            // Its own statement: the scheduler guard must be gone before replica_snapshots
            // locks again (a guard in the struct literal would live to its end: deadlock).
            let queue_depth = state.pool_sched(i).queue.len() as u32;
            let (load, slo) = state.pool_figures(i);
            ReplicaSet {
                pool_id: p.id.clone(),
                engine: p.engine.as_str().into(),
                model_ref: p.model_ref(),
                ctx_max: p.ctx_max,
                queue_depth,
                replicas: state.replica_snapshots(i),
                load,
                slo,
            }
        })
        .collect();
    Json(sets)
}

/// Drains a pool: no new work; running tasks get until `deadline_ms`, then are canceled;
/// queued tasks fail with POOL_UNAVAILABLE. 202 at once; the drain proceeds in the background.
#[utoipa::path(post, path = "/v1/pools/{id}/drain", tag = "control",
    params(("id" = String, Path, description = "pool id")),
    request_body = DrainRequest,
    responses((status = 202, body = PoolHealth), (status = 400, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub async fn drain(
    State(state): State<Arc<AppState>>,
    caller: ControlCaller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<DrainRequest>,
) -> Result<(StatusCode, Json<PoolHealth>), ApiError> {
    let i = pool_index(&state, &id)?;
    if req.deadline_ms > DrainRequest::MAX_DEADLINE_MS {
        return Err(ApiError::invalid("deadline_ms must be at most one day"));
    }
    let bg = state.clone();
    tokio::spawn(async move { bg.drain(i, Duration::from_millis(req.deadline_ms)).await });
    // Make the flag visible before answering, so a submission right after the 202 is refused.
    while !state.is_draining(i) {
        tokio::task::yield_now().await;
    }
    let Json(health) = pool_health(State(state), caller, Path(id)).await?;
    Ok((StatusCode::ACCEPTED, Json(health)))
}

/// Swaps the pool's policy plugin for its configured module, re-read from disk (replace the
/// file, then call this). Atomic: a module that does not load (wrong ABI, forbidden import,
/// unreadable) is refused with 400 and the old plugin keeps deciding.
#[utoipa::path(post, path = "/v1/pools/{id}/policy/reload", tag = "control",
    params(("id" = String, Path, description = "pool id")),
    responses((status = 200, body = api_types::PolicyInfo), (status = 400, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub async fn reload_policy(
    State(state): State<Arc<AppState>>,
    _caller: ControlCaller,
    Path(id): Path<String>,
) -> Result<Json<api_types::PolicyInfo>, ApiError> {
    let i = pool_index(&state, &id)?;
    // Compiling a module takes milliseconds to seconds: off the async workers.
    let st = state.clone();
    let info = tokio::task::spawn_blocking(move || st.reload_policy(i))
        .await
        .map_err(|e| {
            ApiError::new(
                api_types::ErrorCode::Internal,
                format!("policy reload: {e}"),
            )
        })??;
    Ok(Json(info))
}

/// Reloads a pool with a new model: started beside the old one, switched atomically once Ready,
/// rolled back (old model keeps serving) if it never becomes Ready.
#[utoipa::path(post, path = "/v1/pools/{id}/reload", tag = "control",
    params(("id" = String, Path, description = "pool id")),
    request_body = ReloadRequest,
    responses((status = 200, description = "Switched", body = PoolHealth),
        (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 422, description = "UNTRUSTED_ARTIFACT: checksum mismatch, rolled back", body = ErrorEnvelope),
        (status = 503, description = "POOL_UNREADY: new model never became ready, rolled back; or POOL_UNAVAILABLE: no pool manager here (plain orchestratord)", body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub async fn reload(
    State(state): State<Arc<AppState>>,
    caller: ControlCaller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ReloadRequest>,
) -> Result<Json<PoolHealth>, ApiError> {
    let i = pool_index(&state, &id)?;
    if req.new_model_ref.trim().is_empty() {
        return Err(ApiError::invalid("new_model_ref must not be empty"));
    }
    if let Some(d) = &req.new_model_sha256
        && (d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(ApiError::invalid(
            "new_model_sha256 must be 64 hex characters",
        ));
    }
    state
        .reload(i, &req.new_model_ref, req.new_model_sha256.as_deref())
        .await?;
    pool_health(State(state), caller, Path(id)).await
}
