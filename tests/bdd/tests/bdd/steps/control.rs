//! The control plane (and plain requests): drain, reload, health, capabilities, any GET.

use anyhow::Context;
use cucumber::gherkin::Step;
use cucumber::when;
use reqwest::Method;
use serde_json::json;

use crate::world::{Caller, Journey, expected};

#[when(expr = "{caller} sends GET {string}")]
async fn get(w: &mut Journey, who: Caller, path: String) -> anyhow::Result<()> {
    w.send(who, Method::GET, &path, None, &[]).await?;
    Ok(())
}

/// POST with a JSON doc string as the body.
#[when(expr = "{caller} sends POST {string} with")]
async fn post(w: &mut Journey, step: &Step, who: Caller, path: String) -> anyhow::Result<()> {
    let text = step
        .docstring
        .as_ref()
        .context("this step needs a JSON doc string")?;
    let body: serde_json::Value =
        serde_json::from_str(text.trim()).context("doc string is not JSON")?;
    w.send(who, Method::POST, &path, Some(body), &[]).await?;
    Ok(())
}

#[when(expr = "{caller} drains pool {string} with a deadline of {int} ms")]
async fn drain(w: &mut Journey, who: Caller, pool: String, ms: u64) -> anyhow::Result<()> {
    let path = format!("/v1/pools/{pool}/drain");
    w.send(
        who,
        Method::POST,
        &path,
        Some(json!({ "deadline_ms": ms })),
        &[],
    )
    .await?;
    Ok(())
}

#[when(expr = "{caller} reloads pool {string} with model {string}")]
async fn reload(w: &mut Journey, who: Caller, pool: String, model: String) -> anyhow::Result<()> {
    let path = format!("/v1/pools/{pool}/reload");
    let body = json!({ "new_model_ref": expected(&model) });
    w.send(who, Method::POST, &path, Some(body), &[]).await?;
    Ok(())
}
