//! `GET/DELETE /v1/sessions/{id}` (SPEC §1). Sessions are per tenant.

use std::sync::Arc;

use api_types::{ErrorEnvelope, SessionInfo};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::api::auth::DataCaller;
use crate::error::ApiError;
use crate::state::AppState;

#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "data",
    params(("id" = String, Path, description = "session id")),
    responses(
        (status = 200, body = SessionInfo),
        (status = 403, description = "FORBIDDEN: needs a data key", body = ErrorEnvelope),
        (status = 404, description = "Unknown or expired session", body = ErrorEnvelope),
    ),
    security(("api_key" = [])))]
pub async fn get_session(
    State(state): State<Arc<AppState>>,
    DataCaller(caller): DataCaller,
    Path(id): Path<String>,
) -> Result<Json<SessionInfo>, ApiError> {
    let now = state.now_ms();
    let view = state
        .sessions()
        .get(&caller.tenant, &id, now)
        .ok_or_else(|| ApiError::not_found("session"))?;
    Ok(Json(SessionInfo {
        session_id: id,
        ttl_ms_remaining: view.ttl_ms_remaining,
        turns: view.turns,
        kv_bytes: view.kv_bytes,
        kv_warmth: view.kv_warmth,
        tokens_budget_remaining: view.tokens_remaining,
        time_budget_remaining_ms: view.time_remaining_ms,
    }))
}

#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "data",
    params(("id" = String, Path, description = "session id")),
    responses(
        (status = 204, description = "Evicted"),
        (status = 403, description = "FORBIDDEN: needs a data key", body = ErrorEnvelope),
        (status = 404, description = "Unknown or expired session", body = ErrorEnvelope),
    ),
    security(("api_key" = [])))]
pub async fn delete_session(
    State(state): State<Arc<AppState>>,
    DataCaller(caller): DataCaller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let now = state.now_ms();
    let (existed, live) = {
        let mut sessions = state.sessions();
        let existed = sessions.delete(&caller.tenant, &id, now);
        (existed, sessions.len())
    };
    state.metrics.sessions_active.set(live as i64);
    if existed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("session"))
    }
}
