//! Serves any [`WorkerAdapter`] over the worker protocol (see `api_types::worker`).

use std::convert::Infallible;
use std::sync::Arc;

use api_types::sse_event;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;

use crate::{GenerateRequest, WorkerAdapter, WorkerError, WorkerEvent};

type Shared = Arc<dyn WorkerAdapter>;

pub fn router(adapter: Shared) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/properties", get(properties))
        .route("/generate", post(generate))
        .route("/cancel/{job_id}", post(cancel))
        .with_state(adapter)
}

fn error_response(e: &WorkerError) -> Response {
    let status =
        StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(e.to_event(None))).into_response()
}

async fn health(State(a): State<Shared>) -> Response {
    match a.health().await {
        Ok(h) => Json(h).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn properties(State(a): State<Shared>) -> Response {
    match a.properties().await {
        Ok(p) => Json(p).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn generate(
    State(a): State<Shared>,
    body: Result<Json<GenerateRequest>, JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(r)) => r,
        Err(rej) => {
            return error_response(&WorkerError::new(
                api_types::ErrorCode::InvalidParams,
                rej.body_text(),
            ));
        }
    };
    match a.generate(req).await {
        Ok(stream) => {
            // Dropping this body (client gone) drops the worker stream, which frees the slot.
            let events = stream.map(|item| {
                let ev = match item {
                    Ok(WorkerEvent::Token(t)) => event(sse_event::TOKEN, &t),
                    Ok(WorkerEvent::End(e)) => event(sse_event::END, &e),
                    Err(e) => event(sse_event::ERROR, &e.to_event(None)),
                };
                Ok::<_, Infallible>(ev)
            });
            Sse::new(events).into_response()
        }
        Err(e) => error_response(&e),
    }
}

fn event<T: serde::Serialize>(name: &str, data: &T) -> Event {
    Event::default()
        .event(name)
        .data(serde_json::to_string(data).unwrap_or_else(|_| "{}".into()))
}

async fn cancel(State(a): State<Shared>, Path(job_id): Path<String>) -> Response {
    match a.cancel(&job_id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error_response(&e),
    }
}
