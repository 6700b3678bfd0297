//! Drives one dispatched task on one replica: relays tokens into the task's log, enforces the
//! watchdog (first-token, idle and wall timeouts → DECODE_TIMEOUT, ORCH-3016), turns worker
//! failures into typed stream errors, and always gives the slot back, after the engine has let
//! go of the job.

use std::sync::Arc;
use std::time::{Duration, Instant};

use adapter_api::{WorkerError, WorkerEvent};
use api_types::{EndEvent, ErrorCode, FinishReason, StreamEvent};
use futures::StreamExt;

use crate::state::{AppState, Queued, Usage};
use crate::task::Task;

enum Outcome {
    /// The replica could not take the job at all (unready, unreachable): retry elsewhere.
    NotStarted(WorkerError),
    /// The engine finished; the task's log is sealed and `end` is appended after release.
    Completed {
        tokens: u32,
        first_token_ms: u64,
        end: EndEvent,
    },
    Failed {
        tokens: u32,
        code: ErrorCode,
    },
    Canceled {
        tokens: u32,
    },
}

pub async fn run(
    state: Arc<AppState>,
    pool_idx: usize,
    replica: usize,
    kv_warm: bool,
    version: String,
    q: Queued,
) {
    let task = q.task.clone();
    let pool = &state.pools[pool_idx];
    let r = &pool.replicas[replica];
    let engine = pool.engine.as_str();
    let labels = [pool.id.as_str(), r.id.as_str(), engine, version.as_str()];
    if !task.mark_running() {
        // Canceled between dequeue and start: nothing reached the engine.
        state.release(pool_idx, replica, Usage::default(), &task);
        return;
    }
    state
        .metrics
        .tasks_started
        .with_label_values(&[
            labels[0],
            labels[1],
            labels[2],
            labels[3],
            task.priority.as_str(),
        ])
        .inc();
    state
        .metrics
        .tokens_in
        .with_label_values(&labels)
        .inc_by(u64::from(task.prompt_tokens));
    task.push(StreamEvent::Metrics(
        state.metrics_event(&task, replica, kv_warm),
    ));
    let dispatched = Instant::now();
    let job_id = q.request.job_id.clone();
    // The adapter this task runs on, even if a reload swaps the replica's adapter meanwhile.
    let adapter = r.adapter();
    let outcome = drive(&state, &task, &adapter, pool_idx, replica, &version, &q).await;
    let decode_ms = dispatched.elapsed().as_millis() as u64;
    let mut sealed_end = None;
    let usage = match outcome {
        Outcome::NotStarted(e) => {
            state.mark_replica_unready(pool_idx, replica, &e.to_string());
            tracing::info!(job_id = %task.id, pool_id = %pool.id, replica_id = %r.id, error = %e, "replica refused the job; requeued");
            state.requeue(pool_idx, replica, q);
            return;
        }
        Outcome::Completed {
            tokens,
            first_token_ms,
            end,
        } => {
            state
                .metrics
                .tasks_completed
                .with_label_values(&labels)
                .inc();
            state
                .metrics
                .decode_duration
                .with_label_values(&[labels[0], labels[2], labels[3]])
                .observe(decode_ms as f64 / 1000.0);
            sealed_end = Some(end);
            Usage {
                tokens_out: tokens,
                completed: true,
                first_token_ms: Some(first_token_ms),
                decode_ms: decode_ms.saturating_sub(first_token_ms),
            }
        }
        Outcome::Failed { tokens, code } => {
            if code == ErrorCode::WorkerReset {
                state.mark_replica_unready(pool_idx, replica, "engine stream broke");
            }
            state
                .metrics
                .tasks_failed
                .with_label_values(&[labels[0], labels[1], labels[2], labels[3], code.as_str()])
                .inc();
            free_engine_slot(&adapter, &job_id).await;
            Usage {
                tokens_out: tokens,
                decode_ms,
                ..Usage::default()
            }
        }
        Outcome::Canceled { tokens } => {
            free_engine_slot(&adapter, &job_id).await;
            Usage {
                tokens_out: tokens,
                decode_ms,
                ..Usage::default()
            }
        }
    };
    tracing::info!(
        job_id = %task.id, tenant = %task.tenant, pool_id = %pool.id, replica_id = %r.id, engine,
        session_id = task.session_id.as_deref().unwrap_or(""), model = %pool.model_ref(),
        queue_time_ms = (dispatched - task.admitted_at).as_millis() as u64, decode_time_ms = decode_ms,
        tokens_in = task.prompt_tokens, tokens_out = usage.tokens_out, "task finished"
    );
    state.release(pool_idx, replica, usage, &task);
    // Only now may the client see `end`: slot, quota and session budget are given back.
    if let Some(end) = sealed_end {
        task.push_sealed_end(end);
    }
}

/// Makes sure the engine no longer works on the job before its slot is reused.
async fn free_engine_slot(adapter: &Arc<dyn adapter_api::WorkerAdapter>, job_id: &str) {
    match tokio::time::timeout(Duration::from_secs(10), adapter.cancel(job_id)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(job_id, error = %e, "engine cancel failed"),
        Err(_) => tracing::warn!(job_id, "engine cancel timed out"),
    }
}

async fn drive(
    state: &AppState,
    task: &Task,
    adapter: &Arc<dyn adapter_api::WorkerAdapter>,
    pool_idx: usize,
    replica: usize,
    version: &str,
    q: &Queued,
) -> Outcome {
    let t = state.cfg.timeouts;
    let pool = &state.pools[pool_idx];
    let engine = pool.engine.as_str();
    let labels = [
        pool.id.as_str(),
        pool.replicas[replica].id.as_str(),
        engine,
        version,
    ];
    let fail = |tokens: u32, code: ErrorCode, msg: String| {
        task.fail(code, msg, Some(engine.to_string()));
        Outcome::Failed { tokens, code }
    };
    let wall = tokio::time::sleep(Duration::from_millis(t.wall_ms));
    tokio::pin!(wall);
    let max_tokens = q.request.max_tokens;
    let accept_deadline = tokio::time::Instant::now() + Duration::from_millis(t.first_token_ms);
    let mut stream = match accept(task, &**adapter, &q.request, accept_deadline).await {
        Accepted::Stream(s) => s,
        Accepted::Failed(e)
            if matches!(e.code, ErrorCode::PoolUnready | ErrorCode::WorkerReset) =>
        {
            return Outcome::NotStarted(e);
        }
        Accepted::Failed(e) => return worker_failure(task, engine, 0, e),
        Accepted::TimedOut => {
            return fail(
                0,
                ErrorCode::DecodeTimeout,
                "engine did not accept the job in time".into(),
            );
        }
        Accepted::Canceled => return Outcome::Canceled { tokens: 0 },
    };
    // Resolved once: the per-token path must not hash label sets.
    let tokens_out = state.metrics.tokens_out.with_label_values(&labels);
    let first_token = state.metrics.first_token_latency.with_label_values(&[
        labels[0],
        labels[2],
        labels[3],
        task.priority.as_str(),
    ]);
    let mut n: u32 = 0;
    let started = Instant::now();
    let mut first_token_ms = 0;
    // Per-token work is kept to the token itself (issue 15): one cancel waiter and one
    // deadline timer for the whole stream. The timer is re-armed only when it fires: then
    // it either finds the stream silent for too long or moves to the last token + idle_ms.
    let cancel = task.cancel_signal.notified();
    tokio::pin!(cancel);
    let mut last_progress = tokio::time::Instant::now();
    let deadline =
        tokio::time::sleep_until(last_progress + Duration::from_millis(t.first_token_ms));
    tokio::pin!(deadline);
    loop {
        let item = tokio::select! {
            biased;
            _ = &mut cancel => return Outcome::Canceled { tokens: n },
            _ = &mut wall => return fail(n, ErrorCode::DecodeTimeout, format!("wall timeout {} ms", t.wall_ms)),
            r = stream.next() => Ok(r),
            () = &mut deadline => {
                let limit = Duration::from_millis(if n == 0 { t.first_token_ms } else { t.idle_ms });
                let due = last_progress + limit;
                if tokio::time::Instant::now() < due {
                    deadline.as_mut().reset(due);
                    continue;
                }
                Err(limit)
            }
        };
        if item.is_ok() {
            last_progress = tokio::time::Instant::now();
            if n == 0 {
                // The only move to an earlier deadline: from first-token to idle.
                deadline
                    .as_mut()
                    .reset(last_progress + Duration::from_millis(t.idle_ms));
            }
        }
        match item {
            Err(limit) => {
                let what = if n == 0 { "first token" } else { "next token" };
                return fail(
                    n,
                    ErrorCode::DecodeTimeout,
                    format!("no {what} within {} ms", limit.as_millis()),
                );
            }
            Ok(None) => {
                return fail(
                    n,
                    ErrorCode::WorkerReset,
                    "engine stream ended without `end`".into(),
                );
            }
            Ok(Some(Err(e))) => return worker_failure(task, engine, n, e),
            Ok(Some(Ok(WorkerEvent::Token(tok)))) => {
                if tok.i != n || n >= max_tokens {
                    return fail(
                        n,
                        ErrorCode::WorkerReset,
                        format!("engine sent token index {} (expected {n})", tok.i),
                    );
                }
                if !task.push(StreamEvent::Token(tok)) {
                    return Outcome::Canceled { tokens: n };
                }
                if n == 0 {
                    first_token.observe(task.admitted_at.elapsed().as_secs_f64());
                    first_token_ms = started.elapsed().as_millis() as u64;
                }
                n += 1;
                tokens_out.inc();
            }
            Ok(Some(Ok(WorkerEvent::End(e)))) => {
                // An engine that does not say why it ended: max_tokens reached is `length`.
                let finish_reason = e.finish_reason.or(Some(if n >= max_tokens {
                    FinishReason::Length
                } else {
                    FinishReason::Stop
                }));
                let end = EndEvent {
                    tokens_out: n,
                    decode_ms: e.decode_ms,
                    finish_reason,
                    prompt_tokens: e.prompt_tokens,
                };
                return if task.seal() {
                    Outcome::Completed {
                        tokens: n,
                        first_token_ms,
                        end,
                    }
                } else {
                    Outcome::Canceled { tokens: n }
                };
            }
        }
    }
}

enum Accepted {
    Stream(adapter_api::WorkerStream),
    Failed(WorkerError),
    TimedOut,
    Canceled,
}

/// Starts the job on the engine. An engine may report REPLICA_EXHAUSTED for a moment after
/// its previous job's `end` (the slot is released asynchronously, llama.cpp included): that is
/// retried with short backoff until the first-token deadline instead of failing the task.
async fn accept(
    task: &Task,
    adapter: &dyn adapter_api::WorkerAdapter,
    req: &adapter_api::GenerateRequest,
    deadline: tokio::time::Instant,
) -> Accepted {
    let mut backoff = Duration::from_millis(1);
    loop {
        let attempt = tokio::select! {
            r = tokio::time::timeout_at(deadline, adapter.generate(req.clone())) => r,
            _ = task.cancel_signal.notified() => return Accepted::Canceled,
        };
        match attempt {
            Ok(Ok(s)) => return Accepted::Stream(s),
            Ok(Err(e)) if e.code == ErrorCode::ReplicaExhausted => {
                if tokio::time::Instant::now() + backoff >= deadline {
                    return Accepted::Failed(e);
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = task.cancel_signal.notified() => return Accepted::Canceled,
                }
                backoff = (backoff * 2).min(Duration::from_millis(50));
            }
            Ok(Err(e)) => return Accepted::Failed(e),
            Err(_) => return Accepted::TimedOut,
        }
    }
}

fn worker_failure(task: &Task, engine: &str, tokens: u32, e: WorkerError) -> Outcome {
    task.fail(e.code, e.message, Some(engine.to_string()));
    Outcome::Failed {
        tokens,
        code: e.code,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use adapter_api::{
        GenerateRequest, WorkerAdapter, WorkerHealth, WorkerProperties, WorkerStream,
    };
    use api_types::Priority;

    use super::*;
    use crate::task::TaskSpec;

    /// Says REPLICA_EXHAUSTED `busy_for` times, then accepts.
    struct SlowToFree {
        busy_for: u32,
        calls: AtomicU32,
    }

    #[async_trait::async_trait]
    impl WorkerAdapter for SlowToFree {
        async fn health(&self) -> Result<WorkerHealth, WorkerError> {
            unimplemented!()
        }
        async fn properties(&self) -> Result<WorkerProperties, WorkerError> {
            unimplemented!()
        }
        async fn generate(&self, _: GenerateRequest) -> Result<WorkerStream, WorkerError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.busy_for {
                Err(WorkerError::new(ErrorCode::ReplicaExhausted, "busy"))
            } else {
                Ok(Box::pin(futures::stream::empty()))
            }
        }
        async fn cancel(&self, _: &str) -> Result<(), WorkerError> {
            Ok(())
        }
    }

    fn task() -> Task {
        Task::new(TaskSpec {
            id: "t".into(),
            tenant: "x".into(),
            pool: 0,
            engine: api_types::Engine::Mock,
            priority: Priority::Interactive,
            session_id: None,
            prompt_tokens: 1,
            max_tokens: 1,
            deadline_ms: None,
        })
    }

    fn req() -> GenerateRequest {
        GenerateRequest {
            job_id: "t".into(),
            prompt: "p".into(),
            max_tokens: 1,
            seed: 0,
            sampler_profile_version: None,
            strict_determinism: false,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn accept_retries_a_slot_that_is_still_being_released() {
        let a = SlowToFree {
            busy_for: 3,
            calls: AtomicU32::new(0),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        assert!(matches!(
            accept(&task(), &a, &req(), deadline).await,
            Accepted::Stream(_)
        ));
        assert_eq!(a.calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn accept_gives_up_at_the_deadline_with_the_engine_error() {
        let a = SlowToFree {
            busy_for: u32::MAX,
            calls: AtomicU32::new(0),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_millis(30);
        match accept(&task(), &a, &req(), deadline).await {
            Accepted::Failed(e) => assert_eq!(e.code, ErrorCode::ReplicaExhausted),
            _ => panic!("expected REPLICA_EXHAUSTED"),
        }
    }

    #[tokio::test]
    async fn accept_stops_on_cancel() {
        let a = SlowToFree {
            busy_for: u32::MAX,
            calls: AtomicU32::new(0),
        };
        let t = task();
        t.cancel().unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        assert!(matches!(
            accept(&t, &a, &req(), deadline).await,
            Accepted::Canceled
        ));
    }
}
