//! What pool-managerd's HTTP APIs share with orchestratord's: failures become the public
//! [`api_types::ErrorEnvelope`] (ORCH-2006) with the request's correlation id, malformed
//! JSON becomes INVALID_PARAMS (both from `llorch-http-envelope`, the one implementation),
//! and control endpoints take a control-role API key from the same `auth.api_keys` as
//! orchestratord.

use std::collections::HashMap;

use api_types::{API_KEY_HEADER, ErrorCode};
use axum::http::{HeaderMap, header};
use config_schema::{AuthConfig, Role, sha256_hex};

pub use http_envelope::{ApiError, ApiJson, correlation, fallback};

impl From<crate::catalog::CatalogError> for ApiError {
    fn from(e: crate::catalog::CatalogError) -> Self {
        if e.code() == ErrorCode::Internal {
            tracing::error!(error = %e, "catalog failure");
        }
        ApiError::new(e.code(), e.to_string())
    }
}

/// API keys by SHA-256 digest → role (plain keys are never kept or compared).
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    by_digest: HashMap<String, Role>,
}

impl KeyRing {
    pub fn new(cfg: &AuthConfig) -> Self {
        KeyRing {
            by_digest: cfg
                .api_keys
                .iter()
                .filter_map(|k| k.digest_hex().map(|d| (d, k.role)))
                .collect(),
        }
    }

    /// Ok when the request carries a control-role key (`Authorization: Bearer` or
    /// `X-Api-Key`).
    pub fn require_control(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let key = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, k)| k.trim())
            .or_else(|| headers.get(API_KEY_HEADER).and_then(|v| v.to_str().ok()))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Unauthenticated,
                    "missing API key (Authorization: Bearer …)",
                )
            })?;
        match self.by_digest.get(&sha256_hex(key)) {
            None => Err(ApiError::new(ErrorCode::Unauthenticated, "unknown API key")),
            Some(Role::Control) => Ok(()),
            Some(_) => Err(ApiError::new(
                ErrorCode::Forbidden,
                "this endpoint needs a control key",
            )),
        }
    }
}
