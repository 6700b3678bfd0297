//! Scenario 5: a real llama-server (the provisioned SmolLM2-135M on CPU), called directly and
//! through orchestratord, interleaved round by round in the same run.
//!
//! The stack is wired exactly as `llorch_serve::Engines::start` wires it (one supervised
//! llama-server, its `LlamaCppAdapter` behind a `GatedAdapter`, handed to
//! `orchestratord::serve_with` as an adapter override); it is built here rather than by calling
//! `Engines::start` because the direct side needs the engine's port, which `Engines::start` does
//! not return.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use api_types::TaskAccepted;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use llamacpp_adapter::{LlamaCppAdapter, LlamaCppConfig};
use pool_managerd::gated::GatedAdapter;
use pool_managerd::policy::RestartConfig;
use pool_managerd::supervisor::{EngineSpec, Phase, Supervisor};

use crate::{DATA_KEY, http_client, percentile, row, section};

const POOL: &str = "llm";
const REPLICA: &str = "cpu0";
const CTX_MAX: u32 = 512;
const PROMPT: &str = "Once upon a time, in a small village by the sea,";
const SEED_BASE: u64 = 4242;
const READY_LIMIT: Duration = Duration::from_secs(300);
const REQUEST_LIMIT: Duration = Duration::from_secs(120);

/// Sample sizes of scenario 5.
pub(crate) struct RealSizes {
    /// Measured rounds (each: one direct and one orchestrated request), after one warm-up round.
    pub rounds: usize,
    /// Tokens asked for per request.
    pub n_predict: u32,
}

impl RealSizes {
    pub(crate) fn new(quick: bool, rounds: Option<usize>) -> RealSizes {
        let (default_rounds, n_predict) = if quick { (3, 32) } else { (10, 64) };
        RealSizes {
            rounds: rounds.unwrap_or(default_rounds).max(1),
            n_predict,
        }
    }
}

/// The provisioned engine, or why there is none. [`test_fixtures::engine`] panics when the engine
/// is missing (tests must not skip silently); the bench catches that and skips the scenario.
pub(crate) fn provisioned_engine() -> Result<test_fixtures::Engine, String> {
    catch(test_fixtures::engine)
}

/// Runs a test fixture that panics when something is missing or does not start, returning
/// the panic's message instead (the bench reports it and goes on).
pub(crate) fn catch<T>(f: impl FnOnce() -> T + std::panic::UnwindSafe) -> Result<T, String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let found = std::panic::catch_unwind(f);
    std::panic::set_hook(hook);
    found.map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "engine not provisioned".into())
    })
}

fn config(e: &test_fixtures::Engine) -> anyhow::Result<config_schema::Config> {
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace_ms = 200

[[auth.api_keys]]
key = "{DATA_KEY}"
tenant = "bench"
role = "data"

[timeouts]
first_token_ms = 120000

[[pools]]
id = "{POOL}"
engine = "llamacpp"
model_ref = "{model}"
model_sha256 = "{sha}"
ctx_max = {CTX_MAX}
allow_cpu_inference = true
llamacpp = {{ server_binary = "{server}" }}

[[pools.replicas]]
id = "{REPLICA}"
slots = 1
"#,
        model = e.model.display(),
        sha = e.model_sha256,
        server = e.llama_server.display()
    );
    config_schema::parse_str(&toml, "bench-real-engine").map_err(|e| anyhow!("{e}"))
}

/// The supervised engine and orchestratord in front of it.
struct Stack {
    sup: Supervisor,
    /// llama-server's own base URL (the direct side).
    engine: String,
    /// orchestratord's base URL.
    orch: String,
    model_ref: String,
    server: orchestratord::LocalServer,
}

impl Stack {
    /// Spawns the supervisor, waits for Ready, then serves orchestratord on 127.0.0.1:0.
    async fn start(e: &test_fixtures::Engine) -> anyhow::Result<Stack> {
        let cfg = config(e)?;
        let pool = &cfg.pools[0];
        let proc_cfg = pool
            .llamacpp
            .as_ref()
            .context("pool lacks its llamacpp section")?;
        let replica = &pool.replicas[0];
        // As llorch_serve::Engines::start builds it.
        let spec = EngineSpec {
            pool_id: pool.id.clone(),
            replica_id: replica.id.clone(),
            kind: pool_managerd::engine_kind::EngineKind::LlamaCpp,
            binary: proc_cfg.server_binary.clone().into(),
            model: Path::new(
                pool.model_ref
                    .strip_prefix("file:")
                    .unwrap_or(&pool.model_ref),
            )
            .to_path_buf(),
            model_sha256: pool.model_sha256.clone(),
            source: None,
            port: std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port(),
            slots: replica.slots,
            ctx_per_slot: pool.ctx_max,
            devices: replica.devices.clone(),
            extra_args: proc_cfg.extra_args.clone(),
            env: Default::default(),
            restart: RestartConfig::default(),
            ready_timeout: Duration::from_millis(proc_cfg.ready_timeout_ms),
        };
        let engine_url = spec.base_url();
        let adapter = LlamaCppAdapter::new(LlamaCppConfig::new(
            engine_url.clone(),
            pool.model_ref.clone(),
        ))?;
        let sup = Supervisor::spawn(spec);
        let gated = GatedAdapter::new(Arc::new(adapter), sup.subscribe());
        let mut overrides = orchestratord::AdapterOverrides::new();
        overrides.insert(
            (pool.id.clone(), replica.id.clone()),
            Arc::new(gated) as Arc<dyn adapter_api::WorkerAdapter>,
        );
        let model_ref = pool.model_ref.clone();

        let t0 = Instant::now();
        let st = sup
            .wait_for(READY_LIMIT, |st| {
                !matches!(st.phase, Phase::Starting | Phase::Backoff { .. })
            })
            .await;
        match st {
            Some(st) if st.phase == Phase::Ready => {}
            other => {
                let status = other.unwrap_or_else(|| sup.status());
                sup.shutdown().await;
                bail!("llama-server did not become Ready within {READY_LIMIT:?}: {status:?}");
            }
        }
        let ready_in = t0.elapsed();

        let server = match orchestratord::LocalServer::start(cfg, overrides, None).await {
            Ok(s) => s,
            Err(e) => {
                sup.shutdown().await;
                return Err(e);
            }
        };
        let orch = server.base.clone();
        println!(
            "  llama-server ready in {:.1} s at {engine_url} (pid {}), orchestratord at {orch}",
            ready_in.as_secs_f64(),
            sup.status().pid.map_or("?".into(), |p| p.to_string()),
        );
        Ok(Stack {
            sup,
            engine: engine_url,
            orch,
            model_ref,
            server,
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        let served = self.server.stop().await;
        self.sup.shutdown().await;
        served
    }
}

/// One request's stream, timed from sending the (first) request.
struct Sample {
    first: Duration,
    last: Duration,
    done: Duration,
    tokens: u64,
    text: String,
}

impl Sample {
    /// Tokens over the whole request (send to end of stream).
    fn e2e_rate(&self) -> f64 {
        self.tokens as f64 / self.done.as_secs_f64()
    }

    /// Tokens after the first over the first-to-last-token interval.
    fn decode_rate(&self) -> f64 {
        let span = (self.last - self.first).as_secs_f64();
        if self.tokens < 2 || span <= 0.0 {
            0.0
        } else {
            (self.tokens - 1) as f64 / span
        }
    }
}

/// One of [`Sample`]'s rates.
type Rate = fn(&Sample) -> f64;

#[derive(Default)]
struct Timer {
    first: Option<Duration>,
    last: Duration,
    tokens: u64,
    text: String,
}

impl Timer {
    fn token(&mut self, t0: Instant, text: &str) {
        let now = t0.elapsed();
        self.first.get_or_insert(now);
        self.last = now;
        self.tokens += 1;
        self.text.push_str(text);
    }

    fn finish(self, t0: Instant) -> anyhow::Result<Sample> {
        Ok(Sample {
            first: self.first.context("stream ended without a token")?,
            last: self.last,
            done: t0.elapsed(),
            tokens: self.tokens,
            text: self.text,
        })
    }
}

/// POST {engine}/completion, streaming, read until `"stop": true`.
async fn direct(
    client: &reqwest::Client,
    engine: &str,
    n_predict: u32,
    seed: u64,
) -> anyhow::Result<Sample> {
    let body = serde_json::json!({
        "prompt": PROMPT, "n_predict": n_predict, "stream": true, "seed": seed,
        "cache_prompt": false,
    });
    let t0 = Instant::now();
    let resp = client
        .post(format!("{engine}/completion"))
        .json(&body)
        .send()
        .await?;
    ensure!(
        resp.status() == 200,
        "llama-server /completion answered {}",
        resp.status()
    );
    let mut events = resp.bytes_stream().eventsource();
    let mut timer = Timer::default();
    while let Some(ev) = events.next().await {
        let ev = ev.map_err(|e| anyhow!("llama-server SSE: {e}"))?;
        let v: serde_json::Value = serde_json::from_str(&ev.data)
            .with_context(|| format!("llama-server chunk is not JSON: {}", ev.data))?;
        if let Some(err) = v.get("error") {
            bail!("llama-server error: {err}");
        }
        let content = v["content"].as_str().unwrap_or("");
        if !content.is_empty() {
            timer.token(t0, content);
        }
        if v["stop"].as_bool() == Some(true) {
            return timer.finish(t0);
        }
    }
    bail!("llama-server stream closed without stop")
}

/// POST /v1/tasks, GET its stream, read until `end`.
async fn orchestrated(
    client: &reqwest::Client,
    stack: &Stack,
    n_predict: u32,
    seed: u64,
) -> anyhow::Result<Sample> {
    let body = serde_json::json!({
        "workload": "completion", "model_ref": stack.model_ref, "ctx": CTX_MAX,
        "prompt": PROMPT, "max_tokens": n_predict, "seed": seed, "determinism": "strict",
    });
    let t0 = Instant::now();
    let resp = client
        .post(format!("{}/v1/tasks", stack.orch))
        .bearer_auth(DATA_KEY)
        .json(&body)
        .send()
        .await?;
    let status = resp.status();
    if status != 202 {
        let text = resp.text().await.unwrap_or_default();
        bail!("POST /v1/tasks answered {status}: {text}");
    }
    let accepted: TaskAccepted = resp.json().await?;
    let stream = client
        .get(format!("{}{}", stack.orch, accepted.stream_url))
        .bearer_auth(DATA_KEY)
        .send()
        .await?;
    ensure!(
        stream.status() == 200,
        "stream answered {}",
        stream.status()
    );
    let mut events = stream.bytes_stream().eventsource();
    let mut timer = Timer::default();
    while let Some(ev) = events.next().await {
        let ev = ev.map_err(|e| anyhow!("orchestratord SSE: {e}"))?;
        match ev.event.as_str() {
            "token" => {
                let v: serde_json::Value = serde_json::from_str(&ev.data)?;
                timer.token(t0, v["t"].as_str().unwrap_or(""));
            }
            "end" => return timer.finish(t0),
            "error" => bail!("stream error: {}", ev.data),
            _ => {}
        }
    }
    bail!("orchestratord stream closed without an end event")
}

async fn timed<T>(what: &str, f: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(REQUEST_LIMIT, f)
        .await
        .map_err(|_| anyhow!("{what}: no answer within {REQUEST_LIMIT:?}"))?
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// Median of an unsorted list of signed values.
fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    let m = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[m]
    } else {
        (xs[m - 1] + xs[m]) / 2.0
    }
}

fn snippet(s: &str) -> String {
    let s: String = s.chars().take(60).collect();
    format!("{s:?}")
}

pub(crate) async fn real_engine(
    sizes: RealSizes,
    engine: test_fixtures::Engine,
) -> anyhow::Result<()> {
    section(&format!(
        "5. real engine: llama.cpp direct vs through orchestratord ({} rounds + 1 warm-up, \
         {} tokens, 1 slot, ctx {CTX_MAX}, CPU, cache_prompt=false / determinism=strict)",
        sizes.rounds, sizes.n_predict
    ));
    println!(
        "  engine: {} | model: {}",
        engine.llama_server.display(),
        engine.model.display()
    );
    let stack = Stack::start(&engine).await?;
    let result = measure(&stack, &sizes).await;
    let stopped = stack.stop().await;
    result.and(stopped)
}

async fn measure(stack: &Stack, sizes: &RealSizes) -> anyhow::Result<()> {
    let client = http_client()?;
    // llama-server closes the connection after every streaming response although it answers
    // `Keep-Alive`; a pooled connection reused right after a stream can meet that close
    // ("connection closed before message completed"), so the direct side connects afresh for
    // every request, which is what a pooled client gets anyway once it has seen the close.
    let engine_client = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(0)
        .build()?;
    let n = sizes.n_predict;
    let mut direct_samples = Vec::with_capacity(sizes.rounds);
    let mut orch_samples = Vec::with_capacity(sizes.rounds);
    // Round 0 is the warm-up; odd rounds go through orchestratord first, even rounds direct
    // first, so that neither side always follows the other.
    for round in 0..=sizes.rounds {
        let seed = SEED_BASE + round as u64;
        let (d, o) = if round % 2 == 0 {
            let d = timed("direct", direct(&engine_client, &stack.engine, n, seed)).await?;
            let o = timed("orchestratord", orchestrated(&client, stack, n, seed)).await?;
            (d, o)
        } else {
            let o = timed("orchestratord", orchestrated(&client, stack, n, seed)).await?;
            let d = timed("direct", direct(&engine_client, &stack.engine, n, seed)).await?;
            (d, o)
        };
        if round > 0 {
            direct_samples.push(d);
            orch_samples.push(o);
        }
    }
    report(&direct_samples, &orch_samples);
    Ok(())
}

fn report(direct: &[Sample], orch: &[Sample]) {
    let k = direct.len();
    let sorted = |s: &[Sample]| {
        let mut v: Vec<Duration> = s.iter().map(|x| x.first).collect();
        v.sort_unstable();
        v
    };
    let (d_first, o_first) = (sorted(direct), sorted(orch));
    let mut ps = vec![(50.0, "p50")];
    if k >= 100 {
        ps.push((99.0, "p99"));
    }
    println!(
        "  first-token latency (send to first token; orchestratord: POST /v1/tasks + GET stream):"
    );
    for (p, name) in ps {
        let (d, o) = (percentile(&d_first, p), percentile(&o_first, p));
        row(
            &format!("{name} direct llama-server"),
            format!("{:.2} ms", ms(d)),
        );
        row(
            &format!("{name} via orchestratord"),
            format!("{:.2} ms", ms(o)),
        );
        row(
            &format!("{name} added by orchestratord"),
            format!("{:+.2} ms", ms(o) - ms(d)),
        );
    }
    if k < 100 {
        for (side, sorted) in [
            ("direct llama-server", &d_first),
            ("via orchestratord", &o_first),
        ] {
            let max = sorted.last().copied().unwrap_or(Duration::ZERO);
            row(&format!("max {side}"), format!("{:.2} ms", ms(max)));
        }
        println!("  (p99 not printed: {k} samples per side, fewer than 100)");
    }
    let paired: Vec<f64> = direct
        .iter()
        .zip(orch)
        .map(|(d, o)| ms(o.first) - ms(d.first))
        .collect();
    row(
        "median of per-round differences",
        format!("{:+.2} ms", median(paired)),
    );

    println!("  tokens/s, mean over rounds [median]:");
    let rate_rows: [(&str, Rate); 2] = [
        ("send to end of stream", Sample::e2e_rate),
        ("decode, first to last token", Sample::decode_rate),
    ];
    for (what, rate) in rate_rows {
        let (d, o) = (mean(direct.iter().map(rate)), mean(orch.iter().map(rate)));
        let (dm, om) = (
            median(direct.iter().map(rate).collect()),
            median(orch.iter().map(rate).collect()),
        );
        println!("  {what}:");
        row("  direct llama-server", format!("{d:.1} [{dm:.1}]"));
        row("  via orchestratord", format!("{o:.1} [{om:.1}]"));
        row(
            "  ratio orchestratord / direct",
            format!("{:.1}% [{:.1}%]", 100.0 * o / d, 100.0 * om / dm),
        );
    }
    row(
        "tokens per request, direct / via orch.",
        format!(
            "{:.1} / {:.1}",
            mean(direct.iter().map(|s| s.tokens as f64)),
            mean(orch.iter().map(|s| s.tokens as f64))
        ),
    );

    let matching = direct
        .iter()
        .zip(orch)
        .filter(|(d, o)| d.text == o.text)
        .count();
    row(
        "rounds with identical token text",
        format!("{matching}/{k}"),
    );
    for (i, (d, o)) in direct.iter().zip(orch).enumerate() {
        if d.text != o.text {
            println!(
                "    round {}: direct {} ({} tok) vs orchestratord {} ({} tok)",
                i + 1,
                snippet(&d.text),
                d.tokens,
                snippet(&o.text),
                o.tokens
            );
        }
    }
    println!(
        "  (each round: the same prompt and seed on both sides, one after the other, order \
         alternating; the slot is idle between requests; direct requests open a new connection \
         each, as llama-server closes it after every stream)"
    );
}
