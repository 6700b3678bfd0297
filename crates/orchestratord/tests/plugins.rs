//! Policy plugins end to end (ORCH-3048, issue 5): real WebAssembly modules from
//! examples/plugins/wat, loaded by the real orchestratord binary from its config, deciding
//! admission and placement of requests made through the HTTP API; runaway and broken plugins
//! fall back to the built-in policy and the request is still served; a wrong ABI or a
//! forbidden import refuses to start; a reload swaps the plugin atomically.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn wat(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/plugins/wat")
        .join(format!("{name}.wat"))
}

const KEY_A: &str = "plugin-key-tenant-a";
const KEY_BLOCKED: &str = "plugin-key-blocked";
const KEY_BULK: &str = "plugin-key-bulk";

fn config(policy: &str, replicas: &str) -> String {
    let keys = test_fixtures::api_keys_toml(&[
        (KEY_A, "tenant-a", "data"),
        (KEY_BLOCKED, "blocked", "data"),
        (KEY_BULK, "bulk", "data"),
        (CONTROL_KEY, "ops", "control"),
    ]);
    format!(
        r#"{keys}

[[pools]]
id = "p"
engine = "mock"
model_ref = "mock:tiny"
ctx_max = 1024
allow_cpu_inference = true
policy = {{ {policy} }}

{replicas}
"#
    )
}

const ONE_REPLICA: &str = "[[pools.replicas]]\nid = \"r0\"\nslots = 2\n";

fn module(path: &std::path::Path) -> String {
    format!("module = {:?}", path.to_string_lossy())
}

async fn submit(s: &Server, key: &str, id: &str, priority: &str) -> reqwest::Response {
    let mut t = task(id, 3);
    t["priority"] = json!(priority);
    s.submit(key, t).await
}

/// The good plugin's decisions are applied through the API: tenant "blocked" is refused with
/// the plugin's reason, tenant "bulk" is queued as batch, and placement follows the plugin
/// (most free slots) where the built-in rule (lowest busy fraction) would choose otherwise.
#[tokio::test]
async fn plugin_decisions_are_applied_end_to_end() {
    let replicas = "[[pools.replicas]]\nid = \"r0\"\nslots = 1\nmock = { stall_after_tokens = 1 }\n\n[[pools.replicas]]\nid = \"r1\"\nslots = 4\nmock = { stall_after_tokens = 1 }\n";
    let s = Server::start(&config(&module(&wat("good")), replicas));
    eventually("ready", || async {
        s.pool_health().await["replicas"]
            .as_array()
            .is_some_and(|r| r.iter().all(|r| r["status"] == "ready"))
    })
    .await;

    let r = submit(&s, KEY_BLOCKED, "b1", "interactive").await;
    assert_eq!(r.status(), 429);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "ADMISSION_REJECT");
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("tenant blocked by policy") && msg.contains("`good`"),
        "{msg}"
    );

    assert_eq!(
        submit(&s, KEY_BULK, "k1", "interactive").await.status(),
        202
    );
    assert_eq!(
        s.metric("llorch_tasks_enqueued_total", &["priority=\"batch\""])
            .await,
        1.0,
        "reprioritized to batch"
    );

    for id in ["a1", "a2"] {
        assert_eq!(submit(&s, KEY_A, id, "interactive").await.status(), 202);
    }
    eventually("three tasks hold slots", || async {
        let h = s.pool_health().await;
        h["replicas"][0]["slots_busy"].as_u64().unwrap()
            + h["replicas"][1]["slots_busy"].as_u64().unwrap()
            == 3
    })
    .await;
    let h = s.pool_health().await;
    // Built-in least-loaded would have put the second task on the idle 1-slot r0.
    assert_eq!(h["replicas"][0]["slots_busy"], 0, "{h}");
    assert_eq!(h["replicas"][1]["slots_busy"], 3, "{h}");
    assert_eq!(
        s.metric(
            "llorch_policy_decisions_total",
            &["hook=\"placement\"", "decision=\"place\""]
        )
        .await,
        3.0
    );
    assert_eq!(
        s.metric("llorch_policy_fallbacks_total", &[]).await,
        0.0,
        "no fallback for a well-behaved plugin"
    );
    for id in ["k1", "a1", "a2"] {
        let key = if id == "k1" { KEY_BULK } else { KEY_A };
        assert_eq!(s.cancel(key, id).await.status(), 204);
    }
}

/// An infinite loop is stopped by its fuel budget, unbounded memory growth is refused, and
/// garbage answers are rejected: each falls back to the built-in decision, is counted by
/// reason, and the request is still admitted, placed and served.
#[tokio::test]
async fn runaway_and_broken_plugins_fall_back_and_still_serve() {
    for (name, reason, policy_extra) in [
        ("loop", "out_of_fuel", ", fuel = 2000000"),
        ("grow", "memory_limit", ", memory_bytes = 1048576"),
        ("garbage", "malformed", ""),
    ] {
        let s = Server::start(&config(
            &format!("{}{policy_extra}", module(&wat(name))),
            ONE_REPLICA,
        ));
        let t0 = Instant::now();
        assert_eq!(
            submit(&s, KEY_A, "t", "interactive").await.status(),
            202,
            "{name}"
        );
        let evs = read_events(s.stream(KEY_A, "t").await).await;
        assert_eq!(evs.last().unwrap().0, "end", "{name}: {evs:?}");
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{name}: the budget bounds the call"
        );
        let fallbacks = s
            .metric(
                "llorch_policy_fallbacks_total",
                &[&format!("reason=\"{reason}\"")],
            )
            .await;
        assert!(
            fallbacks >= 2.0,
            "{name}: admission and placement both fell back ({fallbacks})"
        );
        assert!(
            s.stderr_log().contains("llorch_policy") || s.stderr_log().contains("fallback"),
            "{name}: the fallback is logged"
        );
    }
}

/// A module with an incompatible ABI major, or one that imports file or socket functions,
/// is refused when orchestratord loads its config: it exits non-zero naming the problem.
/// Module paths are relative to the config file's directory.
#[test]
fn wrong_abi_and_forbidden_imports_refuse_to_start() {
    for (name, needle) in [
        ("abi_v2", "ABI"),
        ("wasi_fs", "path_open"),
        ("wasi_sock", "sock"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(wat(name), dir.path().join("plugin.wat")).unwrap();
        let cfg = config("module = \"plugin.wat\"", ONE_REPLICA).replace(
            "[[pools]]",
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[[pools]]",
        );
        let path = dir.path().join("o.toml");
        std::fs::write(&path, cfg).unwrap();
        let out = std::process::Command::new(bin())
            .args(["--config", &path.to_string_lossy()])
            .current_dir("/")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name}: must not start");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("policy plugin") && err.contains(needle),
            "{name}: {err}"
        );
    }
}

/// A plugin that admits everyone, written inline: used to check that a reload really
/// switched plugins.
const ADMIT_ALL: &str = r#"(module
  (memory (export "memory") 1)
  (data (i32.const 0) "{\"decision\":\"admit\"}")
  (func (export "llorch_abi_version") (result i32) (i32.const 0x10000))
  (func (export "llorch_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "llorch_admit") (param i32 i32) (result i64) (i64.const 20)))
"#;

/// POST /v1/pools/{id}/policy/reload re-reads the module: a broken one is refused and the old
/// plugin keeps deciding; a good one takes over at once.
#[tokio::test]
async fn policy_reload_swaps_atomically_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.wat");
    std::fs::copy(wat("good"), &file).unwrap();
    let s = Server::start(&config(&module(&file), ONE_REPLICA));
    let reload = || async {
        s.http
            .post(s.url("/v1/pools/p/policy/reload"))
            .bearer_auth(CONTROL_KEY)
            .send()
            .await
            .unwrap()
    };
    assert_eq!(
        submit(&s, KEY_BLOCKED, "x1", "interactive").await.status(),
        429
    );

    std::fs::copy(wat("abi_v2"), &file).unwrap();
    let r = reload().await;
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("old plugin kept"),
        "{body}"
    );
    assert_eq!(
        submit(&s, KEY_BLOCKED, "x2", "interactive").await.status(),
        429,
        "the old plugin still decides"
    );

    std::fs::write(&file, ADMIT_ALL).unwrap();
    let r = reload().await;
    assert_eq!(r.status(), 200);
    let info: serde_json::Value = r.json().await.unwrap();
    assert_eq!(info["plugin_id"], "policy");
    assert_eq!(info["abi"], "1.0");
    assert_eq!(
        submit(&s, KEY_BLOCKED, "x3", "interactive").await.status(),
        202
    );

    // Data keys cannot reload.
    let r = s
        .http
        .post(s.url("/v1/pools/p/policy/reload"))
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

/// Places nothing: every placement is deferred.
const DEFER_ALL: &str = r#"(module
  (memory (export "memory") 1)
  (data (i32.const 0) "{\"decision\":\"defer\"}")
  (func (export "llorch_abi_version") (result i32) (i32.const 0x10000))
  (func (export "llorch_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "llorch_place") (param i32 i32) (result i64) (i64.const 20)))
"#;

/// A deferred task stays queued (no slot taken, not counted as a priority inversion: the
/// policy chose it) and starts once a reloaded plugin lets it.
#[tokio::test]
async fn deferred_work_waits_and_starts_after_the_policy_changes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.wat");
    std::fs::write(&file, DEFER_ALL).unwrap();
    let s = Server::start(&config(&module(&file), ONE_REPLICA));
    eventually("ready", || async { s.pool_health().await["ready"] == true }).await;
    assert_eq!(submit(&s, KEY_A, "d1", "interactive").await.status(), 202);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let h = s.pool_health().await;
    assert_eq!(h["replicas"][0]["slots_busy"], 0, "{h}");
    assert_eq!(
        s.metric("llorch_queue_depth", &["priority=\"interactive\""])
            .await,
        1.0
    );
    assert!(
        s.metric("llorch_policy_decisions_total", &["decision=\"defer\""])
            .await
            >= 2.0,
        "retried on the periodic tick"
    );
    assert_eq!(s.metric("llorch_priority_inversions_total", &[]).await, 0.0);
    std::fs::write(&file, ADMIT_ALL).unwrap();
    let r = s
        .http
        .post(s.url("/v1/pools/p/policy/reload"))
        .bearer_auth(CONTROL_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let evs = read_events(s.stream(KEY_A, "d1").await).await;
    assert_eq!(evs.last().unwrap().0, "end", "{evs:?}");
}

/// The SDK path through the real binary: the Rust example plugin built to wasm32-wasip1
/// (`examples/plugins/tenant-half/tenant_half.wasm`, from `cargo xtask build-plugins`) keeps
/// tenant-a on at most half of the pool's replicas. tenant-a's third task waits although r1 is
/// idle, another tenant's task still takes r1, and the waiting task starts as soon as one of
/// tenant-a's own slots frees.
#[tokio::test]
async fn sdk_built_plugin_keeps_a_tenant_to_half_the_replicas() {
    let plugin = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/plugins/tenant-half/tenant_half.wasm");
    assert!(plugin.exists(), "{} is committed", plugin.display());
    let replicas = "[[pools.replicas]]\nid = \"r0\"\nslots = 2\nmock = { stall_after_tokens = 1 }\n\n[[pools.replicas]]\nid = \"r1\"\nslots = 2\nmock = { stall_after_tokens = 1 }\n";
    let s = Server::start(&config(&module(&plugin), replicas));
    eventually("ready", || async {
        s.pool_health().await["replicas"]
            .as_array()
            .is_some_and(|r| r.iter().all(|r| r["status"] == "ready"))
    })
    .await;
    let busy = |h: &serde_json::Value| {
        (
            h["replicas"][0]["slots_busy"].as_u64().unwrap(),
            h["replicas"][1]["slots_busy"].as_u64().unwrap(),
        )
    };

    for id in ["a1", "a2"] {
        assert_eq!(submit(&s, KEY_A, id, "interactive").await.status(), 202);
        eventually("placed", || async {
            s.metric("llorch_queue_depth", &["priority=\"interactive\""])
                .await
                == 0.0
        })
        .await;
    }
    assert_eq!(busy(&s.pool_health().await), (2, 0), "tenant-a shares r0");

    assert_eq!(submit(&s, KEY_A, "a3", "interactive").await.status(), 202);
    eventually("deferred by the plugin", || async {
        s.metric("llorch_policy_decisions_total", &["decision=\"defer\""])
            .await
            >= 1.0
    })
    .await;
    assert_eq!(
        busy(&s.pool_health().await),
        (2, 0),
        "r1 stays free of tenant-a"
    );

    // Another tenant is not held up by tenant-a's deferred task.
    assert_eq!(
        submit(&s, KEY_BULK, "k1", "interactive").await.status(),
        202
    );
    eventually("k1 on r1", || async {
        busy(&s.pool_health().await) == (2, 1)
    })
    .await;
    assert_eq!(
        s.metric("llorch_queue_depth", &["priority=\"interactive\""])
            .await,
        1.0,
        "a3 still queued"
    );

    // One of tenant-a's slots frees: a3 takes it, on r0.
    assert_eq!(s.cancel(KEY_A, "a1").await.status(), 204);
    eventually("a3 started on r0", || async {
        s.metric("llorch_queue_depth", &["priority=\"interactive\""])
            .await
            == 0.0
            && busy(&s.pool_health().await) == (2, 1)
    })
    .await;
    assert_eq!(s.metric("llorch_policy_fallbacks_total", &[]).await, 0.0);
    assert_eq!(s.metric("llorch_priority_inversions_total", &[]).await, 0.0);
    for (key, id) in [(KEY_A, "a2"), (KEY_A, "a3"), (KEY_BULK, "k1")] {
        assert_eq!(s.cancel(key, id).await.status(), 204, "{id}");
    }
}

/// The shipped systemd unit's sandbox lets policy plugins load. wasmtime compiles a module to
/// machine code in memory that it then makes executable; systemd's
/// `MemoryDenyWriteExecute=yes` forbids exactly that. The test reads
/// systemd/orchestratord.service and, when the unit sets it, applies the same kernel
/// restriction to the daemon (prctl PR_SET_MDWE, which systemd uses on kernels that have it)
/// before starting it with a plugin: it must start and decide with the plugin.
#[tokio::test]
async fn shipped_unit_sandbox_lets_plugins_compile() {
    let unit = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../systemd/orchestratord.service"),
    )
    .unwrap();
    let mdwe = unit
        .lines()
        .any(|l| l.trim().replace(' ', "") == "MemoryDenyWriteExecute=yes");
    let cfg = config(&module(&wat("good")), ONE_REPLICA);
    let s = Server::start_customized(&cfg, &[], |cmd| {
        if mdwe {
            use std::os::unix::process::CommandExt;
            const PR_SET_MDWE: libc::c_int = 65;
            const PR_MDWE_REFUSE_EXEC_GAIN: libc::c_ulong = 1;
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
    });
    let r = submit(&s, KEY_BLOCKED, "b1", "interactive").await;
    assert_eq!(r.status(), 429, "the plugin decided");
}
