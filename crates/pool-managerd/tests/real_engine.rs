//! pool-managerd supervision and the llama.cpp adapter against a real `llama-server` with a
//! real GGUF model (provisioned by `cargo xtask fetch-engine`; see llorch-test-fixtures).

use std::sync::Arc;
use std::time::{Duration, Instant};

use adapter_api::{GenerateRequest, WorkerAdapter, WorkerEvent, WorkerState};
use api_types::ErrorCode;
use futures::StreamExt;
use llamacpp_adapter::{LlamaCppAdapter, LlamaCppConfig};
use pool_managerd::gated::GatedAdapter;
use pool_managerd::policy::RestartConfig;
use pool_managerd::supervisor::{EngineSpec, Phase, Supervisor};

fn spec(slots: u32) -> EngineSpec {
    let e = test_fixtures::engine();
    EngineSpec {
        pool_id: "p".into(),
        replica_id: "r0".into(),
        kind: pool_managerd::engine_kind::EngineKind::LlamaCpp,
        binary: e.llama_server,
        model: e.model,
        model_sha256: Some(e.model_sha256),
        source: None,
        port: test_fixtures::free_port(),
        slots,
        ctx_per_slot: 512,
        devices: vec![],
        extra_args: vec![],
        env: Default::default(),
        restart: RestartConfig {
            initial_backoff_ms: 200,
            max_backoff_ms: 1000,
            max_crashes: 5,
            window_ms: 60_000,
            open_for_ms: 60_000,
        },
        ready_timeout: Duration::from_secs(120),
    }
}

fn req(id: &str, n: u32, seed: u64) -> GenerateRequest {
    GenerateRequest {
        job_id: id.into(),
        // A raw completion prompt that a 135M model continues at length (an instruction-style
        // prompt may be answered with an immediate end-of-sequence).
        prompt: "Once upon a time, in a small village by the sea,".into(),
        max_tokens: n,
        seed,
        sampler_profile_version: None,
        strict_determinism: true,
        ..Default::default()
    }
}

struct Replica {
    sup: Supervisor,
    engine: Arc<LlamaCppAdapter>,
    gated: GatedAdapter,
}

fn start(slots: u32) -> Replica {
    let s = spec(slots);
    let engine =
        Arc::new(LlamaCppAdapter::new(LlamaCppConfig::new(s.base_url(), "smollm2-135m")).unwrap());
    let sup = Supervisor::spawn(s);
    let gated = GatedAdapter::new(engine.clone(), sup.subscribe());
    Replica { sup, engine, gated }
}

async fn wait_ready(r: &Replica) {
    let st = r
        .sup
        .wait_for(Duration::from_secs(120), |s| s.phase == Phase::Ready)
        .await;
    assert!(
        st.is_some(),
        "replica never became Ready: {:?}",
        r.sup.status()
    );
}

async fn text_of(a: &dyn WorkerAdapter, rq: GenerateRequest) -> (String, u32) {
    let mut s = a.generate(rq).await.unwrap();
    let mut text = String::new();
    let mut next = 0;
    while let Some(ev) = s.next().await {
        match ev.unwrap() {
            WorkerEvent::Token(t) => {
                assert_eq!(t.i, next, "gap-free token indices");
                next += 1;
                text.push_str(&t.t);
            }
            WorkerEvent::End(e) => {
                assert_eq!(e.tokens_out, next);
                return (text, next);
            }
        }
    }
    panic!("stream ended without End");
}

/// ORCH-3002: no work before Ready; then real tokens, properties and determinism (ORCH-3045).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preload_gating_streaming_and_determinism() {
    let r = start(2);
    // Before the warm-up decode the gate says Loading and refuses work.
    let h = r.gated.health().await.unwrap();
    assert_ne!(h.state, WorkerState::Ready);
    assert_eq!(
        r.gated
            .generate(req("early", 4, 1))
            .await
            .err()
            .unwrap()
            .code,
        ErrorCode::PoolUnready
    );
    wait_ready(&r).await;
    assert_eq!(r.gated.health().await.unwrap().state, WorkerState::Ready);
    let p = r.gated.properties().await.unwrap();
    assert_eq!(
        (p.engine.as_str(), p.slots_total, p.ctx_max),
        ("llamacpp", 2, 512)
    );
    assert!(
        p.engine_version.starts_with("llamacpp-b"),
        "{}",
        p.engine_version
    );
    let (a, n) = text_of(&r.gated, req("a", 12, 42)).await;
    assert!(n >= 1 && !a.is_empty());
    let (b, _) = text_of(&r.gated, req("b", 12, 42)).await;
    assert_eq!(a, b, "same seed and prompt give the same text");
    r.sup.shutdown().await;
}

/// ORCH-3026: cancel closes the connection and returns once `/slots` shows the slot idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_frees_the_engine_slot() {
    let r = start(1);
    wait_ready(&r).await;
    let mut s = r.gated.generate(req("long", 400, 7)).await.unwrap();
    for _ in 0..2 {
        let ev = s.next().await;
        assert!(matches!(ev, Some(Ok(WorkerEvent::Token(_)))), "{ev:?}");
    }
    assert!(
        r.engine
            .slots()
            .await
            .unwrap()
            .iter()
            .any(|s| s.is_processing)
    );
    r.gated.cancel("long").await.unwrap();
    assert!(
        !r.engine
            .slots()
            .await
            .unwrap()
            .iter()
            .any(|s| s.is_processing),
        "slot still busy after cancel"
    );
    drop(s);
    // The single slot takes the next job at once.
    let (_, n) = text_of(&r.gated, req("next", 3, 7)).await;
    assert!(n >= 1);
    r.sup.shutdown().await;
}

/// ORCH-3038: SIGKILL mid-stream → the stream fails with WORKER_RESET within 2 s, the replica
/// restarts after backoff and serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_sigkill_mid_stream_restarts_after_backoff() {
    let r = start(1);
    wait_ready(&r).await;
    let pid = r.sup.status().pid.unwrap();
    let mut s = r.gated.generate(req("victim", 400, 1)).await.unwrap();
    assert!(matches!(s.next().await, Some(Ok(WorkerEvent::Token(_)))));
    let killed = Instant::now();
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let outcome = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match s.next().await {
                Some(Ok(WorkerEvent::Token(_))) => continue,
                Some(Ok(WorkerEvent::End(_))) => return Some(ErrorCode::Internal),
                Some(Err(e)) => return Some(e.code),
                None => return None,
            }
        }
    })
    .await
    .expect("stream did not notice the dead engine within 2 s");
    // An ended stream without `end` is WORKER_RESET for the orchestrator's runner.
    assert!(
        matches!(outcome, None | Some(ErrorCode::WorkerReset)),
        "{outcome:?}"
    );
    assert!(killed.elapsed() < Duration::from_secs(2));
    let st = r
        .sup
        .wait_for(Duration::from_secs(5), |s| {
            matches!(s.phase, Phase::Backoff { .. })
        })
        .await;
    assert!(st.is_some(), "{:?}", r.sup.status());
    wait_ready(&r).await;
    assert_eq!(r.sup.status().restarts, 1);
    assert_ne!(r.sup.status().pid, Some(pid));
    let (_, n) = text_of(&r.gated, req("after", 3, 1)).await;
    assert!(n >= 1);
    r.sup.shutdown().await;
}

/// A model file that is not a model: the engine exits during load and the replica backs off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_model_file_never_becomes_ready() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.gguf");
    std::fs::write(&bad, b"GGUF but not really").unwrap();
    let mut s = spec(1);
    s.model = bad;
    s.model_sha256 = None;
    let sup = Supervisor::spawn(s);
    let st = sup
        .wait_for(Duration::from_secs(30), |s| {
            matches!(s.phase, Phase::Backoff { .. })
        })
        .await
        .expect("no backoff after a failed load");
    assert!(st.last_error.unwrap().contains("exited during load"));
    sup.shutdown().await;
}
