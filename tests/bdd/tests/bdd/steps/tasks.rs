//! The data plane: submitting, streaming and canceling tasks; sessions.

use anyhow::{Context, bail};
use cucumber::gherkin::Step;
use cucumber::when;
use reqwest::Method;
use serde_json::{Value, json};

use crate::world::{Caller, Journey, expected};

/// A completion task for the mock pool.
pub fn task_body(id: Option<&str>, max_tokens: u32) -> Value {
    let mut b = json!({
        "workload": "completion", "model_ref": "mock:tiny", "ctx": 512,
        "prompt": "write a haiku about queues", "max_tokens": max_tokens
    });
    if let Some(id) = id {
        b["task_id"] = json!(id);
    }
    b
}

async fn submit(
    w: &mut Journey,
    who: Caller,
    body: Value,
    headers: &[(&str, &str)],
) -> anyhow::Result<()> {
    w.send(who, Method::POST, "/v1/tasks", Some(body), headers)
        .await?;
    Ok(())
}

#[when(expr = "{caller} submits task {string} with {int} max token(s)")]
async fn submit_task(w: &mut Journey, who: Caller, id: String, n: u32) -> anyhow::Result<()> {
    submit(w, who, task_body(Some(&id), n), &[]).await
}

/// `| field | value |` rows override the task body's fields (values are JSON where they parse).
#[when(expr = "{caller} submits task {string} with {int} max token(s) and")]
async fn submit_task_with(
    w: &mut Journey,
    step: &Step,
    who: Caller,
    id: String,
    n: u32,
) -> anyhow::Result<()> {
    let mut body = task_body(Some(&id), n);
    let table = step
        .table
        .as_ref()
        .context("this step needs a | field | value | table")?;
    for row in &table.rows {
        let [k, v] = row.as_slice() else {
            bail!("table rows are | field | value |, got {row:?}");
        };
        body[k.as_str()] = expected(v);
    }
    submit(w, who, body, &[]).await
}

#[when(expr = "{caller} submits task {string} with {int} max token(s) and correlation id {string}")]
async fn submit_with_correlation(
    w: &mut Journey,
    who: Caller,
    id: String,
    n: u32,
    cid: String,
) -> anyhow::Result<()> {
    submit(
        w,
        who,
        task_body(Some(&id), n),
        &[("x-correlation-id", &cid)],
    )
    .await
}

#[when(expr = "{caller} submits an unnamed task with seed {int} and {int} max token(s)")]
async fn submit_unnamed(w: &mut Journey, who: Caller, seed: u64, n: u32) -> anyhow::Result<()> {
    let mut body = task_body(None, n);
    body["seed"] = json!(seed);
    submit(w, who, body, &[]).await?;
    let r = w.reply()?;
    if r.status != 202 {
        bail!("submission answered {}: {}", r.status, r.body);
    }
    let id = r.json["task_id"]
        .as_str()
        .context("no task_id in the 202")?
        .to_string();
    w.assigned_id = Some(id);
    Ok(())
}

/// The raw body as given (a doc string), sent as JSON.
#[when(expr = "{caller} submits the raw body")]
async fn submit_raw(w: &mut Journey, step: &Step, who: Caller) -> anyhow::Result<()> {
    let text = step
        .docstring
        .as_ref()
        .context("this step needs a doc string")?;
    let url = w.orch()?.url("/v1/tasks");
    let mut req = w
        .http
        .post(url)
        .header("content-type", "application/json")
        .body(text.trim().to_string());
    if let Some(k) = who.key() {
        req = req.bearer_auth(k);
    }
    w.reply = Some(llorch_bdd::Reply::read(req.send().await?).await?);
    Ok(())
}

/// Sleeps for the last reply's `X-Backoff-Ms` (plus 20 ms of slack), as a polite client would.
#[when(expr = "{caller} waits for the advertised back-off")]
async fn wait_backoff(w: &mut Journey, _who: Caller) -> anyhow::Result<()> {
    let ms: u64 = w
        .reply()?
        .header("x-backoff-ms")?
        .parse()
        .context("X-Backoff-Ms is not a number")?;
    tokio::time::sleep(std::time::Duration::from_millis(ms + 20)).await;
    Ok(())
}

#[when(expr = "{caller} opens the stream of task {string}")]
async fn open(w: &mut Journey, who: Caller, id: String) -> anyhow::Result<()> {
    w.open_stream(who, &id).await?;
    Ok(())
}

#[when(expr = "{caller} reads the stream of task {string} to the end")]
async fn read_all(w: &mut Journey, who: Caller, id: String) -> anyhow::Result<()> {
    w.read_whole_stream(who, &id).await
}

#[when(expr = "{caller} reads the stream of the unnamed task to the end as {string}")]
async fn read_unnamed(w: &mut Journey, who: Caller, alias: String) -> anyhow::Result<()> {
    let id = w
        .assigned_id
        .clone()
        .context("no unnamed task was submitted")?;
    w.read_whole_stream(who, &id).await?;
    let s = w.streams.remove(&id).context("stream vanished")?;
    w.streams.insert(alias, s);
    Ok(())
}

#[when(expr = "{caller} reads {int} event(s) of task {string}")]
async fn read_n(w: &mut Journey, who: Caller, n: usize, id: String) -> anyhow::Result<()> {
    if !w.open_stream(who, &id).await? {
        let r = w.reply()?;
        bail!("stream of {id} answered {}: {}", r.status, r.body);
    }
    w.stream_mut(&id)?.read_until(n).await
}

#[when(expr = "the open stream of task {string} is read to the end")]
async fn finish_open(w: &mut Journey, id: String) -> anyhow::Result<()> {
    w.stream_mut(&id)?.read_to_end().await
}

#[when(expr = "the client of task {string} goes away")]
fn disconnect(w: &mut Journey, id: String) -> anyhow::Result<()> {
    w.streams
        .remove(&id)
        .context("no open stream of that task")?;
    Ok(())
}

#[when(expr = "{caller} cancels task {string}")]
async fn cancel(w: &mut Journey, who: Caller, id: String) -> anyhow::Result<()> {
    w.send(
        who,
        Method::POST,
        &format!("/v1/tasks/{id}/cancel"),
        None,
        &[],
    )
    .await?;
    Ok(())
}

#[when(expr = "{caller} looks up session {string}")]
async fn get_session(w: &mut Journey, who: Caller, id: String) -> anyhow::Result<()> {
    w.send(who, Method::GET, &format!("/v1/sessions/{id}"), None, &[])
        .await?;
    Ok(())
}

#[when(expr = "{caller} deletes session {string}")]
async fn delete_session(w: &mut Journey, who: Caller, id: String) -> anyhow::Result<()> {
    w.send(
        who,
        Method::DELETE,
        &format!("/v1/sessions/{id}"),
        None,
        &[],
    )
    .await?;
    Ok(())
}

/// A turn of a session: submit, then read its stream to the end.
#[when(expr = "{caller} completes turn {string} of session {string} with {int} max token(s)")]
async fn session_turn(
    w: &mut Journey,
    who: Caller,
    id: String,
    session: String,
    n: u32,
) -> anyhow::Result<()> {
    let mut body = task_body(Some(&id), n);
    body["session_id"] = json!(session);
    submit(w, who, body, &[]).await?;
    let r = w.reply()?;
    if r.status != 202 {
        bail!("turn {id} answered {}: {}", r.status, r.body);
    }
    w.read_whole_stream(who, &id).await
}
