//! What a client sees: a reply (status, headers, body, JSON if it parses) and SSE events
//! (name, id, JSON data), read with `eventsource-stream` under a time limit.

use std::pin::Pin;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};

/// A finished HTTP exchange.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
    pub json: serde_json::Value,
}

impl Reply {
    pub async fn read(resp: reqwest::Response) -> anyhow::Result<Reply> {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.context("reading the body")?;
        let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
        Ok(Reply {
            status,
            headers,
            body,
            json,
        })
    }

    /// A header as text; an error names the headers there were.
    pub fn header(&self, name: &str) -> anyhow::Result<&str> {
        self.headers
            .get(name)
            .ok_or_else(|| anyhow!("no {name} header; headers: {:?}", self.headers))?
            .to_str()
            .map_err(|e| anyhow!("{name} header is not text: {e}"))
    }
}

/// One SSE event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: String,
    pub id: String,
    pub data: serde_json::Value,
}

type SseStream = Pin<
    Box<
        dyn Stream<
                Item = Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<reqwest::Error>,
                >,
            > + Send,
    >,
>;

/// A stream being read: the events seen so far and the rest.
pub struct OpenStream {
    rest: SseStream,
    pub seen: Vec<Event>,
}

impl std::fmt::Debug for OpenStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenStream")
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

/// How long a stream may be silent before a journey fails.
pub const STALL: Duration = Duration::from_secs(15);

impl OpenStream {
    /// Opens the stream from a 200 `text/event-stream` response.
    pub fn new(resp: reqwest::Response) -> anyhow::Result<OpenStream> {
        if resp.status() != 200 {
            bail!("stream answered {}", resp.status());
        }
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !ctype.starts_with("text/event-stream") {
            bail!("stream content-type is {ctype:?}");
        }
        Ok(OpenStream {
            rest: Box::pin(resp.bytes_stream().eventsource()),
            seen: Vec::new(),
        })
    }

    /// The next event, `None` at the end of the stream.
    pub async fn next(&mut self) -> anyhow::Result<Option<Event>> {
        let Some(ev) = tokio::time::timeout(STALL, self.rest.next())
            .await
            .map_err(|_| anyhow!("stream silent for {STALL:?} after {:?}", self.names()))?
        else {
            return Ok(None);
        };
        let ev = ev.map_err(|e| anyhow!("SSE framing: {e}"))?;
        let data = serde_json::from_str(&ev.data)
            .with_context(|| format!("event {} data is not JSON: {:?}", ev.event, ev.data))?;
        let ev = Event {
            name: ev.event,
            id: ev.id,
            data,
        };
        self.seen.push(ev.clone());
        Ok(Some(ev))
    }

    /// Reads until `n` events have been seen in all.
    pub async fn read_until(&mut self, n: usize) -> anyhow::Result<()> {
        while self.seen.len() < n {
            if self.next().await?.is_none() {
                bail!("stream ended after {:?}, wanted {n} events", self.names());
            }
        }
        Ok(())
    }

    /// Reads to the end of the stream.
    pub async fn read_to_end(&mut self) -> anyhow::Result<()> {
        while self.next().await?.is_some() {}
        Ok(())
    }

    pub fn names(&self) -> Vec<String> {
        self.seen.iter().map(|e| e.name.clone()).collect()
    }
}
