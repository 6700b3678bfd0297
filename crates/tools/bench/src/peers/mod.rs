//! `--peers`: llama-orch's relay next to other relays on one engine (issue 15 item 1).
//!
//! Every path is a separate process that fronts the same engine — the one `llorch serve`
//! supervises: direct, nginx (own process, generated config), llama-orch all-in-one
//! (`llorch serve`, in-process adapter) and split (orchestratord → llorch-adapterd over a unix
//! socket → engine); vllm-router and LiteLLM are reported as skipped. The engine is the
//! provisioned llama-server (4 slots) or, with `--synthetic`, `llorch-synth-engine`, a fast
//! token source speaking llama-server's wire format, so that the relay's own ceiling shows.
//!
//! Phases: a warm-up round; K latency rounds (each the same prompt and seed on every path,
//! one request at a time, path order rotating round-robin), from which come first-token
//! latency, CPU per relayed token and the byte comparison of the token text; throughput
//! blocks at each concurrency level (paths rotating per level); an idle window. CPU is
//! utime + stime from /proc/PID/stat of the relay's own processes. The run fails when a path's
//! token text differs from direct's.

mod client;
mod paths;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};

use client::{Flow, Job};
use paths::{EngineSetup, RelayPath, Setup, cpu_ms, ms_per_tick, rss_kib};

use crate::{percentile, section};

const PROMPTS: [&str; 4] = [
    "Once upon a time, in a small village by the sea,",
    "The three rules of a good relay are",
    "Write a short note about latency: \"first token\" matters because",
    "List the colours of the rainbow:",
];
const SEED_BASE: u64 = 7100;

pub(crate) struct PeersArgs {
    pub synthetic: bool,
    pub quick: bool,
    pub rounds: Option<usize>,
    pub idle_secs: u64,
}

/// Sizes of one run.
struct Plan {
    rounds: usize,
    latency_tokens: u32,
    levels: Vec<usize>,
    /// Requests per level = max(level * per_stream, min_requests).
    per_stream: usize,
    min_requests: usize,
    level_tokens: u32,
}

impl Plan {
    fn new(a: &PeersArgs) -> Plan {
        match (a.synthetic, a.quick) {
            (false, q) => Plan {
                rounds: a.rounds.unwrap_or(if q { 5 } else { 20 }),
                latency_tokens: 32,
                levels: vec![4, 64],
                per_stream: 1,
                min_requests: if q { 8 } else { 16 },
                level_tokens: 32,
            },
            (true, q) => Plan {
                rounds: a.rounds.unwrap_or(if q { 20 } else { 100 }),
                latency_tokens: 32,
                levels: vec![1, 64, 1024],
                per_stream: if q { 1 } else { 4 },
                min_requests: if q { 50 } else { 200 },
                level_tokens: 256,
            },
        }
    }
}

#[derive(Default)]
struct Tally {
    firsts: Vec<Duration>,
    tokens: u64,
    cpu_ms: f64,
    flows: Vec<Flow>,
    texts: Vec<String>,
    failures: Vec<String>,
}

struct Level {
    tokens: u64,
    wall: Duration,
    cpu_ms: f64,
    failures: usize,
    first_error: Option<String>,
}

pub(crate) async fn peers(a: PeersArgs) -> anyhow::Result<()> {
    let plan = Plan::new(&a);
    let engine = if a.synthetic {
        let bin = paths::sibling_binary("llorch-synth-engine", "llorch-bench")?;
        EngineSetup {
            binary: bin,
            model: std::env::temp_dir().join("llorch-peers-synthetic.gguf"),
            model_sha256: None,
            slots: 1024,
            ctx: 4096,
        }
    } else {
        let e = match crate::real_engine::provisioned_engine() {
            Ok(e) => e,
            Err(why) => bail!(
                "--peers needs the real engine: run `cargo xtask fetch-engine` ({why}), or use --synthetic"
            ),
        };
        EngineSetup {
            binary: e.llama_server,
            model: e.model,
            model_sha256: Some(e.model_sha256),
            slots: 4,
            ctx: 512,
        }
    };
    if a.synthetic {
        std::fs::write(&engine.model, b"synthetic engine: no weights\n")?;
    }
    section(&format!(
        "peers: relays side by side on one {} ({} slots), interleaved round-robin",
        if a.synthetic {
            "synthetic engine (llorch-synth-engine, as fast as the reader)"
        } else {
            "llama-server (provisioned SmolLM2-135M, CPU)"
        },
        engine.slots
    ));
    let mut setup = Setup::start(&engine).await?;
    let result = measure(&mut setup, &engine, &plan, &a).await;
    let result = result.and(setup.check_alive());
    let dir = setup.stop();
    if result.is_err() {
        eprintln!("peers: logs and configs kept in {}", dir.keep().display());
    }
    result
}

fn clients(synthetic: bool) -> anyhow::Result<(reqwest::Client, reqwest::Client)> {
    let pooled = crate::http_client()?;
    // llama-server closes the connection after every stream (see real_engine.rs), so the
    // direct path to it connects afresh each time; the synthetic engine keeps connections.
    let direct = if synthetic {
        pooled.clone()
    } else {
        reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(0)
            .build()?
    };
    Ok((pooled, direct))
}

async fn measure(
    setup: &mut Setup,
    engine: &EngineSetup,
    plan: &Plan,
    a: &PeersArgs,
) -> anyhow::Result<()> {
    let (pooled, direct_client) = clients(a.synthetic)?;
    let client_for = |p: &RelayPath| {
        if p.procs.is_empty() {
            direct_client.clone()
        } else {
            pooled.clone()
        }
    };
    let n_paths = setup.paths.len();
    let mut tallies: Vec<Tally> = (0..n_paths).map(|_| Tally::default()).collect();
    let model_ref = setup.model_ref.clone();

    // Latency rounds (round 0 warms every path up and is not counted).
    eprintln!("  latency rounds: {} + 1 warm-up", plan.rounds);
    for round in 0..=plan.rounds {
        let job = Job {
            prompt: PROMPTS[round % PROMPTS.len()],
            seed: SEED_BASE + round as u64,
            n: plan.latency_tokens,
        };
        for k in 0..n_paths {
            let i = (round + k) % n_paths;
            let path = &setup.paths[i];
            let c = client_for(path);
            let cpu0 = cpu_ms(&path.procs);
            let got = client::run(&c, path, &model_ref, engine.ctx, &job).await;
            let cpu = cpu_ms(&path.procs) - cpu0;
            let t = &mut tallies[i];
            match got {
                Ok(s) if round > 0 => {
                    t.firsts.push(s.first);
                    t.tokens += s.tokens;
                    t.cpu_ms += cpu;
                    t.flows.push(s.flow);
                    t.texts.push(s.text);
                }
                Ok(_) => {}
                Err(e) if round == 0 => bail!("warm-up on {}: {e:#}", path.name),
                Err(e) => {
                    t.failures.push(format!("{e:#}"));
                    t.texts.push(String::new());
                }
            }
        }
        setup.check_alive()?;
    }

    // Throughput at each level; the paths' order rotates from level to level.
    let mut levels: Vec<Vec<Level>> = (0..n_paths).map(|_| Vec::new()).collect();
    for (li, &streams) in plan.levels.iter().enumerate() {
        let requests = (streams * plan.per_stream).max(plan.min_requests);
        eprintln!("  throughput @{streams}: {requests} requests per path");
        for k in 0..n_paths {
            let i = (li + k) % n_paths;
            let path = &setup.paths[i];
            let level = block(
                &client_for(path),
                path,
                &model_ref,
                engine.ctx,
                streams,
                requests,
                plan.level_tokens,
            )
            .await;
            levels[i].push(level);
            setup.check_alive()?;
        }
    }

    // Idle window: every path idle at once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle0: Vec<Vec<f64>> = setup
        .paths
        .iter()
        .map(|p| {
            p.procs
                .iter()
                .map(|q| cpu_ms(std::slice::from_ref(q)))
                .collect()
        })
        .collect();
    eprintln!("  idle window: {} s", a.idle_secs);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(a.idle_secs)).await;
    let idle_s = t0.elapsed().as_secs_f64();
    let idle: Vec<Vec<f64>> = setup
        .paths
        .iter()
        .zip(&idle0)
        .map(|(p, before)| {
            p.procs
                .iter()
                .zip(before)
                .map(|(q, b)| (cpu_ms(std::slice::from_ref(q)) - b) / idle_s)
                .collect()
        })
        .collect();

    report(setup, plan, &tallies, &levels, &idle, idle_s);
    let mut bad = Vec::new();
    for (p, t) in setup.paths.iter().zip(&tallies).skip(1) {
        let same = t
            .texts
            .iter()
            .zip(&tallies[0].texts)
            .filter(|(x, d)| x == d && !x.is_empty())
            .count();
        if same != plan.rounds {
            bad.push(format!(
                "{}: {same}/{} rounds byte-identical to direct",
                p.name, plan.rounds
            ));
        }
    }
    for (p, t) in setup.paths.iter().zip(&tallies) {
        if let Some(f) = t.failures.first() {
            bad.push(format!(
                "{}: {} failed requests, first: {f}",
                p.name,
                t.failures.len()
            ));
        }
    }
    ensure!(bad.is_empty(), "peers: {}", bad.join("; "));
    Ok(())
}

/// `requests` completions on one path, `streams` at a time.
async fn block(
    client: &reqwest::Client,
    relay: &RelayPath,
    model_ref: &str,
    ctx: u32,
    streams: usize,
    requests: usize,
    n: u32,
) -> Level {
    let next = Arc::new(AtomicUsize::new(0));
    let cpu0 = cpu_ms(&relay.procs);
    let t0 = Instant::now();
    let path = Arc::new(RelayPath {
        name: relay.name.clone(),
        kind: relay.kind,
        base: relay.base.clone(),
        procs: vec![],
    });
    let workers: Vec<_> = (0..streams)
        .map(|_| {
            let (client, path, next, model_ref) = (
                client.clone(),
                path.clone(),
                next.clone(),
                model_ref.to_owned(),
            );
            tokio::spawn(async move {
                let (mut tokens, mut failures, mut first_error) = (0u64, 0usize, None);
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= requests {
                        break;
                    }
                    let job = Job {
                        prompt: PROMPTS[k % PROMPTS.len()],
                        seed: SEED_BASE + 10_000 + k as u64,
                        n,
                    };
                    match client::run(&client, &path, &model_ref, ctx, &job).await {
                        Ok(s) => tokens += s.tokens,
                        Err(e) => {
                            failures += 1;
                            first_error.get_or_insert_with(|| format!("{e:#}"));
                        }
                    }
                }
                (tokens, failures, first_error)
            })
        })
        .collect();
    let mut level = Level {
        tokens: 0,
        wall: Duration::ZERO,
        cpu_ms: 0.0,
        failures: 0,
        first_error: None,
    };
    for w in workers {
        match w.await {
            Ok((t, f, e)) => {
                level.tokens += t;
                level.failures += f;
                if level.first_error.is_none() {
                    level.first_error = e;
                }
            }
            Err(_) => level.failures += 1,
        }
    }
    level.wall = t0.elapsed();
    level.cpu_ms = cpu_ms(&relay.procs) - cpu0;
    level
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn per_1k(cpu_ms: f64, tokens: u64) -> String {
    if tokens == 0 {
        "—".into()
    } else {
        format!("{:.1} ms", cpu_ms * 1000.0 / tokens as f64)
    }
}

fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn report(
    setup: &Setup,
    plan: &Plan,
    tallies: &[Tally],
    levels: &[Vec<Level>],
    idle: &[Vec<f64>],
    idle_s: f64,
) {
    let sorted = |t: &Tally| {
        let mut v = t.firsts.clone();
        v.sort_unstable();
        v
    };
    let d = sorted(&tallies[0]);
    let (d50, d95) = (ms(percentile(&d, 50.0)), ms(percentile(&d, 95.0)));
    let mut head = "| path | client flow | added first-token latency, median / p95 | CPU per 1,000 relayed tokens | idle CPU | RSS (peak) |".to_owned();
    let mut rule = "|---|---|---|---|---|---|".to_owned();
    for s in &plan.levels {
        head.push_str(&format!(" tok/s @{s} (CPU/1k tok) |"));
        rule.push_str("---|");
    }
    head.push_str(" text = direct |");
    rule.push_str("---|");
    println!();
    println!("{head}\n{rule}");
    for (i, (p, t)) in setup.paths.iter().zip(tallies).enumerate() {
        let s = sorted(t);
        let (m, p95) = (ms(percentile(&s, 50.0)), ms(percentile(&s, 95.0)));
        let latency = if i == 0 {
            format!("{m:.2} / {p95:.2} ms (absolute)")
        } else {
            format!("{:+.2} / {:+.2} ms", m - d50, p95 - d95)
        };
        let flow = {
            let mut f: Vec<&str> = t.flows.iter().map(|f| f.label()).collect();
            f.dedup();
            f.join(", ")
        };
        let (cpu, idle_txt, rss) = if p.procs.is_empty() {
            ("—".into(), "—".into(), "—".into())
        } else {
            let idle_txt = p
                .procs
                .iter()
                .zip(&idle[i])
                .map(|(q, v)| format!("{} {v:.2}", q.name))
                .collect::<Vec<_>>()
                .join(" + ");
            let (now, peak) = p
                .procs
                .iter()
                .map(|q| rss_kib(q.pid))
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            (
                per_1k(t.cpu_ms, t.tokens),
                format!("{idle_txt} ms/s"),
                format!(
                    "{:.1} MB ({:.1})",
                    now as f64 / 1024.0,
                    peak as f64 / 1024.0
                ),
            )
        };
        let mut row = format!(
            "| {} | {flow} | {latency} | {cpu} | {idle_txt} | {rss} |",
            p.name
        );
        for l in &levels[i] {
            let rate = l.tokens as f64 / l.wall.as_secs_f64();
            let cpu = if p.procs.is_empty() {
                String::new()
            } else {
                format!(" ({})", per_1k(l.cpu_ms, l.tokens))
            };
            let failed = if l.failures > 0 {
                format!(" [{} failed]", l.failures)
            } else {
                String::new()
            };
            row.push_str(&format!(" {}{cpu}{failed} |", thousands(rate)));
        }
        let text = if i == 0 {
            "reference".to_owned()
        } else {
            let same = t
                .texts
                .iter()
                .zip(&tallies[0].texts)
                .filter(|(x, d)| x == d && !x.is_empty())
                .count();
            let verdict = if same == plan.rounds { "pass" } else { "FAIL" };
            format!("{verdict} ({same}/{})", plan.rounds)
        };
        row.push_str(&format!(" {text} |"));
        println!("{row}");
    }
    for (tool, why) in &setup.skipped {
        println!("| {tool} | SKIPPED: {why} |");
    }
    for (p, ls) in setup.paths.iter().zip(levels) {
        for (l, c) in ls.iter().zip(&plan.levels) {
            if let Some(e) = &l.first_error {
                println!("  {} @{c}: {} failed, first: {e}", p.name, l.failures);
            }
        }
    }
    println!(
        "\n  {} latency rounds of {} tokens (+1 warm-up), one request at a time, path order \
         rotating; added latency = the path's median (p95) minus direct's median (p95).",
        plan.rounds, plan.latency_tokens
    );
    println!(
        "  CPU = utime+stime of the relay's processes (/proc/PID/stat, 1 tick = {:.0} ms) over \
         its own requests; idle CPU over {idle_s:.0} s with every path idle (resolution {:.2} \
         ms/s); tok/s @C: max(C x {}, {}) requests of {} tokens, C at a time.",
        ms_per_tick(),
        ms_per_tick() / idle_s,
        plan.per_stream,
        plan.min_requests,
        plan.level_tokens
    );
    println!(
        "  engine: {} (pid {}); logs and configs in {} (kept only when the run fails)",
        setup.engine_url,
        setup.engine_pid,
        setup.dir.path().display()
    );
}
