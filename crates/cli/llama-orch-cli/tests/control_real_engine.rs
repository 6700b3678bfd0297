//! The control plane against the real product: the `llorch serve` binary supervising
//! llama-server with a real model (SmolLM2, CPU), driven by the `llorch` binary — pools, the
//! catalog on the same port (no `--catalog-url`), a reload that switches, a reload with the
//! wrong digest that rolls back (UNTRUSTED_ARTIFACT), a deprecation that the pool obeys, and a
//! drain. Needs `cargo xtask fetch-engine`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CONTROL: &str = "serve-control-key";

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        // SIGTERM: the server stops its engines (no orphaned llama-server).
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

fn llorch(url: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_llorch"))
        .args(["--url", url])
        .args(args)
        .env("LLORCH_API_KEY", CONTROL)
        .env_remove("LLORCH_CATALOG_URL")
        .env_remove("LLORCH_OUTPUT")
        .output()
        .expect("llorch runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(url: &str, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["--output", "json"];
    a.extend_from_slice(args);
    let (code, out, err) = llorch(url, &a);
    assert_eq!(code, 0, "llorch {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("llorch {args:?}: {e}: {out}"))
}

#[test]
fn control_plane_against_llorch_serve_with_a_real_model() {
    let e = test_fixtures::engine();
    let model = e.model.display().to_string();
    let port = test_fixtures::free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("serve.toml");
    let toml = format!(
        "[pool_manager]\nstate_dir = \"{}\"\n{}{}",
        dir.path().join("state").display(),
        test_fixtures::api_keys_toml(&[
            ("serve-data-key", "t", "data"),
            (CONTROL, "ops", "control")
        ]),
        test_fixtures::llamacpp_pool_toml(&e, "llm", 512, &[("cpu0", 1)])
    );
    std::fs::write(&cfg, toml).expect("config");
    let url = format!("http://127.0.0.1:{port}");
    let _serve = Serve(
        Command::new(env!("CARGO_BIN_EXE_llorch"))
            .args(["serve", "--config", cfg.to_str().expect("utf8")])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("llorch serve starts"),
    );
    let start = Instant::now();
    loop {
        let (code, out, _) = llorch(&url, &["--output", "json", "pools"]);
        if code == 0 && out.contains("\"ready\": true") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "never Ready: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let (code, out, err) = llorch(&url, &["pools"]);
    assert_eq!(code, 0, "{err}");
    let row = out.lines().nth(2).unwrap_or_default();
    assert!(
        row.starts_with("  cpu0") && row.contains("llamacpp-") && row.contains("0/1"),
        "{out}"
    );

    // The catalog is mounted on the same port.
    let entry = json(
        &url,
        &["catalog", "add", &model, "--sha256", &e.model_sha256],
    );
    let id = entry["id"].as_str().expect("id").to_string();
    assert_eq!(
        json(&url, &["catalog", "verify", &id])["verification"]["result"],
        "passed"
    );
    assert_eq!(json(&url, &["catalog", "activate", &id])["state"], "active");

    // Reload to the same file by its digest: switches and stays Ready.
    let h = json(
        &url,
        &[
            "reload",
            "llm",
            "--model-ref",
            &model,
            "--sha256",
            &e.model_sha256,
        ],
    );
    assert_eq!(
        (h["ready"].as_bool(), h["draining"].as_bool()),
        (Some(true), Some(false)),
        "{h}"
    );
    // The wrong digest: rolled back, the old model keeps serving.
    let zeros = "0".repeat(64);
    let (code, _, err) = llorch(
        &url,
        &["reload", "llm", "--model-ref", &model, "--sha256", &zeros],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.starts_with("error: UNTRUSTED_ARTIFACT: reload rolled back"),
        "{err}"
    );
    assert_eq!(json(&url, &["pools", "llm"])[0]["ready"], true);

    // Deprecating the model the pool serves: the pool stops taking work.
    assert_eq!(
        json(&url, &["catalog", "deprecate", &id])["state"],
        "deprecated"
    );
    let start = Instant::now();
    while json(&url, &["pools", "llm"])[0]["ready"] == true {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the pool ignored the deprecation"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let h = json(&url, &["drain", "llm", "--deadline", "1s"]);
    assert_eq!(h["draining"], true, "{h}");
    let (code, out, _) = llorch(&url, &["pools", "llm"]);
    assert_eq!(code, 0);
    assert!(
        out.lines().nth(1).is_some_and(|l| l.contains("draining")),
        "{out}"
    );
}
