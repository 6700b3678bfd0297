//! The state one scenario carries between its steps: the config being built, the daemons it
//! started, the last HTTP reply, and the task streams it has opened.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use cucumber::{Parameter, World};
use llorch_bdd::{ALICE_KEY, BOB_KEY, Daemon, OPERATOR_KEY, OpenStream, OrchConfig, Reply, binary};

/// Who makes a request, as the features name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Parameter)]
#[param(
    name = "caller",
    regex = "alice|bob|the operator|an anonymous client|a client with an unknown key"
)]
pub enum Caller {
    Alice,
    Bob,
    Operator,
    Anonymous,
    UnknownKey,
}

impl FromStr for Caller {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "alice" => Caller::Alice,
            "bob" => Caller::Bob,
            "the operator" => Caller::Operator,
            "an anonymous client" => Caller::Anonymous,
            "a client with an unknown key" => Caller::UnknownKey,
            other => return Err(format!("unknown caller {other:?}")),
        })
    }
}

impl Caller {
    pub fn key(self) -> Option<&'static str> {
        match self {
            Caller::Alice => Some(ALICE_KEY),
            Caller::Bob => Some(BOB_KEY),
            Caller::Operator => Some(OPERATOR_KEY),
            Caller::Anonymous => None,
            Caller::UnknownKey => Some("bdd-nobody-knows-this-key"),
        }
    }
}

#[derive(Debug, World)]
#[world(init = Self::new)]
pub struct Journey {
    pub cfg: OrchConfig,
    pub orch: Option<Daemon>,
    pub pm: Option<Daemon>,
    pub http: reqwest::Client,
    pub reply: Option<Reply>,
    /// Streams by task id (read in part or to the end).
    pub streams: HashMap<String, OpenStream>,
    /// The task id the server assigned on the last accepted submission without one.
    pub assigned_id: Option<String>,
    /// Model files for the catalog, by name: (path, sha256).
    pub models: HashMap<String, (PathBuf, String)>,
    pub scratch: tempfile::TempDir,
}

impl Journey {
    fn new() -> anyhow::Result<Self> {
        Ok(Journey {
            cfg: OrchConfig::default(),
            orch: None,
            pm: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()?,
            reply: None,
            streams: HashMap::new(),
            assigned_id: None,
            models: HashMap::new(),
            scratch: tempfile::tempdir()?,
        })
    }

    /// Starts orchestratord with the config the `Given` steps built.
    pub async fn start_orchestrator(&mut self) -> anyhow::Result<()> {
        if self.orch.is_some() {
            bail!("the orchestrator is already running");
        }
        let bin = binary("orchestratord", "orchestratord")?;
        let d = Daemon::start(
            &bin,
            &[],
            &self.cfg.to_toml(),
            tempfile::tempdir()?,
            Duration::from_secs(20),
        )
        .await?;
        self.orch = Some(d);
        Ok(())
    }

    /// Starts pool-managerd with an empty catalog in a fresh state directory.
    pub async fn start_pool_manager(&mut self) -> anyhow::Result<()> {
        let bin = binary("pool-managerd", "pool-managerd")?;
        let dir = tempfile::tempdir()?;
        let config = llorch_bdd::config::pool_manager_toml(&dir.path().join("state"));
        let d = Daemon::start(&bin, &["serve"], &config, dir, Duration::from_secs(20)).await?;
        self.pm = Some(d);
        Ok(())
    }

    pub fn orch(&self) -> anyhow::Result<&Daemon> {
        self.orch
            .as_ref()
            .context("no orchestrator: the scenario needs `Given the orchestrator is running`")
    }

    /// The daemon serving `path`: the catalog is pool-managerd's, the rest orchestratord's.
    pub fn daemon_for(&self, path: &str) -> anyhow::Result<&Daemon> {
        if path.starts_with("/v1/catalog") {
            self.pm
                .as_ref()
                .context("no pool manager: the scenario needs `Given the pool manager is running`")
        } else {
            self.orch()
        }
    }

    /// Sends a request as `who` and keeps the reply.
    pub async fn send(
        &mut self,
        who: Caller,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<&Reply> {
        let url = self.daemon_for(path)?.url(path);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(k) = who.key() {
            req = req.bearer_auth(k);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        self.reply = Some(Reply::read(resp).await?);
        self.reply()
    }

    pub fn reply(&self) -> anyhow::Result<&Reply> {
        self.reply.as_ref().context("no request was made yet")
    }

    /// Opens the stream of `task` as `who`; a non-200 answer becomes the last reply.
    pub async fn open_stream(&mut self, who: Caller, task: &str) -> anyhow::Result<bool> {
        let url = self.orch()?.url(&format!("/v1/tasks/{task}/stream"));
        let mut req = self.http.get(&url).timeout(Duration::from_secs(600));
        if let Some(k) = who.key() {
            req = req.bearer_auth(k);
        }
        // The stream itself may run long; the per-event stall limit bounds it instead.
        let resp = req.send().await.with_context(|| format!("GET {url}"))?;
        if resp.status() != 200 {
            self.reply = Some(Reply::read(resp).await?);
            return Ok(false);
        }
        self.streams
            .insert(task.to_string(), OpenStream::new(resp)?);
        Ok(true)
    }

    /// Reads the whole stream of `task` afresh (a replay from the task's log).
    pub async fn read_whole_stream(&mut self, who: Caller, task: &str) -> anyhow::Result<()> {
        if !self.open_stream(who, task).await? {
            let r = self.reply()?;
            bail!("stream of {task} answered {}: {}", r.status, r.body);
        }
        self.stream_mut(task)?.read_to_end().await
    }

    pub fn stream_mut(&mut self, task: &str) -> anyhow::Result<&mut OpenStream> {
        self.streams
            .get_mut(task)
            .ok_or_else(|| anyhow!("the stream of task {task} was not read"))
    }

    pub fn stream(&self, task: &str) -> anyhow::Result<&OpenStream> {
        self.streams
            .get(task)
            .ok_or_else(|| anyhow!("the stream of task {task} was not read"))
    }

    /// The pool health document (control key).
    pub async fn pool_health(&self, pool: &str) -> anyhow::Result<serde_json::Value> {
        let url = self.orch()?.url(&format!("/v1/pools/{pool}/health"));
        let r = self.http.get(&url).bearer_auth(OPERATOR_KEY).send().await?;
        if r.status() != 200 {
            bail!("GET {url}: {}", r.status());
        }
        Ok(r.json().await?)
    }

    /// orchestratord's /metrics text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let url = self.orch()?.url("/metrics");
        Ok(self.http.get(&url).send().await?.text().await?)
    }

    /// The daemon's log, for failure messages.
    pub fn orch_log(&self) -> String {
        self.orch
            .as_ref()
            .map(|d| d.stderr_log())
            .unwrap_or_default()
    }
}

/// A value from a JSON document by dotted path (`replicas.0.slots_busy`).
pub fn field<'a>(doc: &'a serde_json::Value, path: &str) -> anyhow::Result<&'a serde_json::Value> {
    let mut v = doc;
    for part in path.split('.') {
        v = match v {
            serde_json::Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
            serde_json::Value::Object(o) => o.get(part),
            _ => None,
        }
        .ok_or_else(|| anyhow!("no field {path} in {doc}"))?;
    }
    Ok(v)
}

/// A step's expected value: JSON if it parses as JSON, else the text as a string.
pub fn expected(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim())
        .unwrap_or_else(|_| serde_json::Value::String(text.trim().into()))
}
