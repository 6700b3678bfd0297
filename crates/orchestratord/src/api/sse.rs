//! The OrchQueue SSE writer: a task's log as `text/event-stream` bytes.
//!
//! This is the relay's hot path, so it does the least work per token (issue 15): each wakeup
//! takes every event the log has gained since the last one and encodes them straight from the
//! log into one buffer, which goes out as one body frame. A reader that keeps up gets one frame
//! per token; a reader that lags gets many tokens per frame (one write instead of one per
//! token). Token text is JSON-escaped once, from the log's buffer, with no per-event `String`.
//! Keep-alive comments use one timer per stream that is re-armed only when it fires, instead
//! of a timer reset per event.

use std::convert::Infallible;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use api_types::StreamEvent;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use futures::Stream;
use serde::Serialize;
use tokio::time::{Instant, Sleep};

use super::tasks::DisconnectGuard;
use crate::state::AppState;
use crate::task::{LogEvent, LogReader, Task};

/// The task's stream from event `from` as an HTTP response (200, `text/event-stream`).
pub(crate) fn response(state: Arc<AppState>, task: Arc<Task>, from: usize) -> Response {
    let keepalive = Duration::from_millis(state.cfg.server.sse_keepalive_ms);
    let mut resp = Response::new(Body::from_stream(event_stream(
        state, task, from, keepalive,
    )));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

struct Reader {
    log: LogReader,
    // Declared after `log`: dropped after it, so the guard's count of attached readers no
    // longer includes this one.
    guard: DisconnectGuard,
    next: usize,
    done: bool,
    reconnect: Option<Duration>,
    keepalive: Duration,
    /// Fires at most once per `keepalive`; when it does, a comment goes out only if nothing
    /// was written since `last_write`.
    ping: Pin<Box<Sleep>>,
    last_write: Instant,
}

/// The task's events from index `from` (0: the whole stream), each with its index as `id:`,
/// ending after the terminal event. Dropping the stream before that counts as the reader
/// leaving (see [`DisconnectGuard`]).
pub(crate) fn event_stream(
    state: Arc<AppState>,
    task: Arc<Task>,
    from: usize,
    keepalive: Duration,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let now = Instant::now();
    let reader = Reader {
        log: task.attach(),
        reconnect: reconnect_hint(&state),
        guard: DisconnectGuard { state, task },
        next: from,
        done: false,
        keepalive,
        ping: Box::pin(tokio::time::sleep_until(now + keepalive)),
        last_write: now,
    };
    futures::stream::unfold(reader, |mut r| async move {
        loop {
            if r.done {
                return None;
            }
            let mut buf = Vec::new();
            let (n, terminal) = r.guard.task.visit_from(r.next, |id, ev| {
                encode(&mut buf, id, ev, r.reconnect);
            });
            r.next += n;
            r.done = terminal;
            if !buf.is_empty() {
                r.last_write = Instant::now();
                return Some((Ok(Bytes::from(buf)), r));
            }
            tokio::select! {
                () = r.log.wait_beyond(r.next) => {}
                () = &mut r.ping => {
                    let due = r.last_write + r.keepalive;
                    if Instant::now() >= due {
                        r.last_write = Instant::now();
                        r.ping.as_mut().reset(r.last_write + r.keepalive);
                        return Some((Ok(Bytes::from_static(b":\n\n")), r));
                    }
                    r.ping.as_mut().reset(due);
                }
            }
        }
    })
}

/// Half the resume grace window, at most 1 s; none when disconnects cancel at once.
fn reconnect_hint(state: &AppState) -> Option<Duration> {
    let grace = state.cfg.server.stream_resume_grace_ms;
    (grace > 0).then(|| Duration::from_millis((grace / 2).clamp(1, 1000)))
}

#[derive(Serialize)]
struct TokenData<'a> {
    t: &'a str,
    i: u32,
}

/// Appends log entry `id` as one SSE event: `event:`, `data:` (single-line JSON), `id:`, and on
/// the first event `retry:`, telling `EventSource` clients to reconnect after a drop well
/// inside the resume grace window (browsers otherwise wait a few seconds of their own choosing).
fn encode(buf: &mut Vec<u8>, id: usize, ev: LogEvent<'_>, reconnect: Option<Duration>) {
    let name = match ev {
        LogEvent::Token { .. } => api_types::sse_event::TOKEN,
        LogEvent::Other(e) => e.name(),
    };
    buf.extend_from_slice(b"event: ");
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b"\ndata: ");
    // Writing into a Vec cannot fail, and these plain structs always serialize.
    let _ = match ev {
        LogEvent::Token { t, i } => serde_json::to_writer(&mut *buf, &TokenData { t, i }),
        LogEvent::Other(e) => write_data(buf, e),
    };
    let _ = write!(buf, "\nid: {id}\n");
    if let (Some(after), 0) = (reconnect, id) {
        let _ = writeln!(buf, "retry: {}", after.as_millis());
    }
    buf.push(b'\n');
}

fn write_data(buf: &mut Vec<u8>, e: &StreamEvent) -> serde_json::Result<()> {
    match e {
        StreamEvent::Started(e) => serde_json::to_writer(buf, e),
        StreamEvent::Token(e) => serde_json::to_writer(buf, e),
        StreamEvent::Metrics(e) => serde_json::to_writer(buf, e),
        StreamEvent::End(e) => serde_json::to_writer(buf, e),
        StreamEvent::Error(e) => serde_json::to_writer(buf, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer's bytes are exactly what axum's `Sse`/`Event` wrote before (clients and
    /// recorded consumer contracts depend on the framing).
    #[tokio::test]
    async fn framing_matches_axum_event_builder() {
        use axum::response::IntoResponse;
        use axum::response::sse::{Event, Sse};
        let end = StreamEvent::End(api_types::EndEvent {
            tokens_out: 2,
            decode_ms: 5,
            finish_reason: Some(api_types::FinishReason::Stop),
            prompt_tokens: None,
        });
        let tokens = [("a\"b\n\u{1}", 0u32), ("é", 1)];
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        let retry = Some(Duration::from_millis(1000));
        for (t, i) in tokens {
            encode(&mut ours, i as usize, LogEvent::Token { t, i }, retry);
            let ev = StreamEvent::Token(api_types::TokenEvent { t: t.into(), i });
            let e = Event::default()
                .event(ev.name())
                .data(ev.data_json())
                .id(i.to_string());
            theirs.push(if i == 0 {
                e.retry(Duration::from_millis(1000))
            } else {
                e
            });
        }
        encode(&mut ours, 2, LogEvent::Other(&end), retry);
        theirs.push(
            Event::default()
                .event(end.name())
                .data(end.data_json())
                .id("2"),
        );
        let body = Sse::new(futures::stream::iter(
            theirs.into_iter().map(Ok::<_, Infallible>),
        ))
        .into_response()
        .into_body();
        let expect = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            String::from_utf8_lossy(&expect)
        );
    }
}
