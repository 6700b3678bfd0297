//! `llorch-synth-engine`: a fast token source speaking llama-server's native wire format, for
//! `llorch-bench --peers --synthetic` (the relay's own ceiling, without a model in the way).
//!
//! It accepts the command line pool-managerd's supervisor gives llama-server (`-m FILE
//! --metrics --host H --port N -np SLOTS -c CTX`, other flags ignored), so `llorch serve` can
//! supervise it like the real engine, and serves what the llama.cpp adapter and the
//! supervisor's readiness check and self-test call: `GET /health`, `/props`, `/slots`,
//! `/metrics` and `POST /completion` (streaming: `data: {"content":…,"stop":false}` events,
//! then a `stop: true` event with `timings`; not streaming: one JSON object).
//!
//! Token text is a deterministic function of (prompt, seed, index) and includes characters
//! JSON must escape and multi-byte UTF-8, so a relay that alters text is caught by the bench's
//! byte comparison. Tokens are produced as fast as the client reads them, each event written
//! on its own as llama-server writes them (`--tokens-per-second N` paces each stream instead).
//!
//! Must not depend on any llama-orch crate: it stands in for an engine we do not control.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

/// Token texts: plain words, JSON escapes, multi-byte UTF-8.
const VOCAB: [&str; 16] = [
    " the",
    " relay",
    " token",
    ",",
    " \"quoted\"",
    " naïve",
    " 東京",
    "\n",
    " back\\slash",
    " 🦀",
    "\t",
    " stream",
    ".",
    " café",
    " <tag>",
    " end",
];

struct Engine {
    slots: Vec<AtomicBool>,
    n_ctx: u32,
    model: String,
    tokens_per_second: u32,
    tokens_predicted: AtomicU64,
    prompt_tokens: AtomicU64,
}

struct Args {
    host: String,
    port: u16,
    slots: u32,
    ctx: u32,
    model: String,
    tokens_per_second: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        host: "127.0.0.1".into(),
        port: 8080,
        slots: 1,
        ctx: 4096,
        model: "synthetic".into(),
        tokens_per_second: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let num = |name: &str, v: String| v.parse::<u32>().map_err(|e| format!("{name} {v}: {e}"));
        match flag.as_str() {
            "--host" => a.host = value("--host")?,
            "--port" => {
                let v = value("--port")?;
                a.port = v.parse().map_err(|e| format!("--port {v}: {e}"))?;
            }
            "-np" | "--parallel" => a.slots = num("--parallel", value("--parallel")?)?.max(1),
            "-c" | "--ctx-size" => a.ctx = num("--ctx-size", value("--ctx-size")?)?,
            "-m" | "--model" => a.model = value("--model")?,
            "--tokens-per-second" => {
                a.tokens_per_second = num("--tokens-per-second", value("--tokens-per-second")?)?
            }
            "--metrics" | "--slots" => {}
            other => eprintln!("llorch-synth-engine: ignoring argument {other:?}"),
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("llorch-synth-engine: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let engine = Arc::new(Engine {
        slots: (0..args.slots).map(|_| AtomicBool::new(false)).collect(),
        n_ctx: (args.ctx / args.slots).max(1),
        model: args.model.clone(),
        tokens_per_second: args.tokens_per_second,
        tokens_predicted: AtomicU64::new(0),
        prompt_tokens: AtomicU64::new(0),
    });
    let app = Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/props", get(props))
        .route("/slots", get(slots))
        .route("/metrics", get(metrics))
        .route("/completion", post(completion))
        .route("/completions", post(completion))
        .with_state(engine);
    let addr = format!("{}:{}", args.host, args.port);
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("llorch-synth-engine: bind {addr}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    eprintln!(
        "llorch-synth-engine: listening on {addr}, {} slots",
        args.slots
    );
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
    };
    // Without TCP_NODELAY the last small event of a stream can wait for a delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    match axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llorch-synth-engine: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn props(State(e): State<Arc<Engine>>) -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "default_generation_settings": {"n_ctx": e.n_ctx, "params": {}},
        "total_slots": e.slots.len(),
        "model_path": e.model,
        "build_info": "b0-synthetic",
        "endpoint_slots": true,
        "endpoint_metrics": true,
        "is_sleeping": false,
    }))
}

async fn slots(State(e): State<Arc<Engine>>) -> impl IntoResponse {
    let v: Vec<_> = e
        .slots
        .iter()
        .enumerate()
        .map(|(id, busy)| {
            serde_json::json!({"id": id, "n_ctx": e.n_ctx, "is_processing": busy.load(Ordering::Acquire)})
        })
        .collect();
    axum::Json(v)
}

async fn metrics(State(e): State<Arc<Engine>>) -> impl IntoResponse {
    let busy = e.slots.iter().filter(|b| b.load(Ordering::Relaxed)).count();
    format!(
        "# TYPE llamacpp:prompt_tokens_total counter\nllamacpp:prompt_tokens_total {}\n\
         # TYPE llamacpp:tokens_predicted_total counter\nllamacpp:tokens_predicted_total {}\n\
         # TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing {busy}\n\
         # TYPE llamacpp:requests_deferred gauge\nllamacpp:requests_deferred 0\n",
        e.prompt_tokens.load(Ordering::Relaxed),
        e.tokens_predicted.load(Ordering::Relaxed),
    )
}

#[derive(Deserialize)]
struct CompletionRequest {
    #[serde(default)]
    prompt: String,
    #[serde(default = "minus_one", alias = "max_tokens")]
    n_predict: i64,
    #[serde(default)]
    stream: bool,
    #[serde(default = "minus_one")]
    seed: i64,
    #[serde(default = "minus_one")]
    id_slot: i64,
}

fn minus_one() -> i64 {
    -1
}

/// FNV-1a: the prompt's contribution to the token sequence.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Token `i` of the sequence for (prompt, seed): its vocabulary id.
fn token(key: u64, i: u64) -> usize {
    (splitmix(key ^ i.wrapping_mul(0x2545_f491_4f6c_dd1d)) % VOCAB.len() as u64) as usize
}

/// Marks a slot busy for as long as a job's response lives (dropped with the body, so a
/// client that disconnects frees the slot, as llama-server does).
struct SlotGuard(Arc<Engine>, usize);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.slots[self.1].store(false, Ordering::Release);
    }
}

fn claim(e: &Arc<Engine>, asked: i64) -> Option<SlotGuard> {
    let free = |i: usize| {
        e.slots[i]
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    };
    let slot = match usize::try_from(asked) {
        Ok(i) if i < e.slots.len() => free(i).then_some(i),
        _ => (0..e.slots.len()).find(|&i| free(i)),
    }?;
    Some(SlotGuard(e.clone(), slot))
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body =
        serde_json::json!({"error": {"code": status.as_u16(), "message": message, "type": kind}});
    (status, axum::Json(body)).into_response()
}

async fn completion(State(e): State<Arc<Engine>>, body: Bytes) -> Response {
    let req: CompletionRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &err.to_string(),
            );
        }
    };
    let Some(guard) = claim(&e, req.id_slot) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable_error",
            "no slot available",
        );
    };
    let n = if req.n_predict < 0 {
        16
    } else {
        req.n_predict as u64
    };
    let key = fnv(&req.prompt) ^ splitmix(req.seed as u64);
    let prompt_n = (req.prompt.len() as u64).div_ceil(4).max(1);
    e.prompt_tokens.fetch_add(prompt_n, Ordering::Relaxed);
    let slot = guard.1;
    if !req.stream {
        let text: String = (0..n).map(|i| VOCAB[token(key, i)]).collect();
        e.tokens_predicted.fetch_add(n, Ordering::Relaxed);
        drop(guard);
        return axum::Json(serde_json::json!({
            "index": 0, "content": text, "tokens": [], "id_slot": slot, "stop": true,
            "model": e.model, "tokens_predicted": n, "tokens_evaluated": prompt_n,
            "stop_type": "limit", "timings": {"prompt_n": prompt_n, "predicted_n": n, "predicted_ms": 0.0},
        }))
        .into_response();
    }
    let pace = (e.tokens_per_second > 0)
        .then(|| Duration::from_secs_f64(1.0 / f64::from(e.tokens_per_second)));
    let started = Instant::now();
    let state = (0u64, guard, pace.map(tokio::time::interval));
    let events = futures::stream::unfold(state, move |(i, guard, mut tick)| async move {
        if i > n {
            return None;
        }
        match tick.as_mut() {
            Some(t) => {
                t.tick().await;
            }
            // Hand control back once per event, so the server writes each event as it comes,
            // one write per token as llama-server does, instead of batching a whole stream.
            None if i > 0 => tokio::task::yield_now().await,
            None => {}
        }
        let e = &guard.0;
        let line = if i < n {
            e.tokens_predicted.fetch_add(1, Ordering::Relaxed);
            let id = token(key, i);
            let content = serde_json::to_string(VOCAB[id]).unwrap_or_default();
            format!(
                "data: {{\"index\":0,\"content\":{content},\"tokens\":[{id}],\"stop\":false,\"id_slot\":{slot},\"tokens_predicted\":{},\"tokens_evaluated\":{prompt_n}}}\n\n",
                i + 1
            )
        } else {
            let ms = started.elapsed().as_secs_f64() * 1e3;
            format!(
                "data: {{\"index\":0,\"content\":\"\",\"tokens\":[],\"id_slot\":{slot},\"stop\":true,\"model\":\"synthetic\",\"tokens_predicted\":{n},\"tokens_evaluated\":{prompt_n},\"stop_type\":\"limit\",\"timings\":{{\"prompt_n\":{prompt_n},\"predicted_n\":{n},\"predicted_ms\":{ms:.3}}}}}\n\n"
            )
        };
        Some((
            Ok::<_, std::convert::Infallible>(Bytes::from(line)),
            (i + 1, guard, tick),
        ))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(events))
        .unwrap_or_else(|_| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "response",
            )
        })
}
