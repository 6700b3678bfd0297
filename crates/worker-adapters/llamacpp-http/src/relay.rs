//! One job's stream: llama-server's SSE turned into worker events as the consumer pulls them.
//!
//! There is no task or channel between the engine's socket and the consumer (issue 15: one
//! task wakeup and one channel send fewer per token). Cancel still works while the consumer
//! holds the stream without polling it (the self-test does; so does adapterd while its client
//! is slow): the connection lives in a [`JobConn`] that [`JobConn::close`] empties, which drops it (llama-server
//! stops decoding when its client goes away) and releases the slot record, then wakes the
//! consumer, whose next poll ends the stream.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use adapter_api::{WorkerError, WorkerEvent, WorkerStream};
use api_types::{EndEvent, ErrorCode, TokenEvent};
use eventsource_stream::Eventsource;
use futures::task::AtomicWaker;
use futures::{Stream, StreamExt};

use crate::{SlotRelease, wire};

type Events = Pin<Box<dyn Stream<Item = Result<WorkerEvent, WorkerError>> + Send>>;

/// A job's live connection, shared by its stream and [`crate::LlamaCppAdapter::cancel`].
#[derive(Default)]
pub(crate) struct JobConn {
    events: Mutex<Option<Events>>,
    consumer: AtomicWaker,
}

impl JobConn {
    fn lock(&self) -> MutexGuard<'_, Option<Events>> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops the connection now, whoever holds the stream; its next poll answers `None`.
    pub(crate) fn close(&self) {
        let conn = self.lock().take();
        drop(conn); // outside the lock: dropping releases the slot record
        self.consumer.wake();
    }
}

struct Relay(Arc<JobConn>);

impl Stream for Relay {
    type Item = Result<WorkerEvent, WorkerError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.consumer.register(cx.waker());
        let mut events = self.0.lock();
        let Some(inner) = events.as_mut() else {
            return Poll::Ready(None);
        };
        let next = inner.as_mut().poll_next(cx);
        // The job is over with its last event, whether or not the consumer polls again (or
        // drops the stream): the connection and the slot record go now.
        if matches!(
            next,
            Poll::Ready(None | Some(Err(_)) | Some(Ok(WorkerEvent::End(_))))
        ) {
            let ended = events.take();
            drop(events);
            drop(ended);
        }
        next
    }
}

impl Drop for Relay {
    /// A consumer that stops early lets go of the engine at once.
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The stream ends after `stop`'s `End`, after an error, when the engine's stream ends
/// without `stop` (the consumer sees WORKER_RESET), or when the job is canceled.
pub(crate) fn relay(
    resp: reqwest::Response,
    conn: Arc<JobConn>,
    release: SlotRelease,
) -> WorkerStream {
    struct State<S> {
        events: S,
        i: u32,
        /// `stop` came with text: the token went out, its `End` follows.
        end: Option<EndEvent>,
        finished: bool,
        _release: SlotRelease,
    }
    let state = State {
        events: resp.bytes_stream().eventsource(),
        i: 0,
        end: None,
        finished: false,
        _release: release,
    };
    let events = futures::stream::unfold(state, |mut r| async move {
        if let Some(end) = r.end.take() {
            r.finished = true;
            return Some((Ok(WorkerEvent::End(end)), r));
        }
        if r.finished {
            return None;
        }
        loop {
            let item = match r.events.next().await? {
                Err(e) => Err(WorkerError::new(
                    ErrorCode::WorkerReset,
                    format!("llama-server stream broke: {e}"),
                )),
                Ok(ev) => match wire::parse_chunk(&ev.data) {
                    Err(e) => Err(e),
                    Ok(mut chunk) => {
                        let end = if chunk.stop {
                            Some(EndEvent {
                                tokens_out: r.i + u32::from(!chunk.content.is_empty()),
                                finish_reason: chunk.finish_reason(),
                                prompt_tokens: chunk.tokens_evaluated,
                                decode_ms: chunk
                                    .timings
                                    .as_ref()
                                    .map(|t| t.predicted_ms.round() as u64)
                                    .unwrap_or(0),
                            })
                        } else {
                            None
                        };
                        if chunk.content.is_empty() {
                            match end {
                                Some(end) => {
                                    r.finished = true;
                                    Ok(WorkerEvent::End(end))
                                }
                                None => continue,
                            }
                        } else {
                            let i = r.i;
                            r.i += 1;
                            r.end = end;
                            Ok(WorkerEvent::Token(TokenEvent {
                                t: std::mem::take(&mut chunk.content),
                                i,
                            }))
                        }
                    }
                },
            };
            r.finished |= item.is_err();
            return Some((item, r));
        }
    });
    *conn.lock() = Some(Box::pin(events));
    Box::pin(Relay(conn))
}
