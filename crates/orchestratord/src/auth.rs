//! API keys → (tenant, role) (ORCH-3035). Keys are looked up by SHA-256 digest so plain keys
//! never need to be kept, compared or logged.

use std::collections::HashMap;
use std::sync::Arc;

use api_types::{API_KEY_HEADER, ErrorCode};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use config_schema::{AuthConfig, Role, sha256_hex};

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    pub role: Role,
}

#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    by_digest: HashMap<String, Principal>,
}

impl KeyRing {
    pub fn new(cfg: &AuthConfig) -> Self {
        let by_digest = cfg
            .api_keys
            .iter()
            .filter_map(|k| {
                k.digest_hex().map(|d| {
                    (
                        d,
                        Principal {
                            tenant: k.tenant.clone(),
                            role: k.role,
                        },
                    )
                })
            })
            .collect();
        KeyRing { by_digest }
    }

    pub fn lookup(&self, key: &str) -> Option<&Principal> {
        self.by_digest.get(&sha256_hex(key))
    }
}

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
