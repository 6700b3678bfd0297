//! [`LlamaCppAdapter`]: the worker contract over llama.cpp's `llama-server` native HTTP API
//! (SPEC §5). `/completion` with `stream: true` for tokens, `/health` for loading vs ready,
//! `/props` for context size, slot count and build (→ engine_version), `/slots` for busy slots.
//!
//! The adapter assigns each job an explicit `id_slot`, so that it knows which engine slot a job
//! occupies: cancel closes the job's HTTP connection (llama-server stops decoding on close) and
//! then waits until `/slots` shows that slot idle again before reporting the cancel done.
//!
//! [`LlamaCppAdapter::metrics`] scrapes llama-server's Prometheus `/metrics` (started with
//! `--metrics`) into typed [`EngineMetrics`] for the pool manager to fold into its replica
//! metrics.
//!
//! Depends on adapter-api only; the engine-native API never leaves this crate.

mod metrics;
mod relay;
mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapter_api::{
    GenerateRequest, WorkerAdapter, WorkerError, WorkerHealth, WorkerProperties, WorkerState,
    WorkerStream,
};
use api_types::ErrorCode;
use tokio::sync::watch;

pub use metrics::EngineMetrics;
pub use wire::{CompletionChunk, EngineError, Props, Slot};

/// Tunables of the adapter.
#[derive(Debug, Clone)]
pub struct LlamaCppConfig {
    /// Base URL of llama-server, e.g. `http://127.0.0.1:8081`.
    pub base_url: String,
    pub model_ref: String,
    /// Sampling temperature; llama.cpp's default when `None`.
    pub temperature: Option<f32>,
    /// How long cancel waits for `/slots` to show the slot idle.
    pub cancel_confirm_timeout: Duration,
}

impl LlamaCppConfig {
    pub fn new(base_url: impl Into<String>, model_ref: impl Into<String>) -> Self {
        LlamaCppConfig {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            model_ref: model_ref.into(),
            temperature: None,
            cancel_confirm_timeout: Duration::from_secs(5),
        }
    }
}

struct Job {
    slot: u32,
    conn: Arc<relay::JobConn>,
    done: watch::Receiver<bool>,
}

#[derive(Default)]
struct SlotTable {
    /// Slot count from `/props`; 0 until known.
    total: u32,
    busy: Vec<bool>,
    jobs: HashMap<String, Job>,
}

pub struct LlamaCppAdapter {
    cfg: LlamaCppConfig,
    http: reqwest::Client,
    table: Arc<Mutex<SlotTable>>,
}

fn transport(e: reqwest::Error) -> WorkerError {
    WorkerError::new(
        ErrorCode::WorkerReset,
        format!("llama-server unreachable: {e}"),
    )
}

fn lock(t: &Mutex<SlotTable>) -> std::sync::MutexGuard<'_, SlotTable> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

impl LlamaCppAdapter {
    pub fn new(cfg: LlamaCppConfig) -> Result<Self, WorkerError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            // llama-server closes the connection after every streamed /completion although it
            // answers `Keep-Alive`; reusing such a connection fails now and then ("connection
            // closed before message completed", seen by llorch-bench). A loopback connect costs
            // ~0.1 ms, so no pooling.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| WorkerError::new(ErrorCode::Internal, format!("http client: {e}")))?;
        Ok(LlamaCppAdapter {
            cfg,
            http,
            table: Arc::new(Mutex::new(SlotTable::default())),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.cfg.base_url)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, WorkerError> {
        let resp = self
            .http
            .get(self.url(path))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(wire::error_from_body(status.as_u16(), &body));
        }
        serde_json::from_slice(&body).map_err(|e| {
            WorkerError::new(
                ErrorCode::WorkerReset,
                format!("unexpected llama-server {path} response: {e}"),
            )
        })
    }

    pub async fn props(&self) -> Result<Props, WorkerError> {
        let p: Props = self.get_json("/props").await?;
        let mut t = lock(&self.table);
        if t.total != p.total_slots {
            t.total = p.total_slots;
            t.busy.resize(p.total_slots as usize, false);
        }
        Ok(p)
    }

    /// Scrapes llama-server's `/metrics` (404 when it runs without `--metrics`).
    pub async fn metrics(&self) -> Result<EngineMetrics, WorkerError> {
        let resp = self
            .http
            .get(self.url("/metrics"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(wire::error_from_body(status.as_u16(), &body));
        }
        Ok(EngineMetrics::parse(&String::from_utf8_lossy(&body)))
    }

    /// Renders a chat with the model's own template (`POST /apply-template`).
    pub async fn apply_template(
        &self,
        messages: &[api_types::ChatMessage],
    ) -> Result<String, WorkerError> {
        let resp = self
            .http
            .post(self.url("/apply-template"))
            .json(&wire::ApplyTemplate { messages })
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(wire::error_from_body(status.as_u16(), &body));
        }
        serde_json::from_slice::<wire::Applied>(&body)
            .map(|a| a.prompt)
            .map_err(|e| {
                WorkerError::new(
                    ErrorCode::WorkerReset,
                    format!("unexpected llama-server /apply-template response: {e}"),
                )
            })
    }

    pub async fn slots(&self) -> Result<Vec<Slot>, WorkerError> {
        self.get_json("/slots").await
    }

    /// Picks a free slot for a job, learning the slot count first if needed.
    async fn claim_slot(
        &self,
        job_id: &str,
        conn: Arc<relay::JobConn>,
        done: watch::Receiver<bool>,
    ) -> Result<u32, WorkerError> {
        if lock(&self.table).total == 0 {
            self.props().await?;
        }
        let mut t = lock(&self.table);
        if t.jobs.contains_key(job_id) {
            return Err(WorkerError::new(
                ErrorCode::InvalidParams,
                "job_id already running",
            ));
        }
        let Some(slot) = t.busy.iter().position(|b| !b) else {
            return Err(WorkerError::new(
                ErrorCode::ReplicaExhausted,
                "all llama-server slots are busy",
            ));
        };
        t.busy[slot] = true;
        t.jobs.insert(
            job_id.to_string(),
            Job {
                slot: slot as u32,
                conn,
                done,
            },
        );
        Ok(slot as u32)
    }
}

/// Releases the adapter's slot record when a job's producer ends, however it ends.
pub(crate) struct SlotRelease {
    table: Arc<Mutex<SlotTable>>,
    job_id: String,
    slot: u32,
    done: watch::Sender<bool>,
}

impl Drop for SlotRelease {
    fn drop(&mut self) {
        let mut t = lock(&self.table);
        if let Some(b) = t.busy.get_mut(self.slot as usize) {
            *b = false;
        }
        t.jobs.remove(&self.job_id);
        drop(t);
        let _ = self.done.send(true);
    }
}

#[async_trait::async_trait]
impl WorkerAdapter for LlamaCppAdapter {
    async fn health(&self) -> Result<WorkerHealth, WorkerError> {
        let resp = self
            .http
            .get(self.url("/health"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        Ok(match status {
            200 => WorkerHealth::unsupervised(WorkerState::Ready, None),
            503 => WorkerHealth::unsupervised(
                WorkerState::Loading,
                Some(wire::error_from_body(status, &body).message),
            ),
            _ => WorkerHealth::unsupervised(
                WorkerState::Error,
                Some(wire::error_from_body(status, &body).message),
            ),
        })
    }

    async fn properties(&self) -> Result<WorkerProperties, WorkerError> {
        let p = self.props().await?;
        let busy = self
            .slots()
            .await?
            .iter()
            .filter(|s| s.is_processing)
            .count() as u32;
        Ok(WorkerProperties {
            engine: "llamacpp".into(),
            engine_version: format!("llamacpp-{}", p.build_info),
            model_ref: self.cfg.model_ref.clone(),
            ctx_max: p.default_generation_settings.n_ctx,
            slots_total: p.total_slots,
            slots_busy: busy,
            // Cancel frees the slot, but a preempted decode cannot be resumed: the client
            // would lose the tokens it already has. Not declared until that changes.
            interruptible_decode: false,
        })
    }

    async fn generate(&self, req: GenerateRequest) -> Result<WorkerStream, WorkerError> {
        let conn = Arc::new(relay::JobConn::default());
        let (done_tx, done_rx) = watch::channel(false);
        let slot = self.claim_slot(&req.job_id, conn.clone(), done_rx).await?;
        let release = SlotRelease {
            table: self.table.clone(),
            job_id: req.job_id.clone(),
            slot,
            done: done_tx,
        };
        let rendered;
        let prompt = match &req.messages {
            Some(m) => {
                rendered = self.apply_template(m).await?;
                rendered.as_str()
            }
            None => req.prompt.as_str(),
        };
        let body = wire::CompletionRequest {
            prompt,
            n_predict: req.max_tokens,
            stream: true,
            seed: req.seed,
            id_slot: slot,
            // Reusing a slot's KV cache across requests changes logits slightly in llama.cpp;
            // strict determinism turns it off.
            cache_prompt: !req.strict_determinism,
            temperature: self.cfg.temperature,
            top_p: None,
            top_k: None,
            min_p: None,
            repeat_penalty: None,
            stop: &[],
            grammar: None,
            json_schema: None,
        }
        .with_sampling(req.sampling.as_ref());
        let resp = self
            .http
            .post(self.url("/completion"))
            .json(&body)
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.bytes().await.unwrap_or_default();
            return Err(wire::error_from_body(status.as_u16(), &body));
        }
        Ok(relay::relay(resp, conn, release))
    }

    async fn cancel(&self, job_id: &str) -> Result<(), WorkerError> {
        let job = {
            let t = lock(&self.table);
            t.jobs
                .get(job_id)
                .map(|j| (j.slot, j.conn.clone(), j.done.clone()))
        };
        let Some((slot, conn, mut done)) = job else {
            return Ok(());
        };
        conn.close();
        let _ = done.wait_for(|d| *d).await;
        // Our side dropped the connection; confirm llama-server let go of the slot too.
        let deadline = Instant::now() + self.cfg.cancel_confirm_timeout;
        loop {
            let slots = self.slots().await?;
            let busy = slots.iter().any(|s| s.id == slot && s.is_processing);
            if !busy {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(WorkerError::new(
                    ErrorCode::WorkerReset,
                    format!("llama-server slot {slot} still processing after cancel"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
