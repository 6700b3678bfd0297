//! What the scenarios share: keys, configs, and starting orchestratord socket-activated.

pub mod adapter_kill;
pub mod disconnect;
pub mod disk_full;
pub mod engine_kill;
pub mod orchestrator_restart;
pub mod pool_manager_restart;
pub mod slow_clients;
pub mod storm;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use llorch_chaos::client::Api;
use llorch_chaos::procs::{Daemon, Spawn, bin, tcp_listener};

pub const DATA: &str = "chaos-data-key";
pub const CONTROL: &str = "chaos-control-key";

/// `[[auth.api_keys]]` for one data tenant and one operator.
pub fn keys() -> String {
    test_fixtures::api_keys_toml(&[(DATA, "chaos", "data"), (CONTROL, "ops", "control")])
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write config");
    p
}

/// orchestratord on a socket this process holds (as systemd would), READY=1 awaited.
pub struct Orch {
    pub daemon: Daemon,
    pub api: Api,
    pub listener: std::net::TcpListener,
    pub config: PathBuf,
}

impl Orch {
    pub fn start(dir: &Path, config_toml: &str) -> Orch {
        let config = write(dir, "orchestratord.toml", config_toml);
        let (listener, base) = tcp_listener();
        let daemon = Self::spawn(dir, &config, &listener);
        Orch {
            daemon,
            api: Api::new(&base, DATA, CONTROL),
            listener,
            config,
        }
    }

    /// A new orchestratord process on the same (held) socket.
    pub fn spawn(dir: &Path, config: &Path, listener: &std::net::TcpListener) -> Daemon {
        let mut d = Spawn::new("orchestratord", bin("orchestratord"), dir)
            .args(["--config".to_string(), config.display().to_string()])
            .listen_fd(listener.as_raw_fd())
            .start();
        d.wait_ready(Duration::from_secs(30));
        d
    }
}

/// A mock-engine task body.
pub fn mock_task(id: &str, max_tokens: u32) -> serde_json::Value {
    serde_json::json!({
        "task_id": id, "workload": "completion", "model_ref": "mock:tiny",
        "ctx": 512, "prompt": "write a haiku", "max_tokens": max_tokens
    })
}
