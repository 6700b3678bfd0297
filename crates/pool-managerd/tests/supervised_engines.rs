//! pool-managerd supervises TGI and Triton like llama-server: started from `[pools.tgi]` /
//! `[pools.triton]` (server_binary + model_repository), Loading then Ready after the startup
//! self-test, restarted after `kill -9`, nothing left after stop (tests/common). TGI is our
//! simulator `llorch-tgi-sim` given as the server binary; Triton is the real tritonserver of
//! `cargo xtask fetch-engine` with a decoupled Python model; both generate real tokens with a
//! real llama-server. An engine binary that exits at once ends with the breaker open and a
//! clear error, for every engine kind. ORCH-3001, ORCH-3002, ORCH-3038, ORCH-3049, ORCH-3053.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use adapter_api::WorkerState;
use pool_managerd::engine_kind::EngineKind;
use pool_managerd::policy::RestartConfig;
use pool_managerd::supervisor::{EngineSpec, Phase, Supervisor};
use test_fixtures::triton::{self as tt, Children};

const KEYS: &str =
    "\n[[auth.api_keys]]\nkey = \"pm-sup-data-key\"\ntenant = \"t\"\nrole = \"data\"\n";

/// `llorch-tgi-sim`, built next to this test binary (`cargo build -p llorch-tgi-sim` when it
/// is not there yet).
fn tgi_sim() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let bin = profile_dir.join("llorch-tgi-sim");
    let mut cmd = std::process::Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "-q",
        "-p",
        "llorch-tgi-sim",
        "--bin",
        "llorch-tgi-sim",
    ]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let ok = cmd.status().is_ok_and(|s| s.success());
    assert!(
        ok && bin.is_file(),
        "cannot build {} (`cargo build -p llorch-tgi-sim`)",
        bin.display()
    );
    bin
}

fn tgi_config(dir: &std::path::Path, llama: &str) -> String {
    format!(
        r#"
[pool_manager]
state_dir = "{state}"
{KEYS}
[[pools]]
id = "tgi"
engine = "tgi"
model_ref = "HuggingFaceTB/SmolLM2-135M-Instruct"
ctx_max = 512
allow_cpu_inference = true

[pools.tgi]
server_binary = "{sim}"
extra_args = ["--llama-server-url", "{llama}", "--startup-delay-ms", "1500"]
ready_timeout_ms = 60000

[[pools.replicas]]
id = "r0"
slots = 2
"#,
        state = dir.join("state").display(),
        sim = tgi_sim().display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tgi_under_supervision() {
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Children::default();
    let llama = tt::spawn_llama_server(&dir.path().join("llama.log"), 2, &mut procs);
    let (pm, adapters) = common::start(&tgi_config(dir.path(), &llama));
    let t = common::lifecycle(&pm, &adapters, "tgi", "tgi", Duration::from_secs(60)).await;
    eprintln!("tgi-sim timings: {t:?}");
}

/// A reload of a supervised TGI pool (the llama.cpp reload logic, shared): the new model
/// starts beside the old engine, the switch happens once it passed its self-test, the old
/// engine is stopped by `retire_old`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tgi_reload_starts_beside_and_switches() {
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Children::default();
    let llama = tt::spawn_llama_server(&dir.path().join("llama.log"), 2, &mut procs);
    let (pm, _adapters) = common::start(&tgi_config(dir.path(), &llama));
    let (old, _) = common::wait_view(&pm, "tgi", Duration::from_secs(60), "Ready", |v| {
        v.status.phase == Phase::Ready
    })
    .await;
    let old_pid = old.status.pid.unwrap();
    let new = pm
        .engines
        .reload("tgi", "HuggingFaceTB/SmolLM2-360M-Instruct", None)
        .await
        .expect("reload");
    assert_eq!(new.len(), 1);
    assert_eq!(
        new[0].1.health().await.unwrap().state,
        WorkerState::Ready,
        "the new engine serves at once"
    );
    let props = new[0].1.properties().await.unwrap();
    assert_eq!(props.engine, "tgi");
    let rec = pm.engines.records().await;
    assert_eq!(
        rec[0].model_ref.as_deref(),
        Some("HuggingFaceTB/SmolLM2-360M-Instruct")
    );
    assert_ne!(
        rec[0].engine_url, old.engine_url,
        "started beside, on a new port"
    );
    assert_ne!(rec[0].pid, Some(old_pid));
    assert!(
        !common::group_gone(old_pid),
        "the old engine runs until retired"
    );
    pm.engines.retire_old("tgi").await;
    let t = Instant::now();
    while !common::group_gone(old_pid) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "retire_old stops the old engine"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new_pid = rec[0].pid.unwrap();
    pm.engines.shutdown().await;
    let t = Instant::now();
    while !common::group_gone(new_pid) {
        assert!(t.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triton_under_supervision() {
    let install = tt::install();
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Children::default();
    let llama = tt::spawn_llama_server(&dir.path().join("llama.log"), 2, &mut procs);
    let repo = dir.path().join("models");
    let markers = dir.path().join("markers");
    std::fs::create_dir_all(&markers).unwrap();
    tt::write_llm_model(&repo, &llama, &markers);
    // The Python backend's stub takes its interpreter (and numpy) from the first python3 on
    // PATH: the venv's.
    let path = format!(
        "{}:{}",
        install.venv.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let cfg = format!(
        r#"
[pool_manager]
state_dir = "{state}"
{KEYS}
[[pools]]
id = "trt"
engine = "triton"
model_ref = "llm"
ctx_max = 512
allow_cpu_inference = true

[pools.triton]
model = "llm"
inputs = "vllm"
server_binary = "{server}"
model_repository = "{repo}"
extra_args = ["--backend-directory={backends}"]
env = {{ PATH = "{path}" }}
ready_timeout_ms = 120000

[[pools.replicas]]
id = "r0"
slots = 2
"#,
        state = dir.path().join("state").display(),
        server = install.server.display(),
        repo = repo.display(),
        backends = install.backends.display(),
    );
    let (pm, adapters) = common::start(&cfg);
    let t = common::lifecycle(&pm, &adapters, "trt", "triton", Duration::from_secs(120)).await;
    eprintln!("triton timings: {t:?}");
}

fn failing_spec(kind: EngineKind, binary: &str) -> EngineSpec {
    EngineSpec {
        pool_id: "p".into(),
        replica_id: "r0".into(),
        kind,
        binary: binary.into(),
        model: "/nonexistent-model".into(),
        model_sha256: None,
        source: None,
        port: test_fixtures::free_port(),
        slots: 1,
        ctx_per_slot: 128,
        devices: vec![],
        extra_args: vec![],
        env: Default::default(),
        restart: RestartConfig {
            initial_backoff_ms: 10,
            max_backoff_ms: 40,
            max_crashes: 3,
            window_ms: 60_000,
            open_for_ms: 60_000,
        },
        ready_timeout: Duration::from_secs(10),
    }
}

/// ORCH-3053: a server binary that exits at once opens the breaker after `max_crashes`
/// starts; the replica is not Ready and says why, for every engine kind; nothing panics.
#[tokio::test]
async fn engine_that_exits_at_once_opens_the_breaker() {
    let kinds = [
        EngineKind::Vllm,
        EngineKind::Tgi,
        EngineKind::Triton {
            model: "llm".into(),
            inputs: triton_adapter::InputConvention::Vllm,
            metrics_port: test_fixtures::free_port(),
        },
        EngineKind::LlamaCpp,
    ];
    for kind in kinds {
        let name = kind.name();
        let t = Instant::now();
        let sup = Supervisor::spawn(failing_spec(kind, "/bin/false"));
        let gated = pool_managerd::gated::GatedAdapter::new(
            std::sync::Arc::new(mock_worker()),
            sup.subscribe(),
        );
        let st = sup
            .wait_for(Duration::from_secs(20), |s| {
                matches!(s.phase, Phase::BreakerOpen { .. })
            })
            .await
            .unwrap_or_else(|| panic!("{name}: breaker did not open: {:?}", sup.status()));
        let err = st.last_error.clone().unwrap_or_default();
        assert!(
            err.contains(&format!("{name} engine exited during load"))
                && err.contains("/bin/false"),
            "{name}: {err}"
        );
        assert_eq!(st.starts_ready, 0);
        assert_eq!(st.pid, None, "{name}: {st:?}");
        let h = adapter_api::WorkerAdapter::health(&gated).await.unwrap();
        assert_eq!(h.state, WorkerState::Error, "{name}: {h:?}");
        assert!(h.circuit_open, "{name}: {h:?}");
        sup.shutdown().await;
        eprintln!("{name}: breaker open after {:?}", t.elapsed());
    }
    // A binary that is not there: a failed start, backing off, with the path in the error.
    let sup = Supervisor::spawn(failing_spec(EngineKind::Vllm, "/nonexistent/vllm"));
    let st = sup
        .wait_for(Duration::from_secs(5), |s| s.last_error.is_some())
        .await
        .unwrap();
    let err = st.last_error.unwrap();
    assert!(err.contains("cannot start /nonexistent/vllm"), "{err}");
    assert_ne!(st.phase, Phase::Ready);
    sup.shutdown().await;
}

/// Any adapter will do for the gate's own health (it never reaches the engine).
fn mock_worker() -> llamacpp_adapter::LlamaCppAdapter {
    llamacpp_adapter::LlamaCppAdapter::new(llamacpp_adapter::LlamaCppConfig::new(
        "http://127.0.0.1:9",
        "",
    ))
    .unwrap()
}
