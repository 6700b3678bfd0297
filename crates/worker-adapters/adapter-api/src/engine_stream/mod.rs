//! Pieces every HTTP engine adapter that streams SSE needs (TGI, vLLM): [`EngineEvents`], the
//! bounded `data:` payloads of a response body, and [`JobTable`], the slot and job
//! bookkeeping behind `generate` and `cancel`; [`clip`] bounds engine text that reaches
//! clients. Engine-neutral: the engine's name only appears in error messages.

mod sse;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use api_types::ErrorCode;
use futures::StreamExt;
use tokio::sync::{Notify, watch};

pub use sse::{MAX_EVENT_BYTES, SseError, SseParser};

use crate::WorkerError;

/// The HTTP client of an engine adapter: 5 s connect timeout, no Nagle delay (tokens are
/// small writes).
pub fn http_client() -> Result<reqwest::Client, WorkerError> {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| WorkerError::new(ErrorCode::Internal, format!("http client: {e}")))
}

/// How much of an engine's error message reaches clients.
pub const MAX_ENGINE_MESSAGE_BYTES: usize = 512;

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
pub fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The SSE data payloads of an engine's streamed response body, bounded in size. A body that
/// breaks, ends inside an event or sends an event over [`MAX_EVENT_BYTES`] is WORKER_RESET.
pub struct EngineEvents {
    engine: &'static str,
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    parser: SseParser,
    ready: VecDeque<String>,
    ended: bool,
}

impl EngineEvents {
    /// `engine` names the engine in error messages (`"tgi"`, `"vllm"`).
    pub fn new(engine: &'static str, resp: reqwest::Response) -> Self {
        EngineEvents {
            engine,
            body: resp.bytes_stream().boxed(),
            parser: SseParser::default(),
            ready: Default::default(),
            ended: false,
        }
    }

    /// The next event's data; `None` at a clean end of the body.
    pub async fn next(&mut self) -> Option<Result<String, WorkerError>> {
        let engine = self.engine;
        loop {
            if let Some(d) = self.ready.pop_front() {
                return Some(Ok(d));
            }
            if self.ended {
                return None;
            }
            match self.body.next().await {
                None => {
                    self.ended = true;
                    if self.parser.pending() {
                        return Some(Err(WorkerError::new(
                            ErrorCode::WorkerReset,
                            format!("{engine} stream ended inside an event"),
                        )));
                    }
                    return None;
                }
                Some(Err(e)) => {
                    self.ended = true;
                    return Some(Err(WorkerError::new(
                        ErrorCode::WorkerReset,
                        format!("{engine} stream broke: {e}"),
                    )));
                }
                Some(Ok(b)) => match self.parser.push(&b) {
                    Ok(evs) => self.ready.extend(evs),
                    Err(SseError::TooLarge) => {
                        self.ended = true;
                        return Some(Err(WorkerError::new(
                            ErrorCode::WorkerReset,
                            format!("{engine} sent an event larger than {MAX_EVENT_BYTES} bytes"),
                        )));
                    }
                },
            }
        }
    }
}

struct Job {
    cancel: Arc<Notify>,
    done: watch::Receiver<bool>,
}

type Jobs = Arc<Mutex<HashMap<String, Job>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The jobs an adapter runs now and its in-flight count: [`JobTable::claim`] admits a job
/// within a slot limit, [`JobTable::cancel`] wakes its relay and waits until its slot is free.
#[derive(Default)]
pub struct JobTable {
    jobs: Jobs,
    in_flight: Arc<AtomicU32>,
}

/// A claimed job: `cancel` is notified by [`JobTable::cancel`]; dropping the guard releases
/// the job's record and in-flight count (and lets a waiting cancel return), however its stream
/// ends.
pub struct JobGuard {
    pub cancel: Arc<Notify>,
    jobs: Jobs,
    in_flight: Arc<AtomicU32>,
    job_id: String,
    done: watch::Sender<bool>,
}

impl Drop for JobGuard {
    fn drop(&mut self) {
        lock(&self.jobs).remove(&self.job_id);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        let _ = self.done.send(true);
    }
}

impl JobTable {
    /// Jobs running now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Admits `job_id` if fewer than `limit` jobs run: INVALID_PARAMS for a job id already
    /// running, REPLICA_EXHAUSTED (`all {limit} {slots} are busy`) when all slots are taken.
    pub fn claim(&self, job_id: &str, limit: u32, slots: &str) -> Result<JobGuard, WorkerError> {
        let mut jobs = lock(&self.jobs);
        if jobs.contains_key(job_id) {
            return Err(WorkerError::new(
                ErrorCode::InvalidParams,
                "job_id already running",
            ));
        }
        if self.in_flight.load(Ordering::Acquire) >= limit {
            return Err(WorkerError::new(
                ErrorCode::ReplicaExhausted,
                format!("all {limit} {slots} are busy"),
            ));
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let (done_tx, done_rx) = watch::channel(false);
        let cancel = Arc::new(Notify::new());
        jobs.insert(
            job_id.to_string(),
            Job {
                cancel: cancel.clone(),
                done: done_rx,
            },
        );
        Ok(JobGuard {
            cancel,
            jobs: self.jobs.clone(),
            in_flight: self.in_flight.clone(),
            job_id: job_id.to_string(),
            done: done_tx,
        })
    }

    /// Wakes the job's relay and returns once its guard is dropped (the relay drops the
    /// response, closing the connection, before that); at once for an unknown job.
    pub async fn cancel(&self, job_id: &str) {
        let job = lock(&self.jobs)
            .get(job_id)
            .map(|j| (j.cancel.clone(), j.done.clone()));
        let Some((cancel, mut done)) = job else {
            return;
        };
        cancel.notify_one();
        let _ = done.wait_for(|d| *d).await;
    }
}
