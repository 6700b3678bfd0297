//! The provider side: the recorded interactions replayed, in order, against fresh live
//! servers (orchestratord with mock pools, pool-managerd's catalog API); with `LLORCH_BLESS=1`
//! their answers are recorded instead. Every interaction must also be an operation of the
//! OpenAPI document with its status documented.

use std::path::Path;

use llorch_consumer_tests::{
    CONTROL_KEY, Contract, DATA_KEY, Interaction, Response, Target, diff, path_matches,
};
use serde_json::Value;

pub struct Live {
    pub orchestratord: orchestratord::LocalServer,
    pub pool_manager: String,
    _stop: tokio::sync::watch::Sender<bool>,
    _pm: pool_managerd::daemon::PoolManager,
}

pub async fn start(crate_dir: &Path, state_dir: &Path) -> Live {
    let text = std::fs::read_to_string(crate_dir.join("contract/orchestratord.toml"))
        .expect("contract/orchestratord.toml");
    let cfg = config_schema::parse_str(&text, "orchestratord.toml").expect("config");
    let orchestratord = orchestratord::LocalServer::start(cfg, Default::default(), None)
        .await
        .expect("orchestratord starts");
    let toml = format!(
        "[pool_manager]\nstate_dir = \"{}\"\n\n[[auth.api_keys]]\nkey = \"{DATA_KEY}\"\ntenant = \"alice\"\nrole = \"data\"\n\n[[auth.api_keys]]\nkey = \"{CONTROL_KEY}\"\ntenant = \"ops\"\nrole = \"control\"\n",
        state_dir.display()
    );
    let cfg = config_schema::parse_str(&toml, "pool-managerd.toml").expect("config");
    let (pm, _) = pool_managerd::daemon::PoolManager::start(&cfg).expect("pool manager");
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let app = pm.router(stop_rx);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let pool_manager = format!("http://{}", l.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(l, app).await });
    Live {
        orchestratord,
        pool_manager,
        _stop: stop,
        _pm: pm,
    }
}

/// Sends one interaction's request; returns the status and the JSON body (None when empty).
pub async fn send(http: &reqwest::Client, base: &str, i: &Interaction) -> Response {
    let method = reqwest::Method::from_bytes(i.request.method.as_bytes()).expect("method");
    let mut rb = http.request(method, format!("{base}{}", i.request.path));
    if let Some(k) = i.request.key.key() {
        rb = rb.bearer_auth(k);
    }
    if let Some(b) = &i.request.body {
        rb = rb.json(b);
    }
    let resp = rb
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", i.name));
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    let body = if bytes.is_empty() {
        None
    } else {
        Some(serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{}: body is not JSON ({e}): {}",
                i.name,
                String::from_utf8_lossy(&bytes)
            )
        }))
    };
    Response { status, body }
}

/// The interaction's operation in the OpenAPI document, or why it is not there.
pub fn documented(doc: &Value, i: &Interaction) -> Result<(), String> {
    let method = i.request.method.to_lowercase();
    let paths = doc["paths"]
        .as_object()
        .ok_or("the document has no paths")?;
    let (template, op) = paths
        .iter()
        .filter(|(t, _)| path_matches(t, &i.request.path))
        .find_map(|(t, item)| item.get(&method).map(|op| (t, op)))
        .ok_or_else(|| format!("{} {} is not in the document", method, i.request.path))?;
    if op["operationId"] != i.operation.as_str() {
        return Err(format!(
            "{template} {method} is operation {}, not {}",
            op["operationId"], i.operation
        ));
    }
    let status = i.response.status.to_string();
    if op["responses"].get(&status).is_none() {
        return Err(format!(
            "{method} {template}: status {status} is not documented (documented: {:?})",
            op["responses"]
                .as_object()
                .map(|r| r.keys().collect::<Vec<_>>())
        ));
    }
    Ok(())
}

/// Replays the contract against the live servers. Returns the contract as the servers answer
/// it today (the recording, under LLORCH_BLESS) and the failures (empty when the servers keep
/// it).
pub async fn verify(
    live: &Live,
    contract: &Contract,
    doc: &Value,
    bless: bool,
) -> (Contract, Vec<String>) {
    let http = reqwest::Client::new();
    let mut recorded = contract.clone();
    let mut failures = Vec::new();
    for i in recorded.interactions.iter_mut() {
        let base = match i.target {
            Target::Orchestratord => live.orchestratord.base.clone(),
            Target::PoolManagerd => live.pool_manager.clone(),
        };
        let got = send(&http, &base, i).await;
        if bless {
            let mut got = got;
            // Keep the old values where they only vary (ids, times): a re-recording then
            // changes the file only where the API changed.
            if let (Some(old), Some(new)) = (&i.response.body, &mut got.body) {
                for p in &i.ignore {
                    if let (Some(o), Some(n)) = (old.pointer(p), new.pointer_mut(p))
                        && std::mem::discriminant(o) == std::mem::discriminant(n)
                    {
                        *n = o.clone();
                    }
                }
            }
            i.response = got;
        } else {
            if got.status != i.response.status {
                failures.push(format!(
                    "{}: status {} (recorded {}); body {}",
                    i.name,
                    got.status,
                    i.response.status,
                    got.body.as_ref().map(|b| b.to_string()).unwrap_or_default()
                ));
                continue;
            }
            match (&i.response.body, &got.body) {
                (None, None) => {}
                (Some(e), Some(a)) => failures.extend(
                    diff(e, a, &i.ignore, true)
                        .into_iter()
                        .map(|d| format!("{}: {d}", i.name)),
                ),
                (e, a) => failures.push(format!("{}: body {a:?}, recorded {e:?}", i.name)),
            }
        }
        if let Err(e) = documented(doc, i) {
            failures.push(format!("{}: {e}", i.name));
        }
    }
    (recorded, failures)
}
