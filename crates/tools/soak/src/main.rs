//! `llorch-soak`: does orchestratord's memory hold under sustained load? It starts a real
//! orchestratord process (the binary it is given) on a loopback port with a mock pool and
//! drives it over HTTP/SSE, sampling the process's RSS from `/proc/PID/status` every second.
//!
//! - `soak` (default): a sustained mixed load (submit and read, disconnect mid-stream,
//!   cancel, replay of earlier tasks) for `--seconds`, then `--settle-seconds` idle. Fails
//!   when RSS keeps growing after the warm-up (least-squares slope, not a fixed number), when
//!   it exceeds `--rss-budget-mib`, or when a client saw a hang or a wrong answer. Prints the
//!   RSS curve summary.
//! - `idle --streams N`: memory per queued task and per open idle SSE stream at N of each.
//!
//! Loopback only; bounded in time. Must not depend on orchestratord's crates: it measures the
//! shipped binary from the outside. `cargo xtask soak [--minutes N]` builds and runs it.

mod load;
mod server;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use server::{Orchestratord, PoolSpec};
use stats::{Sample, mib};

#[derive(Parser)]
#[command(about = "Soak test and memory measurements of orchestratord")]
struct Args {
    /// The orchestratord binary to run.
    #[arg(long)]
    orchestratord: PathBuf,
    /// Extra environment for orchestratord (KEY=VALUE, repeatable), e.g. allocator settings.
    #[arg(long = "env", value_parser = parse_kv)]
    env: Vec<(String, String)>,
    /// A name for this run in the printed summary.
    #[arg(long, default_value = "orchestratord")]
    label: String,
    #[command(subcommand)]
    mode: Option<Mode>,
}

#[derive(Subcommand, Clone)]
enum Mode {
    /// Sustained mixed load; fails on growth after warm-up or over budget.
    Soak(SoakArgs),
    /// Memory per queued task and per open idle SSE stream.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        streams: u32,
        /// Open the streams as HTTP/2 streams (h2c, prior knowledge) multiplexed over a few
        /// connections, instead of one HTTP/1.1 connection each.
        #[arg(long)]
        http2: bool,
    },
}

#[derive(clap::Args, Clone)]
struct SoakArgs {
    /// Length of the load.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// Concurrent clients (and engine slots).
    #[arg(long, default_value_t = 64)]
    streams: u32,
    /// Leading part of the load not judged (allocator and store filling up).
    #[arg(long, default_value_t = 0.4)]
    warmup_frac: f64,
    /// `server.task_log_budget_bytes`; 0 keeps the server's default (derived).
    #[arg(long, default_value_t = 4 << 20)]
    log_budget_bytes: u64,
    /// `server.task_retention_ms` (default: the server's).
    #[arg(long)]
    retention_ms: Option<u64>,
    /// Fail when RSS exceeds this (default: 4 x the log budget + 160 MiB).
    #[arg(long)]
    rss_budget_mib: Option<u64>,
    /// Idle time after the load, sampled (does RSS come back?).
    #[arg(long, default_value_t = 30)]
    settle_seconds: u64,
    /// Tokens per task, cycled.
    #[arg(long, value_delimiter = ',', default_value = "200,1000,50,2000,500")]
    lengths: Vec<u32>,
    /// Judge nothing: print the curve only (measurements with an unbounded store).
    #[arg(long)]
    no_judge: bool,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("soak: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mode = args.mode.clone().unwrap_or(Mode::Soak(SoakArgs {
        seconds: 120,
        streams: 64,
        warmup_frac: 0.4,
        log_budget_bytes: 4 << 20,
        retention_ms: None,
        rss_budget_mib: None,
        settle_seconds: 30,
        lengths: vec![200, 1000, 50, 2000, 500],
        no_judge: false,
    }));
    let r = match mode {
        Mode::Soak(s) => rt.block_on(soak(&args, &s)),
        Mode::Idle { streams, http2 } => rt.block_on(idle(&args, streams, http2)).map(|()| true),
    };
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn env_of(args: &Args) -> Vec<(&str, &str)> {
    args.env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Samples RSS every second for `secs`, appending to `out` (t relative to `t0`).
async fn sample_for(orch: &Orchestratord, t0: Instant, secs: u64, out: &mut Vec<Sample>) {
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while Instant::now() < until {
        tick.tick().await;
        if let Ok(rss) = orch.rss() {
            out.push(Sample {
                t: t0.elapsed().as_secs_f64(),
                rss,
            });
        }
    }
}

fn curve(samples: &[Sample], parts: usize) -> String {
    if samples.is_empty() {
        return String::from("(no samples)");
    }
    let chunk = samples.len().div_ceil(parts);
    samples
        .chunks(chunk)
        .map(|c| format!("{:.0}s:{:.0}", c[0].t, mib(stats::median(c) as f64)))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn soak(args: &Args, s: &SoakArgs) -> anyhow::Result<bool> {
    server::raise_nofile();
    let pool = PoolSpec {
        slots: s.streams,
        queue_capacity: s.streams * 4,
        tokens_per_second: 0,
        log_budget: (s.log_budget_bytes > 0).then_some(s.log_budget_bytes),
        retention_ms: s.retention_ms,
        ctx_max: s.lengths.iter().max().copied().unwrap_or(512) + 64,
    };
    let orch = Orchestratord::start(&args.orchestratord, &pool, &env_of(args)).await?;
    let t0 = Instant::now();
    let mut idle0 = Vec::new();
    sample_for(&orch, t0, 3, &mut idle0).await;
    let before = stats::median(&idle0);

    let load = load::Load::new(orch.base.clone(), s.lengths.clone());
    let workers: Vec<_> = (0..s.streams as usize)
        .map(|w| tokio::spawn(load.clone().worker(w)))
        .collect();
    let load_t0 = t0.elapsed().as_secs_f64();
    let mut during = Vec::new();
    sample_for(&orch, t0, s.seconds, &mut during).await;
    load.stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(60), w).await;
    }
    let http = reqwest::Client::new();
    let log_bytes = orch
        .metric(&http, "llorch_task_log_bytes")
        .await
        .unwrap_or(0.0);
    let log_tasks = orch
        .metric(&http, "llorch_task_log_tasks")
        .await
        .unwrap_or(0.0);
    let evictions = orch
        .metric(&http, "llorch_task_log_evictions_total")
        .await
        .unwrap_or(0.0);
    let budget = orch
        .metric(&http, "llorch_task_log_budget_bytes")
        .await
        .unwrap_or(0.0);
    let mut settle = Vec::new();
    sample_for(&orch, t0, s.settle_seconds, &mut settle).await;

    let warm_until = load_t0 + s.seconds as f64 * s.warmup_frac;
    let judged: Vec<Sample> = during
        .iter()
        .copied()
        .filter(|x| x.t >= warm_until)
        .collect();
    let rss_budget = s.rss_budget_mib.map_or(
        4 * s.log_budget_bytes.max(budget as u64) + (160 << 20),
        |m| m << 20,
    );
    let verdict = stats::judge(&judged, rss_budget, 0.05, 8.0 * 1024.0 * 1024.0);
    let tokens = load.counts.tokens.load(Ordering::Relaxed);
    let after = settle.last().map_or(0, |x| x.rss);
    println!("== soak: {} ==", args.label);
    println!(
        "load: {} streams, mock at full speed, {} s (+{} s idle after); {}",
        s.streams,
        s.seconds,
        s.settle_seconds,
        load.counts.summary()
    );
    println!(
        "tokens/s relayed: {:.0}; replay store at the end of the load: {} tasks, {:.1} MiB ({:.1} B/token of the tasks kept), budget {:.0} MiB, {} evictions",
        tokens as f64 / s.seconds as f64,
        log_tasks,
        mib(log_bytes),
        if log_tasks > 0.0 && tokens > 0 {
            log_bytes
                / (tokens as f64 * log_tasks
                    / load.counts.completed.load(Ordering::Relaxed).max(1) as f64)
        } else {
            0.0
        },
        mib(budget),
        evictions
    );
    println!(
        "RSS MiB: before {:.1} | during median {:.1}, peak {:.1} | after {} s idle {:.1} (min {:.1})",
        mib(before as f64),
        mib(stats::median(&during) as f64),
        mib(stats::max(&during) as f64),
        s.settle_seconds,
        mib(after as f64),
        mib(settle.iter().map(|x| x.rss).min().unwrap_or(0) as f64)
    );
    println!("RSS curve (t:MiB, medians): {}", curve(&during, 12));
    println!("RSS after load (t:MiB): {}", curve(&settle, 6));
    println!(
        "slope after warm-up ({:.0} s, {} samples): {:+.2} MiB/min (projected {:+.1} MiB over the window); RSS budget {:.0} MiB",
        warm_until - load_t0,
        judged.len(),
        mib(verdict.slope_per_min),
        mib(verdict.projected_growth),
        mib(rss_budget as f64)
    );
    let failures = load.counts.failures.load(Ordering::Relaxed);
    let mut ok = true;
    if s.no_judge {
        println!("verdict: not judged (--no-judge)");
        return Ok(true);
    }
    for f in &verdict.failures {
        println!("FAIL: {f}");
        ok = false;
    }
    if failures > 0 {
        println!("FAIL: {failures} client-side failures (hangs or wrong answers)");
        ok = false;
    }
    if load.counts.completed.load(Ordering::Relaxed) == 0 {
        println!("FAIL: no task completed");
        ok = false;
    }
    println!("verdict: {}", if ok { "PASS" } else { "FAIL" });
    Ok(ok)
}

/// Memory per queued task and per open idle SSE stream at `n` of each.
async fn idle(args: &Args, n: u32, http2: bool) -> anyhow::Result<()> {
    let nofile = server::raise_nofile();
    anyhow::ensure!(
        u64::from(n) + 1000 < nofile,
        "RLIMIT_NOFILE hard limit {nofile} is too low for {n} streams"
    );
    let pool = PoolSpec {
        slots: 4,
        queue_capacity: n + 16,
        tokens_per_second: 1,
        log_budget: None,
        retention_ms: None,
        ctx_max: 100_000,
    };
    let orch = Orchestratord::start(&args.orchestratord, &pool, &env_of(args)).await?;
    let http = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(64)
        .build()?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss0 = orch.rss()?;
    // Submit n tasks (4 run, the rest wait), 64 submissions at a time.
    let ids = Arc::new(tokio::sync::Mutex::new(Vec::with_capacity(n as usize)));
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let subs: Vec<_> = (0..64)
        .map(|_| {
            let (http, base, ids, next) =
                (http.clone(), orch.base.clone(), ids.clone(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let body = serde_json::json!({
                        "workload": "completion", "model_ref": "mock:tiny", "ctx": 90000,
                        "prompt": "wait", "max_tokens": 80000,
                    });
                    let r = http
                        .post(format!("{base}/v1/tasks"))
                        .bearer_auth(server::DATA_KEY)
                        .json(&body)
                        .send()
                        .await?;
                    anyhow::ensure!(r.status() == 202, "submit answered {}", r.status());
                    let v: serde_json::Value = r.json().await?;
                    ids.lock()
                        .await
                        .push(v["task_id"].as_str().unwrap_or_default().to_string());
                }
                Ok(())
            })
        })
        .collect();
    for s in subs {
        s.await??;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss1 = orch.rss()?;
    // Open one idle SSE stream per task: each on its own HTTP/1.1 connection, or as HTTP/2
    // streams sharing connections (the server caps concurrent streams per connection).
    let ids = ids.lock().await.clone();
    // hyper's HTTP/2 server allows 200 concurrent streams per connection and a reqwest client
    // holds one HTTP/2 connection per host: one client per 100 streams.
    let clients: Vec<reqwest::Client> = if http2 {
        (0..ids.len().div_ceil(100))
            .map(|_| reqwest::Client::builder().http2_prior_knowledge().build())
            .collect::<Result<_, _>>()?
    } else {
        vec![reqwest::Client::builder().http1_only().build()?]
    };
    let mut open = Vec::with_capacity(ids.len());
    for (ci, chunk) in ids.chunks(100).enumerate() {
        let client = &clients[ci % clients.len()];
        let futs = chunk.iter().map(|id| {
            client
                .get(format!("{}/v1/tasks/{id}/stream", orch.base))
                .bearer_auth(server::DATA_KEY)
                .send()
        });
        for r in futures::future::join_all(futs).await {
            let r = r?;
            anyhow::ensure!(r.status() == 200, "stream answered {}", r.status());
            open.push(r);
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss2 = orch.rss()?;
    let per_task = rss1.saturating_sub(rss0) as f64 / f64::from(n);
    let per_stream = rss2.saturating_sub(rss1) as f64 / open.len() as f64;
    println!(
        "== idle: {} ({}) ==",
        args.label,
        if http2 {
            "HTTP/2 streams"
        } else {
            "one HTTP/1.1 connection per stream"
        }
    );
    println!(
        "RSS MiB: idle {:.1} | {n} tasks (4 running, {} queued) {:.1} | + {} open SSE streams {:.1}",
        mib(rss0 as f64),
        n - 4,
        mib(rss1 as f64),
        open.len(),
        mib(rss2 as f64)
    );
    println!(
        "per queued task: {:.0} B ({:.2} KiB); per open idle stream: {:.0} B ({:.2} KiB)",
        per_task,
        per_task / 1024.0,
        per_stream,
        per_stream / 1024.0
    );
    drop(open);
    Ok(())
}
