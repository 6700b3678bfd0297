//! `POST /v1/tasks`, `GET /v1/tasks/{id}/stream`, `POST /v1/tasks/{id}/cancel` (SPEC §1).

use std::sync::Arc;

use api_types::{ErrorEnvelope, TaskAccepted, TaskRequest};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

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
                ("X-Tokens-Budget-Remaining" = u64, description = "session token budget left (when configured)"),
                ("X-Time-Budget-Remaining-Ms" = u64, description = "session decode-time budget left (when configured)"))),
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
        super::sse::response(state, task, 0)
    } else {
        (StatusCode::ACCEPTED, axum::Json(&accepted)).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&accepted.stream_url) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    let h = resp.headers_mut();
    if let Some(n) = accepted.tokens_budget_remaining {
        h.insert("x-tokens-budget-remaining", HeaderValue::from(n));
    }
    if let Some(n) = accepted.time_budget_remaining_ms {
        h.insert("x-time-budget-remaining-ms", HeaderValue::from(n));
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

/// Server-Sent Events of a task: started, token*, metrics, end | error (ORCH-2002). Every
/// event carries its index in the task's log as `id:`; `Last-Event-ID` resumes after it.
#[utoipa::path(get, path = "/v1/tasks/{id}/stream", tag = "data",
    params(("id" = String, Path, description = "task id"),
        ("Last-Event-ID" = Option<String>, Header, nullable = false, description = "Resume: the `id` of the last event the client received; the stream continues with the next one (no gap, no duplicate) while the task's log is retained")),
    responses(
        (status = 200, description = "text/event-stream with events started, token, metrics, end, error; each has an `id:` (its index in the task's log, from 0)", content_type = "text/event-stream", body = String),
        (status = 400, description = "INVALID_PARAMS: Last-Event-ID is not an id this stream has sent", body = ErrorEnvelope),
        (status = 403, description = "FORBIDDEN: needs a data key", body = ErrorEnvelope),
        (status = 404, description = "Unknown task (or another tenant's)", body = ErrorEnvelope),
        (status = 410, description = "TASK_EVICTED: the task finished and its log was evicted", body = ErrorEnvelope),
    ),
    security(("api_key" = [])))]
pub async fn stream(
    State(state): State<Arc<AppState>>,
    DataCaller(caller): DataCaller,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let task = state.task_for(&id, &caller.tenant)?;
    let from = resume_from(&headers, &task)?;
    Ok(super::sse::response(state, task, from))
}

/// The index of the first event to send: 0, or the one after `Last-Event-ID`. An id that is
/// not a number or that the log has not reached yet was never sent: 400 INVALID_PARAMS.
fn resume_from(headers: &axum::http::HeaderMap, task: &Task) -> Result<usize, ApiError> {
    let Some(value) = headers.get(LAST_EVENT_ID) else {
        return Ok(0);
    };
    let text = value.to_str().unwrap_or_default().trim();
    let last: usize = text
        .parse()
        .ok()
        .filter(|_| text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "Last-Event-ID {:?} is not an event id (ids are decimal event indices)",
                value.to_str().unwrap_or("<not text>")
            ))
        })?;
    let count = task.event_count();
    if last >= count {
        return Err(ApiError::invalid(format!(
            "Last-Event-ID {last} is beyond the task's log ({count} events so far)"
        )));
    }
    Ok(last + 1)
}

const LAST_EVENT_ID: &str = "last-event-id";

/// Cancels the task if the client goes away before the stream's terminal event and nobody
/// resumes it within `server.stream_resume_grace_ms` (see [`AppState::stream_detached`]);
/// also used by the OpenAI front door's streams.
pub(crate) struct DisconnectGuard {
    pub(crate) state: Arc<AppState>,
    pub(crate) task: Arc<Task>,
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        self.state.stream_detached(&self.task);
    }
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
