//! A deterministic engine stand-in for development, tests and benchmarks. It implements
//! [`WorkerAdapter`] in-process; `llorch-adapterd --engine mock` serves it over the worker protocol.
//!
//! Output is a pure function of (seed, prompt, index): the same request always yields the same
//! tokens, which the determinism tests rely on. Faults (engine errors, stalls, disconnects)
//! are injected by configuration. Depends only on adapter-api; it is not a real engine and
//! never claims to be one (engine = "mock" everywhere it is reported).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapter_api::{
    GenerateRequest, WorkerAdapter, WorkerError, WorkerEvent, WorkerHealth, WorkerProperties,
    WorkerState, WorkerStream,
};
use api_types::{EndEvent, ErrorCode, FinishReason, TokenEvent};
use tokio::sync::{mpsc, watch};

/// Behaviour of a mock replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MockBehaviour {
    pub slots: u32,
    pub ctx_max: u32,
    /// 0 = as fast as possible.
    pub tokens_per_second: u32,
    pub first_token_latency: Duration,
    pub error_after_tokens: Option<u32>,
    pub stall_after_tokens: Option<u32>,
    pub disconnect_after_tokens: Option<u32>,
    /// Declares interruptible decode (the hook for hard preemption; off by default because no
    /// real engine adapter declares it yet).
    pub interruptible: bool,
    /// Reports engine_version `mock-<version>+b<N>`: another engine build.
    pub engine_build: Option<u32>,
}

impl Default for MockBehaviour {
    fn default() -> Self {
        MockBehaviour {
            slots: 4,
            ctx_max: 4096,
            tokens_per_second: 0,
            first_token_latency: Duration::ZERO,
            error_after_tokens: None,
            stall_after_tokens: None,
            disconnect_after_tokens: None,
            interruptible: false,
            engine_build: None,
        }
    }
}

pub const ENGINE_VERSION: &str = concat!("mock-", env!("CARGO_PKG_VERSION"));

const VOCAB: &[&str] = &[
    "the", "quiet", "river", "moon", "over", "stone", "light", "falls", "autumn", "wind", "a",
    "crane", "sings", "morning", "frost", "on", "old", "pine", "silver", "cloud", "drifts", "past",
    "mountain", "snow", "evening", "bell", "rings", "soft", "rain", "petals", "and", "dusk",
];

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The mock's chat template: how it turns `messages` into a prompt (a real engine applies the
/// model's own template).
pub fn mock_chat_prompt(messages: &[api_types::ChatMessage]) -> String {
    let mut s: String = messages
        .iter()
        .map(|m| format!("<|{}|>{}\n", m.role.as_str(), m.content))
        .collect();
    s.push_str("<|assistant|>");
    s
}

/// The text the mock's tokens are a function of: the prompt (or the rendered chat), plus the
/// sampling settings when they differ from profile v1's defaults, so that a test can see that
/// a request's sampling reached the engine. Tokens are [`mock_token`]`(seed, this, i)`.
pub fn effective_prompt(req: &GenerateRequest) -> String {
    let mut p = match &req.messages {
        Some(m) => mock_chat_prompt(m),
        None => req.prompt.clone(),
    };
    if let Some(s) = &req.sampling {
        let d = api_types::defaults_v1::TEMPERATURE;
        let default = s.temperature == d
            && s.top_p == api_types::defaults_v1::TOP_P
            && s.top_k == api_types::defaults_v1::TOP_K
            && s.min_p == api_types::defaults_v1::MIN_P
            && s.repeat_penalty == api_types::defaults_v1::REPEAT_PENALTY
            && s.grammar.is_none()
            && s.json_schema.is_none();
        if !default {
            p.push_str(&format!(
                "\u{0}sampling t={} p={} k={} m={} r={} g={:?} j={:?}",
                s.temperature,
                s.top_p,
                s.top_k,
                s.min_p,
                s.repeat_penalty,
                s.grammar,
                s.json_schema
            ));
        }
    }
    p
}

/// The `i`-th token the mock produces for (seed, prompt).
pub fn mock_token(seed: u64, prompt: &str, i: u32) -> String {
    let r = splitmix64(seed ^ fnv1a(prompt) ^ splitmix64(u64::from(i)));
    format!(" {}", VOCAB[(r % VOCAB.len() as u64) as usize])
}

struct Job {
    cancel: Arc<tokio::sync::Notify>,
    done: watch::Receiver<bool>,
}

pub struct MockAdapter {
    behaviour: MockBehaviour,
    model_ref: String,
    busy: Arc<AtomicU32>,
    jobs: Arc<Mutex<HashMap<String, Job>>>,
}

impl MockAdapter {
    pub fn new(model_ref: impl Into<String>, behaviour: MockBehaviour) -> Self {
        MockAdapter {
            behaviour,
            model_ref: model_ref.into(),
            busy: Arc::new(AtomicU32::new(0)),
            jobs: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn slots_busy(&self) -> u32 {
        self.busy.load(Ordering::SeqCst)
    }
}

/// Frees the slot and forgets the job however the producer ends.
struct SlotGuard {
    busy: Arc<AtomicU32>,
    jobs: Arc<Mutex<HashMap<String, Job>>>,
    job_id: String,
    done: watch::Sender<bool>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.busy.fetch_sub(1, Ordering::SeqCst);
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.remove(&self.job_id);
        }
        let _ = self.done.send(true);
    }
}

#[async_trait::async_trait]
impl WorkerAdapter for MockAdapter {
    async fn health(&self) -> Result<WorkerHealth, WorkerError> {
        Ok(WorkerHealth::unsupervised(WorkerState::Ready, None))
    }

    async fn properties(&self) -> Result<WorkerProperties, WorkerError> {
        Ok(WorkerProperties {
            engine: "mock".into(),
            engine_version: match self.behaviour.engine_build {
                Some(b) => format!("{ENGINE_VERSION}+b{b}"),
                None => ENGINE_VERSION.into(),
            },
            model_ref: self.model_ref.clone(),
            ctx_max: self.behaviour.ctx_max,
            slots_total: self.behaviour.slots,
            slots_busy: self.slots_busy(),
            interruptible_decode: self.behaviour.interruptible,
        })
    }

    async fn generate(&self, req: GenerateRequest) -> Result<WorkerStream, WorkerError> {
        let b = self.behaviour;
        // Claim a slot atomically; an over-committed engine says so instead of queueing.
        let claimed = self
            .busy
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < b.slots).then_some(n + 1)
            });
        if claimed.is_err() {
            return Err(WorkerError::new(
                ErrorCode::ReplicaExhausted,
                "all mock slots are busy",
            ));
        }
        let cancel = Arc::new(tokio::sync::Notify::new());
        let (done_tx, done_rx) = watch::channel(false);
        {
            let mut jobs = self
                .jobs
                .lock()
                .map_err(|_| WorkerError::new(ErrorCode::Internal, "mock state poisoned"))?;
            if jobs.contains_key(&req.job_id) {
                self.busy.fetch_sub(1, Ordering::SeqCst);
                return Err(WorkerError::new(
                    ErrorCode::InvalidParams,
                    "job_id already running",
                ));
            }
            jobs.insert(
                req.job_id.clone(),
                Job {
                    cancel: cancel.clone(),
                    done: done_rx,
                },
            );
        }
        let guard = SlotGuard {
            busy: self.busy.clone(),
            jobs: self.jobs.clone(),
            job_id: req.job_id.clone(),
            done: done_tx,
        };
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(produce(b, req, tx, cancel, guard));
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn cancel(&self, job_id: &str) -> Result<(), WorkerError> {
        let job = {
            let jobs = self
                .jobs
                .lock()
                .map_err(|_| WorkerError::new(ErrorCode::Internal, "mock state poisoned"))?;
            jobs.get(job_id).map(|j| (j.cancel.clone(), j.done.clone()))
        };
        // Unknown job: already finished, nothing to free.
        if let Some((cancel, mut done)) = job {
            cancel.notify_one();
            let _ = done.wait_for(|d| *d).await;
        }
        Ok(())
    }
}

type Tx = mpsc::Sender<Result<WorkerEvent, WorkerError>>;

/// Waits `d`, unless the consumer goes away or the job is canceled (returns false then).
async fn wait(d: Duration, tx: &Tx, cancel: &tokio::sync::Notify) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d), if !d.is_zero() => true,
        _ = std::future::ready(()), if d.is_zero() => true,
        _ = tx.closed() => false,
        _ = cancel.notified() => false,
    }
}

async fn produce(
    b: MockBehaviour,
    req: GenerateRequest,
    tx: Tx,
    cancel: Arc<tokio::sync::Notify>,
    guard: SlotGuard,
) {
    let start = Instant::now();
    if !wait(b.first_token_latency, &tx, &cancel).await {
        return;
    }
    let gap = if b.tokens_per_second == 0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(1.0 / f64::from(b.tokens_per_second))
    };
    let prompt = effective_prompt(&req);
    let stops = req
        .sampling
        .as_ref()
        .map(|s| s.stop.clone())
        .unwrap_or_default();
    // Text emitted so far, searched for stop sequences (only when there are some).
    let mut text = String::new();
    let mut finish = FinishReason::Length;
    let mut emitted = 0;
    for i in 0..req.max_tokens {
        if b.error_after_tokens == Some(i) {
            let _ = tx
                .send(Err(WorkerError::new(
                    ErrorCode::Internal,
                    "mock engine: injected decode error",
                )))
                .await;
            return;
        }
        if b.disconnect_after_tokens == Some(i) {
            return;
        }
        if b.stall_after_tokens == Some(i) {
            wait(Duration::from_secs(u64::MAX / 4), &tx, &cancel).await;
            return;
        }
        if i > 0 && !wait(gap, &tx, &cancel).await {
            return;
        }
        let mut t = mock_token(req.seed, &prompt, i);
        let mut stopped = false;
        if !stops.is_empty() {
            // Like llama.cpp: the stream ends before the first stop sequence, which is not
            // emitted; the part of this token before it still is.
            let before = text.len();
            text.push_str(&t);
            if let Some(at) = stops.iter().filter_map(|s| text.find(s.as_str())).min() {
                t = text[before.min(at)..at].to_string();
                stopped = true;
            }
        }
        if !t.is_empty() {
            let tok = TokenEvent { t, i: emitted };
            emitted += 1;
            tokio::select! {
                r = tx.send(Ok(WorkerEvent::Token(tok))) => if r.is_err() { return },
                _ = cancel.notified() => return,
            }
        }
        if stopped {
            finish = FinishReason::Stop;
            break;
        }
    }
    let end = EndEvent {
        tokens_out: emitted,
        decode_ms: start.elapsed().as_millis() as u64,
        finish_reason: Some(finish),
        prompt_tokens: Some(prompt.split_whitespace().count() as u32),
    };
    // Like a real engine's slot, ours is free once `end` is observable: a caller that saw
    // `end` may immediately start the next job.
    drop(guard);
    let _ = tx.send(Ok(WorkerEvent::End(end))).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn req(id: &str, n: u32) -> GenerateRequest {
        GenerateRequest {
            job_id: id.into(),
            prompt: "hello".into(),
            max_tokens: n,
            seed: 7,
            sampler_profile_version: None,
            strict_determinism: true,
            ..Default::default()
        }
    }

    async fn collect(s: WorkerStream) -> Vec<Result<WorkerEvent, WorkerError>> {
        s.collect().await
    }

    #[tokio::test]
    async fn same_request_same_tokens_then_end() {
        let m = MockAdapter::new("m", MockBehaviour::default());
        let a = collect(m.generate(req("a", 5)).await.unwrap()).await;
        let b = collect(m.generate(req("b", 5)).await.unwrap()).await;
        assert_eq!(a.len(), 6);
        assert_eq!(a, b);
        assert!(matches!(
            a[5],
            Ok(WorkerEvent::End(EndEvent { tokens_out: 5, .. }))
        ));
    }

    /// A stop sequence ends the stream before its first match with `finish_reason: stop`;
    /// chats are rendered by the mock's template, and sampling changes the tokens.
    #[tokio::test]
    async fn stop_sequences_chat_and_sampling() {
        let m = MockAdapter::new("m", MockBehaviour::default());
        let all: Vec<String> = (0..6).map(|i| mock_token(7, "hello", i)).collect();
        let text = all.concat();
        let stop = all[2].clone();
        let mut r = req("s", 6);
        r.sampling = Some(api_types::Sampling {
            profile: "v1".into(),
            temperature: api_types::defaults_v1::TEMPERATURE,
            top_p: api_types::defaults_v1::TOP_P,
            top_k: api_types::defaults_v1::TOP_K,
            min_p: api_types::defaults_v1::MIN_P,
            repeat_penalty: api_types::defaults_v1::REPEAT_PENALTY,
            stop: vec![stop.clone()],
            grammar: None,
            json_schema: None,
        });
        let got = collect(m.generate(r.clone()).await.unwrap()).await;
        let toks: String = got
            .iter()
            .filter_map(|e| match e {
                Ok(WorkerEvent::Token(t)) => Some(t.t.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(toks, text[..text.find(&stop).unwrap()]);
        assert!(matches!(
            got.last(),
            Some(Ok(WorkerEvent::End(EndEvent {
                finish_reason: Some(FinishReason::Stop),
                ..
            })))
        ));
        // Non-default sampling changes the tokens; default sampling does not.
        let mut hot = r.clone();
        hot.sampling.as_mut().unwrap().stop.clear();
        assert_eq!(effective_prompt(&hot), "hello");
        hot.sampling.as_mut().unwrap().temperature = 0.0;
        assert_ne!(effective_prompt(&hot), "hello");
        let chat = GenerateRequest {
            prompt: String::new(),
            messages: Some(vec![api_types::ChatMessage {
                role: api_types::ChatRole::User,
                content: "hi".into(),
            }]),
            ..req("c", 2)
        };
        assert_eq!(effective_prompt(&chat), "<|user|>hi\n<|assistant|>");
    }

    #[tokio::test]
    async fn slots_are_bounded_and_freed_on_drop() {
        let m = MockAdapter::new(
            "m",
            MockBehaviour {
                slots: 1,
                stall_after_tokens: Some(0),
                ..Default::default()
            },
        );
        let s = m.generate(req("a", 5)).await.unwrap();
        let e = m.generate(req("b", 5)).await.err().unwrap();
        assert_eq!(e.code, ErrorCode::ReplicaExhausted);
        drop(s);
        for _ in 0..100 {
            if m.slots_busy() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("slot not freed after the stream was dropped");
    }

    #[tokio::test]
    async fn cancel_returns_after_slot_is_free() {
        let m = MockAdapter::new(
            "m",
            MockBehaviour {
                stall_after_tokens: Some(2),
                ..Default::default()
            },
        );
        let _s = m.generate(req("a", 5)).await.unwrap();
        assert_eq!(m.slots_busy(), 1);
        m.cancel("a").await.unwrap();
        assert_eq!(m.slots_busy(), 0);
        m.cancel("unknown").await.unwrap();
    }

    #[tokio::test]
    async fn injected_faults() {
        let m = MockAdapter::new(
            "m",
            MockBehaviour {
                error_after_tokens: Some(2),
                ..Default::default()
            },
        );
        let ev = collect(m.generate(req("a", 5)).await.unwrap()).await;
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[2].as_ref().unwrap_err().code, ErrorCode::Internal);
        let m = MockAdapter::new(
            "m",
            MockBehaviour {
                disconnect_after_tokens: Some(1),
                ..Default::default()
            },
        );
        let ev = collect(m.generate(req("a", 5)).await.unwrap()).await;
        assert_eq!(ev.len(), 1, "stream ends without End: the worker died");
    }
}
