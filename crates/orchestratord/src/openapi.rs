//! The OpenAPI 3.1 document, generated from the handlers and api-types (ORCH-3044). The
//! committed copy at docs/api/openapi.json is checked fresh by `tests/contracts_fresh.rs`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api;

struct ApiKeyAuth;

impl Modify for ApiKeyAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "llama-orch OrchQueue", version = "1.0.0",
        description = "Queue-centric LLM inference API: submit tasks, stream tokens over SSE, cancel; control plane for pools. The `catalog` routes are served by pool-managerd and, under `llorch serve`, on this same port."),
    paths(
        api::tasks::submit, api::tasks::stream, api::tasks::cancel,
        api::sessions::get_session, api::sessions::delete_session,
        api::control::capabilities, api::control::pool_health, api::control::drain, api::control::reload, api::control::reload_policy, api::control::replicasets,
        api::ops::healthz, api::ops::readyz, api::ops::metrics, api::ops::openapi,
    ),
    components(schemas(
        api_types::StartedEvent, api_types::TokenEvent, api_types::MetricsEvent, api_types::EndEvent,
        api_types::StreamErrorEvent,
    )),
    modifiers(&ApiKeyAuth),
)]
pub struct ApiDoc;

/// orchestratord's routes plus the catalog routes (described in api-types, whose handlers
/// are pool-managerd's; `llorch serve` serves them on the same port).
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(api_types::catalog_api::document());
    doc
}

/// The document as committed: pretty JSON with a trailing newline.
pub fn document_json() -> String {
    let mut s = document().to_pretty_json().unwrap_or_default();
    s.push('\n');
    s
}
