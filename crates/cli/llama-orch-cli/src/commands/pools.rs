//! `llorch pools`, `drain`, `reload` and `capabilities`.

use std::io::Write;

use api_types::{Capabilities, PoolHealth, ReloadRequest, ReplicaSet, ReplicaSnapshot};
use serde::Serialize;

use super::Opts;
use crate::Failure;
use crate::client::Client;
use crate::error::EXIT_OK;
use crate::render::{Table, or_dash, write_json};

/// One pool as `llorch pools --output json` prints it: the replica set (`GET /v1/replicasets`)
/// plus the pool's readiness, draining flag and last error (`GET /v1/pools/{id}/health`).
#[derive(Debug, Serialize)]
pub struct PoolView {
    #[serde(flatten)]
    pub set: ReplicaSet,
    pub ready: bool,
    pub draining: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

pub(super) async fn list(
    client: &Client,
    opts: &Opts,
    only: Option<&str>,
    out: &mut (impl Write + ?Sized),
) -> Result<i32, Failure> {
    let mut sets = client.replicasets().await?;
    if let Some(id) = only {
        sets.retain(|s| s.pool_id == id);
        if sets.is_empty() {
            // Let the server say it: NOT_FOUND with its envelope.
            client.pool_health(id).await?;
        }
    }
    let mut views = Vec::with_capacity(sets.len());
    for set in sets {
        let h = client.pool_health(&set.pool_id).await?;
        views.push(PoolView {
            // The health answer is the newer one.
            set: ReplicaSet {
                queue_depth: h.queue_depth,
                replicas: h.replicas,
                load: h.load,
                slo: h.slo,
                ..set
            },
            ready: h.ready,
            draining: h.draining,
            last_error: h.last_error,
        });
    }
    if opts.json() {
        write_json(out, &views)?;
    } else {
        let mut t = pool_table();
        for v in &views {
            pool_rows(
                &mut t,
                &v.set.pool_id,
                pool_state(v.ready, v.draining),
                Some(&v.set.model_ref),
                v.set.queue_depth,
                v.last_error.as_deref(),
                &v.set.replicas,
            );
        }
        if t.is_empty() {
            writeln!(out, "no pools")?;
        } else {
            out.write_all(t.render().as_bytes())?;
        }
    }
    Ok(EXIT_OK)
}

pub(super) async fn drain(
    client: &Client,
    opts: &Opts,
    pool: &str,
    deadline_ms: u64,
    out: &mut (impl Write + ?Sized),
    err: &mut (impl Write + ?Sized),
) -> Result<i32, Failure> {
    let h = client.drain(pool, deadline_ms).await?;
    if opts.json() {
        write_json(out, &h)?;
    } else {
        writeln!(
            err,
            "draining: pool {pool}; running tasks have {deadline_ms} ms, queued tasks fail"
        )?;
        out.write_all(health_table(&h).render().as_bytes())?;
    }
    Ok(EXIT_OK)
}

pub(super) async fn reload(
    client: &Client,
    opts: &Opts,
    pool: &str,
    new_model_ref: String,
    new_model_sha256: Option<String>,
    out: &mut (impl Write + ?Sized),
    err: &mut (impl Write + ?Sized),
) -> Result<i32, Failure> {
    let req = ReloadRequest {
        new_model_ref,
        new_model_sha256,
    };
    let h = client.reload(pool, &req).await?;
    if opts.json() {
        write_json(out, &h)?;
    } else {
        writeln!(err, "reloaded: pool {pool} serves {}", req.new_model_ref)?;
        out.write_all(health_table(&h).render().as_bytes())?;
    }
    Ok(EXIT_OK)
}

pub(super) async fn capabilities(
    client: &Client,
    opts: &Opts,
    out: &mut (impl Write + ?Sized),
) -> Result<i32, Failure> {
    let c = client.capabilities().await?;
    if opts.json() {
        write_json(out, &c)?;
    } else {
        out.write_all(capabilities_text(&c).as_bytes())?;
    }
    Ok(EXIT_OK)
}

fn capabilities_text(c: &Capabilities) -> String {
    let limit = |v: Option<String>| v.unwrap_or_else(|| "unlimited".into());
    let r = &c.rate_limits;
    let workloads: Vec<String> = c
        .workloads
        .iter()
        .map(|w| {
            serde_json::to_value(w)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_else(|| format!("{w:?}"))
        })
        .collect();
    let mut t = Table::new(&["CAPABILITY", "VALUE"]);
    t.row(vec!["api_version".into(), c.api_version.clone()]);
    t.row(vec!["engines".into(), c.engines.join(", ")]);
    t.row(vec!["ctx_max".into(), c.ctx_max.to_string()]);
    t.row(vec!["workloads".into(), workloads.join(", ")]);
    t.row(vec!["max_body_bytes".into(), c.max_body_bytes.to_string()]);
    t.row(vec!["features".into(), c.features.join(", ")]);
    t.row(vec![
        "max_concurrent".into(),
        limit(r.max_concurrent.map(|v| v.to_string())),
    ]);
    t.row(vec![
        "requests_per_second".into(),
        limit(r.requests_per_second.map(|v| v.to_string())),
    ]);
    t.row(vec!["burst".into(), limit(r.burst.map(|v| v.to_string()))]);
    t.row(vec![
        "tokens_per_minute".into(),
        limit(r.tokens_per_minute.map(|v| v.to_string())),
    ]);
    t.render()
}

fn pool_state(ready: bool, draining: bool) -> &'static str {
    match (draining, ready) {
        (true, _) => "draining",
        (false, true) => "ready",
        (false, false) => "unready",
    }
}

fn pool_table() -> Table {
    Table::new(&[
        "POOL/REPLICA",
        "STATE",
        "ENGINE",
        "VERSION",
        "MODEL",
        "SLOTS",
        "QUEUE",
        "RESTARTS",
        "LAST ERROR",
    ])
}

fn health_table(h: &PoolHealth) -> Table {
    let mut t = pool_table();
    pool_rows(
        &mut t,
        &h.pool_id,
        pool_state(h.ready, h.draining),
        None,
        h.queue_depth,
        h.last_error.as_deref(),
        &h.replicas,
    );
    t
}

/// A pool's row (slots summed over its replicas) followed by one indented row per replica.
fn pool_rows(
    t: &mut Table,
    pool_id: &str,
    state: &str,
    model_ref: Option<&str>,
    queue_depth: u32,
    last_error: Option<&str>,
    replicas: &[ReplicaSnapshot],
) {
    let busy: u32 = replicas.iter().map(|r| r.slots_busy).sum();
    let total: u32 = replicas.iter().map(|r| r.slots_total).sum();
    let mut engines: Vec<&str> = replicas.iter().map(|r| r.engine.as_str()).collect();
    engines.dedup();
    t.row(vec![
        pool_id.to_string(),
        state.to_string(),
        or_dash(Some(&engines.join(","))),
        "".into(),
        or_dash(model_ref),
        format!("{busy}/{total}"),
        queue_depth.to_string(),
        "".into(),
        or_dash(last_error),
    ]);
    for r in replicas {
        let state = serde_json::to_value(r.status)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_else(|| format!("{:?}", r.status));
        let state = if r.circuit_open {
            format!("{state} (breaker open)")
        } else {
            state
        };
        t.row(vec![
            format!("  {}", r.replica_id),
            state,
            r.engine.clone(),
            or_dash(Some(&r.engine_version)),
            "".into(),
            format!("{}/{}", r.slots_busy, r.slots_total),
            "".into(),
            r.restarts.to_string(),
            or_dash(r.last_error.as_deref()),
        ]);
    }
}
