//! The public API as a client sees it: submit (`POST /v1/tasks`), the task's SSE stream,
//! pool health, and `/metrics`.

use std::time::Duration;

use api_types::{PoolHealth, StreamEvent, TokenEvent};
use eventsource_stream::Eventsource;
use futures::StreamExt;

use crate::{HarnessError, Result, Scrape};

/// A client of one running server, with its data and control keys.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub data_key: String,
    pub control_key: String,
    http: reqwest::Client,
}

/// A task's stream read to its terminal event.
#[derive(Debug, Clone)]
pub struct Stream {
    pub task_id: String,
    pub tokens: Vec<TokenEvent>,
    pub end: Option<api_types::EndEvent>,
    pub error: Option<api_types::StreamErrorEvent>,
}

impl Stream {
    /// The streamed text (token texts in order).
    pub fn text(&self) -> String {
        self.tokens.iter().map(|t| t.t.as_str()).collect()
    }
}

fn http_err(what: &str) -> impl FnOnce(reqwest::Error) -> HarnessError + '_ {
    move |err| HarnessError::Http {
        what: what.into(),
        err,
    }
}

impl Client {
    pub fn new(base: &str, data_key: &str, control_key: &str) -> Client {
        Client {
            base: base.into(),
            data_key: data_key.into(),
            control_key: control_key.into(),
            http: reqwest::Client::new(),
        }
    }

    /// `POST /v1/tasks`; Ok(task_id) on 202, `Status` with the error envelope otherwise.
    pub async fn submit(&self, body: &serde_json::Value) -> Result<String> {
        let what = "POST /v1/tasks";
        let r = self
            .http
            .post(format!("{}/v1/tasks", self.base))
            .bearer_auth(&self.data_key)
            .json(body)
            .send()
            .await
            .map_err(http_err(what))?;
        let status = r.status().as_u16();
        let text = r.text().await.map_err(http_err(what))?;
        if status != 202 {
            return Err(HarnessError::Status {
                what: what.into(),
                status,
                body: text,
            });
        }
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| HarnessError::Protocol {
                what: what.into(),
                detail: format!("{e}: {text}"),
            })?;
        v["task_id"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| HarnessError::Protocol {
                what: what.into(),
                detail: format!("no task_id in {text}"),
            })
    }

    /// `GET /v1/tasks/{id}/stream` read to `end` or `error`, checking the framing on the way:
    /// `started` first, token indices from 0 without gaps.
    pub async fn stream(&self, task_id: &str, within: Duration) -> Result<Stream> {
        let what = format!("stream of {task_id}");
        let r = self
            .http
            .get(format!("{}/v1/tasks/{task_id}/stream", self.base))
            .bearer_auth(&self.data_key)
            .send()
            .await
            .map_err(http_err(&what))?;
        if !r.status().is_success() {
            let status = r.status().as_u16();
            return Err(HarnessError::Status {
                what,
                status,
                body: r.text().await.unwrap_or_default(),
            });
        }
        let mut events = r.bytes_stream().eventsource();
        let mut out = Stream {
            task_id: task_id.into(),
            tokens: vec![],
            end: None,
            error: None,
        };
        let read = async {
            let mut first = true;
            while let Some(ev) = events.next().await {
                let ev = ev.map_err(|e| HarnessError::Protocol {
                    what: what.clone(),
                    detail: e.to_string(),
                })?;
                let parsed = StreamEvent::parse(&ev.event, &ev.data).map_err(|detail| {
                    HarnessError::Protocol {
                        what: what.clone(),
                        detail,
                    }
                })?;
                if first && !matches!(parsed, StreamEvent::Started(_)) {
                    return Err(HarnessError::Protocol {
                        what: what.clone(),
                        detail: format!("first event is `{}`, not `started`", ev.event),
                    });
                }
                first = false;
                match parsed {
                    StreamEvent::Token(t) => {
                        if t.i as usize != out.tokens.len() {
                            return Err(HarnessError::Protocol {
                                what: what.clone(),
                                detail: format!(
                                    "token index {} after {} tokens",
                                    t.i,
                                    out.tokens.len()
                                ),
                            });
                        }
                        out.tokens.push(t);
                    }
                    StreamEvent::End(e) => {
                        out.end = Some(e);
                        return Ok(());
                    }
                    StreamEvent::Error(e) => {
                        out.error = Some(e);
                        return Ok(());
                    }
                    StreamEvent::Started(_) | StreamEvent::Metrics(_) => {}
                }
            }
            Err(HarnessError::Protocol {
                what: what.clone(),
                detail: "stream closed without `end` or `error`".into(),
            })
        };
        match tokio::time::timeout(within, read).await {
            Ok(r) => r.map(|()| out),
            Err(_) => Err(HarnessError::Timeout {
                what,
                secs: within.as_secs(),
                log: String::new(),
            }),
        }
    }

    /// `GET /v1/pools/{id}/health` with the control key.
    pub async fn pool_health(&self, pool_id: &str) -> Result<PoolHealth> {
        let what = format!("GET /v1/pools/{pool_id}/health");
        let r = self
            .http
            .get(format!("{}/v1/pools/{pool_id}/health", self.base))
            .bearer_auth(&self.control_key)
            .send()
            .await
            .map_err(http_err(&what))?;
        let status = r.status().as_u16();
        let text = r.text().await.map_err(http_err(&what))?;
        if status != 200 {
            return Err(HarnessError::Status {
                what,
                status,
                body: text,
            });
        }
        serde_json::from_str(&text).map_err(|e| HarnessError::Protocol {
            what,
            detail: format!("{e}: {text}"),
        })
    }

    /// Polls pool health until `cond` holds (every 200 ms), returning the health that did.
    pub async fn wait_health(
        &self,
        pool_id: &str,
        what: &str,
        within: Duration,
        cond: impl Fn(&PoolHealth) -> bool,
    ) -> Result<PoolHealth> {
        let start = std::time::Instant::now();
        loop {
            let h = self.pool_health(pool_id).await?;
            if cond(&h) {
                return Ok(h);
            }
            if start.elapsed() > within {
                return Err(HarnessError::Timeout {
                    what: format!("{what} (last health: {h:?})"),
                    secs: within.as_secs(),
                    log: String::new(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `GET /metrics` (no key).
    pub async fn metrics(&self) -> Result<Scrape> {
        let what = "GET /metrics";
        let r = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .map_err(http_err(what))?;
        let text = r.text().await.map_err(http_err(what))?;
        Ok(Scrape::parse(&text))
    }
}
