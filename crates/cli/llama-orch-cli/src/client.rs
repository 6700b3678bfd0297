//! Typed HTTP client of the OrchQueue v1 endpoints the CLI uses.

use std::fmt;
use std::time::Duration;

use api_types::{SessionInfo, StreamEvent, TaskAccepted, TaskRequest, sse_event};
use eventsource_stream::{EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Response, Url};

use crate::args::ApiKey;
use crate::error::{CliError, body_snippet};

/// Most bytes of an error response body that are read.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Bound on connection set-up; requests themselves have no overall timeout (streams are long).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A task's events as the CLI reads them.
pub type EventStream = std::pin::Pin<Box<dyn Stream<Item = Result<StreamEvent, CliError>> + Send>>;

/// The answer to [`Client::submit_streaming`].
pub enum Submitted {
    /// 202: admitted; the stream is read with a second request.
    Accepted(TaskAccepted),
    /// 200: the task's stream itself. `accepted` is what the headers say (the queue position
    /// arrives with the `started` event).
    Streaming {
        accepted: TaskAccepted,
        events: EventStream,
    },
}

/// Client of one orchestratord instance.
#[derive(Clone)]
pub struct Client {
    base: Url,
    api_key: Option<ApiKey>,
    http: reqwest::Client,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Client {
    /// `base_url` is the server root, e.g. `http://127.0.0.1:8080` (a path prefix is kept).
    pub fn new(base_url: &str, api_key: Option<ApiKey>) -> Result<Client, CliError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("llorch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(CliError::Transport)?;
        Client::with_http(base_url, api_key, http)
    }

    /// Like [`Client::new`] with a caller-configured `reqwest::Client`.
    pub fn with_http(
        base_url: &str,
        api_key: Option<ApiKey>,
        http: reqwest::Client,
    ) -> Result<Client, CliError> {
        let base = Url::parse(base_url)
            .map_err(|e| CliError::Usage(format!("invalid --url `{base_url}`: {e}")))?;
        if base.scheme() == "https" {
            // The workspace builds reqwest without TLS (default-features = false).
            return Err(CliError::Usage(format!(
                "invalid --url `{base_url}`: https is not supported by this build (no TLS); \
                 use http://, e.g. through a local TLS-terminating proxy"
            )));
        }
        if base.scheme() != "http" || base.cannot_be_a_base() {
            return Err(CliError::Usage(format!(
                "invalid --url `{base_url}`: expected an http:// URL"
            )));
        }
        if !base.username().is_empty() || base.password().is_some() {
            // Credentials in the URL would end up in error messages; use --api-key instead.
            return Err(CliError::Usage(
                "invalid --url: credentials in the URL are not supported; use --api-key".into(),
            ));
        }
        Ok(Client {
            base,
            api_key,
            http,
        })
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    pub(crate) fn api_key(&self) -> Option<&ApiKey> {
        self.api_key.as_ref()
    }

    /// The same client (key, connection pool) for another server, e.g. the catalog's.
    pub fn rebase(&self, base_url: &str) -> Result<Client, CliError> {
        Client::with_http(base_url, self.api_key.clone(), self.http.clone())
    }

    /// `POST /v1/tasks` → 202 [`TaskAccepted`].
    pub async fn submit(&self, req: &TaskRequest) -> Result<TaskAccepted, CliError> {
        let resp = self
            .send(self.request(Method::POST, &["v1", "tasks"])?.json(req))
            .await?;
        parse_json(resp).await
    }

    /// `POST /v1/tasks` with `Accept: text/event-stream`: admitted and streamed in one round
    /// trip. A server that answers 202 instead (an older one) gets the two-step flow: the
    /// caller follows [`Submitted::Accepted`]'s stream URL.
    pub async fn submit_streaming(&self, req: &TaskRequest) -> Result<Submitted, CliError> {
        let resp = self
            .send(
                self.request(Method::POST, &["v1", "tasks"])?
                    .header(ACCEPT, "text/event-stream")
                    .json(req),
            )
            .await?;
        let ct = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !ct.starts_with("text/event-stream") {
            return parse_json(resp).await.map(Submitted::Accepted);
        }
        let h = resp.headers();
        let header_u64 = |name: &str| h.get(name)?.to_str().ok()?.parse::<u64>().ok();
        let stream_url = h
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let task_id = stream_url
            .strip_prefix("/v1/tasks/")
            .and_then(|r| r.strip_suffix("/stream"))
            .map(String::from)
            .or_else(|| req.task_id.clone())
            .ok_or_else(|| {
                CliError::Protocol("the stream answer has no task Location header".into())
            })?;
        let accepted = TaskAccepted {
            task_id,
            queue_position: 0,
            predicted_start_ms: 0,
            backoff_ms: 0,
            stream_url,
            tokens_budget_remaining: header_u64("x-tokens-budget-remaining"),
            time_budget_remaining_ms: header_u64("x-time-budget-remaining-ms"),
        };
        // A drop of this response's stream resumes on GET …/stream with Last-Event-ID.
        let first: IdEvents = Box::pin(sse_items(resp.bytes_stream()));
        let events = Box::pin(self.resumable(&accepted.task_id, Some(first)));
        Ok(Submitted::Streaming { accepted, events })
    }

    /// `GET /v1/tasks/{id}/stream`: the task's events, ending after the first `end` or `error`
    /// event. A connection that breaks (or closes before a terminal event) is reopened with
    /// `Last-Event-ID`, so the events continue without gap or duplicate (up to
    /// [`RESUME_ATTEMPTS`] tries in a row without an event in between). An HTTP error, or a
    /// break that cannot be resumed, is yielded as the last item. Unknown event names are
    /// skipped (the contract may add events).
    pub fn stream(
        &self,
        task_id: &str,
    ) -> impl Stream<Item = Result<StreamEvent, CliError>> + Send + 'static {
        self.resumable(task_id, None)
    }

    /// The task's events from `first` (an open stream) or a new connection, reopened with
    /// `Last-Event-ID` when it breaks (see [`Client::stream`]).
    fn resumable(
        &self,
        task_id: &str,
        first: Option<IdEvents>,
    ) -> impl Stream<Item = Result<StreamEvent, CliError>> + Send + 'static {
        let resume = Resume {
            client: self.clone(),
            task_id: task_id.to_string(),
            events: first,
            last_id: None,
            received: false,
            failures: 0,
            done: false,
        };
        futures::stream::unfold(resume, |mut r| async move {
            let item = r.next().await?;
            Some((item, r))
        })
    }

    /// One connection to the task's stream, after `last_id` when given.
    async fn open_stream(
        &self,
        task_id: &str,
        last_id: Option<&str>,
    ) -> Result<IdEvents, CliError> {
        let mut rb = self
            .request(Method::GET, &["v1", "tasks", task_id, "stream"])?
            .header(ACCEPT, "text/event-stream");
        if let Some(id) = last_id {
            rb = rb.header(LAST_EVENT_ID, id);
        }
        let resp = check(rb.send().await.map_err(CliError::Transport)?).await?;
        if let Some(ct) = resp.headers().get(CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or_default();
            if !ct.starts_with("text/event-stream") {
                return Err(CliError::Protocol(format!(
                    "stream has content type `{ct}`, expected text/event-stream"
                )));
            }
        }
        Ok(Box::pin(sse_items(resp.bytes_stream())))
    }

    /// `POST /v1/tasks/{id}/cancel` → 204.
    pub async fn cancel(&self, task_id: &str) -> Result<(), CliError> {
        self.send(self.request(Method::POST, &["v1", "tasks", task_id, "cancel"])?)
            .await?;
        Ok(())
    }

    /// `GET /v1/sessions/{id}` → [`SessionInfo`].
    pub async fn session_get(&self, session_id: &str) -> Result<SessionInfo, CliError> {
        let resp = self
            .send(self.request(Method::GET, &["v1", "sessions", session_id])?)
            .await?;
        parse_json(resp).await
    }

    /// `DELETE /v1/sessions/{id}` → 204.
    pub async fn session_delete(&self, session_id: &str) -> Result<(), CliError> {
        self.send(self.request(Method::DELETE, &["v1", "sessions", session_id])?)
            .await?;
        Ok(())
    }

    /// Builds a request for `base/segments...`, each segment percent-encoded.
    pub(crate) fn request(
        &self,
        method: Method,
        segments: &[&str],
    ) -> Result<RequestBuilder, CliError> {
        let url = self.url(segments)?;
        let mut rb = self.http.request(method, url);
        if let Some(key) = &self.api_key {
            let mut value =
                reqwest::header::HeaderValue::try_from(format!("Bearer {}", key.expose()))
                    .map_err(|_| {
                        CliError::Usage("the API key is not a valid header value".into())
                    })?;
            value.set_sensitive(true);
            rb = rb.header(AUTHORIZATION, value);
        }
        Ok(rb)
    }

    fn url(&self, segments: &[&str]) -> Result<Url, CliError> {
        if segments.iter().any(|s| s.is_empty()) {
            return Err(CliError::Usage("ids must not be empty".into()));
        }
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.path_segments_mut()
            .map_err(|()| CliError::Usage(format!("invalid --url `{}`", self.base)))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    pub(crate) async fn send(&self, rb: RequestBuilder) -> Result<Response, CliError> {
        check(rb.send().await.map_err(CliError::Transport)?).await
    }
}

/// Passes 2xx responses through; turns others into [`CliError::Api`] (envelope body) or
/// [`CliError::Status`] (anything else).
pub(crate) async fn check(resp: Response) -> Result<Response, CliError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let backoff_ms = backoff_from_headers(resp.headers());
    let body = read_capped(resp, MAX_ERROR_BODY).await;
    let status = status.as_u16();
    Err(
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
        },
    )
}

/// Reads at most `cap` bytes of a body; a broken body just ends early.
async fn read_capped(mut resp: Response, cap: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = cap.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= cap {
            break;
        }
    }
    buf
}

pub(crate) async fn parse_json<T: serde::de::DeserializeOwned>(
    resp: Response,
) -> Result<T, CliError> {
    let body = resp.bytes().await.map_err(CliError::Transport)?;
    serde_json::from_slice(&body).map_err(|e| {
        CliError::Protocol(format!(
            "unexpected response body ({e}): {}",
            body_snippet(&body)
        ))
    })
}

/// Backoff suggested by a response: `X-Backoff-Ms`, else `Retry-After` in (integer) seconds.
pub fn backoff_from_headers(headers: &HeaderMap) -> Option<u64> {
    let num = |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
    num(api_types::BACKOFF_MS_HEADER)
        .or_else(|| num(RETRY_AFTER.as_str()).map(|s| s.saturating_mul(1000)))
}

/// Most times in a row a broken stream is reopened without an event received in between.
pub const RESUME_ATTEMPTS: u32 = 5;
/// Wait before the n-th reopen in a row: (n - 1) × this (the first is at once).
const RESUME_BACKOFF: Duration = Duration::from_millis(200);
const LAST_EVENT_ID: &str = "last-event-id";

/// Task events with their SSE `id:`, from one connection.
type IdEvents =
    std::pin::Pin<Box<dyn Stream<Item = Result<(String, StreamEvent), CliError>> + Send>>;

/// The state of [`Client::stream`]: the open connection and where to resume.
struct Resume {
    client: Client,
    task_id: String,
    events: Option<IdEvents>,
    /// `id:` of the last event received.
    last_id: Option<String>,
    /// An event was received (without an id one cannot resume without duplicates).
    received: bool,
    failures: u32,
    done: bool,
}

impl Resume {
    async fn next(&mut self) -> Option<Result<StreamEvent, CliError>> {
        if self.done {
            return None;
        }
        loop {
            let broke = match self.events.as_mut() {
                None => match self
                    .client
                    .open_stream(&self.task_id, self.last_id.as_deref())
                    .await
                {
                    Ok(events) => {
                        self.events = Some(events);
                        continue;
                    }
                    // Only a reconnect is retried; the first open's error is the answer.
                    Err(e @ CliError::Transport(_)) if self.failures > 0 => e,
                    Err(e) => return self.finish(e),
                },
                Some(events) => match events.next().await {
                    Some(Ok((id, ev))) => {
                        self.received = true;
                        self.last_id = (!id.is_empty()).then_some(id);
                        self.failures = 0;
                        self.done = ev.is_terminal();
                        return Some(Ok(ev));
                    }
                    Some(Err(e @ CliError::Transport(_))) => e,
                    Some(Err(e)) => return self.finish(e),
                    None => CliError::Protocol(
                        "the stream closed before an `end` or `error` event".into(),
                    ),
                },
            };
            self.events = None;
            let resumable = self.last_id.is_some() || !self.received;
            if !resumable || self.failures >= RESUME_ATTEMPTS {
                return self.finish(broke);
            }
            tokio::time::sleep(RESUME_BACKOFF * self.failures).await;
            self.failures += 1;
        }
    }

    fn finish(&mut self, e: CliError) -> Option<Result<StreamEvent, CliError>> {
        self.done = true;
        self.events = None;
        Some(Err(e))
    }
}

/// Parses an SSE byte stream into task events, stopping after the first terminal event.
pub fn sse_events<S, B, E>(
    bytes: S,
) -> impl Stream<Item = Result<StreamEvent, CliError>> + Send + 'static
where
    S: Stream<Item = Result<B, E>> + Send + 'static,
    B: AsRef<[u8]> + Send + 'static,
    E: Into<CliError> + Send + 'static,
{
    let items = Box::pin(sse_items(bytes));
    futures::stream::unfold(Some(items), |state| async move {
        let mut items = state?;
        let item = match items.next().await {
            None => Err(CliError::Protocol(
                "the stream closed before an `end` or `error` event".into(),
            )),
            Some(item) => item.map(|(_, ev)| ev),
        };
        let done = !matches!(&item, Ok(ev) if !ev.is_terminal());
        Some((item, (!done).then_some(items)))
    })
}

/// Parses an SSE byte stream into task events with their `id:` (empty when absent), stopping
/// after the first terminal event or the first error; ends early if the bytes end.
fn sse_items<S, B, E>(
    bytes: S,
) -> impl Stream<Item = Result<(String, StreamEvent), CliError>> + Send + 'static
where
    S: Stream<Item = Result<B, E>> + Send + 'static,
    B: AsRef<[u8]> + Send + 'static,
    E: Into<CliError> + Send + 'static,
{
    let events = Box::pin(bytes.eventsource());
    futures::stream::unfold(Some(events), |state| async move {
        let mut events = state?;
        loop {
            let item = match events.next().await {
                None => return None,
                Some(Err(EventStreamError::Transport(e))) => Err(e.into()),
                Some(Err(EventStreamError::Utf8(e))) => {
                    Err(CliError::Protocol(format!("stream is not UTF-8: {e}")))
                }
                Some(Err(EventStreamError::Parser(e))) => {
                    Err(CliError::Protocol(format!("malformed event stream: {e}")))
                }
                Some(Ok(ev)) => {
                    if !is_known_event(&ev.event) {
                        continue;
                    }
                    StreamEvent::parse(&ev.event, &ev.data)
                        .map(|parsed| (ev.id, parsed))
                        .map_err(CliError::Protocol)
                }
            };
            let done = match &item {
                Ok((_, ev)) => ev.is_terminal(),
                Err(_) => true,
            };
            return Some((item, if done { None } else { Some(events) }));
        }
    })
}

fn is_known_event(name: &str) -> bool {
    use sse_event::*;
    [STARTED, TOKEN, METRICS, END, ERROR].contains(&name)
}

impl From<reqwest::Error> for CliError {
    fn from(e: reqwest::Error) -> Self {
        CliError::Transport(e)
    }
}

impl From<std::convert::Infallible> for CliError {
    fn from(e: std::convert::Infallible) -> Self {
        match e {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    fn chunks(
        parts: &[&'static str],
    ) -> impl Stream<Item = Result<&'static [u8], Infallible>> + Send + 'static {
        let v: Vec<Result<&'static [u8], Infallible>> =
            parts.iter().map(|p| Ok(p.as_bytes())).collect();
        futures::stream::iter(v)
    }

    async fn collect(parts: &[&'static str]) -> Vec<Result<StreamEvent, CliError>> {
        sse_events(chunks(parts)).collect().await
    }

    #[tokio::test]
    async fn parses_events_split_across_chunks_and_stops_at_end() {
        let items = collect(&[
            ": keep-alive\n\n",
            "event: started\ndata: {\"queue_position\":2,\"predicted_start_ms\":40}\n\n",
            "event: tok",
            "en\ndata: {\"t\":\"Hi\",\"i\":0}\n\nevent: bogus\ndata: {}\n\n",
            "event: end\ndata: {\"tokens_out\":1,\"decode_ms\":5}\n\n",
            "event: token\ndata: {\"t\":\"after end\",\"i\":1}\n\n",
        ])
        .await;
        let names: Vec<_> = items
            .iter()
            .map(|r| r.as_ref().map(|e| e.name()).ok())
            .collect();
        assert_eq!(names, vec![Some("started"), Some("token"), Some("end")]);
    }

    #[tokio::test]
    async fn truncated_stream_is_a_protocol_error() {
        let items = collect(&["event: token\ndata: {\"t\":\"a\",\"i\":0}\n\n"]).await;
        assert_eq!(items.len(), 2);
        assert!(matches!(items[1], Err(CliError::Protocol(_))));
    }

    #[tokio::test]
    async fn bad_data_is_a_protocol_error_and_ends_the_stream() {
        let items = collect(&[
            "event: token\ndata: {\"t\":1}\n\n",
            "event: end\ndata: {\"tokens_out\":1,\"decode_ms\":5}\n\n",
        ])
        .await;
        assert_eq!(items.len(), 1);
        assert!(matches!(&items[0], Err(CliError::Protocol(m)) if m.contains("token")));
    }

    #[test]
    fn backoff_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(backoff_from_headers(&h), None);
        h.insert(RETRY_AFTER, "2".parse().expect("header"));
        assert_eq!(backoff_from_headers(&h), Some(2000));
        h.insert("x-backoff-ms", "1500".parse().expect("header"));
        assert_eq!(backoff_from_headers(&h), Some(1500));
        h.insert("x-backoff-ms", "soon".parse().expect("header"));
        assert_eq!(backoff_from_headers(&h), Some(2000));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("header"),
        );
        assert_eq!(backoff_from_headers(&h), None);
    }

    #[test]
    fn urls_are_built_from_segments() {
        let c = Client::new("http://h:1/prefix/", None).expect("client");
        assert_eq!(
            c.url(&["v1", "tasks"]).expect("url").as_str(),
            "http://h:1/prefix/v1/tasks"
        );
        let c = Client::new("http://h:1", None).expect("client");
        assert_eq!(
            c.url(&["v1", "sessions", "a/b c"]).expect("url").as_str(),
            "http://h:1/v1/sessions/a%2Fb%20c"
        );
        assert!(c.url(&["v1", "sessions", ""]).is_err());
    }

    #[test]
    fn bad_base_urls_are_usage_errors() {
        for u in [
            "",
            "127.0.0.1:8080",
            "ftp://h/",
            "https://h/",
            "http://user:pw@h/",
        ] {
            assert!(
                matches!(Client::new(u, None), Err(CliError::Usage(_))),
                "{u}"
            );
        }
    }

    #[test]
    fn debug_redacts_the_key() {
        let c = Client::new("http://h:1", Some(ApiKey::new("sekrit"))).expect("client");
        let d = format!("{c:?}");
        assert!(!d.contains("sekrit") && d.contains("redacted"), "{d}");
    }
}
