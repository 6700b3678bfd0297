//! Scenario 9 (`--openai-only`): the added first-token latency of the OpenAI front door versus
//! OrchQueue v1 on the same pool (issue 14). Three paths, interleaved round-robin so drift hits
//! them alike, each timed from sending the request to the first token on the wire:
//! - OrchQueue v1, two requests: `POST /v1/tasks` (202) then `GET /v1/tasks/{id}/stream`;
//! - OrchQueue v1, one request: `POST /v1/tasks` with `Accept: text/event-stream`;
//! - OpenAI: `POST /v1/completions` with `stream: true`.
//!
//! On the mock engine (no engine time: what the paths themselves cost) and on the real
//! llama.cpp engine (SmolLM2-135M, one replica, 1 slot; skipped when not provisioned).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use eventsource_stream::Eventsource;
use futures::StreamExt;

use crate::{DATA_KEY, fmt_us, http_client, micros, percentile, row, section};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    TwoStep,
    OneRequest,
    OpenAi,
}

const PATHS: [(Path, &str); 3] = [
    (Path::TwoStep, "OrchQueue v1, POST + GET stream"),
    (Path::OneRequest, "OrchQueue v1, one request (Accept: SSE)"),
    (Path::OpenAi, "OpenAI /v1/completions stream"),
];

/// Time from sending to the first token of one task on `path`; the rest is read to the end.
async fn first_token(
    http: &reqwest::Client,
    base: &str,
    model: &str,
    path: Path,
    seq: usize,
) -> anyhow::Result<Duration> {
    let prompt = "Once upon a time,";
    let task = serde_json::json!({"workload": "completion", "model_ref": model, "ctx": 512,
        "prompt": prompt, "max_tokens": 4, "seed": seq, "temperature": 0});
    let t0 = Instant::now();
    let resp = match path {
        Path::TwoStep => {
            let r = http
                .post(format!("{base}/v1/tasks"))
                .bearer_auth(DATA_KEY)
                .json(&task)
                .send()
                .await?;
            if r.status() != 202 {
                bail!("submit: {}", r.status());
            }
            let a: serde_json::Value = r.json().await?;
            let url = a["stream_url"]
                .as_str()
                .ok_or_else(|| anyhow!("no stream_url"))?;
            http.get(format!("{base}{url}"))
                .bearer_auth(DATA_KEY)
                .send()
                .await?
        }
        Path::OneRequest => {
            http.post(format!("{base}/v1/tasks"))
                .bearer_auth(DATA_KEY)
                .header("accept", "text/event-stream")
                .json(&task)
                .send()
                .await?
        }
        Path::OpenAi => {
            http.post(format!("{base}/v1/completions"))
                .bearer_auth(DATA_KEY)
                .json(
                    &serde_json::json!({"model": model, "prompt": prompt, "max_tokens": 4,
                    "seed": seq, "temperature": 0, "stream": true}),
                )
                .send()
                .await?
        }
    };
    if resp.status() != 200 {
        bail!("stream: {}", resp.status());
    }
    let mut events = resp.bytes_stream().eventsource();
    let mut first = None;
    while let Some(ev) = events.next().await {
        let ev = ev.map_err(|e| anyhow!("SSE: {e}"))?;
        let token = match path {
            Path::OpenAi => ev.data.contains("\"text\":\"") && !ev.data.contains("\"text\":\"\""),
            _ => ev.event == "token",
        };
        if token && first.is_none() {
            first = Some(t0.elapsed());
        }
        if ev.event == "error" || ev.data.starts_with("{\"error\"") {
            bail!("stream error: {}", ev.data);
        }
    }
    first.ok_or_else(|| anyhow!("no token"))
}

async fn measure(
    base: &str,
    model: &str,
    rounds: usize,
    warmup: usize,
    what: &str,
) -> anyhow::Result<()> {
    let http = http_client()?;
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); PATHS.len()];
    for round in 0..warmup + rounds {
        for (k, (path, _)) in PATHS.iter().enumerate() {
            let d = first_token(&http, base, model, *path, round * PATHS.len() + k).await?;
            if round >= warmup {
                samples[k].push(d);
            }
        }
    }
    section(&format!(
        "9. First-token latency by path, {what} ({rounds} interleaved rounds, max_tokens=4; \
         median / p95, and the median's difference from the two-request OrchQueue v1 path)"
    ));
    for s in &mut samples {
        s.sort_unstable();
    }
    let base_median = micros(percentile(&samples[0], 50.0));
    for ((_, label), s) in PATHS.iter().zip(&samples) {
        let (m, p95) = (micros(percentile(s, 50.0)), micros(percentile(s, 95.0)));
        row(
            label,
            format!(
                "{} / {}  ({:+.0} µs)",
                fmt_us(m),
                fmt_us(p95),
                m - base_median
            ),
        );
    }
    Ok(())
}

fn keys() -> String {
    format!("\n[[auth.api_keys]]\nkey = \"{DATA_KEY}\"\ntenant = \"bench\"\nrole = \"data\"\n")
}

pub(crate) async fn openai_path(quick: bool, real: bool) -> anyhow::Result<()> {
    let (rounds, warmup) = if quick { (50, 5) } else { (300, 20) };
    let toml = format!(
        "[server]\nopenai_compat = true\ntask_retention_ms = 1000\n{}\n[[pools]]\nid = \"p\"\nengine = \"mock\"\nmodel_ref = \"mock:tiny\"\nctx_max = 1024\nallow_cpu_inference = true\n\n[[pools.replicas]]\nid = \"r0\"\nslots = 4\n",
        keys()
    );
    let cfg = config_schema::parse_str(&toml, "bench-openai").map_err(|e| anyhow!("{e}"))?;
    let server = orchestratord::LocalServer::start(cfg, Default::default(), None).await?;
    measure(&server.base, "mock:tiny", rounds, warmup, "mock engine").await?;
    server.stop().await?;
    if !real {
        println!("\n9b. real engine: SKIPPED (--no-real-engine)");
        return Ok(());
    }
    let e = match crate::real_engine::provisioned_engine() {
        Ok(e) => e,
        Err(why) => {
            println!("\n9b. real engine: SKIPPED — run `cargo xtask fetch-engine` ({why})");
            return Ok(());
        }
    };
    let toml = format!(
        "[server]\nopenai_compat = true\n[timeouts]\nfirst_token_ms = 120000\n{}\n{}",
        keys(),
        test_fixtures::llamacpp_pool_toml(&e, "llm", 512, &[("cpu0", 1)])
    );
    let cfg = config_schema::parse_str(&toml, "bench-openai-real").map_err(|e| anyhow!("{e}"))?;
    let model = cfg.pools[0].model_ref.clone();
    let (engines, overrides) = pool_managerd::engines::Engines::start(&cfg)?;
    if !engines.wait_preloaded(Duration::from_secs(120)).await {
        engines.shutdown().await;
        bail!("llama-server did not become ready");
    }
    let server = orchestratord::LocalServer::start(cfg, overrides, None).await?;
    let (rounds, warmup) = if quick { (10, 2) } else { (60, 5) };
    let r = measure(
        &server.base,
        &model,
        rounds,
        warmup,
        "real llama.cpp (SmolLM2-135M, CPU, 1 slot)",
    )
    .await;
    let _ = server.stop().await;
    engines.shutdown().await;
    r
}
