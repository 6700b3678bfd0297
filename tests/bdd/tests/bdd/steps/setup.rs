//! `Given` steps that shape the orchestrator's config, and starting it. A config step after
//! the orchestrator started is an error (it would silently change nothing).

use anyhow::bail;
use cucumber::given;
use llorch_bdd::OrchConfig;

use crate::world::Journey;

fn cfg(w: &mut Journey) -> anyhow::Result<&mut OrchConfig> {
    if w.orch.is_some() {
        bail!("config step after `the orchestrator is running`: it would change nothing");
    }
    Ok(&mut w.cfg)
}

#[given(expr = "a mock pool with {int} slot(s)")]
fn slots(w: &mut Journey, n: u32) -> anyhow::Result<()> {
    cfg(w)?.slots = n;
    Ok(())
}

#[given(expr = "the mock engine streams {int} tokens per second")]
fn speed(w: &mut Journey, n: u32) -> anyhow::Result<()> {
    cfg(w)?.mock("tokens_per_second", &n.to_string());
    Ok(())
}

#[given(regex = r"^the mock engine injects (an error|a disconnect|a stall) after (\d+) tokens?$")]
fn fault(w: &mut Journey, kind: String, n: u32) -> anyhow::Result<()> {
    let key = match kind.as_str() {
        "an error" => "error_after_tokens",
        "a disconnect" => "disconnect_after_tokens",
        "a stall" => "stall_after_tokens",
        other => bail!("unknown fault {other}"),
    };
    cfg(w)?.mock(key, &n.to_string());
    Ok(())
}

#[given("the mock engine declares interruptible decode")]
fn interruptible(w: &mut Journey) -> anyhow::Result<()> {
    cfg(w)?.mock("interruptible", "true");
    Ok(())
}

#[given(expr = "the pool queue holds {int} task(s) with full policy {string}")]
fn queue(w: &mut Journey, n: u32, policy: String) -> anyhow::Result<()> {
    let c = cfg(w)?;
    c.queue("capacity", &n.to_string());
    c.queue("full_policy", &format!("\"{policy}\""));
    Ok(())
}

#[given(regex = r"^the (queue|first_token|idle|wall) timeout is (\d+) ms$")]
fn timeout(w: &mut Journey, which: String, ms: u64) -> anyhow::Result<()> {
    cfg(w)?.set("timeouts", &format!("{which}_ms"), &ms.to_string());
    Ok(())
}

#[given(expr = "sessions allow at most {int} turn(s)")]
fn max_turns(w: &mut Journey, n: u32) -> anyhow::Result<()> {
    cfg(w)?.set("sessions", "max_turns", &n.to_string());
    Ok(())
}

#[given(expr = "sessions have a token budget of {int}")]
fn token_budget(w: &mut Journey, n: u64) -> anyhow::Result<()> {
    cfg(w)?.set("sessions", "token_budget", &n.to_string());
    Ok(())
}

#[given(expr = "tenant {string} may run at most {int} task(s) at once")]
fn max_concurrent(w: &mut Journey, tenant: String, n: u32) -> anyhow::Result<()> {
    cfg(w)?.tenants.push(vec![
        format!("id = \"{tenant}\""),
        format!("max_concurrent = {n}"),
    ]);
    Ok(())
}

#[given(expr = "tenant {string} may submit {float} requests per second with a burst of {int}")]
fn rate(w: &mut Journey, tenant: String, rps: f64, burst: u32) -> anyhow::Result<()> {
    cfg(w)?.tenants.push(vec![
        format!("id = \"{tenant}\""),
        format!("requests_per_second = {rps:?}"),
        format!("burst = {burst}"),
    ]);
    Ok(())
}

#[given("the orchestrator is running")]
async fn orchestrator_running(w: &mut Journey) -> anyhow::Result<()> {
    w.start_orchestrator().await
}

#[given("the pool manager is running with an empty catalog")]
async fn pool_manager_running(w: &mut Journey) -> anyhow::Result<()> {
    w.start_pool_manager().await
}
