//! The model catalog's HTTP routes (SPEC §2) as OpenAPI path items. The handlers live in
//! pool-managerd (`catalog_api`), which orchestratord must not import, so the routes are
//! described here, beside their types, as `utoipa::path` stubs: orchestratord's OpenAPI
//! document lists them, and pool-managerd's `tests/catalog_api.rs` checks that every route
//! described here is one its router serves (the one source of truth for the document is this
//! file; the router is held to it).
//!
//! They are served by pool-managerd and, under `llorch serve`, on orchestratord's port; a
//! stand-alone orchestratord does not serve them. All need a control key.
//!
//! The functions have no body worth calling: they exist for their annotations.

#![allow(dead_code)]

use crate::{CatalogEntry, ErrorEnvelope, RegisterModelRequest, SetModelStateRequest};

/// The catalog routes as an OpenAPI document, merged into orchestratord's.
#[derive(utoipa::OpenApi)]
#[openapi(paths(register_model, list_models, get_model, verify_model, set_model_state))]
pub struct CatalogDoc;

/// [`CatalogDoc`]'s document.
pub fn document() -> utoipa::openapi::OpenApi {
    <CatalogDoc as utoipa::OpenApi>::openapi()
}

/// Every catalog route as (method, path), for router contract tests.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/catalog/models"),
    ("GET", "/v1/catalog/models"),
    ("GET", "/v1/catalog/models/{id}"),
    ("POST", "/v1/catalog/models/{id}/verify"),
    ("POST", "/v1/catalog/models/{id}/state"),
];

/// Registers an artifact by digest, in `draft`.
#[utoipa::path(post, path = "/v1/catalog/models", tag = "catalog",
    description = "Registers an artifact (local path or http(s) URL) under its SHA-256, in state `draft`. Served by pool-managerd and by `llorch serve`.",
    request_body = RegisterModelRequest,
    responses(
        (status = 201, body = CatalogEntry, description = "registered"),
        (status = 200, body = CatalogEntry, description = "the same (model_ref, sha256) was already registered"),
        (status = 400, body = ErrorEnvelope, description = "INVALID_PARAMS: bad digest or ref, or the digest is bound to another ref"),
        (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub fn register_model() {}

/// Every entry.
#[utoipa::path(get, path = "/v1/catalog/models", tag = "catalog",
    responses((status = 200, body = Vec<CatalogEntry>), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub fn list_models() {}

/// One entry.
#[utoipa::path(get, path = "/v1/catalog/models/{id}", tag = "catalog",
    params(("id" = String, Path, description = "`sha256:<digest>` or the bare digest")),
    responses((status = 200, body = CatalogEntry), (status = 400, body = ErrorEnvelope, description = "INVALID_PARAMS: the id is not a SHA-256 digest"), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub fn get_model() {}

/// Re-hashes the artifact and records the result.
#[utoipa::path(post, path = "/v1/catalog/models/{id}/verify", tag = "catalog",
    description = "Re-hashes the entry's artifact (downloading a URL into the cache, resuming a partial download) and records `passed`, `mismatch` or `unavailable`; 200 whatever the result.",
    params(("id" = String, Path, description = "`sha256:<digest>` or the bare digest")),
    responses((status = 200, body = CatalogEntry), (status = 400, body = ErrorEnvelope, description = "INVALID_PARAMS: the id is not a SHA-256 digest"), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub fn verify_model() {}

/// Moves an entry through its lifecycle.
#[utoipa::path(post, path = "/v1/catalog/models/{id}/state", tag = "catalog",
    description = "Lifecycle move: draft → active | canary | retired; active ⇄ canary; active | canary → deprecated; deprecated → active | retired; retired is final. Active/canary need a passed verification. Pools serving a Deprecated model refuse new tasks (MODEL_DEPRECATED) and drain; a Retired model's pools are unloaded (Unready).",
    params(("id" = String, Path, description = "`sha256:<digest>` or the bare digest")),
    request_body = SetModelStateRequest,
    responses(
        (status = 200, body = CatalogEntry),
        (status = 400, body = ErrorEnvelope, description = "INVALID_PARAMS: illegal move, or the id is not a SHA-256 digest"),
        (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope, description = "UNTRUSTED_ARTIFACT: active/canary without a passed verification")),
    security(("api_key" = [])))]
pub fn set_model_state() {}
