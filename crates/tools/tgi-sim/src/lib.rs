//! `llorch-tgi-sim`: a simulator of the Hugging Face TGI router (text-generation-inference
//! 3.3.x) that speaks TGI's HTTP wire format as written down in `shared/engines/tgi.md` and
//! generates its tokens with a REAL llama.cpp engine: every request is proxied to a
//! `llama-server` `/completion` stream (`--llama-server-url`), so the text, the token ids (the
//! GGUF carries the model's own tokenizer) and the prompt token counts are real.
//!
//! Routes: `POST /generate_stream` (SSE, one event per token, `generated_text` + `details` on
//! the last event, errors as SSE events on HTTP 200, `:` keep-alive comments), `POST
//! /generate`, `GET /info`, `GET /health` (aliases `/`, `/ping`), `GET /metrics` (`tgi_`
//! families), `POST /chat_tokenize` (the chat rendered with the model's template).
//! `--max-concurrent-requests` is a semaphore taken before validation, as in TGI.
//! Like the real router it binds its port only once the engine behind it is ready, so a
//! client sees "connection refused" while it loads.
//!
//! Not TGI: `POST /sim/fault` arms fault injection (see README), and `GET /sim/stats`.
//!
//! Must not depend on any llama-orch crate: it stands in for an engine we do not control.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
pub use clap::Parser;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// The command line (`llorch-tgi-sim --help`).
#[derive(Parser, Clone, Debug)]
#[command(
    version,
    about = "Simulates the Hugging Face TGI router's HTTP API over a real llama-server"
)]
pub struct Args {
    /// Base URL of the llama-server that generates the tokens, e.g. http://127.0.0.1:8081.
    #[arg(long)]
    llama_server_url: String,
    #[arg(long, default_value = "127.0.0.1")]
    hostname: String,
    #[arg(short, long, default_value_t = 3000)]
    port: u16,
    /// Reported in `/info.model_id` (TGI: the HF id or path it loaded).
    #[arg(long, default_value = "HuggingFaceTB/SmolLM2-135M-Instruct")]
    model_id: String,
    #[arg(long, default_value_t = 128)]
    max_concurrent_requests: usize,
    /// Default: the engine's context per slot minus one.
    #[arg(long)]
    max_input_tokens: Option<u32>,
    /// Default: the engine's context per slot (`/props` n_ctx).
    #[arg(long)]
    max_total_tokens: Option<u32>,
    #[arg(long, default_value_t = 2)]
    max_best_of: u32,
    #[arg(long, default_value_t = 4)]
    max_stop_sequences: usize,
    #[arg(long, default_value_t = 5)]
    max_top_n_tokens: u32,
    #[arg(long, default_value_t = 2)]
    validation_workers: u32,
    #[arg(long, default_value_t = 4)]
    max_client_batch_size: u32,
    /// Interval of the `:` keep-alive comment on streams (TGI: axum's default, 15 s).
    #[arg(long, default_value_t = 15_000)]
    keep_alive_ms: u64,
    /// Write `data:{json}` (axum 0.6 / TGI before 2.x) instead of `data: {json}`.
    #[arg(long)]
    old_framing: bool,
    /// Id and text of the EOS token (SmolLM2: 2 `<|im_end|>`); llama-server does not stream it.
    #[arg(long, default_value_t = 2)]
    eos_token_id: u32,
    #[arg(long, default_value = "<|im_end|>")]
    eos_token_text: String,
    /// Extra time before the port is bound (a slow model load).
    #[arg(long, default_value_t = 0)]
    startup_delay_ms: u64,
    /// `/info.version`.
    #[arg(long, default_value = "3.3.6-dev0")]
    tgi_version: String,
    /// `/info.sha` (the real router reports its git sha).
    #[arg(long, default_value = "llorch-tgi-sim")]
    sha: String,
    /// Fault on every request: `KIND[:AFTER_TOKENS]`, KIND one of overloaded, validation,
    /// generation, incomplete_generation, incomplete_generation_stream, disconnect, garbage.
    #[arg(long)]
    fault: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Wire types, field order as TGI serializes them (router/src/lib.rs).

#[derive(Deserialize)]
struct GenerateRequest {
    inputs: String,
    #[serde(default)]
    parameters: Parameters,
}

#[derive(Deserialize, Default, Clone)]
struct Parameters {
    best_of: Option<u32>,
    temperature: Option<f32>,
    repetition_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    top_k: Option<i32>,
    top_p: Option<f32>,
    typical_p: Option<f32>,
    #[serde(default)]
    do_sample: bool,
    max_new_tokens: Option<u32>,
    #[serde(default)]
    return_full_text: Option<bool>,
    #[serde(default)]
    stop: Vec<String>,
    #[allow(dead_code)]
    truncate: Option<u32>,
    #[allow(dead_code)]
    #[serde(default)]
    watermark: bool,
    #[serde(default)]
    details: bool,
    #[serde(default)]
    decoder_input_details: bool,
    seed: Option<u64>,
    top_n_tokens: Option<u32>,
    grammar: Option<serde_json::Value>,
    #[allow(dead_code)]
    adapter_id: Option<String>,
}

#[derive(Serialize, Clone, Debug)]
struct Token {
    id: u32,
    text: String,
    logprob: f32,
    special: bool,
}

#[derive(Serialize)]
struct StreamDetails<'a> {
    finish_reason: &'a str,
    generated_tokens: u32,
    seed: Option<u64>,
    input_length: u32,
}

#[derive(Serialize)]
struct StreamResponse<'a> {
    index: u32,
    token: &'a Token,
    generated_text: Option<&'a str>,
    details: Option<StreamDetails<'a>>,
}

#[derive(Serialize)]
struct Details<'a> {
    finish_reason: &'a str,
    generated_tokens: u32,
    seed: Option<u64>,
    prefill: [(); 0],
    tokens: &'a [Token],
}

#[derive(Serialize)]
struct GenerateResponse<'a> {
    generated_text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details<'a>>,
}

#[derive(Serialize)]
struct ErrorResponse<'a> {
    error: &'a str,
    error_type: &'a str,
}

#[derive(Serialize)]
struct Info<'a> {
    model_id: &'a str,
    model_sha: Option<&'a str>,
    model_pipeline_tag: Option<&'a str>,
    max_concurrent_requests: usize,
    max_best_of: u32,
    max_stop_sequences: usize,
    max_input_tokens: u32,
    max_total_tokens: u32,
    validation_workers: u32,
    max_client_batch_size: u32,
    router: &'a str,
    version: &'a str,
    sha: Option<&'a str>,
    docker_label: Option<&'a str>,
}

// ---------------------------------------------------------------------------------------
// Errors (router/src/infer/mod.rs: InferError → error_type, HTTP status).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Validation,
    Overloaded,
    Generation,
    IncompleteGeneration,
    IncompleteGenerationStream,
    /// Not a TGI error: the body ends mid-stream with no error (a router that died).
    Disconnect,
    /// Not a TGI error: a `data:` line that is not JSON, then the end.
    Garbage,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "validation" => Kind::Validation,
            "overloaded" => Kind::Overloaded,
            "generation" => Kind::Generation,
            "incomplete_generation" => Kind::IncompleteGeneration,
            "incomplete_generation_stream" => Kind::IncompleteGenerationStream,
            "disconnect" => Kind::Disconnect,
            "garbage" => Kind::Garbage,
            _ => return None,
        })
    }

    fn error_type(self) -> &'static str {
        match self {
            Kind::Validation => "validation",
            Kind::Overloaded => "overloaded",
            Kind::Generation | Kind::Disconnect | Kind::Garbage => "generation",
            Kind::IncompleteGeneration => "incomplete_generation",
            Kind::IncompleteGenerationStream => "incomplete_generation_stream",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Kind::Validation => StatusCode::UNPROCESSABLE_ENTITY,
            Kind::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            Kind::Generation | Kind::Disconnect | Kind::Garbage => StatusCode::FAILED_DEPENDENCY,
            Kind::IncompleteGeneration | Kind::IncompleteGenerationStream => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// `tgi_request_failure{err=…}` label.
    fn metric(self) -> &'static str {
        match self {
            Kind::Validation => "validation",
            Kind::Overloaded => "overloaded",
            Kind::Generation | Kind::Disconnect | Kind::Garbage => "generation",
            Kind::IncompleteGeneration | Kind::IncompleteGenerationStream => "incomplete",
        }
    }

    fn default_message(self) -> String {
        match self {
            Kind::Validation => "Input validation error: injected by llorch-tgi-sim".into(),
            Kind::Overloaded => "Model is overloaded".into(),
            Kind::Generation | Kind::Disconnect | Kind::Garbage => {
                "Request failed during generation: Server error: injected by llorch-tgi-sim".into()
            }
            Kind::IncompleteGeneration => "Incomplete generation".into(),
            Kind::IncompleteGenerationStream => "Incomplete generation stream".into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Failure {
    kind: Kind,
    message: String,
}

impl Failure {
    fn new(kind: Kind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }

    /// TGI's message for a generation that the backend failed.
    fn server(detail: impl std::fmt::Display) -> Self {
        Failure::new(
            Kind::Generation,
            format!("Request failed during generation: Server error: {detail}"),
        )
    }

    fn validation(detail: impl std::fmt::Display) -> Self {
        Failure::new(
            Kind::Validation,
            format!("Input validation error: {detail}"),
        )
    }

    fn body(&self) -> String {
        serde_json::to_string(&ErrorResponse {
            error: &self.message,
            error_type: self.kind.error_type(),
        })
        .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Deserialize)]
struct Fault {
    error_type: String,
    #[serde(default)]
    after_tokens: u32,
    /// How many requests it applies to (default 1).
    #[serde(default = "one")]
    count: u32,
    #[serde(default)]
    message: Option<String>,
}

fn one() -> u32 {
    1
}

// ---------------------------------------------------------------------------------------
// Metrics (docs/source/reference/metrics.md names).

struct Hist {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum in micro-units, to keep it an integer.
    sum_micro: AtomicU64,
    count: AtomicU64,
}

impl Hist {
    fn new(bounds: &'static [f64]) -> Self {
        Hist {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micro: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    fn observe(&self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if v <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micro
            .fetch_add((v * 1e6).max(0.0) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, name: &str, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micro.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {n}");
    }
}

const DURATION_BUCKETS: &[f64] = &[0.001, 0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const TOKEN_BUCKETS: &[f64] = &[1.0, 8.0, 32.0, 128.0, 512.0, 1024.0, 2048.0, 4096.0];

struct Metrics {
    request_count: AtomicU64,
    request_success: AtomicU64,
    /// By `err` label: validation, overloaded, generation, incomplete, dropped.
    failure: [AtomicU64; 5],
    queue_size: AtomicI64,
    batch_current_size: AtomicI64,
    request_duration: Hist,
    generated_tokens: Hist,
    input_length: Hist,
}

const FAILURE_LABELS: [&str; 5] = [
    "validation",
    "overloaded",
    "generation",
    "incomplete",
    "dropped",
];

impl Metrics {
    fn fail(&self, label: &str) {
        if let Some(i) = FAILURE_LABELS.iter().position(|l| *l == label) {
            self.failure[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let c = |out: &mut String, name: &str, v: u64| {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {v}");
        };
        c(
            &mut out,
            "tgi_request_count",
            self.request_count.load(Ordering::Relaxed),
        );
        c(
            &mut out,
            "tgi_request_success",
            self.request_success.load(Ordering::Relaxed),
        );
        let _ = writeln!(out, "# TYPE tgi_request_failure counter");
        for (l, v) in FAILURE_LABELS.iter().zip(&self.failure) {
            let v = v.load(Ordering::Relaxed);
            if v > 0 {
                let _ = writeln!(out, "tgi_request_failure{{err=\"{l}\"}} {v}");
            }
        }
        let _ = writeln!(
            out,
            "# TYPE tgi_queue_size gauge\ntgi_queue_size {}",
            self.queue_size.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE tgi_batch_current_size gauge\ntgi_batch_current_size {}",
            self.batch_current_size.load(Ordering::Relaxed)
        );
        self.request_duration
            .render("tgi_request_duration", &mut out);
        self.generated_tokens
            .render("tgi_request_generated_tokens", &mut out);
        self.input_length
            .render("tgi_request_input_length", &mut out);
        out
    }
}

// ---------------------------------------------------------------------------------------

struct Sim {
    a: Args,
    http: reqwest::Client,
    permits: Arc<Semaphore>,
    m: Metrics,
    faults: Mutex<VecDeque<Fault>>,
    max_input_tokens: u32,
    max_total_tokens: u32,
    /// Streams whose client went away before the end (sim-only `/sim/stats`).
    cancelled_streams: AtomicU64,
    /// llama-server `/completion` requests opened and closed.
    upstream_open: AtomicI64,
}

impl Sim {
    fn take_fault(&self) -> Option<(Kind, u32, Option<String>)> {
        let mut q = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = q.front_mut() {
            let kind = Kind::parse(&f.error_type)?;
            let out = (kind, f.after_tokens, f.message.clone());
            f.count = f.count.saturating_sub(1);
            if f.count == 0 {
                q.pop_front();
            }
            return Some(out);
        }
        drop(q);
        let spec = self.a.fault.as_deref()?;
        let (k, n) = spec.split_once(':').unwrap_or((spec, "0"));
        Some((Kind::parse(k)?, n.parse().unwrap_or(0), None))
    }
}

/// Starts the simulator over `llama_server_url` on a free loopback port, on its own thread
/// with its own single-threaded runtime (so that it shares no workers with the caller), and
/// returns its base URL once it accepts connections (it binds only when the engine behind it
/// is ready), or an error after `timeout`. The thread lives until the process exits. Blocks:
/// call it from async code through `spawn_blocking` or `block_in_place`.
pub fn start_on_thread(llama_server_url: &str, timeout: Duration) -> Result<String, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("free port: {e}"))?
        .port();
    let args = Args::try_parse_from([
        "llorch-tgi-sim",
        "--llama-server-url",
        llama_server_url,
        "--port",
        &port.to_string(),
    ])
    .map_err(|e| e.to_string())?;
    let thread = std::thread::Builder::new()
        .name("llorch-tgi-sim".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => {
                    rt.block_on(run(args));
                }
                Err(e) => eprintln!("llorch-tgi-sim: runtime: {e}"),
            }
        })
        .map_err(|e| format!("spawning the simulator thread: {e}"))?;
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if thread.is_finished() {
            return Err("llorch-tgi-sim stopped before it was listening".into());
        }
        if t.elapsed() > timeout {
            return Err(format!(
                "llorch-tgi-sim not listening within {timeout:?} (is {llama_server_url} up?)"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(format!("http://127.0.0.1:{port}"))
}

/// Runs the simulator until SIGTERM or Ctrl-C: waits for llama-server, then binds and serves.
/// Tests may run it in-process (`Args::try_parse_from`, `tokio::spawn(run(args))`).
pub async fn run(a: Args) -> std::process::ExitCode {
    if let Some(f) = &a.fault {
        let k = f.split_once(':').map_or(f.as_str(), |(k, _)| k);
        if Kind::parse(k).is_none() {
            eprintln!("llorch-tgi-sim: unknown --fault kind {k:?}");
            return std::process::ExitCode::from(2);
        }
    }
    let http = match reqwest::Client::builder()
        .tcp_nodelay(true)
        // llama-server closes the connection after each streamed /completion.
        .pool_max_idle_per_host(0)
        .build()
    {
        Ok(h) => h,
        Err(e) => {
            eprintln!("llorch-tgi-sim: http client: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let base = a.llama_server_url.trim_end_matches('/').to_string();
    // Like TGI's launcher: the router starts (binds) only once the model is loaded.
    let n_ctx = loop {
        if let Some(n) = engine_ctx(&http, &base).await {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(a.startup_delay_ms)).await;
    let max_total_tokens = a.max_total_tokens.unwrap_or(n_ctx);
    let max_input_tokens = a
        .max_input_tokens
        .unwrap_or(max_total_tokens.saturating_sub(1));
    let sim = Arc::new(Sim {
        permits: Arc::new(Semaphore::new(a.max_concurrent_requests)),
        http,
        m: Metrics {
            request_count: AtomicU64::new(0),
            request_success: AtomicU64::new(0),
            failure: Default::default(),
            queue_size: AtomicI64::new(0),
            batch_current_size: AtomicI64::new(0),
            request_duration: Hist::new(DURATION_BUCKETS),
            generated_tokens: Hist::new(TOKEN_BUCKETS),
            input_length: Hist::new(TOKEN_BUCKETS),
        },
        faults: Mutex::new(VecDeque::new()),
        max_input_tokens,
        max_total_tokens,
        cancelled_streams: AtomicU64::new(0),
        upstream_open: AtomicI64::new(0),
        a: Args {
            llama_server_url: base,
            ..a.clone()
        },
    });
    let app = Router::new()
        .route("/", get(health))
        .route("/health", get(health))
        .route("/ping", get(health))
        .route("/info", get(info))
        .route("/metrics", get(metrics))
        .route("/generate", post(generate))
        .route("/generate_stream", post(generate_stream))
        .route("/chat_tokenize", post(chat_tokenize))
        .route("/sim/fault", post(arm_fault).delete(clear_faults))
        .route("/sim/stats", get(stats))
        .with_state(sim);
    let addr = format!("{}:{}", a.hostname, a.port);
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("llorch-tgi-sim: bind {addr}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    eprintln!(
        "llorch-tgi-sim: listening on {addr} (engine {}, n_ctx {n_ctx})",
        a.llama_server_url
    );
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let shutdown = async {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return std::future::pending().await;
        };
        tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
    };
    match axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llorch-tgi-sim: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The engine's context per slot once it answers `/health` 200.
async fn engine_ctx(http: &reqwest::Client, base: &str) -> Option<u32> {
    let h = http
        .get(format!("{base}/health"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if !h.status().is_success() {
        return None;
    }
    let p: serde_json::Value = http
        .get(format!("{base}/props"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    p["default_generation_settings"]["n_ctx"]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn health(State(s): State<Arc<Sim>>) -> Response {
    let ok = s
        .http
        .get(format!("{}/health", s.a.llama_server_url))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    if ok {
        StatusCode::OK.into_response()
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":"unhealthy","error_type":"healthcheck"}"#.into(),
        )
    }
}

async fn info(State(s): State<Arc<Sim>>) -> Response {
    let i = Info {
        model_id: &s.a.model_id,
        model_sha: None,
        model_pipeline_tag: Some("text-generation"),
        max_concurrent_requests: s.a.max_concurrent_requests,
        max_best_of: s.a.max_best_of,
        max_stop_sequences: s.a.max_stop_sequences,
        max_input_tokens: s.max_input_tokens,
        max_total_tokens: s.max_total_tokens,
        validation_workers: s.a.validation_workers,
        max_client_batch_size: s.a.max_client_batch_size,
        router: "text-generation-router",
        version: &s.a.tgi_version,
        sha: Some(&s.a.sha),
        docker_label: None,
    };
    json_response(
        StatusCode::OK,
        serde_json::to_string(&i).unwrap_or_default(),
    )
}

async fn metrics(State(s): State<Arc<Sim>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.m.render(),
    )
        .into_response()
}

async fn stats(State(s): State<Arc<Sim>>) -> Response {
    json_response(
        StatusCode::OK,
        serde_json::json!({
            "cancelled_streams": s.cancelled_streams.load(Ordering::Relaxed),
            "upstream_open": s.upstream_open.load(Ordering::Relaxed),
            "permits_available": s.permits.available_permits(),
        })
        .to_string(),
    )
}

async fn arm_fault(State(s): State<Arc<Sim>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Fault>(&body) {
        Ok(f) if Kind::parse(&f.error_type).is_some() && f.count > 0 => {
            s.faults
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_back(f);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(f) => (
            StatusCode::BAD_REQUEST,
            format!("unknown error_type {:?} or count 0", f.error_type),
        )
            .into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn clear_faults(State(s): State<Arc<Sim>>) -> Response {
    s.faults.lock().unwrap_or_else(|p| p.into_inner()).clear();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct ChatTokenizeRequest {
    messages: Vec<serde_json::Value>,
}

#[derive(Serialize)]
struct SimpleToken {
    id: u32,
    text: String,
    start: usize,
    stop: usize,
}

#[derive(Serialize)]
struct ChatTokenizeResponse {
    tokenize_response: Vec<SimpleToken>,
    templated_text: String,
}

/// `POST /chat_tokenize`: the chat rendered with the model's template (llama-server
/// `/apply-template`, the GGUF's own template) and its tokens (`/tokenize` with pieces).
async fn chat_tokenize(State(s): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    let json_ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_ct {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Expected request with `Content-Type: application/json`",
        )
            .into_response();
    }
    let req: ChatTokenizeRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("Failed to deserialize the JSON body into the target type: {e}"),
            )
                .into_response();
        }
    };
    let template_error = |m: String| {
        json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            Failure::new(Kind::Validation, m).body().replace(
                "\"error_type\":\"validation\"",
                "\"error_type\":\"template_error\"",
            ),
        )
    };
    let base = &s.a.llama_server_url;
    let applied: serde_json::Value = match s
        .http
        .post(format!("{base}/apply-template"))
        .json(&serde_json::json!({"messages": req.messages}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => r.json().await.unwrap_or_default(),
        Ok(r) => return template_error(r.text().await.unwrap_or_default()),
        Err(e) => return template_error(e.to_string()),
    };
    let Some(text) = applied["prompt"].as_str().map(str::to_string) else {
        return template_error("no prompt from the template".into());
    };
    let pieces: serde_json::Value = match s
        .http
        .post(format!("{base}/tokenize"))
        .json(&serde_json::json!({"content": text, "add_special": true, "with_pieces": true}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(e) => return template_error(e.to_string()),
    };
    let mut at = 0;
    let tokens = pieces["tokens"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    let piece = t["piece"].as_str().unwrap_or("").to_string();
                    let start = at;
                    at += piece.len();
                    SimpleToken {
                        id: t["id"].as_u64().unwrap_or(0) as u32,
                        text: piece,
                        start,
                        stop: at,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    json_response(
        StatusCode::OK,
        serde_json::to_string(&ChatTokenizeResponse {
            tokenize_response: tokens,
            templated_text: text,
        })
        .unwrap_or_default(),
    )
}

// ---------------------------------------------------------------------------------------
// Validation (router/src/validation.rs, `Validation::validate`).

struct Valid {
    inputs: String,
    input_length: u32,
    max_new_tokens: u32,
    sampling: bool,
    temperature: f32,
    top_k: i32,
    top_p: f32,
    typical_p: f32,
    repetition_penalty: f32,
    seed: u64,
    stop: Vec<String>,
    details: bool,
    return_full_text: bool,
}

async fn validate(s: &Sim, r: GenerateRequest, stream: bool) -> Result<Valid, Failure> {
    let p = r.parameters;
    let best_of = p.best_of.unwrap_or(1);
    if best_of == 0 || best_of > s.a.max_best_of {
        return Err(Failure::validation(format!(
            "`best_of` must be > 0 and <= {}. Given: {best_of}",
            s.a.max_best_of
        )));
    }
    if best_of > 1 && stream {
        return Err(Failure::validation(
            "`best_of` != 1 is not supported when streaming tokens",
        ));
    }
    if best_of > 1 && p.seed.is_some() {
        return Err(Failure::validation(
            "`seed` must not be set when `best_of` > 1",
        ));
    }
    if best_of > 1 {
        // Not modelled: several sequences per request.
        return Err(Failure::validation(
            "`best_of` != 1 is not allowed for this endpoint",
        ));
    }
    let temperature = p.temperature.unwrap_or(1.0);
    if temperature <= 0.0 {
        return Err(Failure::validation(
            "`temperature` must be strictly positive",
        ));
    }
    let repetition_penalty = p.repetition_penalty.unwrap_or(1.0);
    if repetition_penalty <= 0.0 {
        return Err(Failure::validation(
            "`repetition_penalty` must be strictly positive",
        ));
    }
    if let Some(f) = p.frequency_penalty
        && !(-2.0..=2.0).contains(&f)
    {
        return Err(Failure::validation(
            "`frequency_penalty` must be >= -2.0 and <= 2.0",
        ));
    }
    let top_p = p.top_p.unwrap_or(1.0);
    if p.top_p.is_some() && (top_p <= 0.0 || top_p >= 1.0) {
        return Err(Failure::validation("`top_p` must be > 0.0 and < 1.0"));
    }
    let typical_p = p.typical_p.unwrap_or(1.0);
    if p.typical_p.is_some() && (typical_p <= 0.0 || typical_p >= 1.0) {
        return Err(Failure::validation("`typical_p` must be > 0.0 and < 1.0"));
    }
    let top_k = p.top_k.unwrap_or(0);
    if p.top_k.is_some() && top_k <= 0 {
        return Err(Failure::validation("`top_k` must be strictly positive"));
    }
    if p.max_new_tokens == Some(0) {
        return Err(Failure::validation(
            "`max_new_tokens` must be strictly positive",
        ));
    }
    if p.stop.len() > s.a.max_stop_sequences {
        return Err(Failure::validation(format!(
            "`stop` supports up to {} stop sequences. Given: {}",
            s.a.max_stop_sequences,
            p.stop.len()
        )));
    }
    if let Some(n) = p.top_n_tokens
        && n > s.a.max_top_n_tokens
    {
        return Err(Failure::validation(format!(
            "`top_n_tokens` must be >= 0 and <= {}. Given: {n}",
            s.a.max_top_n_tokens
        )));
    }
    if p.decoder_input_details && stream {
        return Err(Failure::validation(
            "`decoder_input_details` == true is not supported when streaming tokens",
        ));
    }
    if p.grammar.is_some() {
        // Not modelled (TGI with --disable-grammar-support answers the same).
        return Err(Failure::validation("grammar is not supported"));
    }
    if r.inputs.is_empty() {
        return Err(Failure::validation("`inputs` cannot be empty"));
    }
    let input_length = tokenize(s, &r.inputs).await?;
    if input_length > s.max_input_tokens {
        return Err(Failure::validation(format!(
            "`inputs` must have less than {} tokens. Given: {input_length}",
            s.max_input_tokens
        )));
    }
    let max_new_tokens = match p.max_new_tokens {
        Some(n) => n,
        None => s.max_total_tokens.saturating_sub(input_length).max(1),
    };
    if u64::from(input_length) + u64::from(max_new_tokens) > u64::from(s.max_total_tokens) {
        return Err(Failure::validation(format!(
            "`inputs` tokens + `max_new_tokens` must be <= {}. Given: {input_length} `inputs` tokens and {max_new_tokens} `max_new_tokens`",
            s.max_total_tokens
        )));
    }
    // Python NextTokenChooser: sampling = do_sample or any warper differs from its default.
    let sampling =
        p.do_sample || temperature != 1.0 || top_k != 0 || top_p < 1.0 || typical_p < 1.0;
    Ok(Valid {
        inputs: r.inputs,
        input_length,
        max_new_tokens,
        sampling,
        temperature,
        top_k,
        top_p,
        typical_p,
        repetition_penalty,
        seed: p.seed.unwrap_or_else(random_seed),
        stop: p.stop,
        details: p.details,
        return_full_text: p.return_full_text.unwrap_or(false),
    })
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// Prompt length in the model's tokens (llama-server `/tokenize`, the GGUF's tokenizer).
async fn tokenize(s: &Sim, text: &str) -> Result<u32, Failure> {
    let r = s
        .http
        .post(format!("{}/tokenize", s.a.llama_server_url))
        .json(&serde_json::json!({"content": text, "add_special": true}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| Failure::validation(format!("tokenizer error {e}")))?;
    let v: serde_json::Value = r
        .json()
        .await
        .map_err(|e| Failure::validation(format!("tokenizer error {e}")))?;
    v["tokens"]
        .as_array()
        .map(|t| t.len() as u32)
        .ok_or_else(|| Failure::validation("tokenizer error: no tokens"))
}

// ---------------------------------------------------------------------------------------
// Generation: one task per request, reading llama-server's stream.

/// What the generation task reports, in order: tokens, then exactly one End or Error.
enum GenEvent {
    Token(Token),
    End {
        last: Token,
        generated_text: String,
        finish_reason: &'static str,
        generated_tokens: u32,
    },
    Error(Failure),
    /// Fault injection: a non-JSON data line.
    Garbage,
    /// Fault injection: end the body here.
    Cut,
}

/// Counts a request in flight: queued until its first token, then in the batch. A request
/// dropped before its end counts as `tgi_request_failure{err="dropped"}`.
struct Flight {
    sim: Arc<Sim>,
    started: Instant,
    in_batch: bool,
    done: bool,
    /// Queue/batch gauges already decremented (at the end, before the last event is sent).
    left: bool,
    _permit: OwnedSemaphorePermit,
}

impl Flight {
    fn new(sim: Arc<Sim>, permit: OwnedSemaphorePermit) -> Self {
        sim.m.queue_size.fetch_add(1, Ordering::Relaxed);
        Flight {
            sim,
            started: Instant::now(),
            in_batch: false,
            done: false,
            left: false,
            _permit: permit,
        }
    }

    fn first_token(&mut self) {
        if !self.in_batch && !self.left {
            self.in_batch = true;
            self.sim.m.queue_size.fetch_sub(1, Ordering::Relaxed);
            self.sim
                .m
                .batch_current_size
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Leaves the queue or the batch (once).
    fn leave(&mut self) {
        if std::mem::replace(&mut self.left, true) {
            return;
        }
        let m = &self.sim.m;
        if self.in_batch {
            m.batch_current_size.fetch_sub(1, Ordering::Relaxed);
        } else {
            m.queue_size.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn succeed(&mut self, generated: u32, input: u32) {
        self.leave();
        self.done = true;
        let m = &self.sim.m;
        m.request_success.fetch_add(1, Ordering::Relaxed);
        m.request_duration
            .observe(self.started.elapsed().as_secs_f64());
        m.generated_tokens.observe(f64::from(generated));
        m.input_length.observe(f64::from(input));
    }

    fn fail(&mut self, kind: Kind) {
        self.leave();
        self.done = true;
        self.sim.m.fail(kind.metric());
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.leave();
        let m = &self.sim.m;
        if !self.done {
            m.fail("dropped");
            self.sim.cancelled_streams.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Upstream(Arc<Sim>);

impl Drop for Upstream {
    fn drop(&mut self) {
        self.0.upstream_open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn u32_at(v: &serde_json::Value, k: &str) -> Option<u32> {
    v[k].as_u64().and_then(|n| u32::try_from(n).ok())
}

/// logprob of the sampled token from llama-server's `completion_probabilities` (`n_probs`).
fn logprob_of(chunk: &serde_json::Value) -> f32 {
    let p = &chunk["completion_probabilities"][0];
    if let Some(l) = p["logprob"].as_f64() {
        return l as f32;
    }
    // Older llama-server: probabilities of the top candidates.
    if let Some(pr) = p["probs"][0]["prob"].as_f64()
        && pr > 0.0
    {
        return pr.ln() as f32;
    }
    0.0
}

type GenTx = mpsc::Sender<GenEvent>;

async fn generation(
    sim: Arc<Sim>,
    v: Valid,
    mut flight: Flight,
    fault: Option<(Kind, u32, Option<String>)>,
    tx: GenTx,
) {
    let fail = |flight: &mut Flight, f: Failure| {
        flight.fail(f.kind);
        GenEvent::Error(f)
    };
    if let Some((kind, 0, msg)) = &fault {
        let ev = inject(&mut flight, *kind, msg.clone());
        let _ = tx.send(ev).await;
        return;
    }
    let mut body = serde_json::json!({
        "prompt": v.inputs,
        "n_predict": v.max_new_tokens,
        "stream": true,
        // llama-server seeds are 32-bit.
        "seed": v.seed & 0xffff_ffff,
        "n_probs": 1,
        "cache_prompt": false,
        "min_p": 0.0,
        "repeat_penalty": v.repetition_penalty,
        "stop": v.stop,
    });
    if v.sampling {
        body["temperature"] = v.temperature.into();
        body["top_k"] = v.top_k.into();
        body["top_p"] = v.top_p.into();
        body["typical_p"] = v.typical_p.into();
    } else {
        body["temperature"] = 0.0.into();
        body["top_k"] = 1.into();
    }
    let resp = sim
        .http
        .post(format!("{}/completion", sim.a.llama_server_url))
        .json(&body)
        .send()
        .await;
    let resp = match resp {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            let _ = tx
                .send(fail(
                    &mut flight,
                    Failure::server(format!("{status} {text}")),
                ))
                .await;
            return;
        }
        Err(e) => {
            let _ = tx.send(fail(&mut flight, Failure::server(e))).await;
            return;
        }
    };
    sim.upstream_open.fetch_add(1, Ordering::Relaxed);
    let _upstream = Upstream(sim.clone());
    let mut events = resp.bytes_stream().eventsource();
    let mut sent: u32 = 0;
    let mut text = String::new();
    let mut pending: Option<Token> = None;
    let mut eos_logprob = 0.0f32;
    loop {
        let next = tokio::select! {
            ev = events.next() => ev,
            // The client is gone: dropping the response closes llama-server's connection,
            // which frees its slot (TGI drops the entry from the batch).
            _ = tx.closed() => return,
        };
        let chunk: serde_json::Value = match next {
            None => {
                let _ = tx
                    .send(fail(
                        &mut flight,
                        Failure::new(
                            Kind::IncompleteGenerationStream,
                            "Incomplete generation stream",
                        ),
                    ))
                    .await;
                return;
            }
            Some(Err(e)) => {
                let _ = tx.send(fail(&mut flight, Failure::server(e))).await;
                return;
            }
            Some(Ok(ev)) => match serde_json::from_str(&ev.data) {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(fail(&mut flight, Failure::server(e))).await;
                    return;
                }
            },
        };
        if let Some(err) = chunk.get("error") {
            let msg = err["message"].as_str().unwrap_or("engine error");
            let _ = tx.send(fail(&mut flight, Failure::server(msg))).await;
            return;
        }
        let content = chunk["content"].as_str().unwrap_or("").to_string();
        let id = chunk["tokens"]
            .as_array()
            .and_then(|t| t.last())
            .and_then(|t| t.as_u64())
            .map_or(0, |t| t as u32);
        let stop = chunk["stop"].as_bool().unwrap_or(false);
        if !stop {
            if content.is_empty() && (id == 0 || id == sim.a.eos_token_id) {
                // llama-server streams the EOS token as an empty chunk; TGI sends it as the
                // last (special) token, which the final chunk produces.
                if id == sim.a.eos_token_id {
                    eos_logprob = logprob_of(&chunk);
                }
                continue;
            }
            let tok = Token {
                id,
                text: content,
                logprob: logprob_of(&chunk),
                special: false,
            };
            let predicted = u32_at(&chunk, "tokens_predicted").unwrap_or(sent + 1);
            if let Some(p) = pending.take() {
                text.push_str(&p.text);
                sent += 1;
                if tx.send(GenEvent::Token(p)).await.is_err() {
                    return;
                }
            }
            if predicted >= v.max_new_tokens {
                // The last token: it carries generated_text once llama-server confirms.
                pending = Some(tok);
                continue;
            }
            if let Some((kind, after, msg)) = &fault
                && sent >= *after
            {
                let ev = inject(&mut flight, *kind, msg.clone());
                let _ = tx.send(ev).await;
                return;
            }
            flight.first_token();
            text.push_str(&tok.text);
            sent += 1;
            if tx.send(GenEvent::Token(tok)).await.is_err() {
                return;
            }
            continue;
        }
        // The final chunk: decide the last token event and the finish reason.
        flight.first_token();
        let flushed = content;
        let (last, finish_reason) = match chunk["stop_type"].as_str() {
            Some("eos") => {
                if !flushed.is_empty() {
                    text.push_str(&flushed);
                    sent += 1;
                    let t = Token {
                        id,
                        text: flushed,
                        logprob: 0.0,
                        special: false,
                    };
                    if tx.send(GenEvent::Token(t)).await.is_err() {
                        return;
                    }
                }
                if let Some(p) = pending.take() {
                    text.push_str(&p.text);
                    sent += 1;
                    if tx.send(GenEvent::Token(p)).await.is_err() {
                        return;
                    }
                }
                (
                    Token {
                        id: sim.a.eos_token_id,
                        text: sim.a.eos_token_text.clone(),
                        logprob: eos_logprob,
                        special: true,
                    },
                    "eos_token",
                )
            }
            Some("word") => {
                if let Some(p) = pending.take() {
                    text.push_str(&p.text);
                    sent += 1;
                    if tx.send(GenEvent::Token(p)).await.is_err() {
                        return;
                    }
                }
                // TGI keeps the stop sequence in the text; llama-server strips it.
                let word = chunk["stopping_word"].as_str().unwrap_or("");
                let t = format!("{flushed}{word}");
                text.push_str(&t);
                (
                    Token {
                        id,
                        text: t,
                        logprob: 0.0,
                        special: false,
                    },
                    "stop_sequence",
                )
            }
            _ => {
                let mut last = pending.take().unwrap_or(Token {
                    id,
                    text: String::new(),
                    logprob: 0.0,
                    special: false,
                });
                last.text.push_str(&flushed);
                text.push_str(&last.text);
                (last, "length")
            }
        };
        sent += 1;
        let input = u32_at(&chunk, "tokens_evaluated").unwrap_or(v.input_length);
        flight.succeed(sent, input);
        let _ = tx
            .send(GenEvent::End {
                last,
                generated_text: text,
                finish_reason,
                generated_tokens: sent,
            })
            .await;
        return;
    }
}

fn inject(flight: &mut Flight, kind: Kind, msg: Option<String>) -> GenEvent {
    match kind {
        Kind::Disconnect => {
            flight.fail(kind);
            GenEvent::Cut
        }
        Kind::Garbage => {
            flight.fail(kind);
            GenEvent::Garbage
        }
        _ => {
            flight.fail(kind);
            GenEvent::Error(Failure::new(
                kind,
                msg.unwrap_or_else(|| kind.default_message()),
            ))
        }
    }
}

/// Everything before generation: body, permit, fault, validation.
async fn admit(
    sim: &Arc<Sim>,
    headers: &HeaderMap,
    body: &Bytes,
    stream: bool,
) -> Result<Result<(Valid, Flight, Option<(Kind, u32, Option<String>)>), Failure>, Response> {
    // axum's Json extractor (TGI uses it): rejections are plain-text 415 / 422 / 400.
    let json_ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_ct {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Expected request with `Content-Type: application/json`",
        )
            .into_response());
    }
    let req: GenerateRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("Failed to parse the request body as JSON: {e}"),
            )
                .into_response());
        }
        Err(e) => {
            return Err((
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("Failed to deserialize the JSON body into the target type: {e}"),
            )
                .into_response());
        }
    };
    sim.m.request_count.fetch_add(1, Ordering::Relaxed);
    let fault = sim.take_fault();
    let permit = match fault {
        Some((Kind::Overloaded, 0, _)) => None,
        _ => sim.permits.clone().try_acquire_owned().ok(),
    };
    let Some(permit) = permit else {
        sim.m.fail("overloaded");
        let msg = fault
            .and_then(|f| f.2)
            .unwrap_or_else(|| Kind::Overloaded.default_message());
        return Ok(Err(Failure::new(Kind::Overloaded, msg)));
    };
    if let Some((Kind::Validation, 0, msg)) = &fault {
        sim.m.fail("validation");
        return Ok(Err(Failure::new(
            Kind::Validation,
            msg.clone()
                .unwrap_or_else(|| Kind::Validation.default_message()),
        )));
    }
    match validate(sim, req, stream).await {
        Ok(v) => Ok(Ok((v, Flight::new(sim.clone(), permit), fault))),
        Err(f) => {
            sim.m.fail(f.kind.metric());
            Ok(Err(f))
        }
    }
}

fn sse_line(old_framing: bool, json: &str) -> Bytes {
    Bytes::from(if old_framing {
        format!("data:{json}\n\n")
    } else {
        format!("data: {json}\n\n")
    })
}

async fn generate_stream(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    let admitted = match admit(&sim, &headers, &body, true).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let old = sim.a.old_framing;
    let (out_tx, out_rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    match admitted {
        Err(f) => {
            let _ = out_tx.try_send(Ok(sse_line(old, &f.body())));
        }
        Ok((v, flight, fault)) => {
            let details = v.details;
            let seed = v.sampling.then_some(v.seed);
            let input_length = v.input_length;
            let (gen_tx, mut gen_rx) = mpsc::channel(64);
            tokio::spawn(generation(sim.clone(), v, flight, fault, gen_tx));
            let keep_alive = Duration::from_millis(sim.a.keep_alive_ms.max(1));
            tokio::spawn(async move {
                let mut index = 0u32;
                let mut tick =
                    tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive);
                loop {
                    let ev = tokio::select! {
                        ev = gen_rx.recv() => ev,
                        _ = tick.tick() => {
                            if out_tx.send(Ok(Bytes::from_static(b":\n\n"))).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        _ = out_tx.closed() => return,
                    };
                    let line = match ev {
                        None | Some(GenEvent::Cut) => return,
                        Some(GenEvent::Garbage) => {
                            let _ = out_tx
                                .send(Ok(sse_line(old, "{\"index\":1,\"token\":{\"id\":")))
                                .await;
                            return;
                        }
                        Some(GenEvent::Error(f)) => sse_line(old, &f.body()),
                        Some(GenEvent::Token(t)) => {
                            index += 1;
                            let r = StreamResponse {
                                index,
                                token: &t,
                                generated_text: None,
                                details: None,
                            };
                            sse_line(old, &serde_json::to_string(&r).unwrap_or_default())
                        }
                        Some(GenEvent::End {
                            last,
                            generated_text,
                            finish_reason,
                            generated_tokens,
                        }) => {
                            index += 1;
                            let r = StreamResponse {
                                index,
                                token: &last,
                                generated_text: Some(&generated_text),
                                details: details.then_some(StreamDetails {
                                    finish_reason,
                                    generated_tokens,
                                    seed,
                                    input_length,
                                }),
                            };
                            sse_line(old, &serde_json::to_string(&r).unwrap_or_default())
                        }
                    };
                    if out_tx.send(Ok(line)).await.is_err() {
                        return;
                    }
                    // axum's KeepAlive: a comment only after an interval without events.
                    tick.reset();
                }
            });
        }
    }
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .header("x-compute-type", "llorch-tgi-sim")
        .body(Body::from_stream(tokio_stream_from(out_rx)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Bytes, Infallible>>,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn generate(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    let (v, flight, fault) = match admit(&sim, &headers, &body, false).await {
        Err(resp) => return resp,
        Ok(Err(f)) => return json_response(f.kind.status(), f.body()),
        Ok(Ok(a)) => a,
    };
    let started = Instant::now();
    let details = v.details;
    let seed = v.sampling.then_some(v.seed);
    let input_length = v.input_length;
    let prefix = if v.return_full_text {
        v.inputs.clone()
    } else {
        String::new()
    };
    let (gen_tx, mut gen_rx) = mpsc::channel(64);
    tokio::spawn(generation(sim.clone(), v, flight, fault, gen_tx));
    let mut tokens = Vec::new();
    loop {
        match gen_rx.recv().await {
            Some(GenEvent::Token(t)) => tokens.push(t),
            Some(GenEvent::End {
                last,
                generated_text,
                finish_reason,
                generated_tokens,
            }) => {
                tokens.push(last);
                let text = format!("{prefix}{generated_text}");
                let r = GenerateResponse {
                    generated_text: &text,
                    details: details.then_some(Details {
                        finish_reason,
                        generated_tokens,
                        seed,
                        prefill: [],
                        tokens: &tokens,
                    }),
                };
                let total = started.elapsed();
                let per_token = total / generated_tokens.max(1);
                return (
                    StatusCode::OK,
                    [
                        (
                            header::CONTENT_TYPE.as_str(),
                            "application/json".to_string(),
                        ),
                        ("x-compute-type", "llorch-tgi-sim".into()),
                        ("x-prompt-tokens", input_length.to_string()),
                        ("x-generated-tokens", generated_tokens.to_string()),
                        ("x-total-time", total.as_millis().to_string()),
                        ("x-inference-time", total.as_millis().to_string()),
                        ("x-time-per-token", per_token.as_millis().to_string()),
                    ],
                    serde_json::to_string(&r).unwrap_or_default(),
                )
                    .into_response();
            }
            Some(GenEvent::Error(f)) => {
                let kind = match f.kind {
                    // Non-stream: an unfinished generation is `incomplete_generation`.
                    Kind::IncompleteGenerationStream => Kind::IncompleteGeneration,
                    k => k,
                };
                let f = Failure::new(kind, f.message);
                return json_response(f.kind.status(), f.body());
            }
            Some(GenEvent::Garbage) | Some(GenEvent::Cut) | None => {
                let f = Failure::new(Kind::IncompleteGeneration, "Incomplete generation");
                return json_response(f.kind.status(), f.body());
            }
        }
    }
}
