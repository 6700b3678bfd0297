//! The control-plane endpoints on [`Client`]: capabilities, pools, replica sets, drain, reload,
//! `/metrics` and the model catalog. Every non-2xx answer becomes [`CliError::Api`] with the
//! server's typed error envelope (see `client::check`).

use api_types::{
    Capabilities, CatalogEntry, DrainRequest, ModelState, PoolHealth, RegisterModelRequest,
    ReloadRequest, ReplicaSet, SetModelStateRequest,
};
use reqwest::Method;

use crate::client::{Client, parse_json};
use crate::error::CliError;

/// Most bytes of a `/metrics` page that are read.
const MAX_METRICS_BYTES: usize = 8 * 1024 * 1024;

impl Client {
    /// `GET /v1/capabilities`.
    pub async fn capabilities(&self) -> Result<Capabilities, CliError> {
        let resp = self
            .send(self.request(Method::GET, &["v1", "capabilities"])?)
            .await?;
        parse_json(resp).await
    }

    /// `GET /v1/replicasets` (control key).
    pub async fn replicasets(&self) -> Result<Vec<ReplicaSet>, CliError> {
        let resp = self
            .send(self.request(Method::GET, &["v1", "replicasets"])?)
            .await?;
        parse_json(resp).await
    }

    /// `GET /v1/pools/{id}/health` (control key).
    pub async fn pool_health(&self, pool: &str) -> Result<PoolHealth, CliError> {
        let resp = self
            .send(self.request(Method::GET, &["v1", "pools", pool, "health"])?)
            .await?;
        parse_json(resp).await
    }

    /// `POST /v1/pools/{id}/drain` → 202 with the pool's health (control key).
    pub async fn drain(&self, pool: &str, deadline_ms: u64) -> Result<PoolHealth, CliError> {
        let body = DrainRequest { deadline_ms };
        let resp = self
            .send(
                self.request(Method::POST, &["v1", "pools", pool, "drain"])?
                    .json(&body),
            )
            .await?;
        parse_json(resp).await
    }

    /// `POST /v1/pools/{id}/reload` → the pool's health once switched (control key).
    pub async fn reload(&self, pool: &str, req: &ReloadRequest) -> Result<PoolHealth, CliError> {
        let resp = self
            .send(
                self.request(Method::POST, &["v1", "pools", pool, "reload"])?
                    .json(req),
            )
            .await?;
        parse_json(resp).await
    }

    /// `GET /metrics` (Prometheus text), capped at 8 MiB.
    pub async fn metrics_text(&self) -> Result<String, CliError> {
        let resp = self.send(self.request(Method::GET, &["metrics"])?).await?;
        let body = resp.bytes().await.map_err(CliError::Transport)?;
        if body.len() > MAX_METRICS_BYTES {
            return Err(CliError::Protocol(format!(
                "/metrics is {} bytes, more than the {MAX_METRICS_BYTES} read",
                body.len()
            )));
        }
        String::from_utf8(body.to_vec())
            .map_err(|e| CliError::Protocol(format!("/metrics is not UTF-8: {e}")))
    }

    /// `GET /v1/catalog/models` (control key).
    pub async fn catalog_list(&self) -> Result<Vec<CatalogEntry>, CliError> {
        let resp = self
            .send(self.request(Method::GET, &["v1", "catalog", "models"])?)
            .await?;
        parse_json(resp).await
    }

    /// `POST /v1/catalog/models` → the entry, and whether it is new (201) rather than
    /// already registered (200).
    pub async fn catalog_register(
        &self,
        req: &RegisterModelRequest,
    ) -> Result<(CatalogEntry, bool), CliError> {
        let resp = self
            .send(
                self.request(Method::POST, &["v1", "catalog", "models"])?
                    .json(req),
            )
            .await?;
        let created = resp.status() == reqwest::StatusCode::CREATED;
        Ok((parse_json(resp).await?, created))
    }

    /// `GET /v1/catalog/models/{id}`.
    pub async fn catalog_get(&self, id: &str) -> Result<CatalogEntry, CliError> {
        let resp = self
            .send(self.request(Method::GET, &["v1", "catalog", "models", id])?)
            .await?;
        parse_json(resp).await
    }

    /// `POST /v1/catalog/models/{id}/verify`: 200 whatever the verification's result.
    pub async fn catalog_verify(&self, id: &str) -> Result<CatalogEntry, CliError> {
        let resp = self
            .send(self.request(Method::POST, &["v1", "catalog", "models", id, "verify"])?)
            .await?;
        parse_json(resp).await
    }

    /// `POST /v1/catalog/models/{id}/state`.
    pub async fn catalog_set_state(
        &self,
        id: &str,
        state: ModelState,
    ) -> Result<CatalogEntry, CliError> {
        let body = SetModelStateRequest { state };
        let resp = self
            .send(
                self.request(Method::POST, &["v1", "catalog", "models", id, "state"])?
                    .json(&body),
            )
            .await?;
        parse_json(resp).await
    }
}
