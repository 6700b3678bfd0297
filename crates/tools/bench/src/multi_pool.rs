//! Scenario 8: pools submitting at once. One server with 1 or 4 mock pools (64 slots each, a
//! queue that never fills, `max_tokens = 1`), C concurrent submitters spread round-robin over
//! the pools, with no plugin and with examples/plugins/wat/good.wat (admission + placement
//! hooks) on every pool. Each pool's queue and replicas sit behind that pool's own lock and the
//! placement hook runs under it alone, so with 4 pools one pool's placement does not make the
//! others wait; the 1-pool rows are the same load on a single lock, for comparison.
//! `--pools-only` runs just this one. It prints, it asserts nothing about timings.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::{Burst, CTX, CTX_MAX, PROMPT, Sizes, http_client, post_task, section, start_server};

fn config(pools: usize, policy: &str) -> String {
    let mut cfg = crate::config_header("127.0.0.1:0", 100_000);
    for i in 0..pools {
        cfg.push_str(&format!(
            r#"
[[pools]]
id = "p{i}"
engine = "mock"
model_ref = "mock:tiny-{i}"
ctx_max = {CTX_MAX}
allow_cpu_inference = true
{policy}
[[pools.replicas]]
id = "r0"
slots = 64
mock = {{ tokens_per_second = 0 }}
"#
        ));
    }
    cfg
}

fn body(pool: usize) -> String {
    serde_json::json!({
        "workload": "completion", "model_ref": format!("mock:tiny-{pool}"), "ctx": CTX,
        "prompt": PROMPT, "max_tokens": 1,
    })
    .to_string()
}

/// POSTs `n` tasks from `concurrency` submitters; submitter k always targets pool k mod pools.
async fn burst_over_pools(
    client: &reqwest::Client,
    url: &str,
    pools: usize,
    n: usize,
    concurrency: usize,
) -> Burst {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let submitters: Vec<_> = (0..concurrency)
        .map(|k| {
            let (client, url, body, next) = (
                client.clone(),
                url.to_owned(),
                body(k % pools),
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

pub async fn multi_pool(sizes: &Sizes) -> anyhow::Result<()> {
    let plugin = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../examples/plugins/wat/good.wat"
    );
    let c = sizes.submitters;
    section(&format!(
        "8. POST /v1/tasks -> 202 over 1 and 4 pools at once ({} submissions each, {c} concurrent, spread round-robin over the pools)",
        sizes.submissions
    ));
    for (label, policy) in [
        ("no plugin", String::new()),
        (
            "good.wat (admission + placement) on every pool",
            format!("policy = {{ module = {plugin:?} }}\n"),
        ),
    ] {
        for pools in [1, 4] {
            let server = start_server(&config(pools, &policy)).await?;
            let client = http_client()?;
            let url = server.url("/v1/tasks");
            burst_over_pools(&client, &url, pools, c * 10, c).await; // warm up the connections
            let burst = burst_over_pools(&client, &url, pools, sizes.submissions, c).await;
            println!("  {label}, {pools} pool(s):");
            burst.print(202, "submissions");
            drop(client);
            server.stop().await?;
        }
    }
    Ok(())
}
