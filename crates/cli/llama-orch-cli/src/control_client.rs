//! The control-plane endpoints on [`Client`]: capabilities, pools, replica sets, drain, reload,
//! `/metrics` and the model catalog. They go through the client generated from the OpenAPI
//! document (`llorch-openapi-client`, progenitor), so the CLI calls exactly the operations the
//! document describes; the task path (submit, stream, cancel, sessions) stays hand-written in
//! `client.rs` for its streaming behaviour. Answers are converted to the api-types documents the
//! CLI renders; every failure becomes a [`CliError`] with the server's typed error envelope.

use std::time::Duration;

use api_types::{
    Capabilities, CatalogEntry, ModelState, PoolHealth, RegisterModelRequest, ReloadRequest,
    ReplicaSet,
};
use futures::StreamExt;
use openapi_client::{Error as GenError, ResponseValue, types};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::{Client, backoff_from_headers, check};
use crate::error::{CliError, body_snippet};

/// Most bytes of a `/metrics` page that are read.
const MAX_METRICS_BYTES: usize = 8 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Client {
    /// The generated client for this server, with this client's key as a default header. No
    /// overall timeout: a reload waits until the new model is Ready.
    fn api(&self) -> Result<openapi_client::Client, CliError> {
        let mut headers = HeaderMap::new();
        if let Some(key) = self.api_key() {
            let mut v = HeaderValue::try_from(format!("Bearer {}", key.expose()))
                .map_err(|_| CliError::Usage("the API key is not a valid header value".into()))?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("llorch/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .build()
            .map_err(CliError::Transport)?;
        let base = self.base_url().as_str().trim_end_matches('/');
        Ok(openapi_client::Client::new_with_client(base, http))
    }

    /// `GET /v1/capabilities`.
    pub async fn capabilities(&self) -> Result<Capabilities, CliError> {
        convert(self.api()?.capabilities().await).await
    }

    /// `GET /v1/replicasets` (control key).
    pub async fn replicasets(&self) -> Result<Vec<ReplicaSet>, CliError> {
        convert(self.api()?.replicasets().await).await
    }

    /// `GET /v1/pools/{id}/health` (control key).
    pub async fn pool_health(&self, pool: &str) -> Result<PoolHealth, CliError> {
        convert(self.api()?.pool_health(non_empty(pool)?).await).await
    }

    /// `POST /v1/pools/{id}/drain` → 202 with the pool's health (control key).
    pub async fn drain(&self, pool: &str, deadline_ms: u64) -> Result<PoolHealth, CliError> {
        let body: types::DrainRequest = to_generated(&api_types::DrainRequest { deadline_ms })?;
        convert(self.api()?.drain(non_empty(pool)?, &body).await).await
    }

    /// `POST /v1/pools/{id}/reload` → the pool's health once switched (control key).
    pub async fn reload(&self, pool: &str, req: &ReloadRequest) -> Result<PoolHealth, CliError> {
        let body: types::ReloadRequest = to_generated(req)?;
        convert(self.api()?.reload(non_empty(pool)?, &body).await).await
    }

    /// `GET /metrics` (Prometheus text), capped at 8 MiB.
    pub async fn metrics_text(&self) -> Result<String, CliError> {
        let resp = match self.api()?.metrics().await {
            Ok(r) => r,
            Err(e) => return Err(error(e).await),
        };
        let mut stream = resp.into_inner().into_inner();
        let mut body = Vec::new();
        while let Some(chunk) = stream.next().await {
            body.extend_from_slice(&chunk.map_err(CliError::Transport)?);
            if body.len() > MAX_METRICS_BYTES {
                return Err(CliError::Protocol(format!(
                    "/metrics is longer than the {MAX_METRICS_BYTES} bytes read"
                )));
            }
        }
        String::from_utf8(body)
            .map_err(|e| CliError::Protocol(format!("/metrics is not UTF-8: {e}")))
    }

    /// `GET /v1/catalog/models` (control key).
    pub async fn catalog_list(&self) -> Result<Vec<CatalogEntry>, CliError> {
        convert(self.api()?.list_models().await).await
    }

    /// `POST /v1/catalog/models` → the entry, and whether it is new (201) rather than
    /// already registered (200).
    pub async fn catalog_register(
        &self,
        req: &RegisterModelRequest,
    ) -> Result<(CatalogEntry, bool), CliError> {
        let body: types::RegisterModelRequest = to_generated(req)?;
        let resp = match self.api()?.register_model(&body).await {
            Ok(r) => r,
            Err(e) => return Err(error(e).await),
        };
        let created = resp.status() == reqwest::StatusCode::CREATED;
        Ok((from_generated(resp.into_inner())?, created))
    }

    /// `GET /v1/catalog/models/{id}`.
    pub async fn catalog_get(&self, id: &str) -> Result<CatalogEntry, CliError> {
        convert(self.api()?.get_model(non_empty(id)?).await).await
    }

    /// `POST /v1/catalog/models/{id}/verify`: 200 whatever the verification's result.
    pub async fn catalog_verify(&self, id: &str) -> Result<CatalogEntry, CliError> {
        convert(self.api()?.verify_model(non_empty(id)?).await).await
    }

    /// `POST /v1/catalog/models/{id}/state`.
    pub async fn catalog_set_state(
        &self,
        id: &str,
        state: ModelState,
    ) -> Result<CatalogEntry, CliError> {
        let body: types::SetModelStateRequest =
            to_generated(&api_types::SetModelStateRequest { state })?;
        convert(self.api()?.set_model_state(non_empty(id)?, &body).await).await
    }
}

fn non_empty(id: &str) -> Result<&str, CliError> {
    if id.is_empty() {
        Err(CliError::Usage("ids must not be empty".into()))
    } else {
        Ok(id)
    }
}

/// A generated answer as the api-types document (the same JSON on both sides; a difference
/// between the generated types and api-types is a protocol error, and the consumer contract
/// tests fail on it).
async fn convert<G: Serialize, T: DeserializeOwned>(
    r: Result<ResponseValue<G>, GenError<types::ErrorEnvelope>>,
) -> Result<T, CliError> {
    match r {
        Ok(v) => from_generated(v.into_inner()),
        Err(e) => Err(error(e).await),
    }
}

fn from_generated<G: Serialize, T: DeserializeOwned>(g: G) -> Result<T, CliError> {
    let v = serde_json::to_value(&g)
        .map_err(|e| CliError::Protocol(format!("cannot re-encode the answer: {e}")))?;
    serde_json::from_value(v)
        .map_err(|e| CliError::Protocol(format!("the answer does not match api-types: {e}")))
}

fn to_generated<T: Serialize, G: DeserializeOwned>(t: &T) -> Result<G, CliError> {
    let v = serde_json::to_value(t)
        .map_err(|e| CliError::Usage(format!("cannot encode the request: {e}")))?;
    serde_json::from_value(v).map_err(|e| CliError::Usage(format!("invalid request: {e}")))
}

/// The generated client's failures as [`CliError`]s: documented error answers carry the
/// envelope; undocumented ones (429, 5xx, a proxy's page) are read like the hand-written
/// client reads them.
async fn error<E: Serialize + std::fmt::Debug>(e: GenError<E>) -> CliError {
    match e {
        GenError::ErrorResponse(rv) => {
            let status = rv.status().as_u16();
            let backoff_ms = backoff_from_headers(rv.headers());
            let body = serde_json::to_vec(&rv.into_inner()).unwrap_or_default();
            match serde_json::from_slice::<api_types::ErrorEnvelope>(&body) {
                Ok(envelope) => CliError::Api {
                    status,
                    envelope: Box::new(envelope),
                    backoff_ms,
                },
                Err(_) => CliError::Status {
                    status,
                    body: body_snippet(&body),
                    backoff_ms,
                },
            }
        }
        GenError::UnexpectedResponse(resp) => {
            // `check` turns any non-2xx into Api/Status; a 2xx here is undocumented.
            let status = resp.status().as_u16();
            match check(resp).await {
                Err(e) => e,
                Ok(_) => CliError::Protocol(format!("undocumented success status {status}")),
            }
        }
        GenError::CommunicationError(e)
        | GenError::ResponseBodyError(e)
        | GenError::InvalidUpgrade(e) => CliError::Transport(e),
        GenError::InvalidResponsePayload(body, e) => CliError::Protocol(format!(
            "unexpected response body ({e}): {}",
            body_snippet(&body)
        )),
        GenError::InvalidRequest(m) => CliError::Usage(m),
        GenError::Custom(m) => CliError::Protocol(m),
    }
}
