//! The HTTP side of the public error envelope (ORCH-2006, 3093), shared by every llama-orch
//! daemon that serves HTTP (orchestratord, pool-managerd): [`ApiError`] is the one failure
//! type that becomes an [`ErrorEnvelope`] response; [`correlation`] echoes or generates the
//! `X-Correlation-Id` and stamps it into every envelope; [`ApiJson`] turns malformed bodies
//! into INVALID_PARAMS envelopes; [`fallback`] answers unknown routes.
//!
//! Depends only on api-types (the wire types) and axum; it knows nothing of scheduling,
//! engines or the catalog.

use api_types::{BACKOFF_MS_HEADER, CORRELATION_ID_HEADER, ErrorCode, ErrorEnvelope};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// A failed request. Converted to an [`ErrorEnvelope`] response in exactly one place.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Overrides the code's default status (413/415 for body problems).
    pub status: Option<StatusCode>,
    pub pool_id: Option<String>,
    pub engine: Option<String>,
    pub retry_after_ms: Option<u64>,
    pub policy_label: Option<&'static str>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            status: None,
            pool_id: None,
            engine: None,
            retry_after_ms: None,
            policy_label: None,
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParams, message)
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }
    pub fn with_pool(mut self, pool: &str) -> Self {
        self.pool_id = Some(pool.to_string());
        self
    }
    /// Names the engine of the pool the error concerns (ORCH-2006).
    pub fn with_engine(mut self, engine: &str) -> Self {
        self.engine = Some(engine.to_string());
        self
    }
    pub fn with_retry_after(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(ms);
        self
    }
    pub fn with_status(mut self, s: StatusCode) -> Self {
        self.status = Some(s);
        self
    }
}

/// Envelope waiting for its correlation id; the middleware finishes it.
#[derive(Clone)]
struct PendingEnvelope(ErrorEnvelope);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self
            .status
            .or_else(|| StatusCode::from_u16(self.code.http_status()).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = status.into_response();
        if let Some(ms) = self.retry_after_ms {
            let h = resp.headers_mut();
            h.insert(
                header::RETRY_AFTER,
                HeaderValue::from(ms.div_ceil(1000).max(1)),
            );
            h.insert(BACKOFF_MS_HEADER, HeaderValue::from(ms));
        }
        resp.extensions_mut().insert(PendingEnvelope(ErrorEnvelope {
            code: self.code,
            message: self.message,
            engine: self.engine,
            pool_id: self.pool_id,
            retriable: Some(self.code.retriable()),
            retry_after_ms: self.retry_after_ms,
            policy_label: self.policy_label.map(str::to_string),
            correlation_id: String::new(),
        }));
        resp
    }
}

/// Correlation id of the request being served.
#[derive(Debug, Clone)]
pub struct CorrelationId(pub String);

fn acceptable_correlation_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b));
    ok.then(|| s.to_string())
}

/// Echoes a well-formed `X-Correlation-Id` or generates one, and writes pending error
/// envelopes with it. Malformed ids are replaced, not rejected: they are only a tracing aid.
pub async fn correlation(mut req: Request, next: Next) -> Response {
    let cid = req
        .headers()
        .get(CORRELATION_ID_HEADER)
        .and_then(acceptable_correlation_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(CorrelationId(cid.clone()));
    // Idempotent when nested (a router that carries this layer merged into one that does
    // too): the id is written back into the request, so inner layers echo the same one.
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
                let err = ApiError::invalid(rej.body_text());
                Err(match status {
                    StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                        err.with_status(status)
                    }
                    _ => err.with_status(StatusCode::BAD_REQUEST),
                })
            }
        }
    }
}

/// Unknown routes get the envelope too.
pub async fn fallback() -> ApiError {
    ApiError::not_found("route")
}
