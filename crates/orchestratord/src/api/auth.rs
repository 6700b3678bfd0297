//! Request extractors: who is calling (ORCH-3035). The key is looked up in the state's
//! [`KeyRing`](crate::auth::KeyRing) by digest; a missing, unknown or wrong-role key is refused
//! with the error envelope, and the key itself is never logged.

use std::sync::Arc;

use api_types::{API_KEY_HEADER, ErrorCode};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use config_schema::Role;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

fn presented_key(parts: &Parts) -> Option<&str> {
    if let Some(v) = parts.headers.get(AUTHORIZATION) {
        let s = v.to_str().ok()?;
        let (scheme, rest) = s.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim());
    }
    parts.headers.get(API_KEY_HEADER)?.to_str().ok()
}

fn authenticate(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    let key = presented_key(parts).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthenticated,
            "missing API key (Authorization: Bearer …)",
        )
    })?;
    state
        .keys
        .lookup(key)
        .cloned()
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "unknown API key"))
}

fn require(p: Principal, role: Role) -> Result<Principal, ApiError> {
    if p.role == role {
        Ok(p)
    } else {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("this endpoint needs a {role:?} key", role = role).to_lowercase(),
        ))
    }
}

/// Extractor: a caller holding a data-plane key.
pub struct DataCaller(pub Principal);
/// Extractor: a caller holding a control-plane key.
pub struct ControlCaller(pub Principal);
/// Extractor: any valid key.
pub struct AnyCaller(pub Principal);

impl FromRequestParts<Arc<AppState>> for DataCaller {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        require(authenticate(parts, state)?, Role::Data).map(DataCaller)
    }
}

impl FromRequestParts<Arc<AppState>> for ControlCaller {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        require(authenticate(parts, state)?, Role::Control).map(ControlCaller)
    }
}

impl FromRequestParts<Arc<AppState>> for AnyCaller {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        authenticate(parts, state).map(AnyCaller)
    }
}
