//! The TGI adapter against `llorch-tgi-sim` backed by the real llama-server and SmolLM2
//! (provisioned by `cargo xtask fetch-engine`; missing → these tests fail, never skip).

mod common;

use std::time::{Duration, Instant};

use adapter_api::{GenerateRequest, WorkerAdapter, WorkerEvent, WorkerState};
use api_types::{ErrorCode, FinishReason};
use futures::StreamExt;
use tgi_adapter::{TgiAdapter, TgiConfig};

const PROMPT: &str = "Once upon a time, in a small village by the sea,";
const CHAT: &str =
    "<|im_start|>user\nWhat is 2+2? Answer with one number.<|im_end|>\n<|im_start|>assistant\n";

fn adapter(url: &str, slots: Option<u32>) -> TgiAdapter {
    let mut cfg = TgiConfig::new(url, "smollm2");
    cfg.slots = slots;
    TgiAdapter::new(cfg).unwrap()
}

fn req(
    job: &str,
    prompt: &str,
    max_tokens: u32,
    sampling: Option<api_types::Sampling>,
) -> GenerateRequest {
    GenerateRequest {
        job_id: job.into(),
        prompt: prompt.into(),
        messages: None,
        sampling,
        max_tokens,
        seed: 5,
        sampler_profile_version: None,
        strict_determinism: false,
    }
}

fn greedy(stop: &[&str]) -> api_types::Sampling {
    api_types::Sampling {
        profile: "v1".into(),
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        min_p: 0.0,
        repeat_penalty: 1.0,
        stop: stop.iter().map(|s| s.to_string()).collect(),
        grammar: None,
        json_schema: None,
    }
}

/// (text, end, error) of a whole stream.
async fn collect(
    a: &TgiAdapter,
    r: GenerateRequest,
) -> (
    String,
    Option<api_types::EndEvent>,
    Option<adapter_api::WorkerError>,
) {
    let mut s = a.generate(r).await.expect("generate");
    let (mut text, mut end, mut err) = (String::new(), None, None);
    let mut next_i = 0;
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(60), s.next())
        .await
        .expect("stream stalled")
    {
        match ev {
            Ok(WorkerEvent::Token(t)) => {
                assert_eq!(t.i, next_i, "gap-free indices");
                next_i += 1;
                text.push_str(&t.t);
            }
            Ok(WorkerEvent::End(e)) => end = Some(e),
            Err(e) => err = Some(e),
        }
    }
    (text, end, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_the_real_engines_tokens() {
    let s = common::stack(&["--sha", "0123456789abcdef"]).await;
    let a = adapter(&s.sim_url, Some(2));
    let h = a.health().await.unwrap();
    assert_eq!(h.state, WorkerState::Ready, "{h:?}");
    let p = a.properties().await.unwrap();
    assert_eq!(p.engine, "tgi");
    assert_eq!(p.engine_version, "tgi-3.3.6-dev0+0123456789ab");
    // /info.max_total_tokens: llama-server's context per slot.
    assert_eq!(p.ctx_max, 1024);
    assert_eq!((p.slots_total, p.slots_busy), (2, 0));

    // Greedy (temperature 0 → do_sample false): the same text llama-server gives directly.
    let (text, end, err) = collect(&a, req("g", PROMPT, 12, Some(greedy(&[])))).await;
    assert!(err.is_none(), "{err:?}");
    let end = end.expect("end event");
    assert_eq!(end.finish_reason, Some(FinishReason::Length));
    assert_eq!(end.tokens_out, 12);
    assert!(end.prompt_tokens.is_some_and(|n| n > 5), "{end:?}");
    assert_eq!(text, s.llama_greedy(PROMPT, 12).await);
    // No sampling at all is greedy too.
    let (again, _, _) = collect(&a, req("g2", PROMPT, 12, None)).await;
    assert_eq!(again, text);

    // Seeded sampling reproduces with the same seed.
    let mut sampled = greedy(&[]);
    sampled.temperature = 0.9;
    sampled.top_p = 0.95;
    let (s1, e1, _) = collect(&a, req("s1", PROMPT, 10, Some(sampled.clone()))).await;
    let (s2, _, _) = collect(&a, req("s2", PROMPT, 10, Some(sampled))).await;
    assert_eq!(e1.unwrap().finish_reason, Some(FinishReason::Length));
    assert_eq!(s1, s2);

    let m = a.metrics().await.unwrap();
    assert_eq!(m.request_success, Some(4.0), "{m:?}");
    assert_eq!(m.tokens_predicted_total, Some(44.0), "{m:?}");
    assert_eq!(m.requests_processing, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eos_and_stop_sequences_finish_with_stop() {
    let s = common::stack(&[]).await;
    let a = adapter(&s.sim_url, None);
    // EOS: TGI streams it as a special token; it is not part of the text.
    let (text, end, err) = collect(&a, req("eos", CHAT, 100, Some(greedy(&[])))).await;
    assert!(err.is_none(), "{err:?}");
    let end = end.unwrap();
    assert_eq!(end.finish_reason, Some(FinishReason::Stop), "{text:?}");
    assert!(!text.contains("<|im_end|>") && !text.is_empty(), "{text:?}");
    assert_eq!(text, s.llama_greedy(CHAT, 100).await);

    // A stop sequence: TGI streams it and keeps it in generated_text; the adapter cuts it.
    let full = s.llama_greedy(PROMPT, 40).await;
    let stop = " the";
    let at = full.find(stop).expect("greedy text has ` the`");
    let (text, end, err) = collect(&a, req("stop", PROMPT, 40, Some(greedy(&[stop])))).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(end.unwrap().finish_reason, Some(FinishReason::Stop));
    assert_eq!(text, full[..at], "full greedy text: {full:?}");
}

/// A chat is rendered by TGI (`/chat_tokenize`, the model's own template) and then generated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_messages_use_the_models_template() {
    let s = common::stack(&[]).await;
    let a = adapter(&s.sim_url, None);
    let messages =
        serde_json::json!([{"role": "user", "content": "What is 2+2? Answer with one number."}]);
    let mut r = req("chat", "", 60, Some(greedy(&[])));
    r.messages = Some(serde_json::from_value(messages.clone()).unwrap());
    let (text, end, err) = collect(&a, r).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(
        end.unwrap().finish_reason,
        Some(FinishReason::Stop),
        "{text:?}"
    );
    let rendered = s.llama_template(messages).await;
    assert!(rendered.contains("<|im_start|>assistant"), "{rendered}");
    assert_eq!(text, s.llama_greedy(&rendered, 60).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_errors_become_typed_errors() {
    let s = common::stack(&[]).await;
    let a = adapter(&s.sim_url, None);
    let fault = |t: &str, after: u32| serde_json::json!({"error_type": t, "after_tokens": after});

    // Errors before the first token arrive as the only SSE event on HTTP 200; generate()
    // reports them itself.
    for (t, code) in [
        ("overloaded", ErrorCode::ReplicaExhausted),
        ("validation", ErrorCode::InvalidParams),
        ("generation", ErrorCode::WorkerReset),
    ] {
        s.arm(fault(t, 0)).await;
        let e = match a.generate(req(t, PROMPT, 8, None)).await {
            Ok(_) => panic!("{t}: no error"),
            Err(e) => e,
        };
        assert_eq!(e.code, code, "{t}: {e:?}");
        assert!(e.message.starts_with(&format!("tgi {t}: ")), "{e:?}");
    }
    // Mid-stream: tokens, then the typed error (never an end).
    for t in [
        "generation",
        "incomplete_generation_stream",
        "disconnect",
        "garbage",
    ] {
        s.arm(fault(t, 3)).await;
        let (text, end, err) = collect(&a, req(t, PROMPT, 20, None)).await;
        assert!(end.is_none(), "{t}");
        let err = err.unwrap_or_else(|| panic!("{t}: no error"));
        assert_eq!(err.code, ErrorCode::WorkerReset, "{t}: {err:?}");
        assert!(!text.is_empty(), "{t}: tokens before the error");
    }
    // Real validation by the simulator (TGI's limits): a prompt longer than max_input_tokens.
    let long = "word ".repeat(1500);
    let e = match a.generate(req("long", &long, 8, None)).await {
        Ok(_) => panic!("no error"),
        Err(e) => e,
    };
    assert_eq!(e.code, ErrorCode::InvalidParams);
    assert!(
        e.message.contains("must have less than 1023 tokens"),
        "{e:?}"
    );
    let m = s.metrics().await;
    assert_eq!(m.failures_overloaded, Some(1.0), "{m:?}");
    assert_eq!(m.failures_validation, Some(2.0), "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_requests_is_backpressure() {
    let s = common::stack(&["--max-concurrent-requests", "1"]).await;
    let a = adapter(&s.sim_url, Some(4));
    // The adapter reads TGI's limit from /info and never asks for more.
    assert_eq!(a.properties().await.unwrap().slots_total, 1);
    let mut long = a.generate(req("long", PROMPT, 400, None)).await.unwrap();
    assert!(matches!(long.next().await, Some(Ok(WorkerEvent::Token(_)))));
    let e = a
        .generate(req("second", PROMPT, 4, None))
        .await
        .err()
        .unwrap();
    assert_eq!(e.code, ErrorCode::ReplicaExhausted);
    assert_eq!(a.properties().await.unwrap().slots_busy, 1);
    // Another client of the same TGI (its own count is 0) meets TGI's semaphore: the
    // `overloaded` SSE event on HTTP 200.
    let other = adapter(&s.sim_url, None);
    let e = other
        .generate(req("other", PROMPT, 4, None))
        .await
        .err()
        .unwrap();
    assert_eq!(e.code, ErrorCode::ReplicaExhausted);
    assert!(e.retriable);
    assert!(e.message.contains("Model is overloaded"), "{e:?}");
    assert_eq!(s.metrics().await.failures_overloaded, Some(1.0));
    drop(long);
    // The permit comes back once the stream is closed.
    let start = Instant::now();
    loop {
        match other.generate(req("after", PROMPT, 2, None)).await {
            Ok(_) => break,
            Err(e) if e.code == ErrorCode::ReplicaExhausted => {}
            Err(e) => panic!("{e:?}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "permit never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Cancel closes the connection; the engine side sees it: TGI counts the request as dropped,
/// its batch empties, and the llama-server slot behind it stops decoding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_closes_the_stream_engine_side() {
    let s = common::stack(&[]).await;
    let a = adapter(&s.sim_url, None);
    for (job, by_cancel) in [("c1", true), ("c2", false)] {
        let mut st = a.generate(req(job, PROMPT, 600, None)).await.unwrap();
        for _ in 0..3 {
            assert!(matches!(st.next().await, Some(Ok(WorkerEvent::Token(_)))));
        }
        assert_eq!(s.metrics().await.requests_processing, Some(1.0));
        if by_cancel {
            tokio::time::timeout(Duration::from_secs(5), a.cancel(job))
                .await
                .expect("cancel returns")
                .unwrap();
            assert_eq!(a.in_flight(), 0);
        }
        drop(st);
        let start = Instant::now();
        loop {
            let m = s.metrics().await;
            let busy = s.llama_busy_slots().await;
            if m.requests_processing == Some(0.0) && busy == 0 {
                let expected = if by_cancel { 1.0 } else { 2.0 };
                assert_eq!(m.failures_dropped, Some(expected), "{m:?}");
                assert_eq!(m.request_success, Some(0.0), "{m:?}");
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "engine still busy after cancel: {m:?}, llama slots busy {busy}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// TGI binds its port only once the model is loaded: connection refused is Loading, not an
/// error, and the replica turns Ready when the router comes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_loading_then_ready() {
    let (_llama, llama_url) = common::llama_server().await;
    let port = test_fixtures::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let a = adapter(&url, None);
    let h = a.health().await.unwrap();
    assert_eq!(h.state, WorkerState::Loading, "{h:?}");
    let _sim = common::spawn_sim(&llama_url, port, &["--startup-delay-ms", "800"]);
    let start = Instant::now();
    loop {
        let h = a.health().await.unwrap();
        match h.state {
            WorkerState::Ready => break,
            WorkerState::Loading => {}
            WorkerState::Error => panic!("{h:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(30), "never Ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A different model than expected is an error, not Ready.
    let mut cfg = TgiConfig::new(&url, "smollm2");
    cfg.expected_model_id = Some("someone/else".into());
    let h = TgiAdapter::new(cfg).unwrap().health().await.unwrap();
    assert_eq!(h.state, WorkerState::Error, "{h:?}");
}
