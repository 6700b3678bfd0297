//! The OpenAI-compatible front door (issue 14 item 1): `POST /v1/chat/completions`,
//! `POST /v1/completions`, `GET /v1/models`, served when `[server] openai_compat = true`.
//!
//! A facade, not a second scheduler: each request is mapped ([`super::openai_map`]) onto an
//! OrchQueue v1 [`TaskRequest`] and submitted through the same [`AppState::submit`] as
//! `POST /v1/tasks` (authentication, admission plugin, tenant quotas, fair queue, deadlines,
//! sessions, metrics), then the task's event log is re-encoded in OpenAI's shapes. Errors use
//! OpenAI's body `{"error":{"message","type","param","code"}}` with the llama-orch code in
//! `code`, the same HTTP status as OrchQueue v1 and `Retry-After` on 429.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use api_types::openai::{
    ChatCompletion, ChatCompletionRequest, Completion, CompletionRequest, Model, ModelList,
    OpenAiError, OpenAiErrorBody,
};
use api_types::{BACKOFF_MS_HEADER, ErrorCode, StreamEvent, TaskRequest};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};

use super::auth::DataCaller;
use super::openai_map::{self as map, Dialect, Encoder};
use super::tasks::DisconnectGuard;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;
use crate::task::Task;

/// A failed OpenAI-dialect request: OpenAI's error body, the OrchQueue status.
#[derive(Debug)]
pub struct OaiError {
    pub status: StatusCode,
    pub body: OpenAiError,
    pub retry_after_ms: Option<u64>,
}

/// OpenAI's `type` for an HTTP status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 | 410 => "not_found_error",
        429 => "rate_limit_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    }
}

impl OaiError {
    pub fn new(
        status: StatusCode,
        code: &str,
        param: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        OaiError {
            status,
            body: OpenAiError {
                error: OpenAiErrorBody {
                    message: message.into(),
                    kind: error_type(status).to_string(),
                    param: param.map(str::to_string),
                    code: Some(code.to_string()),
                },
            },
            retry_after_ms: None,
        }
    }

    /// INVALID_PARAMS (400) naming the request field at fault.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidParams.as_str(),
            Some(param),
            message,
        )
    }

    /// An unknown `model`: 404 `model_not_found`, as OpenAI answers.
    pub fn model_not_found(model: &str) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            Some("model"),
            format!("The model `{model}` does not exist (see GET /v1/models)"),
        );
        e.body.error.kind = "invalid_request_error".into();
        e
    }

    fn from_code(code: ErrorCode, message: String, retry_after_ms: Option<u64>) -> Self {
        let status =
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // Validation messages start with the field in backquotes: OpenAI's `param`.
        let param = message
            .strip_prefix('`')
            .and_then(|m| m.split_once('`'))
            .map(|(p, _)| p.to_string());
        let mut e = Self::new(status, code.as_str(), param.as_deref(), message);
        e.retry_after_ms = retry_after_ms;
        e
    }
}

impl From<ApiError> for OaiError {
    fn from(e: ApiError) -> Self {
        let mut o = OaiError::from_code(e.code, e.message, e.retry_after_ms);
        if let Some(s) = e.status {
            o.status = s;
            o.body.error.kind = error_type(s).to_string();
        }
        o
    }
}

impl From<&api_types::StreamErrorEvent> for OaiError {
    fn from(e: &api_types::StreamErrorEvent) -> Self {
        OaiError::from_code(e.code, e.message.clone(), e.retry_after_ms)
    }
}

impl IntoResponse for OaiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(&self.body)).into_response();
        if let Some(ms) = self.retry_after_ms {
            let h = resp.headers_mut();
            h.insert(
                header::RETRY_AFTER,
                HeaderValue::from(ms.div_ceil(1000).max(1)),
            );
            h.insert(BACKOFF_MS_HEADER, HeaderValue::from(ms));
        }
        resp
    }
}

/// A data-plane caller (`Authorization: Bearer KEY`), refused in OpenAI's error shape.
pub struct OaiCaller(pub Principal);

impl FromRequestParts<Arc<AppState>> for OaiCaller {
    type Rejection = OaiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, OaiError> {
        DataCaller::from_request_parts(parts, state)
            .await
            .map(|DataCaller(p)| OaiCaller(p))
            .map_err(OaiError::from)
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, OaiError> {
    let bytes = body.map_err(|rej| {
        let status = rej.status();
        let mut e = OaiError::invalid("body", rej.body_text());
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            e.status = status;
        }
        e
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| OaiError::invalid("body", format!("invalid request body: {e}")))
}

/// The refusals both completion routes share, in OpenAI's error shape.
#[allow(dead_code)] // only read by the OpenAPI document
#[derive(utoipa::IntoResponses)]
enum SubmitErrors {
    #[response(
        status = 400,
        description = "INVALID_PARAMS / DEADLINE_UNMET in `error.code`"
    )]
    Invalid(OpenAiError),
    #[response(status = 401, description = "UNAUTHENTICATED")]
    Unauthenticated(OpenAiError),
    #[response(status = 403, description = "FORBIDDEN: needs a data key")]
    Forbidden(OpenAiError),
    #[response(status = 404, description = "`model_not_found`")]
    ModelNotFound(OpenAiError),
    #[response(status = 429, description = "ADMISSION_REJECT (queue full or tenant quota), with Retry-After",
        headers(("Retry-After" = u64, description = "seconds")))]
    Rejected(OpenAiError),
    #[response(status = 503, description = "POOL_UNREADY / POOL_UNAVAILABLE")]
    Unready(OpenAiError),
}

/// `POST /v1/chat/completions` (OpenAI dialect), mapped onto a `chat` task.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai",
    request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "`chat.completion`, or with `stream: true` a text/event-stream of `chat.completion.chunk` data events ending with `data: [DONE]`", body = ChatCompletion),
        SubmitErrors,
    ),
    security(("api_key" = [])))]
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    OaiCaller(caller): OaiCaller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OaiError> {
    let req: ChatCompletionRequest = parse_body(body)?;
    let pool = resolve_model(&state, &req.model)?;
    let task = map::chat_task(&state.pools[pool], &req)?;
    run(state, &caller, task, Dialect::Chat, req.model, &req.common).await
}

/// `POST /v1/completions` (OpenAI dialect), mapped onto a `completion` task.
#[utoipa::path(post, path = "/v1/completions", tag = "openai",
    request_body = CompletionRequest,
    responses(
        (status = 200, description = "`text_completion`, or with `stream: true` a text/event-stream of `text_completion` data events ending with `data: [DONE]`", body = Completion),
        SubmitErrors,
    ),
    security(("api_key" = [])))]
pub async fn completions(
    State(state): State<Arc<AppState>>,
    OaiCaller(caller): OaiCaller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OaiError> {
    let req: CompletionRequest = parse_body(body)?;
    let pool = resolve_model(&state, &req.model)?;
    let task = map::completion_task(&state.pools[pool], &req)?;
    run(
        state,
        &caller,
        task,
        Dialect::Completion,
        req.model,
        &req.common,
    )
    .await
}

/// `GET /v1/models`: one entry per configured pool.
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses(
        (status = 200, description = "The configured pools' models", body = ModelList),
        (status = 401, description = "UNAUTHENTICATED", body = OpenAiError),
    ),
    security(("api_key" = [])))]
pub async fn models(
    State(state): State<Arc<AppState>>,
    OaiCaller(_caller): OaiCaller,
) -> axum::Json<ModelList> {
    axum::Json(ModelList {
        object: "list".into(),
        data: state
            .pools
            .iter()
            .map(|p| Model {
                id: p.model_ref(),
                object: "model".into(),
                created: 0,
                owned_by: "llama-orch".into(),
                pool_id: p.id.clone(),
                engine: p.engine.as_str().into(),
            })
            .collect(),
    })
}

/// `model` names a pool's model_ref, or a pool id.
fn resolve_model(state: &AppState, model: &str) -> Result<usize, OaiError> {
    state
        .pools
        .iter()
        .position(|p| p.model_ref() == model)
        .or_else(|| state.pools.iter().position(|p| p.id == model))
        .ok_or_else(|| OaiError::model_not_found(model))
}

/// Submits through OrchQueue v1's admission and answers from the task's event log.
async fn run(
    state: Arc<AppState>,
    caller: &Principal,
    task: TaskRequest,
    dialect: Dialect,
    model: String,
    common: &api_types::openai::OaiCommon,
) -> Result<Response, OaiError> {
    let accepted = state.submit(caller, task)?;
    let task = state.task_for(&accepted.task_id, &caller.tenant)?;
    let include_usage = common
        .stream_options
        .as_ref()
        .is_some_and(|o| o.include_usage);
    let enc = Encoder::new(dialect, &task.id, model, include_usage, task.prompt_tokens);
    let events = task_events(state.clone(), task);
    if common.stream {
        let keepalive = Duration::from_millis(state.cfg.server.sse_keepalive_ms);
        Ok(Sse::new(sse_stream(enc, events))
            .keep_alive(KeepAlive::new().interval(keepalive))
            .into_response())
    } else {
        collect(enc, events).await
    }
}

fn sse_stream(
    mut enc: Encoder,
    events: impl Stream<Item = StreamEvent> + Send + 'static,
) -> impl Stream<Item = Result<Event, std::convert::Infallible>> + Send + 'static {
    let head = futures::stream::iter(enc.head());
    head.chain(events.flat_map(move |ev| futures::stream::iter(enc.encode(&ev))))
        .map(|data| Ok(Event::default().data(data)))
}

async fn collect(
    mut enc: Encoder,
    events: impl Stream<Item = StreamEvent>,
) -> Result<Response, OaiError> {
    let mut events = std::pin::pin!(events);
    while let Some(ev) = events.next().await {
        if let StreamEvent::Error(e) = &ev {
            return Err(OaiError::from(e));
        }
        enc.accumulate(&ev);
    }
    Ok(match enc.dialect() {
        Dialect::Chat => axum::Json::<ChatCompletion>(enc.chat_completion()).into_response(),
        Dialect::Completion => axum::Json::<Completion>(enc.completion()).into_response(),
    })
}

/// The task's events from the first, ending after the terminal one; the task is canceled if
/// the stream is dropped before that (client gone) and no reader comes back within
/// `server.stream_resume_grace_ms`.
fn task_events(state: Arc<AppState>, task: Arc<Task>) -> impl Stream<Item = StreamEvent> + Send {
    let reader = task.attach();
    let guard = DisconnectGuard { state, task };
    // `reader` first: dropped before the guard runs, so the guard does not count this reader.
    let init = (reader, guard, 0usize, VecDeque::<StreamEvent>::new(), false);
    futures::stream::unfold(
        init,
        |(reader, guard, mut next, mut pending, mut done)| async move {
            loop {
                if let Some(ev) = pending.pop_front() {
                    return Some((ev, (reader, guard, next, pending, done)));
                }
                if done {
                    return None;
                }
                let (events, terminal) = guard.task.events_from(next);
                next += events.len();
                pending.extend(events);
                done = terminal;
                if pending.is_empty() && !done {
                    reader.wait_beyond(next).await;
                }
            }
        },
    )
}
