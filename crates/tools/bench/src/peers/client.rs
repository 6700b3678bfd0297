//! The `--peers` client: one completion on one path, timed from sending the (first) request,
//! with the concatenated token text kept for the byte comparison.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use api_types::TaskAccepted;
use eventsource_stream::Eventsource;
use futures::StreamExt;

use super::paths::{Kind, RelayPath};
use crate::DATA_KEY;

/// How a llama-orch path answered: the stream in the POST's own response, or 202 + GET.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Flow {
    /// llama-server's `/completion` (direct or through a plain proxy).
    Native,
    /// `POST /v1/tasks` with `Accept: text/event-stream` answered 200 with the SSE stream.
    OneRequest,
    /// `POST /v1/tasks` answered 202; the stream came from `GET stream_url`.
    TwoStep,
}

impl Flow {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Flow::Native => "/completion",
            Flow::OneRequest => "one request",
            Flow::TwoStep => "POST + GET",
        }
    }
}

pub(crate) struct Sample {
    pub first: Duration,
    pub tokens: u64,
    pub text: String,
    pub flow: Flow,
}

/// What every request asks for.
#[derive(Clone)]
pub(crate) struct Job {
    pub prompt: &'static str,
    pub seed: u64,
    pub n: u32,
}

const LIMIT: Duration = Duration::from_secs(300);

pub(crate) async fn run(
    client: &reqwest::Client,
    path: &RelayPath,
    model_ref: &str,
    ctx: u32,
    job: &Job,
) -> anyhow::Result<Sample> {
    let f = async {
        match path.kind {
            Kind::Engine => native(client, &path.base, job).await,
            Kind::Orch => orch(client, &path.base, model_ref, ctx, job).await,
        }
    };
    tokio::time::timeout(LIMIT, f)
        .await
        .map_err(|_| anyhow!("{}: no complete answer within {LIMIT:?}", path.name))?
}

/// The same sampling as the llama.cpp adapter with `determinism = "strict"`.
async fn native(client: &reqwest::Client, base: &str, job: &Job) -> anyhow::Result<Sample> {
    let body = serde_json::json!({
        "prompt": job.prompt, "n_predict": job.n, "stream": true, "seed": job.seed,
        "cache_prompt": false,
    });
    let t0 = Instant::now();
    let resp = client
        .post(format!("{base}/completion"))
        .json(&body)
        .send()
        .await?;
    ensure!(
        resp.status() == 200,
        "/completion answered {}",
        resp.status()
    );
    let mut events = resp.bytes_stream().eventsource();
    let mut s = Sample {
        first: Duration::ZERO,
        tokens: 0,
        text: String::new(),
        flow: Flow::Native,
    };
    while let Some(ev) = events.next().await {
        let ev = ev.map_err(|e| anyhow!("engine SSE: {e}"))?;
        let v: serde_json::Value = serde_json::from_str(&ev.data)
            .with_context(|| format!("engine chunk is not JSON: {}", ev.data))?;
        if let Some(err) = v.get("error") {
            bail!("engine error: {err}");
        }
        let content = v["content"].as_str().unwrap_or("");
        if !content.is_empty() {
            if s.tokens == 0 {
                s.first = t0.elapsed();
            }
            s.tokens += 1;
            s.text.push_str(content);
        }
        if v["stop"].as_bool() == Some(true) {
            ensure!(s.tokens > 0, "stream ended without a token");
            return Ok(s);
        }
    }
    bail!("engine stream closed without stop")
}

/// One request when the server answers the POST with the stream, two otherwise.
async fn orch(
    client: &reqwest::Client,
    base: &str,
    model_ref: &str,
    ctx: u32,
    job: &Job,
) -> anyhow::Result<Sample> {
    let body = serde_json::json!({
        "workload": "completion", "model_ref": model_ref, "ctx": ctx,
        "prompt": job.prompt, "max_tokens": job.n, "seed": job.seed, "determinism": "strict",
    });
    let t0 = Instant::now();
    let (resp, is_stream) = crate::submit_streaming(client, base, &body).await?;
    let status = resp.status();
    let (stream, flow) = if is_stream {
        (resp, Flow::OneRequest)
    } else if status == 202 {
        let accepted: TaskAccepted = resp.json().await?;
        let stream = client
            .get(format!("{base}{}", accepted.stream_url))
            .bearer_auth(DATA_KEY)
            .send()
            .await?;
        ensure!(
            stream.status() == 200,
            "stream answered {}",
            stream.status()
        );
        (stream, Flow::TwoStep)
    } else {
        let text = resp.text().await.unwrap_or_default();
        bail!("POST /v1/tasks answered {status}: {text}");
    };
    let mut events = stream.bytes_stream().eventsource();
    let mut s = Sample {
        first: Duration::ZERO,
        tokens: 0,
        text: String::new(),
        flow,
    };
    while let Some(ev) = events.next().await {
        let ev = ev.map_err(|e| anyhow!("orchestrator SSE: {e}"))?;
        match ev.event.as_str() {
            "token" => {
                let t: api_types::TokenEvent = serde_json::from_str(&ev.data)?;
                if s.tokens == 0 {
                    s.first = t0.elapsed();
                }
                s.tokens += 1;
                s.text.push_str(&t.t);
            }
            "end" => {
                ensure!(s.tokens > 0, "stream ended without a token");
                return Ok(s);
            }
            "error" => bail!("stream error: {}", ev.data),
            _ => {}
        }
    }
    bail!("orchestrator stream closed without an end event")
}
