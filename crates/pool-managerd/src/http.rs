//! What pool-managerd's HTTP APIs share with orchestratord's, re-stated here because
//! pool-managerd must not depend on orchestratord: failures become the public
//! [`ErrorEnvelope`] (ORCH-2006) with the request's correlation id, malformed JSON becomes
//! INVALID_PARAMS, and control endpoints take a control-role API key from the same
//! `auth.api_keys` as orchestratord.

use std::collections::HashMap;

use api_types::{API_KEY_HEADER, CORRELATION_ID_HEADER, ErrorCode, ErrorEnvelope};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use config_schema::{AuthConfig, Role, sha256_hex};

/// A failed request; rendered as an [`ErrorEnvelope`] by [`correlation`].
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub status: Option<StatusCode>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            status: None,
        }
    }
}

impl From<crate::catalog::CatalogError> for ApiError {
    fn from(e: crate::catalog::CatalogError) -> Self {
        if e.code() == ErrorCode::Internal {
            tracing::error!(error = %e, "catalog failure");
        }
        ApiError::new(e.code(), e.to_string())
    }
}

#[derive(Clone)]
struct PendingEnvelope(ErrorEnvelope);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self
            .status
            .or_else(|| StatusCode::from_u16(self.code.http_status()).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = status.into_response();
        resp.extensions_mut().insert(PendingEnvelope(ErrorEnvelope {
            code: self.code,
            message: self.message,
            engine: None,
            pool_id: None,
            retriable: Some(self.code.retriable()),
            retry_after_ms: None,
            policy_label: None,
            correlation_id: String::new(),
        }));
        resp
    }
}

fn acceptable_correlation_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b));
    ok.then(|| s.to_string())
}

/// Echoes a well-formed `X-Correlation-Id` (or generates one) and writes pending envelopes.
/// Idempotent when nested (a router that carries it merged into one that does too): the id
/// is written back into the request, so inner layers echo the same one.
pub async fn correlation(mut req: Request, next: Next) -> Response {
    let cid = req
        .headers()
        .get(CORRELATION_ID_HEADER)
        .and_then(acceptable_correlation_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if let Ok(v) = HeaderValue::from_str(&cid) {
        req.headers_mut().insert(CORRELATION_ID_HEADER, v);
    }
    let mut resp = next.run(req).await;
    if let Some(PendingEnvelope(mut env)) = resp.extensions_mut().remove::<PendingEnvelope>() {
        env.correlation_id = cid.clone();
        let body = serde_json::to_vec(&env).unwrap_or_default();
        let (mut parts, _) = resp.into_parts();
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        parts.headers.remove(header::CONTENT_LENGTH);
        resp = Response::from_parts(parts, axum::body::Body::from(body));
    }
    if let Ok(v) = HeaderValue::from_str(&cid) {
        resp.headers_mut().insert(CORRELATION_ID_HEADER, v);
    }
    resp
}

/// `Json<T>` whose rejections become INVALID_PARAMS envelopes (413/415 where HTTP says so).
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rej) => {
                let status = rej.status();
                let mut err = ApiError::new(ErrorCode::InvalidParams, rej.body_text());
                err.status = Some(match status {
                    StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE => status,
                    _ => StatusCode::BAD_REQUEST,
                });
                Err(err)
            }
        }
    }
}

/// Unknown routes get the envelope too.
pub async fn fallback() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "route not found")
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
