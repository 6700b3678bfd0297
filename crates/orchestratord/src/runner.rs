//! Drives one dispatched task on one replica: relays tokens into the task's log, enforces the
//! watchdog (first-token, idle and wall timeouts → DECODE_TIMEOUT, ORCH-3016), turns worker
//! failures into typed stream errors, and always gives the slot back, after the engine has let
//! go of the job.

use std::sync::Arc;
use std::time::{Duration, Instant};

use adapter_api::{WorkerError, WorkerEvent};
use api_types::{EndEvent, ErrorCode, StreamEvent};
use futures::StreamExt;

use crate::state::{AppState, Queued};
use crate::task::Task;

enum Outcome {
    Completed { tokens: u32 },
    Failed { tokens: u32, code: ErrorCode },
    Canceled { tokens: u32 },
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
        state.release(pool_idx, replica, None, &task);
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
    task.push(StreamEvent::Metrics(state.metrics_event(&task, kv_warm)));
    let dispatched = Instant::now();
    let job_id = q.request.job_id.clone();
    let outcome = drive(&state, &task, pool_idx, replica, &version, q).await;
    let decode_ms = dispatched.elapsed().as_millis() as u64;
    let (tokens, service) = match outcome {
        Outcome::Completed { tokens } => {
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
            (tokens, Some(decode_ms))
        }
        Outcome::Failed { tokens, code } => {
            state
                .metrics
                .tasks_failed
                .with_label_values(&[labels[0], labels[1], labels[2], labels[3], code.as_str()])
                .inc();
            free_engine_slot(&state, pool_idx, replica, &job_id).await;
            (tokens, None)
        }
        Outcome::Canceled { tokens } => {
            free_engine_slot(&state, pool_idx, replica, &job_id).await;
            (tokens, None)
        }
    };
    tracing::info!(
        job_id = %task.id, tenant = %task.tenant, pool_id = %pool.id, replica_id = %r.id, engine,
        session_id = task.session_id.as_deref().unwrap_or(""), model = %pool.model_ref,
        queue_time_ms = (dispatched - task.admitted_at).as_millis() as u64, decode_time_ms = decode_ms,
        tokens_in = task.prompt_tokens, tokens_out = tokens, "task finished"
    );
    state.release(pool_idx, replica, service, &task);
}

/// Makes sure the engine no longer works on the job before its slot is reused.
async fn free_engine_slot(state: &AppState, pool_idx: usize, replica: usize, job_id: &str) {
    let adapter = &state.pools[pool_idx].replicas[replica].adapter;
    match tokio::time::timeout(Duration::from_secs(10), adapter.cancel(job_id)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(job_id, error = %e, "engine cancel failed"),
        Err(_) => tracing::warn!(job_id, "engine cancel timed out"),
    }
}

async fn drive(
    state: &AppState,
    task: &Task,
    pool_idx: usize,
    replica: usize,
    version: &str,
    q: Queued,
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
    let adapter = pool.replicas[replica].adapter.clone();
    let fail = |tokens: u32, code: ErrorCode, msg: String| {
        task.fail(code, msg, Some(engine.to_string()));
        Outcome::Failed { tokens, code }
    };
    let wall = tokio::time::sleep(Duration::from_millis(t.wall_ms));
    tokio::pin!(wall);
    let max_tokens = q.request.max_tokens;
    let mut stream = tokio::select! {
        r = tokio::time::timeout(Duration::from_millis(t.first_token_ms), adapter.generate(q.request)) => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return worker_failure(task, engine, 0, e),
            Err(_) => return fail(0, ErrorCode::DecodeTimeout, "engine did not accept the job in time".into()),
        },
        _ = task.cancel_signal.notified() => return Outcome::Canceled { tokens: 0 },
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
    loop {
        let limit = Duration::from_millis(if n == 0 { t.first_token_ms } else { t.idle_ms });
        let item = tokio::select! {
            _ = task.cancel_signal.notified() => return Outcome::Canceled { tokens: n },
            _ = &mut wall => return fail(n, ErrorCode::DecodeTimeout, format!("wall timeout {} ms", t.wall_ms)),
            r = tokio::time::timeout(limit, stream.next()) => r,
        };
        match item {
            Err(_) => {
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
                }
                n += 1;
                tokens_out.inc();
            }
            Ok(Some(Ok(WorkerEvent::End(e)))) => {
                let end = EndEvent {
                    tokens_out: n,
                    decode_ms: e.decode_ms,
                };
                return if task.push(StreamEvent::End(end)) {
                    Outcome::Completed { tokens: n }
                } else {
                    Outcome::Canceled { tokens: n }
                };
            }
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
