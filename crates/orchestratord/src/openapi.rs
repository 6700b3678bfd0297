//! The OpenAPI 3.1 document, generated from the handlers and api-types (ORCH-3044). The
//! committed copy at docs/api/openapi.json is checked fresh by `tests/contracts_fresh.rs`.

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
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
        description = "Queue-centric LLM inference API: submit tasks, stream tokens over SSE, cancel; control plane for pools. The `catalog` routes are served by pool-managerd and, under `llorch serve`, on this same port. The `openai` routes are the OpenAI-compatible front door (served when `[server] openai_compat = true`, the default of `llorch serve`): the same admission, quotas and queues, OpenAI's request, response and error shapes."),
    paths(
        api::tasks::submit, api::tasks::stream, api::tasks::cancel,
        api::sessions::get_session, api::sessions::delete_session,
        api::control::capabilities, api::control::pool_health, api::control::drain, api::control::reload, api::control::reload_policy, api::control::replicasets,
        api::ops::healthz, api::ops::readyz, api::ops::metrics, openapi,
        api::openai::chat_completions, api::openai::completions, api::openai::models,
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
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            add_common_responses(op);
        }
    }
    doc
}

/// Answers that whole classes of routes give, added here once instead of on every handler
/// (schemathesis found them missing): a route behind an API key answers 401 without a valid
/// one; a route that reads a JSON body answers 400 (malformed), 413 (too large) and 415 (not
/// `application/json`), from `ApiJson`. Every response also gets a description (OpenAPI
/// requires one).
fn add_common_responses(op: &mut Operation) {
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    // The OpenAI front door answers errors in OpenAI's shape, not the envelope.
    let openai = op
        .tags
        .as_ref()
        .is_some_and(|t| t.iter().any(|t| t == "openai"));
    let schema = if openai {
        "OpenAiError"
    } else {
        "ErrorEnvelope"
    };
    let reads_body = op.request_body.is_some();
    let common: &[(&str, &str, bool)] = &[
        (
            "400",
            "INVALID_PARAMS: malformed or invalid request",
            reads_body,
        ),
        (
            "401",
            "UNAUTHENTICATED: missing or unknown API key",
            secured,
        ),
        (
            "413",
            "INVALID_PARAMS: body over the size limit",
            reads_body,
        ),
        (
            "415",
            "INVALID_PARAMS: body is not `application/json`",
            // The OpenAI front door reads any content type, as OpenAI-compatible servers do.
            reads_body && !openai,
        ),
    ];
    for (status, description, applies) in common {
        if *applies {
            op.responses
                .responses
                .entry((*status).to_string())
                .or_insert_with(|| error_response(description, schema));
        }
    }
    for (status, response) in op.responses.responses.iter_mut() {
        if let RefOr::T(r) = response
            && r.description.is_empty()
        {
            r.description = default_description(status).to_string();
        }
    }
}

fn error_response(description: &str, schema: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(schema)))
                    .build(),
            )
            .build(),
    )
}

fn default_description(status: &str) -> &'static str {
    match status {
        "200" => "OK",
        "201" => "Created",
        "202" => "Accepted",
        "204" => "No content",
        "400" => "INVALID_PARAMS",
        "401" => "UNAUTHENTICATED",
        "403" => "FORBIDDEN: this route needs a key of another role",
        "404" => "Not found",
        "409" => "Conflict",
        "410" => "Gone",
        "422" => "Unprocessable",
        "429" => "ADMISSION_REJECT",
        "503" => "Unavailable",
        _ => "See the error envelope's `code`",
    }
}

/// The document as committed: pretty JSON with a trailing newline.
pub fn document_json() -> String {
    let mut s = document().to_pretty_json().unwrap_or_default();
    s.push('\n');
    s
}

// `GET /openapi.json` is served here rather than in `api::ops`, so that the document (which
// lists every handler) and the handlers do not import each other. (A doc comment would become
// the operation's summary in the document.)
#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses((status = 200, description = "This API's OpenAPI 3.1 document")))]
pub async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
}
