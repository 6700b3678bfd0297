//! The two paths of one request: the engine's own streaming API and llama-orch's one round
//! trip, each timed from sending the request.

use super::*;

/// One request's stream, timed from sending it.
pub(super) struct Sample {
    pub(super) first: Duration,
    pub(super) last: Duration,
    pub(super) done: Duration,
    /// Tokens generated: the engine's (or llama-orch's `end.tokens_out`) count when it gives
    /// one, else the events with text.
    pub(super) tokens: u64,
    pub(super) text: String,
}

impl Sample {
    pub(super) fn e2e_rate(&self) -> f64 {
        self.tokens as f64 / self.done.as_secs_f64()
    }

    pub(super) fn decode_rate(&self) -> f64 {
        let span = (self.last - self.first).as_secs_f64();
        if self.tokens < 2 || span <= 0.0 {
            0.0
        } else {
            (self.tokens - 1) as f64 / span
        }
    }
}

#[derive(Default)]
pub(super) struct Timer {
    pub(super) first: Option<Duration>,
    pub(super) last: Duration,
    pub(super) events: u64,
    pub(super) count: Option<u64>,
    pub(super) text: String,
}

impl Timer {
    pub(super) fn token(&mut self, t0: Instant, text: &str) {
        if text.is_empty() {
            return;
        }
        let now = t0.elapsed();
        self.first.get_or_insert(now);
        self.last = now;
        self.events += 1;
        self.text.push_str(text);
    }

    pub(super) fn finish(self, t0: Instant) -> anyhow::Result<Sample> {
        Ok(Sample {
            first: self.first.context("stream ended without a token")?,
            last: self.last,
            done: t0.elapsed(),
            tokens: self.count.unwrap_or(self.events),
            text: self.text,
        })
    }
}

/// What every request asks for.
#[derive(Clone, Copy)]
pub(super) struct Job {
    pub(super) prompt: &'static str,
    pub(super) seed: u64,
    pub(super) n: u32,
}

/// The engine's own streaming request for `job`, greedy, as llama-orch's adapter sends it.
pub(super) fn direct_request(u: &Up, job: &Job) -> (String, serde_json::Value) {
    use serde_json::json;
    match u.eng {
        Eng::LlamaCpp => (
            format!("{}/completion", u.url),
            json!({
                "prompt": job.prompt, "n_predict": job.n, "stream": true, "seed": job.seed,
                "cache_prompt": false, "temperature": 0.0,
            }),
        ),
        Eng::Vllm => (
            format!("{}/v1/completions", u.url),
            json!({
                "model": u.model, "prompt": job.prompt, "max_tokens": job.n, "seed": job.seed,
                "stream": true, "stream_options": {"include_usage": true}, "temperature": 0.0,
            }),
        ),
        Eng::Triton => {
            let sp = json!({"max_tokens": job.n, "seed": job.seed, "temperature": 0.0});
            (
                format!("{}/v2/models/llm/generate_stream", u.url),
                json!({
                    "text_input": job.prompt, "stream": true, "exclude_input_in_output": true,
                    "sampling_parameters": sp.to_string(), "return_finish_reason": true,
                    "return_num_output_tokens": true,
                }),
            )
        }
        Eng::Tgi => (
            format!("{}/generate_stream", u.url),
            json!({
                "inputs": job.prompt,
                "parameters": {"do_sample": false, "max_new_tokens": job.n, "seed": job.seed,
                               "details": true},
            }),
        ),
    }
}

/// One direct request, read to the end of the engine's stream.
pub(super) async fn direct(client: &reqwest::Client, u: &Up, job: &Job) -> anyhow::Result<Sample> {
    let (url, body) = direct_request(u, job);
    let t0 = Instant::now();
    let resp = client.post(&url).json(&body).send().await?;
    let status = resp.status();
    if status != 200 {
        let text = resp.text().await.unwrap_or_default();
        bail!("{url} answered {status}: {text}");
    }
    let mut events = resp.bytes_stream().eventsource();
    let mut timer = Timer::default();
    while let Some(ev) = events.next().await {
        let ev = ev.map_err(|e| anyhow!("engine SSE: {e}"))?;
        if ev.data == "[DONE]" {
            break;
        }
        let v: serde_json::Value = serde_json::from_str(&ev.data)
            .with_context(|| format!("engine event is not JSON: {}", ev.data))?;
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            bail!("engine error: {err}");
        }
        match u.eng {
            Eng::LlamaCpp => {
                timer.token(t0, v["content"].as_str().unwrap_or(""));
                if v["stop"] == true {
                    timer.count = v["tokens_predicted"].as_u64();
                    break;
                }
            }
            Eng::Vllm => {
                if let Some(c) = v["choices"].get(0) {
                    timer.token(t0, c["text"].as_str().unwrap_or(""));
                }
                if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                    timer.count = Some(n);
                }
            }
            Eng::Triton => {
                timer.token(t0, v["text_output"].as_str().unwrap_or(""));
                if let Some(n) = v["num_output_tokens"].as_u64() {
                    timer.count = Some(n);
                }
            }
            Eng::Tgi => {
                if v["token"]["special"] != true {
                    timer.token(t0, v["token"]["text"].as_str().unwrap_or(""));
                }
                if let Some(n) = v["details"]["generated_tokens"].as_u64() {
                    timer.count = Some(n);
                }
            }
        }
    }
    timer.finish(t0)
}

/// One task through llama-orch: `POST /v1/tasks` with `Accept: text/event-stream`, read to `end`.
pub(super) async fn orchestrated(
    client: &reqwest::Client,
    base: &str,
    eng: Eng,
    job: &Job,
) -> anyhow::Result<Sample> {
    let body = serde_json::json!({
        "workload": "completion", "model_ref": eng.model_ref(), "ctx": CTX,
        "prompt": job.prompt, "max_tokens": job.n, "seed": job.seed, "temperature": 0.0,
        "determinism": "strict",
    });
    let t0 = Instant::now();
    let (resp, is_stream) = crate::submit_streaming(client, base, &body).await?;
    if !is_stream {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        bail!("POST /v1/tasks answered {status} (not a one-request stream): {text}");
    }
    let mut events = resp.bytes_stream().eventsource();
    let mut timer = Timer::default();
    while let Some(ev) = events.next().await {
        let ev = ev.map_err(|e| anyhow!("llama-orch SSE: {e}"))?;
        match ev.event.as_str() {
            "token" => {
                let t: api_types::TokenEvent = serde_json::from_str(&ev.data)?;
                timer.token(t0, &t.t);
            }
            "end" => {
                let e: api_types::EndEvent = serde_json::from_str(&ev.data)?;
                timer.count = Some(u64::from(e.tokens_out));
                return timer.finish(t0);
            }
            "error" => bail!("stream error: {}", ev.data),
            _ => {}
        }
    }
    bail!("llama-orch stream closed without an end event")
}
