//! When a freshly started engine counts as Ready (ORCH-3002, ORCH-3049), the same for every
//! engine kind, through its adapter: the adapter's health says Ready (an engine that refuses
//! connections or answers 503 while it loads is still loading, not failed), a one-token
//! warm-up decode finishes, the engine's telemetry counts that decode, and a streamed job
//! canceled after its first token gives its slot back.

use std::time::{Duration, Instant};

use adapter_api::{GenerateRequest, WorkerEvent, WorkerState};
use futures::StreamExt;
use tokio::process::Child;

use crate::engine_kind::EngineAdapter;
use crate::supervisor::EngineSpec;

/// How long the telemetry may lag behind a finished decode, and an engine's in-flight count
/// behind a cancel.
const SETTLE: Duration = Duration::from_secs(10);

fn request(job_id: &str, max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        job_id: job_id.into(),
        prompt: "Hello".into(),
        max_tokens,
        seed: 0,
        sampler_profile_version: None,
        strict_determinism: false,
        ..Default::default()
    }
}

/// Waits for the engine to load, then runs the startup self-test. Err says why the start
/// failed (the engine exited, did not load in time, or failed a self-test step).
pub(crate) async fn wait_ready(spec: &EngineSpec, child: &mut Child) -> Result<(), String> {
    let engine = spec
        .kind
        .adapter(spec, "")
        .map_err(|e| format!("self-test: adapter: {}", e.message))?;
    let worker = engine.worker();
    let deadline = Instant::now() + spec.ready_timeout;
    let mut last = String::new();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!(
                "{} engine exited during load ({st}): {}",
                spec.kind.name(),
                spec.binary.display()
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "engine not ready within {} ms{}",
                spec.ready_timeout.as_millis(),
                if last.is_empty() {
                    String::new()
                } else {
                    format!(" (last health: {last})")
                }
            ));
        }
        match tokio::time::timeout(Duration::from_secs(5), worker.health()).await {
            Ok(Ok(h)) if h.state == WorkerState::Ready => break,
            Ok(Ok(h)) => last = h.last_error.unwrap_or_else(|| format!("{:?}", h.state)),
            Ok(Err(e)) => last = e.message,
            Err(_) => last = "health probe timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    self_test(&engine, deadline).await
}

/// The startup self-test (ORCH-3049), through the same adapter code that will serve traffic.
/// A replica failing any step is not Ready.
pub(crate) async fn self_test(engine: &EngineAdapter, deadline: Instant) -> Result<(), String> {
    let worker = engine.worker();
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1))
    };

    // 1. A one-token decode that runs to its end.
    let decode = async {
        let mut s = worker
            .generate(request("llorch-warm-up", 1))
            .await
            .map_err(|e| format!("warm-up decode failed: {}", e.message))?;
        while let Some(ev) = s.next().await {
            match ev {
                Ok(WorkerEvent::Token(_)) => {}
                Ok(WorkerEvent::End(_)) => return Ok(()),
                Err(e) => return Err(format!("warm-up decode failed: {}", e.message)),
            }
        }
        Err("warm-up decode failed: the stream ended without an end event".to_string())
    };
    tokio::time::timeout(left(), decode)
        .await
        .map_err(|_| "warm-up decode: no end within the ready timeout".to_string())??;

    // 2. The engine's telemetry counts it (so its metrics can be trusted).
    let counter = engine.decode_counter_name();
    let settle = Instant::now() + SETTLE;
    loop {
        let seen = engine
            .figures()
            .await
            .map_err(|e| format!("self-test: telemetry: {}", e.message))?
            .decodes_counted;
        if seen.unwrap_or(0.0) >= 1.0 {
            break;
        }
        if Instant::now() >= settle {
            return Err(format!(
                "self-test: telemetry: /metrics does not count the warm-up decode ({counter}: {})",
                seen.map_or("absent".into(), |v| v.to_string())
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // 3. A streamed job canceled after its first token gives its slot back (a cancel can
    //    never leak engine capacity).
    let job_id = "llorch-self-test";
    let mut stream = worker
        .generate(request(job_id, 64))
        .await
        .map_err(|e| format!("self-test: streaming decode: {}", e.message))?;
    match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
        Ok(Some(Ok(WorkerEvent::Token(_) | WorkerEvent::End(_)))) => {}
        Ok(Some(Err(e))) => return Err(format!("self-test: streaming decode: {}", e.message)),
        Ok(None) => return Err("self-test: streaming decode ended without a token".into()),
        Err(_) => return Err("self-test: no token within 30 s".into()),
    }
    // Returns once the adapter has let go of the job (llama.cpp: once /slots shows the slot
    // idle again, or fails after the adapter's timeout).
    worker
        .cancel(job_id)
        .await
        .map_err(|e| format!("self-test: cancel: {}", e.message))?;
    drop(stream);
    // Where the engine counts the requests it works on, that count must drop to zero too.
    let settle = Instant::now() + SETTLE;
    loop {
        let busy = engine
            .figures()
            .await
            .map_err(|e| format!("self-test: telemetry: {}", e.message))?
            .requests_processing;
        match busy {
            Some(n)
                if n > 0.0 && matches!(engine, EngineAdapter::Vllm(_) | EngineAdapter::Tgi(_)) =>
            {
                if Instant::now() >= settle {
                    return Err(format!(
                        "self-test: cancel: the engine still reports {n} request(s) processing {} s after the cancel",
                        SETTLE.as_secs()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            _ => return Ok(()),
        }
    }
}
