//! The model catalog (served by pool-managerd): model files on disk, registration,
//! verification and lifecycle moves.

use anyhow::Context;
use cucumber::{given, when};
use reqwest::Method;
use serde_json::json;
use sha2::Digest;

use crate::world::{Caller, Journey};

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

#[given(expr = "a model file {string} on disk")]
fn model_file(w: &mut Journey, name: String) -> anyhow::Result<()> {
    let path = w.scratch.path().join(format!("{name}.gguf"));
    // Unique content per scenario run, so that digests never collide across journeys.
    let bytes = format!("GGUF bdd model {name} {:?}", w.scratch.path()).into_bytes();
    std::fs::write(&path, &bytes)?;
    w.models.insert(name, (path, sha256_hex(&bytes)));
    Ok(())
}

#[when(expr = "the model file {string} is changed on disk")]
fn tamper(w: &mut Journey, name: String) -> anyhow::Result<()> {
    let (path, _) = w.models.get(&name).context("no such model file")?;
    std::fs::write(path, b"not the registered bytes")?;
    Ok(())
}

pub fn model_id(w: &Journey, name: &str) -> anyhow::Result<String> {
    let (_, sha) = w.models.get(name).context("no such model file")?;
    Ok(format!("sha256:{sha}"))
}

#[when(expr = "{caller} registers model {string}")]
async fn register(w: &mut Journey, who: Caller, name: String) -> anyhow::Result<()> {
    let (path, sha) = w.models.get(&name).context("no such model file")?.clone();
    let body = json!({ "model_ref": path.display().to_string(), "sha256": sha });
    w.send(who, Method::POST, "/v1/catalog/models", Some(body), &[])
        .await?;
    Ok(())
}

#[when(expr = "{caller} looks up model {string} in the catalog")]
async fn lookup(w: &mut Journey, who: Caller, name: String) -> anyhow::Result<()> {
    let id = model_id(w, &name)?;
    w.send(
        who,
        Method::GET,
        &format!("/v1/catalog/models/{id}"),
        None,
        &[],
    )
    .await?;
    Ok(())
}

#[when(expr = "{caller} verifies model {string}")]
async fn verify(w: &mut Journey, who: Caller, name: String) -> anyhow::Result<()> {
    let id = model_id(w, &name)?;
    w.send(
        who,
        Method::POST,
        &format!("/v1/catalog/models/{id}/verify"),
        None,
        &[],
    )
    .await?;
    Ok(())
}

#[when(expr = "{caller} moves model {string} to {string}")]
async fn move_state(
    w: &mut Journey,
    who: Caller,
    name: String,
    state: String,
) -> anyhow::Result<()> {
    let id = model_id(w, &name)?;
    let path = format!("/v1/catalog/models/{id}/state");
    w.send(
        who,
        Method::POST,
        &path,
        Some(json!({ "state": state })),
        &[],
    )
    .await?;
    Ok(())
}
