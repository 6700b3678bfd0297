//! The adapter against a real NVIDIA Triton Inference Server (tritonserver 2.51.0 from the
//! `nvidia-pytriton` wheel, provisioned by `cargo xtask fetch-engine`) serving decoupled Python
//! models from a model repository made here: `llm`/`ensemble` stream a real model (SmolLM2 on
//! the provisioned llama-server) in the vLLM and TensorRT-LLM input conventions, `failing`
//! errors mid-stream, `bytes` splits multi-byte characters across responses.
//!
//! Missing Triton or llama-server is a failure with the command that provides them, never a
//! skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use adapter_api::{GenerateRequest, WorkerAdapter, WorkerEvent, WorkerState};
use api_types::{ErrorCode, FinishReason};
use futures::StreamExt;
use llorch_triton_adapter::{InputConvention, TritonAdapter, TritonConfig};

struct Install {
    venv: PathBuf,
    server: PathBuf,
    backends: PathBuf,
}

fn triton_install() -> Install {
    let record = test_fixtures::cache_dir().join("triton.json");
    let v: serde_json::Value = std::fs::read_to_string(&record)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_else(|| {
            panic!(
                "{} missing: the real-Triton test needs tritonserver; run `cargo xtask fetch-engine` \
                 (or `cargo xtask fetch-engine --engine triton`) first",
                record.display()
            )
        });
    let path = |k: &str| PathBuf::from(v[k].as_str().unwrap_or_default());
    let i = Install {
        venv: path("venv"),
        server: path("tritonserver"),
        backends: path("backends"),
    };
    assert!(
        i.server.is_file() && i.venv.join("bin/python").exists(),
        "{} is missing: run `cargo xtask fetch-engine --engine triton`",
        i.server.display()
    );
    i
}

/// Kills the engines when the test ends, also on panic.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // SIGTERM first: tritonserver then stops its Python stubs and frees /dev/shm.
            let _ = Command::new("kill").arg(c.id().to_string()).status();
        }
        for c in &mut self.0 {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

const VLLM_INPUTS: &str = r#"
  { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "stream" data_type: TYPE_BOOL dims: [ 1 ] optional: true },
  { name: "sampling_parameters" data_type: TYPE_STRING dims: [ 1 ] optional: true },
  { name: "exclude_input_in_output" data_type: TYPE_BOOL dims: [ 1 ] optional: true },
  { name: "return_finish_reason" data_type: TYPE_BOOL dims: [ 1 ] optional: true },
  { name: "return_num_input_tokens" data_type: TYPE_BOOL dims: [ 1 ] optional: true },
  { name: "return_num_output_tokens" data_type: TYPE_BOOL dims: [ 1 ] optional: true }"#;

const TRTLLM_INPUTS: &str = r#"
  { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "max_tokens" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "seed" data_type: TYPE_UINT64 dims: [ 1 ] optional: true },
  { name: "temperature" data_type: TYPE_FP32 dims: [ 1 ] optional: true },
  { name: "top_k" data_type: TYPE_INT32 dims: [ 1 ] optional: true },
  { name: "top_p" data_type: TYPE_FP32 dims: [ 1 ] optional: true },
  { name: "repetition_penalty" data_type: TYPE_FP32 dims: [ 1 ] optional: true },
  { name: "stop_words" data_type: TYPE_STRING dims: [ -1 ] optional: true },
  { name: "stream" data_type: TYPE_BOOL dims: [ 1 ] optional: true },
  { name: "exclude_input_in_output" data_type: TYPE_BOOL dims: [ 1 ] optional: true },
  { name: "return_num_input_tokens" data_type: TYPE_BOOL dims: [ 1 ] optional: true },
  { name: "return_num_output_tokens" data_type: TYPE_BOOL dims: [ 1 ] optional: true }"#;

fn write_model(repo: &Path, name: &str, py: &str, inputs: &str, outputs: &str, params: &str) {
    let dir = repo.join(name);
    std::fs::create_dir_all(dir.join("1")).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/models")
        .join(py);
    std::fs::copy(&src, dir.join("1/model.py")).unwrap();
    let config = format!(
        r#"name: "{name}"
backend: "python"
max_batch_size: 0
model_transaction_policy {{ decoupled: true }}
input [{inputs}
]
output [{outputs}
]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
{params}
"#
    );
    std::fs::write(dir.join("config.pbtxt"), config).unwrap();
}

const TEXT_OUT: &str = r#"
  { name: "text_output" data_type: TYPE_STRING dims: [ 1 ] }"#;
const LLM_OUTPUTS: &str = r#"
  { name: "text_output" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "finish_reason" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "num_input_tokens" data_type: TYPE_UINT32 dims: [ 1 ] },
  { name: "num_output_tokens" data_type: TYPE_UINT32 dims: [ 1 ] }"#;
const TRT_OUTPUTS: &str = r#"
  { name: "text_output" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "num_input_tokens" data_type: TYPE_UINT32 dims: [ 1 ] },
  { name: "num_output_tokens" data_type: TYPE_UINT32 dims: [ 1 ] }"#;

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

fn tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_tritonserver_streams_cancels_and_reports_errors() {
    let test_started = Instant::now();
    let install = triton_install();
    let engine = test_fixtures::engine();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("models");
    let markers = dir.path().join("markers");
    std::fs::create_dir_all(&markers).unwrap();

    // The real model: llama-server with SmolLM2-135M-Instruct.
    let llama_port = test_fixtures::free_port();
    let llama_log = std::fs::File::create(dir.path().join("llama.log")).unwrap();
    let llama = Command::new(&engine.llama_server)
        .arg("-m")
        .arg(&engine.model)
        .args(["--host", "127.0.0.1", "--port", &llama_port.to_string()])
        .args(["-np", "2", "-c", "2048"])
        .stdout(Stdio::from(llama_log.try_clone().unwrap()))
        .stderr(Stdio::from(llama_log))
        .spawn()
        .expect("spawn llama-server");
    let mut procs = Procs(vec![llama]);
    let llama_url = format!("http://127.0.0.1:{llama_port}");

    let params = format!(
        r#"parameters {{ key: "llama_url" value: {{ string_value: "{llama_url}" }} }}
parameters {{ key: "marker_dir" value: {{ string_value: "{}" }} }}"#,
        markers.display()
    );
    write_model(&repo, "llm", "llm.py", VLLM_INPUTS, LLM_OUTPUTS, &params);
    write_model(
        &repo,
        "ensemble",
        "llm.py",
        TRTLLM_INPUTS,
        TRT_OUTPUTS,
        &params,
    );
    write_model(&repo, "failing", "failing.py", VLLM_INPUTS, TEXT_OUT, "");
    write_model(&repo, "bytes", "bytes.py", TRTLLM_INPUTS, TEXT_OUT, "");

    let (http, grpc, metrics) = (
        test_fixtures::free_port(),
        test_fixtures::free_port(),
        test_fixtures::free_port(),
    );
    let vllm = adapter(http, metrics, "llm", InputConvention::Vllm);
    // Nothing listens yet: Loading, not Error.
    let h = vllm.health().await.unwrap();
    assert_eq!(h.state, WorkerState::Loading, "{h:?}");

    let log_path = dir.path().join("triton.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let path = format!(
        "{}:{}",
        install.venv.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let spawned = Instant::now();
    let triton = Command::new(&install.server)
        .arg(format!("--model-repository={}", repo.display()))
        .arg(format!(
            "--backend-directory={}",
            install.backends.display()
        ))
        .arg(format!("--http-port={http}"))
        .arg(format!("--grpc-port={grpc}"))
        .arg("--allow-grpc=false")
        .arg(format!("--metrics-port={metrics}"))
        .arg("--http-address=127.0.0.1")
        .env("PATH", path)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn tritonserver");
    procs.0.push(triton);

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
    drop(procs);
    eprintln!(
        "real Triton test took {:.1} s",
        test_started.elapsed().as_secs_f64()
    );
}
