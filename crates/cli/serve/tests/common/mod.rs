//! Shared setup of the `llorch serve` tests that need the catalog: one supervised
//! llama-server pool with a state directory, served on loopback TCP until stopped, and the
//! catalog steps (register, verify) several tests begin with.

#![allow(dead_code)] // each test binary uses a subset

use std::path::Path;
use std::time::Duration;

pub const DATA: &str = "srv-data-key";
pub const CONTROL: &str = "srv-control-key";

/// Config of one llama.cpp pool `llm` (replica `cpu0`) whose catalog lives under `state_dir`.
pub fn catalog_config(e: &test_fixtures::Engine, state_dir: &Path) -> config_schema::Config {
    let toml = format!(
        "[pool_manager]\nstate_dir = \"{}\"\n{}{}",
        state_dir.display(),
        test_fixtures::api_keys_toml(&[(DATA, "t", "data"), (CONTROL, "ops", "control")]),
        test_fixtures::llamacpp_pool_toml(e, "llm", 512, &[("cpu0", 1)])
    );
    config_schema::parse_str(&toml, "serve.toml").unwrap()
}

/// `llorch serve` running on 127.0.0.1 until [`Serve::stop`].
pub struct Serve {
    pub base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Serve {
    /// Starts it and waits until it is ready (engines preloaded).
    pub async fn start(cfg: config_schema::Config) -> Serve {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", tcp.local_addr().unwrap());
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(llorch_serve::serve_on(
            daemon_kit::Listener::Tcp(tcp),
            cfg,
            async move {
                let _ = stop_rx.await;
            },
            move || {
                let _ = ready_tx.send(());
            },
            || {},
        ));
        tokio::time::timeout(Duration::from_secs(120), ready_rx)
            .await
            .expect("llorch serve did not become ready")
            .unwrap();
        Serve { base, stop, task }
    }

    /// Stops it and checks that it shut down cleanly.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("llorch serve did not stop")
            .unwrap()
            .unwrap();
    }
}

/// `POST /v1/catalog/models` for the provisioned model, with the control key.
pub async fn register(
    http: &reqwest::Client,
    base: &str,
    e: &test_fixtures::Engine,
) -> reqwest::Response {
    http.post(format!("{base}/v1/catalog/models"))
        .bearer_auth(CONTROL)
        .json(&serde_json::json!({"model_ref": e.model.display().to_string(), "sha256": e.model_sha256}))
        .send()
        .await
        .unwrap()
}

/// `POST /v1/catalog/models/sha256:<digest>/verify` for the provisioned model.
pub async fn verify(
    http: &reqwest::Client,
    base: &str,
    e: &test_fixtures::Engine,
) -> reqwest::Response {
    http.post(format!(
        "{base}/v1/catalog/models/sha256:{}/verify",
        e.model_sha256
    ))
    .bearer_auth(CONTROL)
    .send()
    .await
    .unwrap()
}
