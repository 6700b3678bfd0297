//! `llorch-bench`: what orchestratord costs on top of the engine it fronts.
//!
//! Every scenario starts orchestratord in-process with [`orchestratord::serve`] on a real TCP
//! listener bound to 127.0.0.1:0, with its own config (built below) whose only pool is backed
//! by the in-process mock engine (`allow_cpu_inference = true`), and drives it over real HTTP/1.1
//! with one pooled `reqwest` client. Server and clients share one multi-threaded tokio runtime
//! (one worker thread per core), built afresh for each scenario and dropped after it, so nothing
//! a scenario leaves running (stalled mock jobs, retention timers) spills into the next.
//!
//! Scenarios:
//! 1. Submissions/s on the 202 path: many slots, a huge queue, `max_tokens = 1`; C concurrent
//!    submitters POST N tasks and never read the streams. Latency = send to full response.
//! 2. Submissions/s on the 429 path: one slot held forever by a stalled mock job, a queue of
//!    one that is already full, then N submissions that must all be refused (non-429 answers
//!    are counted and printed).
//! 3. Added first-token latency: K sequential tasks, time from sending `POST /v1/tasks` to the
//!    first `token` SSE event on `GET /v1/tasks/{id}/stream`; the baseline is the same number
//!    of sequential `generate()` calls on a [`MockAdapter`] with the same behaviour, from the
//!    call to its first `Token` item.
//! 4. Tokens/s relayed with 1, 64 and 512 concurrent streams (each client submits, then reads
//!    its whole stream), against the same consumption of `MockAdapter` streams in-process.
//! 5. Real engine (see [`real_engine`]): one supervised llama-server with the provisioned
//!    SmolLM2-135M on CPU, one slot, behind orchestratord; K rounds of the same prompt and seed
//!    sent alternately straight to llama-server's `/completion` and through `POST /v1/tasks` +
//!    the task stream: first-token latency, tokens/s and whether the texts match. Skipped with
//!    a note when the engine is not provisioned (`cargo xtask fetch-engine`), or with
//!    `--no-real-engine`.
//! 6. Scheduling under overload (see [`overload`]): two tenants × two priorities at twice the
//!    pool's capacity; shares, waits, first-token latency, deadline hits and refusals per class.
//!    `--overload-only` runs just this one.
//! 7. Scenario 1 again, without and with a policy plugin (examples/plugins/wat/good.wat) on
//!    the pool: what the admission and placement hooks cost per submission
//!    (`--plugin-only`).
//! 8. Scenario 1 over 1 and 4 pools at once, without and with a policy plugin on every pool
//!    (see [`multi_pool`]): what per-pool scheduling locks buy (`--pools-only`).
//! 9. First-token latency of the OpenAI front door vs OrchQueue v1 (two requests and one) on
//!    the same pool, mock and real engine (see [`openai_path`], `--openai-only`).
//!
//! 10. Every engine that runs here (llama.cpp, vLLM, Triton, TGI simulator), direct vs through
//!     llama-orch, interleaved (see [`engines`], `--engines [--engine NAME]`).
//!
//! It is a benchmark, not a test: it asserts nothing about timings. Run it in release:
//! `cargo run --release -p llorch-bench -- [--quick] [--no-real-engine]` (or
//! `cargo xtask bench [--quick]`).

mod engines;
mod multi_pool;
mod openai_path;
mod overload;
mod peers;
mod real_engine;

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use adapter_api::{GenerateRequest, WorkerAdapter, WorkerEvent};
use anyhow::{anyhow, bail, ensure};
use api_types::TaskAccepted;
use clap::Parser;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use mock_adapter::{MockAdapter, MockBehaviour};
use reqwest::header::CONTENT_TYPE;

const DATA_KEY: &str = "bench-data-key";
const MODEL_REF: &str = "mock:tiny";
const PROMPT: &str = "write a haiku about a benchmark";
const CTX_MAX: u32 = 8192;
const CTX: u32 = 4096;

#[derive(Parser)]
#[command(
    about = "Benchmark orchestratord in-process over HTTP against the mock engine and a real llama.cpp engine"
)]
struct Args {
    /// Smaller sample sizes (a smoke run of a few seconds).
    #[arg(long)]
    quick: bool,
    /// Skip scenario 5 (the real llama.cpp engine).
    #[arg(long)]
    no_real_engine: bool,
    /// Run only scenario 6 (scheduling under overload).
    #[arg(long)]
    overload_only: bool,
    /// Run only scenario 7 (admission throughput with and without a policy plugin).
    #[arg(long)]
    plugin_only: bool,
    /// Run only scenario 8 (submissions over 1 and 4 pools at once).
    #[arg(long)]
    pools_only: bool,
    /// Run only scenario 9 (first-token latency: OpenAI front door vs OrchQueue v1).
    #[arg(long)]
    openai_only: bool,
    /// Run only the relay comparison (issue 15): direct, nginx, llama-orch all-in-one and
    /// split on one engine, interleaved; see `peers`.
    #[arg(long)]
    peers: bool,
    /// With --peers: a synthetic engine (`llorch-synth-engine`) instead of llama-server.
    #[arg(long, requires = "peers")]
    synthetic: bool,
    /// With --peers: latency rounds (default 20 real / 100 synthetic; fewer with --quick).
    #[arg(long, value_name = "K", requires = "peers")]
    peer_rounds: Option<usize>,
    /// With --peers: seconds of the idle window (at least 20).
    #[arg(long, value_name = "S", default_value_t = 20, requires = "peers")]
    idle_secs: u64,
    /// Run only the per-engine comparison (issue 11): llama.cpp, vLLM, Triton and TGI, each
    /// called directly and through llama-orch, interleaved; see `engines`.
    #[arg(long)]
    engines: bool,
    /// With --engines: only these engines (llamacpp, vllm, triton, tgi; repeatable).
    #[arg(long = "engine", value_name = "ENGINE", requires = "engines", value_parser = parse_engine)]
    engine: Vec<engines::Eng>,
    /// With --engines: latency rounds per engine (default 20, 5 with --quick).
    #[arg(long, value_name = "K", requires = "engines")]
    engine_rounds: Option<usize>,
    /// Scenario 5: measured rounds (default 10, 3 with --quick); p99 is printed from 100.
    #[arg(long, value_name = "K")]
    real_rounds: Option<usize>,
}

fn parse_engine(s: &str) -> Result<engines::Eng, String> {
    engines::Eng::parse(s)
        .ok_or_else(|| format!("unknown engine {s:?} (llamacpp, vllm, triton, tgi)"))
}

/// Sample sizes of one run.
struct Sizes {
    /// Scenario 1 and 2: submissions, and how many are in flight at once.
    submissions: usize,
    submitters: usize,
    /// Scenario 3: sequential tasks per side (after `warmup` unmeasured ones).
    first_token_tasks: usize,
    warmup: usize,
    /// Scenario 4: tasks per concurrency level, and at least this many per stream.
    relay_tasks: usize,
    relay_rounds_min: usize,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                submissions: 2_000,
                submitters: 32,
                first_token_tasks: 100,
                warmup: 10,
                relay_tasks: 64,
                relay_rounds_min: 1,
            }
        } else {
            Sizes {
                submissions: 20_000,
                submitters: 32,
                first_token_tasks: 500,
                warmup: 50,
                relay_tasks: 512,
                relay_rounds_min: 2,
            }
        }
    }
}

const RELAY_STREAMS: [usize; 3] = [1, 64, 512];
const RELAY_MAX_TOKENS: u32 = 256;
const FIRST_TOKEN_MAX_TOKENS: u32 = 8;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sizes = Sizes::new(args.quick);
    let nofile = raise_nofile_limit();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let build = if cfg!(debug_assertions) {
        "debug (numbers are meaningless; use --release)"
    } else {
        "release"
    };
    println!(
        "llorch-bench: orchestratord in-process on 127.0.0.1 (HTTP/1.1), mock engine \
         (scenarios 1-4) and real llama.cpp engine (scenario 5)"
    );
    println!(
        "cores: {cores} | build: {build} | mode: {} | RLIMIT_NOFILE: {nofile}",
        if args.quick { "quick" } else { "full" }
    );
    println!("server and clients share one tokio runtime with {cores} worker threads");

    if args.peers {
        return in_runtime(peers::peers(peers::PeersArgs {
            synthetic: args.synthetic,
            quick: args.quick,
            rounds: args.peer_rounds,
            idle_secs: args.idle_secs.max(20),
        }));
    }
    if args.engines {
        return in_runtime(engines::engines(engines::EnginesArgs {
            quick: args.quick,
            rounds: args.engine_rounds,
            only: args.engine,
        }));
    }
    if args.overload_only {
        return in_runtime(overload::overload(args.quick));
    }
    if args.plugin_only {
        return in_runtime(submissions_with_plugin(&sizes));
    }
    if args.pools_only {
        return in_runtime(multi_pool::multi_pool(&sizes));
    }
    if args.openai_only {
        return in_runtime(openai_path::openai_path(args.quick, !args.no_real_engine));
    }
    in_runtime(submissions_accepted(&sizes))?;
    in_runtime(submissions_rejected(&sizes))?;
    in_runtime(first_token_latency(&sizes))?;
    in_runtime(relayed_tokens(&sizes))?;
    if args.no_real_engine {
        println!("\n5. real engine: SKIPPED (--no-real-engine)");
    } else {
        match real_engine::provisioned_engine() {
            Ok(engine) => in_runtime(real_engine::real_engine(
                real_engine::RealSizes::new(args.quick, args.real_rounds),
                engine,
            ))?,
            Err(why) => {
                println!("\n5. real engine: SKIPPED — run `cargo xtask fetch-engine`");
                println!("  ({why})");
            }
        }
    }
    in_runtime(overload::overload(args.quick))?;
    in_runtime(submissions_with_plugin(&sizes))?;
    in_runtime(multi_pool::multi_pool(&sizes))?;
    in_runtime(openai_path::openai_path(args.quick, !args.no_real_engine))
}

/// Runs one scenario on a fresh multi-threaded runtime, then drops whatever it left running.
fn in_runtime(scenario: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(scenario);
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Raises the soft open-files limit to the hard one (512 streams need ~2 sockets each, both
/// ends being in this process) and returns the limit in force. An unlimited hard limit is
/// capped at 2^20, the kernel's default `nr_open`.
fn raise_nofile_limit() -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a properly initialised struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        let target = lim.rlim_max.min(1 << 20);
        if lim.rlim_cur < target {
            let raised = libc::rlimit {
                rlim_cur: target,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    let needed = 2 * RELAY_STREAMS.iter().max().copied().unwrap_or(0) as libc::rlim_t + 256;
    if lim.rlim_cur < needed {
        eprintln!(
            "warning: RLIMIT_NOFILE is {}, the 512-stream scenario needs about {needed}",
            lim.rlim_cur
        );
    }
    lim.rlim_cur
}

// ---------------------------------------------------------------------------------------------
// Server, client and request helpers

/// The part of every bench config before its pools: `listen`, a data key, a queue of
/// `queue_capacity` that rejects when full, and a watchdog out of the way. Retention is short
/// so that the task table does not grow without bound.
pub(crate) fn config_header(listen: &str, queue_capacity: u64) -> String {
    format!(
        r#"[server]
listen = "{listen}"
task_retention_ms = 1000
shutdown_grace_ms = 200

[[auth.api_keys]]
key = "{DATA_KEY}"
tenant = "bench"
role = "data"

[queue]
capacity = {queue_capacity}
full_policy = "reject"

[timeouts]
first_token_ms = 600000
idle_ms = 600000
wall_ms = 3600000
"#
    )
}

/// A config with one mock pool `p` (one replica) and a data key.
fn config(slots: u32, queue_capacity: u32, mock: &str) -> String {
    config_header("127.0.0.1:0", u64::from(queue_capacity))
        + &format!(
            r#"
[[pools]]
id = "p"
engine = "mock"
model_ref = "{MODEL_REF}"
ctx_max = {CTX_MAX}
allow_cpu_inference = true

[[pools.replicas]]
id = "r0"
slots = {slots}
mock = {{ {mock} }}
"#
        )
}

/// The behaviour orchestratord gives a replica configured by [`config`] with `mock` empty or
/// `tokens_per_second = 0`, for the direct baselines.
fn behaviour(slots: u32) -> MockBehaviour {
    MockBehaviour {
        slots,
        ctx_max: CTX_MAX,
        tokens_per_second: 0,
        ..MockBehaviour::default()
    }
}

/// orchestratord serving on an ephemeral port until [`Server::stop`].
type Server = orchestratord::LocalServer;

/// Starts a mock-engine server from a config text; returns once it is ready.
async fn start_server(config: &str) -> anyhow::Result<Server> {
    let cfg = config_schema::parse_str(config, "bench").map_err(|e| anyhow!("{e}"))?;
    orchestratord::LocalServer::start(cfg, Default::default(), None).await
}

/// One HTTP/1.1 client for a whole scenario, with room for every concurrent connection.
fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(4096)
        .build()?)
}

/// A completion task body for the mock pool (serialised once, sent many times).
fn task_body(max_tokens: u32) -> String {
    serde_json::json!({
        "workload": "completion", "model_ref": MODEL_REF, "ctx": CTX,
        "prompt": PROMPT, "max_tokens": max_tokens,
    })
    .to_string()
}

async fn post_task(
    client: &reqwest::Client,
    url: &str,
    body: &str,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(url)
        .bearer_auth(DATA_KEY)
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_owned())
        .send()
        .await
}

/// Submits a task that must be accepted and opens its SSE stream.
async fn submit_and_open(
    client: &reqwest::Client,
    server: &Server,
    body: &str,
) -> anyhow::Result<reqwest::Response> {
    let resp = post_task(client, &server.url("/v1/tasks"), body).await?;
    ensure!(resp.status() == 202, "submit answered {}", resp.status());
    let accepted: TaskAccepted = resp.json().await?;
    let stream = client
        .get(server.url(&accepted.stream_url))
        .bearer_auth(DATA_KEY)
        .send()
        .await?;
    ensure!(
        stream.status() == 200,
        "stream answered {}",
        stream.status()
    );
    Ok(stream)
}

fn generate_request(max_tokens: u32) -> GenerateRequest {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    GenerateRequest {
        job_id: format!("bench-{n}"),
        prompt: PROMPT.into(),
        max_tokens,
        seed: n,
        sampler_profile_version: None,
        strict_determinism: false,
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics and output

/// Nearest-rank percentile (`p` in 0..=100) of an ascending slice.
/// `POST /v1/tasks` asking for the one-request flow (`Accept: text/event-stream`), timed by
/// the caller from before the call; true when the answer is the task's stream (200 and SSE),
/// false for anything else (a 202 of the two-step flow, an error).
async fn submit_streaming(
    client: &reqwest::Client,
    base: &str,
    body: &serde_json::Value,
) -> reqwest::Result<(reqwest::Response, bool)> {
    let resp = client
        .post(format!("{base}/v1/tasks"))
        .bearer_auth(DATA_KEY)
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .json(body)
        .send()
        .await?;
    let is_stream = resp.status() == 200
        && resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
    Ok((resp, is_stream))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn fmt_us(us: f64) -> String {
    format!("{us:.1} µs")
}

fn fmt_rate(per_s: f64) -> String {
    format!("{per_s:.0}/s")
}

fn section(title: &str) {
    println!("\n{title}");
}

fn row(label: &str, value: impl Display) {
    println!("  {label:<44} {value:>16}");
}

// ---------------------------------------------------------------------------------------------
// Scenarios 1 and 2: submissions/s

/// What a burst of submissions got back.
#[derive(Default)]
struct Burst {
    wall: Duration,
    /// Send to complete response, of every request that got an answer (sorted).
    latencies: Vec<Duration>,
    statuses: BTreeMap<u16, usize>,
    transport_errors: usize,
}

impl Burst {
    fn count(&self, status: u16) -> usize {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    fn others(&self, status: u16) -> String {
        let other: Vec<String> = self
            .statuses
            .iter()
            .filter(|(s, _)| **s != status)
            .map(|(s, n)| format!("{n}×{s}"))
            .collect();
        if other.is_empty() {
            "0".into()
        } else {
            other.join(", ")
        }
    }

    fn print(&self, status: u16, what: &str) {
        let ok = self.count(status);
        row(
            &format!(
                "{what}/s ({ok} × {status} in {:.2} s)",
                self.wall.as_secs_f64()
            ),
            fmt_rate(ok as f64 / self.wall.as_secs_f64()),
        );
        row(
            "submit latency p50",
            fmt_us(micros(percentile(&self.latencies, 50.0))),
        );
        row(
            "submit latency p99",
            fmt_us(micros(percentile(&self.latencies, 99.0))),
        );
        row(&format!("answers other than {status}"), self.others(status));
        row("transport errors", self.transport_errors);
    }
}

/// POSTs `body` `n` times from `concurrency` submitters, reading each whole response.
async fn submit_burst(
    client: &reqwest::Client,
    url: &str,
    body: &str,
    n: usize,
    concurrency: usize,
) -> Burst {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let submitters: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, body, next) = (
                client.clone(),
                url.to_owned(),
                body.to_owned(),
                next.clone(),
            );
            tokio::spawn(async move {
                let mut part = Burst::default();
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let t0 = Instant::now();
                    let answer = match post_task(&client, &url, &body).await {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            resp.bytes().await.map(|_| status)
                        }
                        Err(e) => Err(e),
                    };
                    match answer {
                        Ok(status) => {
                            part.latencies.push(t0.elapsed());
                            *part.statuses.entry(status).or_default() += 1;
                        }
                        Err(_) => part.transport_errors += 1,
                    }
                }
                part
            })
        })
        .collect();
    let mut all = Burst::default();
    for s in submitters {
        match s.await {
            Ok(part) => {
                all.latencies.extend(part.latencies);
                all.transport_errors += part.transport_errors;
                for (status, count) in part.statuses {
                    *all.statuses.entry(status).or_default() += count;
                }
            }
            Err(_) => all.transport_errors += 1,
        }
    }
    all.wall = start.elapsed();
    all.latencies.sort_unstable();
    all
}

/// 1. Accepted submissions: 64 slots, a queue that never fills, one token per task.
async fn submissions_accepted(sizes: &Sizes) -> anyhow::Result<()> {
    let server = start_server(&config(64, 100_000, "tokens_per_second = 0")).await?;
    let client = http_client()?;
    let url = server.url("/v1/tasks");
    let body = task_body(1);
    let c = sizes.submitters;
    submit_burst(&client, &url, &body, c * 10, c).await; // warm up the connections
    let burst = submit_burst(&client, &url, &body, sizes.submissions, c).await;
    section(&format!(
        "1. POST /v1/tasks -> 202 ({} submissions, {c} concurrent, max_tokens=1, streams not read)",
        sizes.submissions
    ));
    burst.print(202, "submissions");
    drop(client);
    server.stop().await
}

/// Scenario 7: scenario 1 with and without a policy plugin on the pool, in the same run. The
/// plugin is examples/plugins/wat/good.wat with admission and placement hooks, each call in a
/// fresh wasm instance.
async fn submissions_with_plugin(sizes: &Sizes) -> anyhow::Result<()> {
    let plugin = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../examples/plugins/wat/good.wat"
    );
    section(&format!(
        "7. POST /v1/tasks -> 202 with and without a policy plugin ({} submissions each, {} concurrent)",
        sizes.submissions, sizes.submitters
    ));
    for (label, policy) in [
        ("no plugin", String::new()),
        (
            "good.wat (admission + placement)",
            format!("policy = {{ module = {plugin:?} }}\n"),
        ),
    ] {
        let cfg = config(64, 100_000, "tokens_per_second = 0").replace(
            "allow_cpu_inference = true\n",
            &format!("allow_cpu_inference = true\n{policy}"),
        );
        let server = start_server(&cfg).await?;
        let client = http_client()?;
        let url = server.url("/v1/tasks");
        let body = task_body(1);
        let c = sizes.submitters;
        submit_burst(&client, &url, &body, c * 10, c).await;
        let burst = submit_burst(&client, &url, &body, sizes.submissions, c).await;
        println!("  {label}:");
        burst.print(202, "submissions");
        drop(client);
        server.stop().await?;
    }
    Ok(())
}

/// 2. Refused submissions: the only slot is stalled and the one-place queue is full.
async fn submissions_rejected(sizes: &Sizes) -> anyhow::Result<()> {
    let server = start_server(&config(1, 1, "stall_after_tokens = 0")).await?;
    let client = http_client()?;
    let url = server.url("/v1/tasks");
    let body = task_body(1);
    for what in ["the slot", "the queue"] {
        let resp = post_task(&client, &url, &body).await?;
        ensure!(
            resp.status() == 202,
            "filling {what}: got {}",
            resp.status()
        );
    }
    let c = sizes.submitters;
    submit_burst(&client, &url, &body, c * 10, c).await; // warm up the connections
    let burst = submit_burst(&client, &url, &body, sizes.submissions, c).await;
    section(&format!(
        "2. POST /v1/tasks -> 429 ({} submissions, {c} concurrent, slot stalled, queue of 1 full)",
        sizes.submissions
    ));
    burst.print(429, "rejections");
    drop(client);
    server.stop().await
}

// ---------------------------------------------------------------------------------------------
// Scenario 3: added first-token latency

/// Submit, open the stream, time to the first `token` event; then read the stream to its end.
async fn http_first_token(
    client: &reqwest::Client,
    server: &Server,
    body: &str,
) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let stream = submit_and_open(client, server, body).await?;
    let mut events = stream.bytes_stream().eventsource();
    let mut first = None;
    while let Some(ev) = events.next().await {
        let ev = ev.map_err(|e| anyhow!("SSE: {e}"))?;
        match ev.event.as_str() {
            "token" if first.is_none() => first = Some(t0.elapsed()),
            "error" => bail!("stream error: {}", ev.data),
            _ => {}
        }
    }
    first.ok_or_else(|| anyhow!("stream ended without a token"))
}

/// `generate()`, time to the first `Token`; then consume the stream to its end.
async fn direct_first_token(mock: &MockAdapter) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let mut stream = mock
        .generate(generate_request(FIRST_TOKEN_MAX_TOKENS))
        .await?;
    let mut first = None;
    while let Some(item) = stream.next().await {
        if let WorkerEvent::Token(_) = item? {
            first.get_or_insert_with(|| t0.elapsed());
        }
    }
    first.ok_or_else(|| anyhow!("mock stream ended without a token"))
}

async fn first_token_latency(sizes: &Sizes) -> anyhow::Result<()> {
    let slots = 4;
    let server = start_server(&config(slots, 256, "tokens_per_second = 0")).await?;
    let client = http_client()?;
    let body = task_body(FIRST_TOKEN_MAX_TOKENS);
    let mock = MockAdapter::new(MODEL_REF, behaviour(slots));
    let k = sizes.first_token_tasks;

    let mut via_http = Vec::with_capacity(k);
    let mut direct = Vec::with_capacity(k);
    for i in 0..sizes.warmup + k {
        let d = http_first_token(&client, &server, &body).await?;
        if i >= sizes.warmup {
            via_http.push(d);
        }
    }
    for i in 0..sizes.warmup + k {
        let d = direct_first_token(&mock).await?;
        if i >= sizes.warmup {
            direct.push(d);
        }
    }
    via_http.sort_unstable();
    direct.sort_unstable();

    section(&format!(
        "3. First-token latency ({k} sequential tasks each, max_tokens={FIRST_TOKEN_MAX_TOKENS}; \
         HTTP = POST /v1/tasks + GET stream until the first token event)"
    ));
    for p in [50.0, 99.0] {
        let (h, d) = (percentile(&via_http, p), percentile(&direct, p));
        row(
            &format!("p{p:.0} via orchestratord (HTTP)"),
            fmt_us(micros(h)),
        );
        row(
            &format!("p{p:.0} direct MockAdapter::generate"),
            fmt_us(micros(d)),
        );
        row(
            &format!("p{p:.0} added by orchestratord"),
            fmt_us(micros(h) - micros(d)),
        );
    }
    drop(client);
    server.stop().await
}

// ---------------------------------------------------------------------------------------------
// Scenario 4: relayed tokens/s

/// Tokens that reached the consumers of `streams` concurrent streams, and how long it took.
struct Relay {
    tokens: u64,
    wall: Duration,
    failures: usize,
}

impl Relay {
    fn per_s(&self) -> f64 {
        self.tokens as f64 / self.wall.as_secs_f64()
    }
}

/// Runs `rounds` tasks one after another on each of `streams` concurrent clients.
async fn concurrently<F, Fut>(streams: usize, rounds: usize, one: F) -> Relay
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<u64>> + Send,
{
    let start = Instant::now();
    let clients: Vec<_> = (0..streams)
        .map(|_| {
            let one = one.clone();
            tokio::spawn(async move {
                let (mut tokens, mut failures) = (0, 0);
                for _ in 0..rounds {
                    match one().await {
                        Ok(n) => tokens += n,
                        Err(_) => failures += 1,
                    }
                }
                (tokens, failures)
            })
        })
        .collect();
    let mut relay = Relay {
        tokens: 0,
        wall: Duration::ZERO,
        failures: 0,
    };
    for c in clients {
        match c.await {
            Ok((tokens, failures)) => {
                relay.tokens += tokens;
                relay.failures += failures;
            }
            Err(_) => relay.failures += rounds,
        }
    }
    relay.wall = start.elapsed();
    relay
}

/// Submits a task and counts the `token` events of its whole stream (which must end with `end`).
async fn http_stream_tokens(
    client: reqwest::Client,
    server: Arc<Server>,
    body: Arc<str>,
) -> anyhow::Result<u64> {
    let stream = submit_and_open(&client, &server, &body).await?;
    let mut events = stream.bytes_stream().eventsource();
    let mut tokens = 0;
    while let Some(ev) = events.next().await {
        let ev = ev.map_err(|e| anyhow!("SSE: {e}"))?;
        match ev.event.as_str() {
            "token" => tokens += 1,
            "end" => return Ok(tokens),
            "error" => bail!("stream error: {}", ev.data),
            _ => {}
        }
    }
    bail!("stream closed without an end event")
}

/// Consumes a whole `MockAdapter` stream, counting its tokens.
async fn direct_stream_tokens(mock: Arc<MockAdapter>) -> anyhow::Result<u64> {
    let mut stream = mock.generate(generate_request(RELAY_MAX_TOKENS)).await?;
    let mut tokens = 0;
    while let Some(item) = stream.next().await {
        match item? {
            WorkerEvent::Token(_) => tokens += 1,
            WorkerEvent::End(_) => return Ok(tokens),
        }
    }
    bail!("mock stream ended without End")
}

async fn relayed_tokens(sizes: &Sizes) -> anyhow::Result<()> {
    let slots = *RELAY_STREAMS.iter().max().unwrap_or(&1) as u32;
    let server = Arc::new(start_server(&config(slots, 100_000, "tokens_per_second = 0")).await?);
    let client = http_client()?;
    let body: Arc<str> = task_body(RELAY_MAX_TOKENS).into();
    let mock = Arc::new(MockAdapter::new(MODEL_REF, behaviour(slots)));

    section(&format!(
        "4. Tokens relayed (max_tokens={RELAY_MAX_TOKENS}, mock as fast as possible, \
         >= {} tasks and >= {} per stream at each level; each client submits and reads its \
         whole stream)",
        sizes.relay_tasks, sizes.relay_rounds_min
    ));
    println!(
        "  {:>7} {:>18} {:>18} {:>8} {:>9} {:>9} {:>12}",
        "streams", "orchestratord", "direct mock", "ratio", "failed", "wall", "per task"
    );
    for streams in RELAY_STREAMS {
        let rounds = sizes
            .relay_tasks
            .div_ceil(streams)
            .max(sizes.relay_rounds_min);
        let http = {
            let (client, server, body) = (client.clone(), server.clone(), body.clone());
            move || http_stream_tokens(client.clone(), server.clone(), body.clone())
        };
        concurrently(streams, 1, http.clone()).await; // warm up connections and slots
        let via_http = concurrently(streams, rounds, http).await;
        let direct = {
            let mock = mock.clone();
            move || direct_stream_tokens(mock.clone())
        };
        let direct = concurrently(streams, rounds, direct).await;
        println!(
            "  {:>7} {:>18} {:>18} {:>7.1}% {:>9} {:>8.2}s {:>9.2} ms",
            streams,
            format!("{:.0} tok/s", via_http.per_s()),
            format!("{:.0} tok/s", direct.per_s()),
            100.0 * via_http.per_s() / direct.per_s(),
            format!("{}/{}", via_http.failures, direct.failures),
            via_http.wall.as_secs_f64(),
            1e3 * via_http.wall.as_secs_f64() / rounds as f64,
        );
    }
    println!(
        "  (ratio = orchestratord / direct; failed = orchestratord/direct streams that did not \
         end normally; wall = time of the orchestratord run; per task = wall / tasks per stream, \
         i.e. one stream's submit-to-end time)"
    );
    drop(client);
    Arc::try_unwrap(server)
        .map_err(|_| anyhow!("server still shared"))?
        .stop()
        .await
}
