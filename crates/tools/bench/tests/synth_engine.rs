//! `llorch-synth-engine` speaks the llama-server wire format llama-orch relies on: the llama.cpp
//! adapter sees it Ready, reads its properties and streams N tokens then End from it; and
//! pool-managerd's supervisor (what `llorch serve` runs) starts it, passes its readiness check
//! and startup self-test (warm-up decode, `/metrics`, cancel frees the slot), i.e. declares it
//! Ready.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use adapter_api::{GenerateRequest, WorkerAdapter, WorkerEvent, WorkerState};
use futures::StreamExt;
use llamacpp_adapter::{LlamaCppAdapter, LlamaCppConfig};
use pool_managerd::policy::RestartConfig;
use pool_managerd::supervisor::{EngineSpec, Phase, Supervisor};

const BIN: &str = env!("CARGO_BIN_EXE_llorch-synth-engine");

struct Engine(Child);

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn request(job: &str, seed: u64, n: u32) -> GenerateRequest {
    GenerateRequest {
        job_id: job.into(),
        prompt: "Once upon a time".into(),
        max_tokens: n,
        seed,
        sampler_profile_version: None,
        strict_determinism: true,
        ..Default::default()
    }
}

/// Tokens (text, index) and the End's tokens_out of one generate call.
async fn generate(a: &LlamaCppAdapter, req: GenerateRequest) -> (Vec<(String, u32)>, u32) {
    let mut stream = a.generate(req).await.expect("generate");
    let mut tokens = Vec::new();
    while let Some(item) = stream.next().await {
        match item.expect("stream item") {
            WorkerEvent::Token(t) => tokens.push((t.t, t.i)),
            WorkerEvent::End(e) => {
                assert!(stream.next().await.is_none(), "events after End");
                return (tokens, e.tokens_out);
            }
        }
    }
    panic!("stream ended without End after {} tokens", tokens.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llamacpp_adapter_streams_from_the_synthetic_engine() {
    let port = test_fixtures::free_port();
    let _engine = Engine(
        Command::new(BIN)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-np", "2", "-c", "1024", "--metrics"])
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn llorch-synth-engine"),
    );
    let a = LlamaCppAdapter::new(LlamaCppConfig::new(
        format!("http://127.0.0.1:{port}"),
        "synthetic",
    ))
    .expect("adapter");
    let t0 = Instant::now();
    loop {
        if let Ok(h) = a.health().await
            && h.state == WorkerState::Ready
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "synthetic engine not Ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let p = a.properties().await.expect("properties");
    assert_eq!((p.slots_total, p.ctx_max, p.slots_busy), (2, 512, 0));
    assert_eq!(p.engine, "llamacpp");

    let (tokens, out) = generate(&a, request("j1", 7, 40)).await;
    assert_eq!(tokens.len(), 40);
    assert_eq!(out, 40);
    assert!(tokens.iter().enumerate().all(|(k, (_, i))| *i == k as u32));
    assert!(tokens.iter().all(|(t, _)| !t.is_empty()));
    let text: String = tokens.iter().map(|(t, _)| t.as_str()).collect();
    // Same prompt and seed: the same text; another seed: another text.
    let (again, _) = generate(&a, request("j2", 7, 40)).await;
    assert_eq!(
        again.iter().map(|(t, _)| t.as_str()).collect::<String>(),
        text
    );
    let (other, _) = generate(&a, request("j3", 8, 40)).await;
    assert_ne!(
        other.iter().map(|(t, _)| t.as_str()).collect::<String>(),
        text
    );
    // Escapes and multi-byte text survive the adapter's JSON decoding.
    assert!(
        !text.is_ascii() || text.contains('"') || text.contains('\n'),
        "{text:?}"
    );
    let slots = a.slots().await.expect("slots");
    assert!(slots.iter().all(|s| !s.is_processing), "slots still busy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_declares_the_synthetic_engine_ready() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("synthetic.gguf");
    std::fs::write(&model, b"no weights").unwrap();
    let sup = Supervisor::spawn(EngineSpec {
        pool_id: "p".into(),
        replica_id: "r0".into(),
        kind: pool_managerd::engine_kind::EngineKind::LlamaCpp,
        binary: BIN.into(),
        model,
        model_sha256: None,
        source: None,
        port: test_fixtures::free_port(),
        slots: 4,
        ctx_per_slot: 256,
        devices: vec![],
        extra_args: vec![],
        env: Default::default(),
        restart: RestartConfig::default(),
        ready_timeout: Duration::from_secs(20),
    });
    let st = sup
        .wait_for(Duration::from_secs(30), |s| {
            !matches!(s.phase, Phase::Starting | Phase::Backoff { .. })
        })
        .await;
    let status = st.unwrap_or_else(|| sup.status());
    sup.shutdown().await;
    assert_eq!(status.phase, Phase::Ready, "{status:?}");
}
