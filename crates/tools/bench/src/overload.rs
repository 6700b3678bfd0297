//! Scenario 6: scheduling under overload (issue 4's load test). Two tenants × two priorities
//! submit open-loop at twice the pool's capacity against the mock engine; a quarter of the
//! tasks carry a deadline. Prints per class: achieved share of dispatches against the weight
//! share, p50/p99 queue wait and first-token latency, deadline hit rate, refusals and stream
//! errors by reason, plus the server's own priority-inversion counter and start-prediction
//! error. A harness that prints, not a test: it asserts nothing about timings.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use tokio::sync::Mutex;

use crate::{http_client, percentile, section};

const KEYS: [(&str, &str); 2] = [("bench-key-a", "tenant-a"), ("bench-key-b", "tenant-b")];
const SLOTS: u32 = 4;
const TOKENS_PER_SECOND: u32 = 200;
const MAX_TOKENS: u32 = 20;
const DEADLINE_MS: u64 = 1500;

fn config() -> String {
    let keys: String = KEYS
        .iter()
        .map(|(k, t)| {
            format!("[[auth.api_keys]]\nkey = \"{k}\"\ntenant = \"{t}\"\nrole = \"data\"\n\n")
        })
        .collect();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
task_retention_ms = 60000
shutdown_grace_ms = 200

{keys}
[queue]
capacity = 64
full_policy = "shed-low-priority"

[priorities]
interactive_weight = 8
batch_weight = 1

[[pools]]
id = "p"
engine = "mock"
model_ref = "mock:tiny"
ctx_max = 4096
allow_cpu_inference = true

[[pools.replicas]]
id = "r0"
slots = {half}
mock = {{ tokens_per_second = {TOKENS_PER_SECOND} }}

[[pools.replicas]]
id = "r1"
slots = {half}
mock = {{ tokens_per_second = {TOKENS_PER_SECOND} }}
"#,
        half = SLOTS / 2
    )
}

#[derive(Default)]
struct Class {
    submitted: u32,
    refused: BTreeMap<String, u32>,
    started: u32,
    /// Dispatches while the pool was saturated (the share that WFQ decides).
    started_in_overload: u32,
    waits: Vec<Duration>,
    first_tokens: Vec<Duration>,
    ended: BTreeMap<String, u32>,
    deadline_tasks: u32,
    deadline_met: u32,
}

type Key = (&'static str, &'static str);

pub(crate) async fn overload(quick: bool) -> anyhow::Result<()> {
    let cfg = config_schema::parse_str(&config(), "overload").map_err(|e| anyhow!("{e}"))?;
    let server = Arc::new(orchestratord::LocalServer::start(cfg, Default::default(), None).await?);
    let client = http_client()?;
    let service =
        Duration::from_millis(u64::from(MAX_TOKENS) * 1000 / u64::from(TOKENS_PER_SECOND));
    let capacity_per_s = f64::from(SLOTS) / service.as_secs_f64();
    let rate = 2.0 * capacity_per_s;
    let duration = Duration::from_secs(if quick { 4 } else { 20 });
    let total = (rate * duration.as_secs_f64()) as usize;
    section(&format!(
        "6. overload: 2 tenants x 2 priorities, open loop at {rate:.0} tasks/s = 2x capacity ({SLOTS} slots, ~{} ms/task), {} s, weights 8:1, shed-low-priority, 1/4 with deadline {DEADLINE_MS} ms",
        service.as_millis(),
        duration.as_secs()
    ));
    let classes: Arc<Mutex<BTreeMap<Key, Class>>> = Arc::default();
    let start = Instant::now();
    let overload_until = start + duration;
    let share_from = start + duration / 4;
    let gap = Duration::from_secs_f64(1.0 / rate);
    let mut handles = Vec::with_capacity(total);
    for i in 0..total {
        let at = start + gap * i as u32;
        tokio::time::sleep_until(at.into()).await;
        let (key, tenant) = KEYS[i % 2];
        let priority = if (i / 2) % 2 == 0 {
            "interactive"
        } else {
            "batch"
        };
        // Every fourth block of four arrivals (one of each class) carries a deadline.
        let deadline = ((i / 4) % 4 == 1).then_some(DEADLINE_MS);
        let mut body = serde_json::json!({
            "workload": "completion", "model_ref": "mock:tiny", "ctx": 1024,
            "prompt": "overload", "max_tokens": MAX_TOKENS, "priority": priority,
        });
        if let Some(d) = deadline {
            body["deadline_ms"] = d.into();
        }
        let client = client.clone();
        let server = server.clone();
        let classes = classes.clone();
        handles.push(tokio::spawn(async move {
            let class: Key = (tenant, priority);
            let sent = Instant::now();
            let resp = client
                .post(server.url("/v1/tasks"))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await;
            let mut guard = classes.lock().await;
            let c = guard.entry(class).or_default();
            c.submitted += 1;
            let resp = match resp {
                Ok(r) if r.status() == 202 => r,
                Ok(r) => {
                    let status = r.status().as_u16();
                    let code = r
                        .json::<serde_json::Value>()
                        .await
                        .ok()
                        .and_then(|v| v["code"].as_str().map(String::from))
                        .unwrap_or_default();
                    *c.refused.entry(format!("{status} {code}")).or_default() += 1;
                    return;
                }
                Err(e) => {
                    *c.refused.entry(format!("transport: {e}")).or_default() += 1;
                    return;
                }
            };
            drop(guard);
            let accepted: serde_json::Value = resp.json().await.unwrap_or_default();
            let url = accepted["stream_url"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let Ok(stream) = client.get(server.url(&url)).bearer_auth(key).send().await else {
                return;
            };
            let mut events = stream.bytes_stream().eventsource();
            let (mut dispatched, mut first, mut end) = (None, None, None);
            while let Some(Ok(ev)) = events.next().await {
                match ev.event.as_str() {
                    "metrics" if dispatched.is_none() => dispatched = Some(sent.elapsed()),
                    "token" if first.is_none() => first = Some(sent.elapsed()),
                    "end" => {
                        end = Some(("end".to_string(), sent.elapsed()));
                        break;
                    }
                    "error" => {
                        let code = serde_json::from_str::<serde_json::Value>(&ev.data)
                            .ok()
                            .and_then(|v| v["code"].as_str().map(String::from))
                            .unwrap_or_default();
                        end = Some((format!("error {code}"), sent.elapsed()));
                        break;
                    }
                    _ => {}
                }
            }
            let mut guard = classes.lock().await;
            let c = guard.entry(class).or_default();
            if let Some(w) = dispatched {
                c.started += 1;
                c.waits.push(w);
                // Count the share while every class is backlogged: after the queue has filled
                // (the first quarter) and before arrivals stop.
                let at = sent + w;
                if at >= share_from && at < overload_until {
                    c.started_in_overload += 1;
                }
            }
            if let Some(f) = first {
                c.first_tokens.push(f);
            }
            if let Some((what, took)) = end {
                *c.ended.entry(what.clone()).or_default() += 1;
                if deadline.is_some() {
                    c.deadline_tasks += 1;
                    if what == "end" && took <= Duration::from_millis(DEADLINE_MS) {
                        c.deadline_met += 1;
                    }
                }
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let mut classes = Arc::try_unwrap(classes)
        .map_err(|_| anyhow!("tasks still running"))?
        .into_inner();
    let weight = |p: &str| if p == "interactive" { 8.0 } else { 1.0 };
    let wsum: f64 = classes.keys().map(|(_, p)| weight(p)).sum();
    let dispatched_in_overload: u32 = classes.values().map(|c| c.started_in_overload).sum();
    println!(
        "  {:<22} {:>6} {:>6} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "class",
        "sent",
        "run",
        "share",
        "weight",
        "wait p50",
        "wait p99",
        "ttft p50",
        "ttft p99",
        "deadline"
    );
    for ((tenant, priority), c) in classes.iter_mut() {
        c.waits.sort();
        c.first_tokens.sort();
        let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
        println!(
            "  {:<22} {:>6} {:>6} {:>6.1}% {:>6.1}% {:>9} {:>9} {:>9} {:>9} {:>9}",
            format!("{tenant}/{priority}"),
            c.submitted,
            c.started,
            100.0 * f64::from(c.started_in_overload) / f64::from(dispatched_in_overload.max(1)),
            100.0 * weight(priority) / wsum,
            ms(percentile(&c.waits, 50.0)),
            ms(percentile(&c.waits, 99.0)),
            ms(percentile(&c.first_tokens, 50.0)),
            ms(percentile(&c.first_tokens, 99.0)),
            if c.deadline_tasks == 0 {
                "-".to_string()
            } else {
                format!("{}/{}", c.deadline_met, c.deadline_tasks)
            },
        );
    }
    println!("  refusals and stream outcomes by reason:");
    for ((tenant, priority), c) in &classes {
        let refused: Vec<String> = c.refused.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let ended: Vec<String> = c.ended.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!(
            "    {tenant}/{priority}: refused [{}] ended [{}]",
            refused.join(", "),
            ended.join(", ")
        );
    }
    let sum = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    println!(
        "  priority inversions (server counter): {}",
        sum("llorch_priority_inversions_total")
    );
    for p in ["interactive", "batch"] {
        let label = format!("{{pool_id=\"p\",priority=\"{p}\"}}");
        let n = sum(&format!(
            "llorch_start_prediction_error_seconds_count{label}"
        ));
        let wait = sum(&format!("llorch_queue_wait_seconds_sum{label}"));
        if n > 0.0 {
            println!(
                "  {p}: predicted_start_ms mean absolute error {:.0} ms, mean real wait {:.0} ms ({n} dispatches)",
                1000.0 * sum(&format!("llorch_start_prediction_error_seconds_sum{label}")) / n,
                1000.0 * wait / n
            );
        }
    }
    println!(
        "  preemptions: soft {} hard {}",
        sum("llorch_preemptions_total{engine=\"mock\",mode=\"soft\"}"),
        sum("llorch_preemptions_total{engine=\"mock\",mode=\"hard\"}")
    );
    Arc::try_unwrap(server)
        .map_err(|_| anyhow!("server still shared"))?
        .stop()
        .await
}
