//! `llorch top`: a live view of the load, one frame per interval. Each frame compares two
//! scrapes of `/metrics` an interval apart (rates) and shows the current replica sets
//! (`GET /v1/replicasets`: running = busy slots, queued = queue depth); per tenant, the tasks
//! running and queued in each pool (`llorch_tenant_tasks`) and the fair queue's dispatch shares.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use api_types::ReplicaSet;
use serde::{Deserialize, Serialize};

use super::Opts;
use crate::Failure;
use crate::client::Client;
use crate::control_args::TopArgs;
use crate::error::{CliError, EXIT_OK};
use crate::prom::{self, Sample};
use crate::render::{Table, write_json_line};

/// One frame, as `--output json` prints it (one JSON object per line).
#[derive(Debug, Serialize, Deserialize)]
pub struct Frame {
    /// Time between the two scrapes the rates come from.
    pub interval_ms: u64,
    pub pools: Vec<PoolLoad>,
    /// Tasks per pool and tenant now (servers without `llorch_tenant_tasks`: empty).
    pub pool_tenants: Vec<PoolTenantLoad>,
    pub tenants: Vec<TenantLoad>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PoolTenantLoad {
    pub pool_id: String,
    pub tenant: String,
    pub running: u64,
    pub queued: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PoolLoad {
    pub pool_id: String,
    pub engine: String,
    /// Tasks running now (busy slots) and slots in all.
    pub running: u32,
    pub slots: u32,
    /// Tasks waiting in the pool's queue now.
    pub queued: u32,
    /// Tokens generated and relayed per second over the interval.
    pub tokens_per_s: f64,
    /// Tasks finished (`end`) per second over the interval.
    pub completed_per_s: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TenantLoad {
    pub tenant: String,
    pub priority: String,
    /// Moving-average share of dispatches (the fair queue's view).
    pub dispatch_share: f64,
    /// Submissions refused by the tenant's quotas during the interval.
    pub quota_rejections: u64,
}

struct Scrape {
    at: Instant,
    metrics: Vec<Sample>,
    sets: Vec<ReplicaSet>,
}

async fn scrape(client: &Client) -> Result<Scrape, CliError> {
    let sets = client.replicasets().await?;
    let text = client.metrics_text().await?;
    let metrics = prom::parse(&text).map_err(CliError::Protocol)?;
    Ok(Scrape {
        at: Instant::now(),
        metrics,
        sets,
    })
}

pub(super) async fn run(
    client: &Client,
    opts: &Opts,
    args: &TopArgs,
    out: &mut (impl Write + ?Sized),
) -> Result<i32, Failure> {
    let frames = args.frames();
    let interval = Duration::from_millis(args.interval.max(1));
    // Clear the screen between frames only for a person watching a terminal.
    let live = !opts.json() && frames != Some(1) && std::io::stdout().is_terminal();
    let mut prev = scrape(client).await?;
    let mut shown = 0u64;
    loop {
        tokio::time::sleep(interval.saturating_sub(prev.at.elapsed())).await;
        let cur = scrape(client).await?;
        let frame = frame(&prev, &cur);
        if opts.json() {
            write_json_line(out, &frame)?;
        } else {
            if live {
                out.write_all(b"\x1b[H\x1b[2J")?;
            }
            out.write_all(render(&frame).as_bytes())?;
            out.flush()?;
        }
        shown += 1;
        if frames.is_some_and(|n| shown >= n) {
            return Ok(EXIT_OK);
        }
        prev = cur;
    }
}

/// Per-second rate of a counter between two scrapes, by label; a counter that went down (the
/// server restarted) counts from zero.
fn rates(prev: &Scrape, cur: &Scrape, name: &str, label: &str) -> BTreeMap<String, f64> {
    let secs = cur.at.duration_since(prev.at).as_secs_f64().max(1e-3);
    let before = prom::sum_by(&prev.metrics, name, label);
    prom::sum_by(&cur.metrics, name, label)
        .into_iter()
        .map(|(k, now)| {
            let was = before.get(&k).copied().unwrap_or(0.0);
            let delta = if now >= was { now - was } else { now };
            (k, delta / secs)
        })
        .collect()
}

fn frame(prev: &Scrape, cur: &Scrape) -> Frame {
    let tokens = rates(prev, cur, "llorch_tokens_out_total", "pool_id");
    let completed = rates(prev, cur, "llorch_tasks_completed_total", "pool_id");
    let pools = cur
        .sets
        .iter()
        .map(|s| PoolLoad {
            pool_id: s.pool_id.clone(),
            engine: s.engine.clone(),
            running: s.replicas.iter().map(|r| r.slots_busy).sum(),
            slots: s.replicas.iter().map(|r| r.slots_total).sum(),
            queued: s.queue_depth,
            tokens_per_s: round2(tokens.get(&s.pool_id).copied().unwrap_or(0.0)),
            completed_per_s: round2(completed.get(&s.pool_id).copied().unwrap_or(0.0)),
        })
        .collect();
    let rejections = |m: &[Sample], tenant: &str| -> f64 {
        m.iter()
            .filter(|s| s.name == "llorch_quota_rejections_total" && s.label("tenant") == tenant)
            .map(|s| s.value)
            .sum()
    };
    let mut tenants: Vec<TenantLoad> = cur
        .metrics
        .iter()
        .filter(|s| s.name == "llorch_admission_share_ratio")
        .map(|s| {
            let t = s.label("tenant");
            let now = rejections(&cur.metrics, t);
            let was = rejections(&prev.metrics, t);
            TenantLoad {
                tenant: t.to_string(),
                priority: s.label("priority").to_string(),
                dispatch_share: round2(s.value),
                quota_rejections: if now >= was { now - was } else { now } as u64,
            }
        })
        .collect();
    tenants.sort_by(|a, b| (&a.tenant, &a.priority).cmp(&(&b.tenant, &b.priority)));
    let mut by: BTreeMap<(String, String), PoolTenantLoad> = BTreeMap::new();
    for s in cur
        .metrics
        .iter()
        .filter(|s| s.name == "llorch_tenant_tasks")
    {
        let (pool, tenant) = (
            s.label("pool_id").to_string(),
            s.label("tenant").to_string(),
        );
        let e = by
            .entry((pool.clone(), tenant.clone()))
            .or_insert(PoolTenantLoad {
                pool_id: pool,
                tenant,
                running: 0,
                queued: 0,
            });
        let n = s.value.max(0.0) as u64;
        match s.label("state") {
            "running" => e.running += n,
            "queued" => e.queued += n,
            _ => {}
        }
    }
    Frame {
        interval_ms: cur.at.duration_since(prev.at).as_millis() as u64,
        pools,
        pool_tenants: by.into_values().collect(),
        tenants,
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn render(f: &Frame) -> String {
    let mut t = Table::new(&[
        "POOL", "ENGINE", "RUNNING", "SLOTS", "QUEUED", "TOKENS/S", "DONE/S",
    ]);
    for p in &f.pools {
        t.row(vec![
            p.pool_id.clone(),
            p.engine.clone(),
            p.running.to_string(),
            p.slots.to_string(),
            p.queued.to_string(),
            format!("{:.1}", p.tokens_per_s),
            format!("{:.2}", p.completed_per_s),
        ]);
    }
    let mut s = format!("llorch top — every {} ms\n\n", f.interval_ms);
    s.push_str(&t.render());
    let busy: Vec<&PoolTenantLoad> = f
        .pool_tenants
        .iter()
        .filter(|t| t.running + t.queued > 0)
        .collect();
    if !busy.is_empty() {
        let mut t = Table::new(&["POOL", "TENANT", "RUNNING", "QUEUED"]);
        for x in busy {
            t.row(vec![
                x.pool_id.clone(),
                x.tenant.clone(),
                x.running.to_string(),
                x.queued.to_string(),
            ]);
        }
        s.push('\n');
        s.push_str(&t.render());
    }
    if !f.tenants.is_empty() {
        let mut t = Table::new(&["TENANT", "PRIORITY", "SHARE", "QUOTA REJECTIONS"]);
        for x in &f.tenants {
            t.row(vec![
                x.tenant.clone(),
                x.priority.clone(),
                format!("{:.2}", x.dispatch_share),
                x.quota_rejections.to_string(),
            ]);
        }
        s.push('\n');
        s.push_str(&t.render());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape_at(at: Instant, text: &str) -> Scrape {
        Scrape {
            at,
            metrics: prom::parse(text).expect("parses"),
            sets: Vec::new(),
        }
    }

    #[test]
    fn rates_over_the_interval_and_counter_resets() {
        let t0 = Instant::now();
        let a = scrape_at(
            t0,
            "llorch_tokens_out_total{pool_id=\"p\",replica_id=\"r0\"} 100\n\
             llorch_tokens_out_total{pool_id=\"p\",replica_id=\"r1\"} 50\n\
             llorch_tokens_out_total{pool_id=\"q\",replica_id=\"r0\"} 500\n",
        );
        let b = scrape_at(
            t0 + Duration::from_secs(2),
            "llorch_tokens_out_total{pool_id=\"p\",replica_id=\"r0\"} 140\n\
             llorch_tokens_out_total{pool_id=\"p\",replica_id=\"r1\"} 70\n\
             llorch_tokens_out_total{pool_id=\"q\",replica_id=\"r0\"} 10\n",
        );
        let r = rates(&a, &b, "llorch_tokens_out_total", "pool_id");
        assert_eq!(r.get("p"), Some(&30.0));
        assert_eq!(r.get("q"), Some(&5.0), "a reset counts from zero");
    }
}
