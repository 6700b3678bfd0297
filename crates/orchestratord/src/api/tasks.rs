//! `POST /v1/tasks`, `GET /v1/tasks/{id}/stream`, `POST /v1/tasks/{id}/cancel` (SPEC §1).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use api_types::{ErrorEnvelope, StreamEvent, TaskAccepted, TaskRequest};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;

use crate::api::auth::DataCaller;
use crate::error::{ApiError, ApiJson};
use crate::state::AppState;
use crate::task::Task;

/// Submit a task (ORCH-2001). 202 with the stream's URL in `Location`; with
/// `Accept: text/event-stream`, 200 and the task's SSE stream in the same response (one round
/// trip; admission errors keep their status and JSON envelope).
#[utoipa::path(post, path = "/v1/tasks", tag = "data",
    request_body = TaskRequest,
    responses(
        (status = 200, description = "With `Accept: text/event-stream`: admitted, and this response is the task's stream (events as on GET /v1/tasks/{id}/stream)", content_type = "text/event-stream", body = String,
            headers(("Location" = String, description = "URL of the task's SSE stream (for reconnecting)"))),
        (status = 202, description = "Admitted and queued", body = TaskAccepted,
            headers(("Location" = String, description = "URL of the task's SSE stream"),
                ("X-Session-Tokens-Remaining" = u64, description = "session token budget left (when configured)"),
                ("X-Session-Time-Remaining-Ms" = u64, description = "session decode-time budget left (when configured)"))),
        (status = 400, description = "INVALID_PARAMS or DEADLINE_UNMET", body = ErrorEnvelope),
        (status = 401, description = "UNAUTHENTICATED", body = ErrorEnvelope),
        (status = 403, description = "FORBIDDEN", body = ErrorEnvelope),
        (status = 413, description = "Body over the size limit", body = ErrorEnvelope),
        (status = 429, description = "Queue full or a tenant quota exceeded (ADMISSION_REJECT); see Retry-After and X-Backoff-Ms", body = ErrorEnvelope,
            headers(("Retry-After" = u64, description = "seconds"), ("X-Backoff-Ms" = u64, description = "milliseconds"))),
        (status = 503, description = "POOL_UNREADY or POOL_UNAVAILABLE", body = ErrorEnvelope),
    ),
    security(("api_key" = [])))]
pub async fn submit(
    State(state): State<Arc<AppState>>,
    DataCaller(caller): DataCaller,
    headers: axum::http::HeaderMap,
    ApiJson(req): ApiJson<TaskRequest>,
) -> Result<Response, ApiError> {
    let one_round_trip = wants_event_stream(&headers);
    let accepted = state.submit(&caller, req)?;
    let mut resp = if one_round_trip {
        let task = state.task_for(&accepted.task_id, &caller.tenant)?;
        sse_response(state, task)
    } else {
        (StatusCode::ACCEPTED, axum::Json(&accepted)).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&accepted.stream_url) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    let h = resp.headers_mut();
    if let Some(n) = accepted.session_tokens_remaining {
        h.insert("x-session-tokens-remaining", HeaderValue::from(n));
    }
    if let Some(n) = accepted.session_time_remaining_ms {
        h.insert("x-session-time-remaining-ms", HeaderValue::from(n));
    }
    Ok(resp)
}

/// Whether the client asked for the stream itself (`Accept: text/event-stream`).
pub(crate) fn wants_event_stream(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|m| {
            m.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// The task's event stream from its first event, as `GET /v1/tasks/{id}/stream` serves it.
fn sse_response(state: Arc<AppState>, task: Arc<Task>) -> Response {
    let keepalive = Duration::from_millis(state.cfg.server.sse_keepalive_ms);
    Sse::new(event_stream(state, task))
        .keep_alive(KeepAlive::new().interval(keepalive))
        .into_response()
}

/// Server-Sent Events of a task: started, token*, metrics, end | error (ORCH-2002).
#[utoipa::path(get, path = "/v1/tasks/{id}/stream", tag = "data",
    params(("id" = String, Path, description = "task id")),
    responses(
        (status = 200, description = "text/event-stream with events started, token, metrics, end, error", content_type = "text/event-stream", body = String),
        (status = 403, description = "FORBIDDEN: needs a data key", body = ErrorEnvelope),
        (status = 404, description = "Unknown task (or another tenant's)", body = ErrorEnvelope),
    ),
    security(("api_key" = [])))]
pub async fn stream(
    State(state): State<Arc<AppState>>,
    DataCaller(caller): DataCaller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let task = state.task_for(&id, &caller.tenant)?;
    let keepalive = Duration::from_millis(state.cfg.server.sse_keepalive_ms);
    Ok(Sse::new(event_stream(state, task))
        .keep_alive(KeepAlive::new().interval(keepalive))
        .into_response())
}

/// Cancels the task if the client goes away before the stream's terminal event (also used by
/// the OpenAI front door's streams).
pub(crate) struct DisconnectGuard {
    pub(crate) state: Arc<AppState>,
    pub(crate) task: Arc<Task>,
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if !self.task.is_terminal() {
            let state = self.state.clone();
            let task = self.task.clone();
            tokio::spawn(async move {
                let _ = state.cancel(&task, "client_disconnect").await;
            });
        }
    }
}

fn to_sse(ev: &StreamEvent) -> Event {
    Event::default().event(ev.name()).data(ev.data_json())
}

fn event_stream(
    state: Arc<AppState>,
    task: Arc<Task>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let rx = task.subscribe();
    let guard = DisconnectGuard { state, task };
    let init = (
        guard,
        rx,
        0usize,
        std::collections::VecDeque::<StreamEvent>::new(),
        false,
    );
    futures::stream::unfold(
        init,
        |(guard, mut rx, mut next, mut pending, mut done)| async move {
            loop {
                if let Some(ev) = pending.pop_front() {
                    return Some((Ok(to_sse(&ev)), (guard, rx, next, pending, done)));
                }
                if done {
                    return None;
                }
                // Mark what we are about to read as seen before reading, so no wakeup is lost.
                rx.borrow_and_update();
                let (events, terminal) = guard.task.events_from(next);
                next += events.len();
                pending.extend(events);
                if terminal {
                    done = true;
                    continue;
                }
                if pending.is_empty() && rx.changed().await.is_err() {
                    return None;
                }
            }
        },
    )
}

/// Cancels a task (ORCH-3017, 3026): 204 once no further token can be emitted and the slot is free.
#[utoipa::path(post, path = "/v1/tasks/{id}/cancel", tag = "data",
    params(("id" = String, Path, description = "task id")),
    responses(
        (status = 204, description = "Canceled; no token event follows"),
        (status = 403, description = "FORBIDDEN: needs a data key", body = ErrorEnvelope),
        (status = 404, description = "Unknown task (or another tenant's)", body = ErrorEnvelope),
        (status = 409, description = "TASK_FINISHED", body = ErrorEnvelope),
    ),
    security(("api_key" = [])))]
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    DataCaller(caller): DataCaller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let task = state.task_for(&id, &caller.tenant)?;
    state.cancel(&task, "client_request").await?;
    Ok(StatusCode::NO_CONTENT)
}
