//! The adapter against a real NVIDIA Triton Inference Server (tritonserver 2.51.0 from the
//! `nvidia-pytriton` wheel, provisioned by `cargo xtask fetch-engine`) serving decoupled Python
//! models from a model repository made here: `llm`/`ensemble` stream a real model (SmolLM2 on
//! the provisioned llama-server) in the vLLM and TensorRT-LLM input conventions, `failing`
//! errors mid-stream, `bytes` splits multi-byte characters across responses.
//!
//! Missing Triton or llama-server is a failure with the command that provides them, never a
//! skip.

use std::time::{Duration, Instant};

use adapter_api::{GenerateRequest, WorkerAdapter, WorkerEvent, WorkerState};
use api_types::{ErrorCode, FinishReason};
use futures::StreamExt;
use llorch_triton_adapter::{InputConvention, TritonAdapter, TritonConfig};
use test_fixtures::triton::{self as tt, Children, Triton, tail};

fn req(job: &str, prompt: &str, max_tokens: u32, seed: u64) -> GenerateRequest {
    GenerateRequest {
        job_id: job.into(),
        prompt: prompt.into(),
        max_tokens,
        seed,
        ..Default::default()
    }
}

struct Outcome {
    tokens: Vec<String>,
    end: Option<api_types::EndEvent>,
    error: Option<adapter_api::WorkerError>,
}

async fn run(a: &TritonAdapter, r: GenerateRequest) -> Outcome {
    let mut s = a.generate(r).await.expect("generate");
    let mut o = Outcome {
        tokens: vec![],
        end: None,
        error: None,
    };
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(60), s.next())
        .await
        .expect("stream stalled")
    {
        match ev {
            Ok(WorkerEvent::Token(t)) => {
                assert_eq!(t.i as usize, o.tokens.len(), "gap-free token indices");
                o.tokens.push(t.t);
            }
            Ok(WorkerEvent::End(e)) => {
                o.end = Some(e);
                break;
            }
            Err(e) => {
                o.error = Some(e);
                break;
            }
        }
    }
    o
}

fn adapter(port: u16, metrics: u16, model: &str, conv: InputConvention) -> TritonAdapter {
    let mut c = TritonConfig::new(format!("http://127.0.0.1:{port}"), model, conv);
    c.metrics_url = Some(format!("http://127.0.0.1:{metrics}/metrics"));
    c.slots = 2;
    c.temperature = Some(0.0);
    TritonAdapter::new(c).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_tritonserver_streams_cancels_and_reports_errors() {
    let test_started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("models");
    let markers = dir.path().join("markers");
    std::fs::create_dir_all(&markers).unwrap();
    let mut procs = Children::default();
    // The real model: llama-server with SmolLM2-135M-Instruct.
    let llama_url = tt::spawn_llama_server(&dir.path().join("llama.log"), 2, &mut procs);
    let params = tt::llm_params(&llama_url, &markers);
    tt::write_model(
        &repo,
        "llm",
        "llm.py",
        tt::VLLM_INPUTS,
        tt::VLLM_OUTPUTS,
        &params,
    );
    tt::write_model(
        &repo,
        "ensemble",
        "llm.py",
        tt::TRTLLM_INPUTS,
        tt::TRTLLM_OUTPUTS,
        &params,
    );
    tt::write_model(
        &repo,
        "failing",
        "failing.py",
        tt::VLLM_INPUTS,
        tt::TEXT_OUTPUT,
        "",
    );
    tt::write_model(
        &repo,
        "bytes",
        "bytes.py",
        tt::TRTLLM_INPUTS,
        tt::TEXT_OUTPUT,
        "",
    );

    let (http, metrics) = (test_fixtures::free_port(), test_fixtures::free_port());
    // Nothing listens yet: Loading, not Error.
    let h = adapter(http, metrics, "llm", InputConvention::Vllm)
        .health()
        .await
        .unwrap();
    assert_eq!(h.state, WorkerState::Loading, "{h:?}");

    let triton = Triton::spawn(&repo, &dir.path().join("triton.log"), &mut procs);
    let log_path = triton.log.clone();
    let (http, metrics) = (triton.http_port, triton.metrics_port);
    let vllm = adapter(http, metrics, "llm", InputConvention::Vllm);
    let spawned = triton.started;
    let ready = loop {
        let h = vllm.health().await.unwrap();
        match h.state {
            WorkerState::Ready => break spawned.elapsed(),
            WorkerState::Loading => {}
            WorkerState::Error => panic!("triton error: {h:?}\n{}", tail(&log_path)),
        }
        if let Ok(Some(s)) = procs.0[1].try_wait() {
            panic!("tritonserver exited ({s}):\n{}", tail(&log_path));
        }
        assert!(
            spawned.elapsed() < Duration::from_secs(120),
            "tritonserver not ready in 120 s:\n{}",
            tail(&log_path)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "tritonserver ready in {:.2} s (4 models)",
        ready.as_secs_f64()
    );

    let props = vllm.properties().await.unwrap();
    assert_eq!(props.engine, "triton");
    assert_eq!(props.engine_version, "triton-2.51.0");
    assert_eq!((props.slots_total, props.slots_busy), (2, 0));

    // 1. A real model through the vLLM convention, compared with llama-server itself.
    let prompt = "The capital of France is";
    let o = run(&vllm, req("job-vllm", prompt, 12, 7)).await;
    assert!(o.error.is_none(), "{:?}", o.error);
    let end = o.end.expect("end event");
    let text = o.tokens.concat();
    assert_eq!(end.tokens_out as usize, o.tokens.len());
    assert!(o.tokens.len() >= 2, "{:?}", o.tokens);
    assert!(end.prompt_tokens.is_some_and(|n| n > 0), "{end:?}");
    assert!(end.finish_reason.is_some(), "{end:?}");
    let direct: serde_json::Value = reqwest::Client::new()
        .post(format!("{llama_url}/completion"))
        .json(&serde_json::json!({"prompt": prompt, "n_predict": 12, "seed": 7, "temperature": 0.0, "cache_prompt": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        text,
        direct["content"].as_str().unwrap(),
        "Triton-streamed text = the engine's own"
    );
    eprintln!("vllm convention: {} tokens {text:?}", o.tokens.len());

    // 2. The same model through the TensorRT-LLM convention: same greedy text.
    let trt = adapter(http, metrics, "ensemble", InputConvention::TensorrtLlm);
    assert_eq!(trt.health().await.unwrap().state, WorkerState::Ready);
    let o2 = run(&trt, req("job-trt", prompt, 12, 7)).await;
    assert!(o2.error.is_none(), "{:?}", o2.error);
    assert_eq!(o2.tokens.concat(), text);
    assert_eq!(o2.end.unwrap().finish_reason, Some(FinishReason::Length));

    // 3. Cancel: closing the stream cancels the request inside Triton (the model sees
    //    is_cancelled() and writes its marker), by cancel() and by dropping the stream.
    for (job, by_cancel) in [("job-cancel", true), ("job-drop", false)] {
        let mut s = vllm.generate(req(job, prompt, 400, 1)).await.unwrap();
        let mut got = 0;
        while got < 3 {
            match s.next().await {
                Some(Ok(WorkerEvent::Token(_))) => got += 1,
                other => panic!("expected tokens, got {other:?}"),
            }
        }
        let t = Instant::now();
        if by_cancel {
            vllm.cancel(job).await.unwrap();
        } else {
            drop(s);
        }
        let marker = markers.join(format!("cancelled-{job}"));
        while !marker.is_file() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "{job}: the model never saw the cancel\n{}",
                tail(&log_path)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let at: u32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(at < 400, "{job}: cancelled after {at} tokens");
        eprintln!(
            "{job}: engine saw the cancel after {:.0} ms, at token {at}",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    // The slot is free again.
    let t = Instant::now();
    while vllm.properties().await.unwrap().slots_busy != 0 {
        assert!(t.elapsed() < Duration::from_secs(5), "slot still busy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 4. A model error in the middle of a 200 stream is a typed error after the tokens.
    let failing = adapter(http, metrics, "failing", InputConvention::Vllm);
    let o = run(&failing, req("job-fail", "x", 8, 0)).await;
    assert_eq!(o.tokens, vec!["tok0 ", "tok1 "]);
    let e = o.error.expect("typed error");
    assert_eq!(e.code, ErrorCode::Internal);
    assert!(e.message.contains("boom: model failed at token 2"), "{e:?}");
    assert!(o.end.is_none());

    // 5. Multi-byte characters cut across responses come back whole.
    let bytes = adapter(http, metrics, "bytes", InputConvention::TensorrtLlm);
    let text = "café 🦀 naïve 日本語 €𝄞 ok";
    for seed in 0..4 {
        let o = run(&bytes, req(&format!("job-bytes-{seed}"), text, 64, seed)).await;
        assert!(o.error.is_none(), "{:?}", o.error);
        assert_eq!(o.tokens.concat(), text, "seed {seed}");
        assert!(o.tokens.len() > 5, "{:?}", o.tokens);
        assert!(o.tokens.iter().all(|t| !t.contains('\u{fffd}')));
    }

    // 6. A model whose inputs do not fit the convention is reported, not streamed to.
    let wrong = adapter(http, metrics, "bytes", InputConvention::Vllm);
    let h = wrong.health().await.unwrap();
    assert_eq!(h.state, WorkerState::Error);
    assert!(
        h.last_error
            .as_deref()
            .unwrap_or("")
            .contains("sampling_parameters"),
        "{h:?}"
    );
    let missing = adapter(http, metrics, "nope", InputConvention::Vllm);
    let h = missing.health().await.unwrap();
    assert_eq!(h.state, WorkerState::Error);
    assert!(
        h.last_error
            .as_deref()
            .unwrap_or("")
            .contains("unknown model"),
        "{h:?}"
    );
    let e = match missing.generate(req("job-nope", "x", 4, 0)).await {
        Err(e) => e,
        Ok(_) => panic!("stream from an unknown model"),
    };
    assert_eq!(e.code, ErrorCode::Internal);
    assert!(e.message.contains("unknown model"), "{e:?}");

    // 7. Triton's own metrics for the model (counters lag a few seconds: poll).
    let t = Instant::now();
    let m = loop {
        let m = vllm.metrics().await.unwrap();
        if m.request_success_total.unwrap_or(0.0) >= 3.0 {
            break m;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "metrics never counted the requests: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(m.pending_requests, Some(0.0));
    assert!(
        m.request_failure_by_reason.contains_key("CANCELED"),
        "{m:?}"
    );
    assert!(m.cpu_utilization.is_some());
    if let Ok(p) = std::env::var("LLORCH_CAPTURE_TRITON_METRICS") {
        let body = reqwest::get(format!("http://127.0.0.1:{metrics}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        std::fs::write(p, body).unwrap();
    }
    eprintln!("metrics: {m:?}");
    eprintln!(
        "checks done at {:.1} s",
        test_started.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    drop(procs);
    eprintln!("engines stopped in {:.1} s", t.elapsed().as_secs_f64());
    eprintln!(
        "real Triton test took {:.1} s",
        test_started.elapsed().as_secs_f64()
    );
}
