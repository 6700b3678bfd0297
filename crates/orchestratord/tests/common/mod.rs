//! Test harness: runs the real `orchestratord` binary the systemd way. The test binds the
//! listening socket and passes it as fd 3 with LISTEN_FDS/LISTEN_PID (socket activation), and
//! receives sd_notify datagrams on a NOTIFY_SOCKET it owns. `start` returns only after READY=1.

#![allow(dead_code)]

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;

pub const DATA_KEY: &str = "test-data-key-a";
pub const DATA_KEY_B: &str = "test-data-key-b";
pub const CONTROL_KEY: &str = "test-control-key";

/// Config head shared by tests: two tenants with data keys, one control key.
pub fn auth_toml() -> String {
    test_fixtures::api_keys_toml(&[
        (DATA_KEY, "tenant-a", "data"),
        (DATA_KEY_B, "tenant-b", "data"),
        (CONTROL_KEY, "ops", "control"),
    ])
}

/// A config with one mock pool `p` serving `mock:tiny`.
pub fn mock_config(slots: u32, queue: &str, mock: &str, extra: &str) -> String {
    format!(
        r#"{auth}
{extra}

[[pools]]
id = "p"
engine = "mock"
model_ref = "mock:tiny"
ctx_max = 1024
allow_cpu_inference = true
queue = {{ {queue} }}

[[pools.replicas]]
id = "r0"
slots = {slots}
mock = {{ {mock} }}
"#,
        auth = auth_toml()
    )
}

pub struct Server {
    pub child: Child,
    pub base: String,
    pub notify: UnixDatagram,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_orchestratord")
}

impl Server {
    pub fn start(config: &str) -> Server {
        Self::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Server {
        Self::start_customized(config, env, |_| {})
    }

    /// As [`Server::start_with_env`], with a last say over the daemon's `Command` (e.g. the
    /// process restrictions a systemd unit would apply).
    pub fn start_customized(
        config: &str,
        env: &[(&str, &str)],
        customize: impl FnOnce(&mut std::process::Command),
    ) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg_path = dir.path().join("orchestratord.toml");
        std::fs::File::create(&cfg_path)
            .and_then(|mut f| f.write_all(config.as_bytes()))
            .expect("write config");
        let notify_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
        notify
            .set_read_timeout(Some(Duration::from_millis(200)))
            .ok();

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let fd = listener.as_raw_fd();
        let log = std::fs::File::create(dir.path().join("stderr.log")).expect("log");
        let cfg_arg = cfg_path.to_string_lossy().to_string();
        let child = daemon_kit::testing::spawn_socket_activated(
            bin(),
            &["--config", &cfg_arg],
            fd,
            |cmd| {
                cmd.env("NOTIFY_SOCKET", &notify_path)
                    .env("RUST_LOG", "info")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::from(log));
                for (k, v) in env {
                    cmd.env(k, v);
                }
                customize(cmd);
            },
        )
        .expect("spawn orchestratord");
        drop(listener);
        let mut s = Server {
            child,
            base,
            notify,
            dir,
            http: reqwest::Client::new(),
        };
        s.wait_notify("READY=1", Duration::from_secs(20));
        s
    }

    pub fn stderr_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Waits for a datagram containing `needle`; panics with the daemon's log otherwise.
    pub fn wait_notify(&mut self, needle: &str, limit: Duration) -> String {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        while start.elapsed() < limit {
            if let Ok(n) = self.notify.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                if msg.lines().any(|l| l == needle) {
                    return msg;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "orchestratord exited ({status}) before {needle}:\n{}",
                    self.stderr_log()
                );
            }
        }
        panic!(
            "no {needle} from orchestratord within {limit:?}:\n{}",
            self.stderr_log()
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn sigterm(&self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }

    pub async fn submit(&self, key: &str, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url("/v1/tasks"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("submit")
    }

    pub async fn stream(&self, key: &str, id: &str) -> reqwest::Response {
        self.http
            .get(self.url(&format!("/v1/tasks/{id}/stream")))
            .bearer_auth(key)
            .send()
            .await
            .expect("stream")
    }

    /// `GET path` with `key` as the bearer token.
    pub async fn get(&self, key: &str, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("GET")
    }

    pub async fn cancel(&self, key: &str, id: &str) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/v1/tasks/{id}/cancel")))
            .bearer_auth(key)
            .send()
            .await
            .expect("cancel")
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// Sum of a metric family's samples whose label text contains all `labels`.
    pub async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        metric_value(&self.metrics().await, name, labels)
    }

    pub async fn pool_health(&self) -> serde_json::Value {
        self.http
            .get(self.url("/v1/pools/p/health"))
            .bearer_auth(CONTROL_KEY)
            .send()
            .await
            .expect("health")
            .json()
            .await
            .expect("health json")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn metric_value(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A completion task body for the mock pool.
pub fn task(id: &str, max_tokens: u32) -> serde_json::Value {
    serde_json::json!({
        "task_id": id, "workload": "completion", "model_ref": "mock:tiny",
        "ctx": 512, "prompt": "write a haiku", "max_tokens": max_tokens
    })
}

/// Reads a whole SSE response into (event, data) pairs.
pub async fn read_events(resp: reqwest::Response) -> Vec<(String, serde_json::Value)> {
    use eventsource_stream::Eventsource;
    let mut out = Vec::new();
    let mut s = resp.bytes_stream().eventsource();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(20), s.next())
        .await
        .expect("stream stalled")
    {
        let ev = ev.expect("sse parse");
        out.push((ev.event, serde_json::from_str(&ev.data).expect("json data")));
    }
    out
}

/// Reads `n` events and returns them with the still-open event stream.
pub async fn read_n_events(
    resp: reqwest::Response,
    n: usize,
) -> (
    Vec<(String, serde_json::Value)>,
    impl futures::Stream<
        Item = Result<
            eventsource_stream::Event,
            eventsource_stream::EventStreamError<reqwest::Error>,
        >,
    >,
) {
    use eventsource_stream::Eventsource;
    let mut s = Box::pin(resp.bytes_stream().eventsource());
    let mut out = Vec::new();
    while out.len() < n {
        let ev = tokio::time::timeout(Duration::from_secs(20), s.next())
            .await
            .expect("stream stalled")
            .expect("stream ended early")
            .expect("sse parse");
        out.push((ev.event, serde_json::from_str(&ev.data).expect("json data")));
    }
    (out, s)
}

/// Polls `f` until it returns true or 10 s pass.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}
