//! `Then` steps: what the last reply, a task's stream, the pool and the metrics must show.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use cucumber::then;

use crate::world::{Journey, expected, field};

// ---- the last reply ----

#[then(expr = "the response status is {int}")]
fn status(w: &mut Journey, want: u16) -> anyhow::Result<()> {
    let r = w.reply()?;
    ensure!(
        r.status == want,
        "status {} (want {want}); body: {}",
        r.status,
        r.body
    );
    Ok(())
}

/// The error envelope: the code, a message, and the correlation id also sent as a header.
#[then(expr = "the error code is {string}")]
fn error_code(w: &mut Journey, code: String) -> anyhow::Result<()> {
    let r = w.reply()?;
    ensure!(r.status >= 400, "not an error: {} {}", r.status, r.body);
    ensure!(
        r.json["code"] == code.as_str(),
        "code is not {code}: {}",
        r.body
    );
    ensure!(
        r.json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "envelope without message: {}",
        r.body
    );
    let cid = r.json["correlation_id"]
        .as_str()
        .context("envelope without correlation_id")?;
    ensure!(
        r.header("x-correlation-id")? == cid,
        "correlation_id {cid} differs from the X-Correlation-Id header"
    );
    Ok(())
}

#[then(expr = "the error message mentions {string}")]
fn message_mentions(w: &mut Journey, text: String) -> anyhow::Result<()> {
    let r = w.reply()?;
    let m = r.json["message"].as_str().context("no message")?;
    ensure!(m.contains(&text), "message {m:?} does not mention {text:?}");
    Ok(())
}

#[then(regex = r#"^the response field "([^"]+)" is (.+)$"#)]
fn field_is(w: &mut Journey, path: String, want: String) -> anyhow::Result<()> {
    let r = w.reply()?;
    let got = field(&r.json, &path)?;
    ensure!(
        *got == expected(&want),
        "{path} is {got}, want {want}; body: {}",
        r.body
    );
    Ok(())
}

#[then(expr = "the response field {string} counts at least {float}")]
fn field_at_least(w: &mut Journey, path: String, min: f64) -> anyhow::Result<()> {
    let r = w.reply()?;
    let got = field(&r.json, &path)?.as_f64().context("not a number")?;
    ensure!(got >= min, "{path} is {got}, want at least {min}");
    Ok(())
}

#[then(expr = "the response header {string} is {string}")]
fn header_is(w: &mut Journey, name: String, want: String) -> anyhow::Result<()> {
    let got = w.reply()?.header(&name)?;
    ensure!(got == want, "{name} is {got:?}, want {want:?}");
    Ok(())
}

#[then(expr = "the response header {string} is a number of at least {int}")]
fn header_at_least(w: &mut Journey, name: String, min: u64) -> anyhow::Result<()> {
    let got: u64 = w.reply()?.header(&name)?.parse().context("not a number")?;
    ensure!(got >= min, "{name} is {got}, want at least {min}");
    Ok(())
}

#[then(expr = "the response field {string} equals the response header {string}")]
fn field_equals_header(w: &mut Journey, path: String, name: String) -> anyhow::Result<()> {
    let r = w.reply()?;
    let h = r.header(&name)?;
    let f = field(&r.json, &path)?;
    ensure!(
        serde_json::from_str::<serde_json::Value>(h).ok().as_ref() == Some(f),
        "{path} is {f} but {name} is {h}"
    );
    Ok(())
}

#[then(expr = "the response field {string} holds a UUID")]
fn field_uuid(w: &mut Journey, path: String) -> anyhow::Result<()> {
    let r = w.reply()?;
    let s = field(&r.json, &path)?.as_str().context("not a string")?;
    let groups: Vec<usize> = s.split('-').map(str::len).collect();
    ensure!(
        groups == [8, 4, 4, 4, 12] && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-'),
        "{path} = {s:?} is not a UUID"
    );
    Ok(())
}

// ---- task streams ----

/// `names` is space-separated event names; `token*N` stands for N token events.
fn expand(names: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for n in names.split_whitespace() {
        match n.split_once('*') {
            Some((name, k)) => {
                let k: usize = k.parse().with_context(|| format!("bad repeat in {n}"))?;
                out.extend(std::iter::repeat_n(name.to_string(), k));
            }
            None => out.push(n.to_string()),
        }
    }
    Ok(out)
}

#[then(expr = "task {string} streamed the events {string}")]
fn streamed(w: &mut Journey, id: String, names: String) -> anyhow::Result<()> {
    let got = w.stream(&id)?.names();
    let want = expand(&names)?;
    ensure!(got == want, "task {id} streamed {got:?}, want {want:?}");
    Ok(())
}

#[then(expr = "task {string} ended with {int} tokens")]
fn ended_ok(w: &mut Journey, id: String, n: u64) -> anyhow::Result<()> {
    let s = w.stream(&id)?;
    let last = s.seen.last().context("no events")?;
    ensure!(
        last.name == "end",
        "task {id} ended with {} {}",
        last.name,
        last.data
    );
    ensure!(
        last.data["tokens_out"] == n,
        "end event {} (want tokens_out {n})",
        last.data
    );
    let tokens = s.seen.iter().filter(|e| e.name == "token").count() as u64;
    ensure!(tokens == n, "{tokens} token events, want {n}");
    Ok(())
}

#[then(expr = "task {string} ended with error {string}")]
fn ended_err(w: &mut Journey, id: String, code: String) -> anyhow::Result<()> {
    let s = w.stream(&id)?;
    let last = s.seen.last().context("no events")?;
    ensure!(
        last.name == "error" && last.data["code"] == code.as_str(),
        "task {id} ended with {} {} (want error {code}); events {:?}",
        last.name,
        last.data,
        s.names()
    );
    ensure!(
        last.data["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error event without message"
    );
    Ok(())
}

#[then(regex = r#"^the error of task "([^"]+)" (is|is not) retriable$"#)]
fn retriable(w: &mut Journey, id: String, is: String) -> anyhow::Result<()> {
    let last = w.stream(&id)?.seen.last().context("no events")?;
    let want = is == "is";
    ensure!(last.data["retriable"] == want, "error event {}", last.data);
    Ok(())
}

/// A field that must be absent (e.g. a session budget without a session).
#[then(regex = r#"^the (started|metrics|end|error) event of task "([^"]+)" has no "([^"]+)"$"#)]
fn event_field_absent(
    w: &mut Journey,
    name: String,
    id: String,
    key: String,
) -> anyhow::Result<()> {
    let ev = first_event(w, &id, &name)?;
    ensure!(
        ev.data.get(&key).is_none(),
        "{name} event has {key}: {}",
        ev.data
    );
    Ok(())
}

#[then(
    regex = r#"^the (started|metrics|end|error) event of task "([^"]+)" has "([^"]+)" (?:=|is) (.+)$"#
)]
fn event_field(
    w: &mut Journey,
    name: String,
    id: String,
    path: String,
    want: String,
) -> anyhow::Result<()> {
    let ev = first_event(w, &id, &name)?;
    let got = field(&ev.data, &path)?;
    let want = expected(&want);
    ensure!(*got == want, "{name}.{path} is {got}, want {want}");
    Ok(())
}

#[then(expr = "the error event of task {string} mentions {string}")]
fn error_mentions(w: &mut Journey, id: String, text: String) -> anyhow::Result<()> {
    let ev = first_event(w, &id, "error")?;
    let m = ev.data["message"]
        .as_str()
        .context("error event without message")?;
    ensure!(
        m.contains(&text),
        "error message {m:?} does not mention {text:?}"
    );
    Ok(())
}

#[then(expr = "the {word} event of task {string} has {string} above {float}")]
fn event_field_above(
    w: &mut Journey,
    name: String,
    id: String,
    path: String,
    min: f64,
) -> anyhow::Result<()> {
    let ev = first_event(w, &id, &name)?;
    let got = field(&ev.data, &path)?.as_f64().context("not a number")?;
    ensure!(got > min, "{name}.{path} is {got}, want above {min}");
    Ok(())
}

#[then(expr = "the token events of task {string} are numbered from 0 without gaps")]
fn numbered(w: &mut Journey, id: String) -> anyhow::Result<()> {
    let s = w.stream(&id)?;
    for (i, ev) in s.seen.iter().filter(|e| e.name == "token").enumerate() {
        ensure!(ev.data["i"] == i as u64, "token {i} is {}", ev.data);
        ensure!(
            ev.data["t"].is_string(),
            "token {i} has no text: {}",
            ev.data
        );
    }
    Ok(())
}

fn tokens(w: &Journey, id: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    Ok(w.stream(id)?
        .seen
        .iter()
        .filter(|e| e.name == "token")
        .map(|e| e.data["t"].clone())
        .collect())
}

#[then(expr = "{string} and {string} streamed the same tokens")]
fn same_tokens(w: &mut Journey, a: String, b: String) -> anyhow::Result<()> {
    let (ta, tb) = (tokens(w, &a)?, tokens(w, &b)?);
    ensure!(!ta.is_empty(), "{a} streamed no tokens");
    ensure!(ta == tb, "{a} streamed {ta:?} but {b} streamed {tb:?}");
    Ok(())
}

/// Re-reads the task's log after `ms` and compares it with what was read before.
#[then(expr = "reading task {string} again after {int} ms replays the same events")]
async fn replay(w: &mut Journey, id: String, ms: u64) -> anyhow::Result<()> {
    let before = w.stream(&id)?.seen.clone();
    tokio::time::sleep(Duration::from_millis(ms)).await;
    let who = crate::world::Caller::Alice;
    w.read_whole_stream(who, &id).await?;
    let after = &w.stream(&id)?.seen;
    ensure!(
        *after == before,
        "replay differs:\n before {before:?}\n after  {after:?}"
    );
    Ok(())
}

#[then(expr = "task {string} streamed fewer than {int} tokens")]
fn fewer_tokens(w: &mut Journey, id: String, n: usize) -> anyhow::Result<()> {
    let got = tokens(w, &id)?.len();
    ensure!(got < n, "task {id} streamed {got} tokens");
    Ok(())
}

// ---- pool and metrics ----

#[then(expr = "pool {string} has {int} busy slot(s)")]
async fn busy(w: &mut Journey, pool: String, n: u64) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let h = w.pool_health(&pool).await?;
        if h["replicas"][0]["slots_busy"] == n {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("pool {pool} never had {n} busy slots; health: {h}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[then(expr = "pool {string} has {int} busy slot(s) right away")]
async fn busy_now(w: &mut Journey, pool: String, n: u64) -> anyhow::Result<()> {
    let h = w.pool_health(&pool).await?;
    ensure!(h["replicas"][0]["slots_busy"] == n, "pool health: {h}");
    Ok(())
}

fn metric_sum(text: &str, name: &str, labels: &str) -> f64 {
    let labels: Vec<&str> = labels
        .split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[then(expr = "the metric {word} with {string} reaches {float}")]
async fn metric(w: &mut Journey, name: String, labels: String, want: f64) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let got = metric_sum(&w.metrics().await?, &name, &labels);
        if got == want {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(5) {
            bail!("{name}{{{labels}}} is {got}, want {want}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[then(expr = "the metric {word} is {float}")]
async fn metric_now(w: &mut Journey, name: String, want: f64) -> anyhow::Result<()> {
    let got = metric_sum(&w.metrics().await?, &name, "");
    ensure!(got == want, "{name} is {got}, want {want}");
    Ok(())
}

#[then(expr = "the capabilities' api_version is the OpenAPI document's info.version")]
async fn api_version(w: &mut Journey) -> anyhow::Result<()> {
    let caps = w.reply()?.json.clone();
    let v = caps["api_version"]
        .as_str()
        .context("no api_version")?
        .to_string();
    let url = w.orch()?.url("/openapi.json");
    let doc: serde_json::Value = w.http.get(&url).send().await?.json().await?;
    let info = doc["info"]["version"].as_str().context("no info.version")?;
    if v != info || v.is_empty() {
        bail!("api_version {v:?} vs OpenAPI info.version {info:?}");
    }
    Ok(())
}

#[then(expr = "the orchestrator is still running")]
fn still_running(w: &mut Journey) -> anyhow::Result<()> {
    let log = w.orch_log();
    let d = w.orch.as_mut().context("no orchestrator")?;
    ensure!(d.alive(), "orchestratord exited:\n{log}");
    Ok(())
}

/// The first event named `name` in the stream of task `id` that this scenario read.
fn first_event<'w>(
    w: &'w Journey,
    id: &str,
    name: &str,
) -> anyhow::Result<&'w llorch_bdd::http::Event> {
    w.stream(id)?
        .seen
        .iter()
        .find(|e| e.name == name)
        .with_context(|| format!("no {name} event in the stream of task {id}"))
}
