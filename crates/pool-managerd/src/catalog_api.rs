//! The catalog API (SPEC §2), control-key only:
//! - `POST /v1/catalog/models` {model_ref, sha256} → 201 (new) or 200 (already registered)
//! - `GET /v1/catalog/models` → every entry
//! - `GET /v1/catalog/models/{id}` (`sha256:<digest>` or the bare digest)
//! - `POST /v1/catalog/models/{id}/verify` → re-hashes the artifact (downloading a URL into
//!   the cache) and records the result; 200 with the entry whatever the result
//! - `POST /v1/catalog/models/{id}/state` {state} → lifecycle move, validated
//!
//! Failures are error envelopes and change nothing. [`router`] carries its own envelope
//! layer, so it can be merged into another service's router (`llorch serve` mounts it beside
//! orchestratord's API).

use std::sync::Arc;

use api_types::{
    CatalogEntry, RegisterModelRequest, SetModelStateRequest, Verification, VerificationResult,
};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::artifacts::{ArtifactError, Artifacts, ModelRef};
use crate::catalog::{Catalog, CatalogError};
use crate::http::{ApiError, ApiJson, KeyRing};
use crate::metrics::PmMetrics;

#[derive(Clone)]
pub struct CatalogApi {
    pub catalog: Arc<Catalog>,
    pub artifacts: Arc<Artifacts>,
    pub keys: KeyRing,
    pub metrics: Arc<PmMetrics>,
}

pub fn router(api: CatalogApi) -> Router {
    Router::new()
        .route("/v1/catalog/models", post(register).get(list))
        .route("/v1/catalog/models/{id}", get(get_one))
        .route("/v1/catalog/models/{id}/verify", post(verify))
        .route("/v1/catalog/models/{id}/state", post(set_state))
        .layer(axum::middleware::from_fn(crate::http::correlation))
        .with_state(api)
}

async fn register(
    State(api): State<CatalogApi>,
    headers: HeaderMap,
    body: ApiJson<RegisterModelRequest>,
) -> Result<Response, ApiError> {
    api.keys.require_control(&headers)?;
    let ApiJson(req) = body;
    let (entry, new) = api.catalog.register(&req.model_ref, &req.sha256)?;
    tracing::info!(model = %entry.id, model_ref = %entry.model_ref, new, "model registered");
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!("/v1/catalog/models/{}", entry.id);
    Ok((status, [(header::LOCATION, location)], Json(entry)).into_response())
}

async fn list(
    State(api): State<CatalogApi>,
    headers: HeaderMap,
) -> Result<Json<Vec<CatalogEntry>>, ApiError> {
    api.keys.require_control(&headers)?;
    Ok(Json(api.catalog.list()?))
}

async fn get_one(
    State(api): State<CatalogApi>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<CatalogEntry>, ApiError> {
    api.keys.require_control(&headers)?;
    Ok(Json(api.catalog.get(&id)?))
}

async fn verify(
    State(api): State<CatalogApi>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<CatalogEntry>, ApiError> {
    api.keys.require_control(&headers)?;
    let entry = verify_entry(&api.catalog, &api.artifacts, &id).await?;
    if let Some(v) = &entry.verification {
        api.metrics.catalog_verification(v.result);
    }
    Ok(Json(entry))
}

async fn set_state(
    State(api): State<CatalogApi>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: ApiJson<SetModelStateRequest>,
) -> Result<Json<CatalogEntry>, ApiError> {
    api.keys.require_control(&headers)?;
    let ApiJson(req) = body;
    Ok(Json(api.catalog.set_state(&id, req.state)?))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Re-hashes the entry's artifact (a URL is downloaded into the cache first, resuming a
/// partial download) and records the outcome.
pub async fn verify_entry(
    catalog: &Catalog,
    artifacts: &Artifacts,
    id: &str,
) -> Result<CatalogEntry, CatalogError> {
    let entry = catalog.get(id)?;
    let path = match ModelRef::parse(&entry.model_ref) {
        Ok(ModelRef::Local(p)) => Ok(p),
        Ok(ModelRef::Url(url)) => artifacts.download(&url, &entry.digest).await,
        Ok(ModelRef::Catalog(_)) | Err(_) => {
            Err(ArtifactError::InvalidRef(entry.model_ref.clone()))
        }
    };
    let (v, size) = match path {
        Ok(p) => {
            let hashed = {
                let p = p.clone();
                tokio::task::spawn_blocking(move || {
                    let size = std::fs::metadata(&p)?.len();
                    crate::provision::sha256_file(&p).map(|d| (d, size))
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            };
            match hashed {
                Ok((actual, size)) => (
                    Verification {
                        result: if actual == entry.digest {
                            VerificationResult::Passed
                        } else {
                            VerificationResult::Mismatch
                        },
                        at_ms: now_ms(),
                        actual_sha256: Some(actual),
                        detail: None,
                    },
                    Some(size),
                ),
                Err(e) => (unavailable(format!("{}: {e}", p.display())), None),
            }
        }
        Err(ArtifactError::Untrusted(u)) => (
            Verification {
                result: VerificationResult::Mismatch,
                at_ms: now_ms(),
                actual_sha256: Some(u.actual),
                detail: None,
            },
            None,
        ),
        Err(e) => (unavailable(e.to_string()), None),
    };
    tracing::info!(model = %entry.id, result = v.result.as_str(), "model verified");
    catalog.record_verification(&entry.digest, &v, size)
}

fn unavailable(detail: String) -> Verification {
    Verification {
        result: VerificationResult::Unavailable,
        at_ms: now_ms(),
        actual_sha256: None,
        detail: Some(detail),
    }
}
