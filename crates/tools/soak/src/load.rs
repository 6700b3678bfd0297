//! The mixed load: `streams` workers, each looping over submit-and-read-to-end, disconnect
//! mid-stream, cancel mid-stream and replay of an earlier task, until told to stop. Every wait
//! has a timeout: a hang is counted as a failure, not waited out.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;

use crate::server::data_key;

const STALL: Duration = Duration::from_secs(30);

#[derive(Default, Debug)]
pub struct Counts {
    pub completed: AtomicU64,
    pub tokens: AtomicU64,
    pub disconnects: AtomicU64,
    pub cancels: AtomicU64,
    pub replays_ok: AtomicU64,
    pub replays_evicted: AtomicU64,
    pub replays_expired: AtomicU64,
    pub rejected: AtomicU64,
    pub failures: AtomicU64,
}

impl Counts {
    pub fn summary(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "completed {} ({} tokens), disconnects {}, cancels {}, replays {} ok / {} evicted (410) / {} expired (404), 429s {}, failures {}",
            g(&self.completed),
            g(&self.tokens),
            g(&self.disconnects),
            g(&self.cancels),
            g(&self.replays_ok),
            g(&self.replays_evicted),
            g(&self.replays_expired),
            g(&self.rejected),
            g(&self.failures)
        )
    }
}

pub struct Load {
    pub base: String,
    pub http: reqwest::Client,
    pub counts: Counts,
    pub stop: AtomicBool,
    /// Finished tasks (tenant index, id) to replay, newest last, at most 4,096.
    finished: Mutex<VecDeque<(usize, String)>>,
    /// Tokens per task: `max_tokens` cycles through these.
    pub lengths: Vec<u32>,
}

impl Load {
    pub fn new(base: String, lengths: Vec<u32>) -> Arc<Self> {
        Arc::new(Load {
            base,
            http: reqwest::Client::builder()
                .http1_only()
                .build()
                .unwrap_or_default(),
            counts: Counts::default(),
            stop: AtomicBool::new(false),
            finished: Mutex::new(VecDeque::new()),
            lengths,
        })
    }

    fn fail(&self, what: &str) {
        if self.counts.failures.fetch_add(1, Ordering::Relaxed) < 10 {
            eprintln!("soak: failure: {what}");
        }
    }

    /// Runs worker `w` until `stop`.
    pub async fn worker(self: Arc<Self>, w: usize) {
        let mut n: usize = w * 7;
        while !self.stop.load(Ordering::Relaxed) {
            n += 1;
            let tenant = n % crate::server::TENANTS;
            match n % 10 {
                6 => self.disconnect(tenant, n).await,
                7 => self.cancel(tenant, n).await,
                8 => self.replay(n).await,
                _ => self.full(tenant, n).await,
            }
        }
    }

    async fn submit(&self, tenant: usize, n: usize) -> Option<String> {
        let max_tokens = self.lengths[n % self.lengths.len()];
        let body = serde_json::json!({
            "workload": "completion", "model_ref": "mock:tiny", "ctx": max_tokens + 64,
            "prompt": format!("soak {n}"), "max_tokens": max_tokens,
        });
        let r = self
            .http
            .post(format!("{}/v1/tasks", self.base))
            .bearer_auth(data_key(tenant))
            .json(&body)
            .timeout(STALL)
            .send()
            .await;
        match r {
            Ok(r) if r.status() == 202 => {
                let v: serde_json::Value = r.json().await.ok()?;
                v["task_id"].as_str().map(String::from)
            }
            Ok(r) if r.status() == 429 => {
                self.counts.rejected.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
                None
            }
            Ok(r) => {
                self.fail(&format!("submit answered {}", r.status()));
                None
            }
            Err(e) => {
                self.fail(&format!("submit: {e}"));
                None
            }
        }
    }

    async fn open(&self, tenant: usize, id: &str) -> Option<reqwest::Response> {
        let r = self
            .http
            .get(format!("{}/v1/tasks/{id}/stream", self.base))
            .bearer_auth(data_key(tenant))
            .send();
        match tokio::time::timeout(STALL, r).await {
            Ok(Ok(r)) => Some(r),
            Ok(Err(e)) => {
                self.fail(&format!("stream {id}: {e}"));
                None
            }
            Err(_) => {
                self.fail(&format!("stream {id}: no answer within {STALL:?}"));
                None
            }
        }
    }

    /// Reads up to `limit` events; returns (tokens, saw a terminal event).
    async fn read(&self, resp: reqwest::Response, limit: usize) -> Option<(u64, bool)> {
        let mut s = Box::pin(resp.bytes_stream().eventsource());
        let (mut tokens, mut seen) = (0u64, 0usize);
        while seen < limit {
            match tokio::time::timeout(STALL, s.next()).await {
                Ok(Some(Ok(ev))) => {
                    seen += 1;
                    match ev.event.as_str() {
                        "token" => tokens += 1,
                        "end" | "error" => return Some((tokens, true)),
                        _ => {}
                    }
                }
                Ok(None) => return Some((tokens, false)),
                Ok(Some(Err(e))) => {
                    self.fail(&format!("sse: {e}"));
                    return None;
                }
                Err(_) => {
                    self.fail("stream stalled for 30 s");
                    return None;
                }
            }
        }
        Some((tokens, false))
    }

    async fn full(&self, tenant: usize, n: usize) {
        let Some(id) = self.submit(tenant, n).await else {
            return;
        };
        let Some(r) = self.open(tenant, &id).await else {
            return;
        };
        if let Some((t, true)) = self.read(r, usize::MAX).await {
            self.counts.completed.fetch_add(1, Ordering::Relaxed);
            self.counts.tokens.fetch_add(t, Ordering::Relaxed);
            let mut f = self.finished.lock().unwrap_or_else(|p| p.into_inner());
            f.push_back((tenant, id));
            if f.len() > 4096 {
                f.pop_front();
            }
        } else {
            self.fail(&format!("task {id} ended without end/error"));
        }
    }

    async fn disconnect(&self, tenant: usize, n: usize) {
        let Some(id) = self.submit(tenant, n).await else {
            return;
        };
        if let Some(r) = self.open(tenant, &id).await {
            let _ = self.read(r, 5).await;
            self.counts.disconnects.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn cancel(&self, tenant: usize, n: usize) {
        let Some(id) = self.submit(tenant, n).await else {
            return;
        };
        let Some(r) = self.open(tenant, &id).await else {
            return;
        };
        let mut s = Box::pin(r.bytes_stream().eventsource());
        let _ = tokio::time::timeout(STALL, s.next()).await;
        let c = self
            .http
            .post(format!("{}/v1/tasks/{id}/cancel", self.base))
            .bearer_auth(data_key(tenant))
            .timeout(STALL)
            .send()
            .await;
        match c.map(|r| r.status().as_u16()) {
            Ok(204 | 409) => {
                self.counts.cancels.fetch_add(1, Ordering::Relaxed);
            }
            Ok(s) => self.fail(&format!("cancel answered {s}")),
            Err(e) => self.fail(&format!("cancel: {e}")),
        }
        // The stream must end (CANCELED or end), not hang.
        loop {
            match tokio::time::timeout(STALL, s.next()).await {
                Ok(Some(Ok(_))) => {}
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    self.fail(&format!("sse after cancel: {e}"));
                    break;
                }
                Err(_) => {
                    self.fail("stream did not end after cancel");
                    break;
                }
            }
        }
    }

    async fn replay(&self, n: usize) {
        let pick = {
            let f = self.finished.lock().unwrap_or_else(|p| p.into_inner());
            if f.is_empty() {
                None
            } else {
                f.get(n.wrapping_mul(2654435761) % f.len()).cloned()
            }
        };
        let Some((tenant, id)) = pick else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            return;
        };
        let Some(r) = self.open(tenant, &id).await else {
            return;
        };
        match r.status().as_u16() {
            200 => match self.read(r, usize::MAX).await {
                Some((_, true)) => {
                    self.counts.replays_ok.fetch_add(1, Ordering::Relaxed);
                }
                _ => self.fail(&format!("replay of {id} ended early")),
            },
            410 => {
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                if body["code"] == "TASK_EVICTED" {
                    self.counts.replays_evicted.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.fail(&format!("410 without TASK_EVICTED: {body}"));
                }
            }
            404 => {
                self.counts.replays_expired.fetch_add(1, Ordering::Relaxed);
            }
            s => self.fail(&format!("replay answered {s}")),
        }
    }
}
