//! A real llama-server (the provisioned engine and model, `cargo xtask fetch-engine`) with
//! `llorch-tgi-sim` in front of it. Both processes are killed when the [`Stack`] drops.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Stack {
    pub sim_url: String,
    pub llama_url: String,
    // Drop order: the simulator first.
    pub sim: Option<Proc>,
    pub llama: Proc,
}

/// Starts llama-server with 2 slots of 1024 tokens; fails loudly when the engine or the model
/// is not provisioned.
pub async fn llama_server() -> (Proc, String) {
    let e = test_fixtures::engine();
    let port = test_fixtures::free_port();
    let child = Command::new(&e.llama_server)
        .arg("-m")
        .arg(&e.model)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["-np", "2", "-c", "2048", "--metrics", "-t", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {}: {err}", e.llama_server.display()));
    let proc = Proc(child);
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let start = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{url}/health")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "llama-server did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (proc, url)
}

pub fn spawn_sim(llama_url: &str, port: u16, extra: &[&str]) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_llorch-tgi-sim"))
        .args(["--llama-server-url", llama_url, "--port", &port.to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start llorch-tgi-sim");
    Proc(child)
}

pub async fn wait_listening(url: &str) {
    let http = reqwest::Client::new();
    let start = Instant::now();
    while http.get(format!("{url}/info")).send().await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "llorch-tgi-sim did not bind"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn stack(extra: &[&str]) -> Stack {
    let (llama, llama_url) = llama_server().await;
    let port = test_fixtures::free_port();
    let sim = spawn_sim(&llama_url, port, extra);
    let sim_url = format!("http://127.0.0.1:{port}");
    wait_listening(&sim_url).await;
    Stack {
        sim_url,
        llama_url,
        sim: Some(sim),
        llama,
    }
}

impl Stack {
    pub async fn arm(&self, fault: serde_json::Value) {
        let r = reqwest::Client::new()
            .post(format!("{}/sim/fault", self.sim_url))
            .json(&fault)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "arming {fault}");
    }

    pub async fn metrics(&self) -> tgi_adapter::TgiMetrics {
        let mut cfg = tgi_adapter::TgiConfig::new(&self.sim_url, "m");
        cfg.slots = None;
        tgi_adapter::TgiAdapter::new(cfg)
            .unwrap()
            .metrics()
            .await
            .unwrap()
    }

    /// Greedy text straight from llama-server, for comparison.
    pub async fn llama_greedy(&self, prompt: &str, n: u32) -> String {
        let v: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/completion", self.llama_url))
            .json(&serde_json::json!({
                "prompt": prompt, "n_predict": n, "temperature": 0.0, "top_k": 1,
                "cache_prompt": false, "min_p": 0.0, "repeat_penalty": 1.0
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["content"].as_str().unwrap().to_string()
    }

    /// The chat rendered by llama-server's `/apply-template` (the GGUF's own template).
    pub async fn llama_template(&self, messages: serde_json::Value) -> String {
        let v: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/apply-template", self.llama_url))
            .json(&serde_json::json!({ "messages": messages }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["prompt"].as_str().unwrap().to_string()
    }

    /// llama-server slots still decoding.
    pub async fn llama_busy_slots(&self) -> usize {
        let v: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/slots", self.llama_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter(|s| s["is_processing"].as_bool() == Some(true))
            .count()
    }
}
