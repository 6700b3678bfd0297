//! What a client and an operator see: submitting tasks, reading their streams to a terminal
//! event, pool health (busy slots), `/metrics`.

use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures::StreamExt;

/// How one submitted task ended, as its client saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `end` after `tokens` token events.
    End { tokens: usize },
    /// A typed `error` event (after `tokens` token events).
    Error { code: String, tokens: usize },
    /// Refused before it was accepted, with a typed envelope (status, code).
    Refused { status: u16, code: String },
    /// Anything else: no terminal event, no typed error. Chaos must never produce this.
    Lost { why: String },
}

impl Outcome {
    pub fn is_lost(&self) -> bool {
        matches!(self, Outcome::Lost { .. })
    }
}

/// Submissions resent after a transport error (see [`Api::run_task`]).
pub static SUBMIT_RETRIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A client of orchestratord's (or `llorch serve`'s) public API.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub data_key: String,
    pub control_key: String,
}

impl Api {
    pub fn new(base: &str, data_key: &str, control_key: &str) -> Api {
        Api {
            base: base.to_string(),
            http: reqwest::Client::new(),
            data_key: data_key.into(),
            control_key: control_key.into(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn submit(&self, body: &serde_json::Value) -> Result<reqwest::Response, String> {
        self.http
            .post(self.url("/v1/tasks"))
            .bearer_auth(&self.data_key)
            .json(body)
            .send()
            .await
            .map_err(|e| format!("submit: {e}"))
    }

    pub async fn open_stream(&self, id: &str) -> Result<reqwest::Response, String> {
        self.http
            .get(self.url(&format!("/v1/tasks/{id}/stream")))
            .bearer_auth(&self.data_key)
            .send()
            .await
            .map_err(|e| format!("stream: {e}"))
    }

    /// Submits `body` and reads its stream to the end. A refusal with a typed envelope is
    /// [`Outcome::Refused`]; anything untyped is [`Outcome::Lost`].
    pub async fn run_task(&self, body: &serde_json::Value, per_event: Duration) -> Outcome {
        let id = body["task_id"].as_str().unwrap_or_default().to_string();
        let resp = match self.submit(body).await {
            Ok(r) => r,
            // What a careful HTTP/1.1 client does when a POST on a kept-alive connection
            // fails at the transport level (e.g. the server closed the idle connection as the
            // request went out): resubmit the same task_id once. A task that the first attempt
            // did create answers "already in use" and is followed like an accepted one.
            Err(first) => {
                SUBMIT_RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match self.submit(body).await {
                    Ok(r) if r.status() == 400 => {
                        let env: serde_json::Value = r.json().await.unwrap_or_default();
                        let msg = env["message"].as_str().unwrap_or_default();
                        if msg.contains("already in use") {
                            return self.follow(&id, per_event).await;
                        }
                        return match env["code"].as_str() {
                            Some(code) => Outcome::Refused {
                                status: 400,
                                code: code.into(),
                            },
                            None => Outcome::Lost {
                                why: format!("400 without an envelope: {env}"),
                            },
                        };
                    }
                    Ok(r) => r,
                    Err(second) => {
                        return Outcome::Lost {
                            why: format!("{first}; retry: {second}"),
                        };
                    }
                }
            }
        };
        if resp.status() != 202 {
            return refused(resp).await;
        }
        self.follow(&id, per_event).await
    }

    /// Opens the stream of an accepted task and reads it to a terminal event.
    pub async fn follow(&self, id: &str, per_event: Duration) -> Outcome {
        match self.open_stream(id).await {
            Ok(r) if r.status() == 200 => read_to_terminal(r, per_event).await,
            Ok(r) => match refused(r).await {
                Outcome::Refused { status, code } => Outcome::Lost {
                    why: format!("stream of an accepted task refused: {status} {code}"),
                },
                other => other,
            },
            Err(why) => Outcome::Lost { why },
        }
    }

    pub async fn health(&self, pool: &str) -> api_types::PoolHealth {
        let r = self
            .http
            .get(self.url(&format!("/v1/pools/{pool}/health")))
            .bearer_auth(&self.control_key)
            .send()
            .await
            .expect("GET pool health");
        assert_eq!(r.status(), 200, "pool health of {pool}");
        r.json().await.expect("pool health JSON")
    }

    /// Busy slots over all of the pool's replicas, as the control plane reports them.
    pub async fn busy_slots(&self, pool: &str) -> u32 {
        self.health(pool)
            .await
            .replicas
            .iter()
            .map(|r| r.slots_busy)
            .sum()
    }

    /// Waits up to `limit` for every replica of `pool` to report 0 busy slots; returns the
    /// busy slots left (0 = nothing leaked).
    pub async fn settle_busy(&self, pool: &str, limit: Duration) -> u32 {
        let start = Instant::now();
        loop {
            let busy = self.busy_slots(pool).await;
            if busy == 0 || start.elapsed() > limit {
                return busy;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn replica(&self, pool: &str, id: &str) -> api_types::ReplicaSnapshot {
        self.health(pool)
            .await
            .replicas
            .into_iter()
            .find(|r| r.replica_id == id)
            .unwrap_or_else(|| panic!("replica {pool}/{id} not in pool health"))
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }
}

/// A non-202 answer: typed (error envelope with a code) or lost.
pub async fn refused(resp: reqwest::Response) -> Outcome {
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    match body["code"].as_str() {
        Some(code) => Outcome::Refused {
            status,
            code: code.to_string(),
        },
        None => Outcome::Lost {
            why: format!("status {status} without an error envelope: {body}"),
        },
    }
}

/// An open SSE event stream, as `eventsource_stream` yields it.
pub type Events = std::pin::Pin<
    Box<
        dyn futures::Stream<
                Item = Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<reqwest::Error>,
                >,
            > + Send,
    >,
>;

/// Reads an SSE response until `end` or `error`; each event must come within `per_event`.
pub async fn read_to_terminal(resp: reqwest::Response, per_event: Duration) -> Outcome {
    finish(Box::pin(resp.bytes_stream().eventsource()), 0, per_event).await
}

/// Reads the rest of an open stream (which already delivered `tokens` tokens) to a terminal
/// event; each event must come within `per_event`.
pub async fn finish(mut s: Events, mut tokens: usize, per_event: Duration) -> Outcome {
    loop {
        let ev = match tokio::time::timeout(per_event, s.next()).await {
            Err(_) => {
                return Outcome::Lost {
                    why: format!("no event for {per_event:?} after {tokens} tokens"),
                };
            }
            Ok(None) => {
                return Outcome::Lost {
                    why: format!("stream closed without a terminal event after {tokens} tokens"),
                };
            }
            Ok(Some(Err(e))) => {
                return Outcome::Lost {
                    why: format!("stream broke after {tokens} tokens: {e}"),
                };
            }
            Ok(Some(Ok(ev))) => ev,
        };
        match ev.event.as_str() {
            "token" => tokens += 1,
            "end" => return Outcome::End { tokens },
            "error" => {
                let data: serde_json::Value = serde_json::from_str(&ev.data).unwrap_or_default();
                return Outcome::Error {
                    code: data["code"].as_str().unwrap_or("<none>").to_string(),
                    tokens,
                };
            }
            _ => {}
        }
    }
}

/// Opens the stream of `id` and reads until `n` tokens arrived; returns the open stream.
pub async fn read_tokens(resp: reqwest::Response, n: usize, limit: Duration) -> Events {
    let mut s: Events = Box::pin(resp.bytes_stream().eventsource());
    let mut seen = 0;
    while seen < n {
        let ev = tokio::time::timeout(limit, s.next())
            .await
            .unwrap_or_else(|_| panic!("no token within {limit:?} (seen {seen})"))
            .expect("stream ended before the tokens")
            .expect("SSE parse");
        assert_ne!(ev.event, "error", "error before {n} tokens: {}", ev.data);
        assert_ne!(ev.event, "end", "stream ended before {n} tokens");
        if ev.event == "token" {
            seen += 1;
        }
    }
    s
}

/// Sum of a metric family's samples whose label text contains all `labels`.
pub fn metric_value(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        + 0.0 // an empty sum is -0.0
}

/// Polls `f` every 20 ms until it holds; panics after `limit`. Returns how long it took.
pub async fn until<F, Fut>(what: &str, limit: Duration, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// Tally of outcomes for the report: (ended, typed errors, refused, lost) and the lost reasons.
#[derive(Debug, Default)]
pub struct Tally {
    pub ended: usize,
    pub errors: Vec<String>,
    pub refused: Vec<String>,
    pub lost: Vec<String>,
}

impl Tally {
    pub fn add(&mut self, id: &str, o: &Outcome) {
        match o {
            Outcome::End { .. } => self.ended += 1,
            Outcome::Error { code, .. } => self.errors.push(code.clone()),
            Outcome::Refused { status, code } => self.refused.push(format!("{status} {code}")),
            Outcome::Lost { why } => self.lost.push(format!("{id}: {why}")),
        }
    }
    pub fn total(&self) -> usize {
        self.ended + self.errors.len() + self.refused.len() + self.lost.len()
    }
    /// "12 end, 1 error (WORKER_RESET), 0 refused".
    pub fn summary(&self) -> String {
        let mut codes = self.errors.clone();
        codes.sort();
        codes.dedup();
        let mut refused = self.refused.clone();
        refused.sort();
        refused.dedup();
        format!(
            "{} end, {} typed error {:?}, {} refused {:?}",
            self.ended,
            self.errors.len(),
            codes,
            self.refused.len(),
            refused
        )
    }
}
