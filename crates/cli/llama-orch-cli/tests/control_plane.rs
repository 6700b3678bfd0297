//! The control-plane commands of the real `llorch` binary against a real orchestratord (mock
//! engine, real TCP) and a real pool-managerd catalog API (its router on real TCP, SQLite in a
//! temp dir): text output, `--output json` parsed as the server's documents, typed errors and
//! exit codes (0 ok, 2 client error, 3 retry later).

use std::process::{Command, Output};

use api_types::{Capabilities, CatalogEntry, ModelState, PoolHealth, VerificationResult};
use llama_orch_cli::{Frame, PoolView};

const DATA: &str = "cp-data-key";
const CONTROL: &str = "cp-control-key";

fn config() -> String {
    format!(
        r#"
[[auth.api_keys]]
key = "{DATA}"
tenant = "alice"
role = "data"

[[auth.api_keys]]
key = "{CONTROL}"
tenant = "ops"
role = "control"

[[pools]]
id = "p"
engine = "mock"
model_ref = "mock:tiny"
ctx_max = 2048
allow_cpu_inference = true

[[pools.replicas]]
id = "r0"
slots = 2
mock = {{ tokens_per_second = 200 }}

[[pools]]
id = "q"
engine = "mock"
model_ref = "mock:other"
ctx_max = 4096
allow_cpu_inference = true

[[pools.replicas]]
id = "r0"
slots = 1
mock = {{ tokens_per_second = 50 }}
"#
    )
}

async fn orchestratord() -> orchestratord::LocalServer {
    let cfg = config_schema::parse_str(&config(), "control.toml").expect("config");
    orchestratord::LocalServer::start(cfg, Default::default(), None)
        .await
        .expect("server starts")
}

/// A pool manager's HTTP service (catalog API) on a real socket.
struct PoolManager {
    base: String,
    _stop: tokio::sync::watch::Sender<bool>,
    _pm: pool_managerd::daemon::PoolManager,
}

async fn pool_manager(state: &std::path::Path) -> PoolManager {
    let toml = format!(
        "[pool_manager]\nstate_dir = \"{}\"\n{}",
        state.display(),
        test_fixtures::api_keys_toml(&[(DATA, "alice", "data"), (CONTROL, "ops", "control")])
    );
    let cfg = config_schema::parse_str(&toml, "pm.toml").expect("config");
    let (pm, _) = pool_managerd::daemon::PoolManager::start(&cfg).expect("pool manager");
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let app = pm.router(stop_rx);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", l.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(l, app).await });
    PoolManager {
        base,
        _stop: stop,
        _pm: pm,
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
    /// Refused by the generated client's types before anything was sent (exit 2).
    fn refused_locally(&self, pattern: &str) -> &Self {
        assert_eq!(
            self.code, 2,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.starts_with("error: invalid request: ") && self.stderr.contains(pattern),
            "{}",
            self.stderr
        );
        assert!(!self.stderr.contains("correlation id"), "{}", self.stderr);
        self
    }
    /// Asserts the exit code and that stderr names the server's typed code.
    fn fails(&self, code: i32, error_code: &str) -> &Self {
        assert_eq!(
            self.code, code,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains(&format!("error: {error_code}: ")),
            "{}",
            self.stderr
        );
        assert!(
            self.stderr.contains("note: correlation id "),
            "{}",
            self.stderr
        );
        self
    }
    fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not the document ({e}): {}", self.stdout))
    }
}

/// Runs the real binary off the async workers (the servers share this runtime).
async fn llorch(url: &str, key: Option<&str>, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_llorch"));
    cmd.args(["--url", url])
        .args(args)
        .env_remove("LLORCH_API_KEY")
        .env_remove("LLORCH_OUTPUT")
        .env_remove("LLORCH_CATALOG_URL");
    if let Some(k) = key {
        cmd.env("LLORCH_API_KEY", k);
    }
    let out: Output = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("llorch runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn submit(url: &str, task_id: &str, pool_model: &str, max_tokens: &str) {
    llorch(
        url,
        Some(DATA),
        &[
            "submit",
            "--model-ref",
            pool_model,
            "--prompt",
            "x",
            "--max-tokens",
            max_tokens,
            "--task-id",
            task_id,
            "--no-stream",
        ],
    )
    .await
    .ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_capabilities_and_auth_errors() {
    let s = orchestratord().await;
    let url = s.base.as_str();

    let r = llorch(url, Some(CONTROL), &["pools"]).await;
    r.ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines[0].starts_with("POOL/REPLICA  STATE"), "{}", r.stdout);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("p ") && l.contains("ready") && l.contains("0/2")),
        "{}",
        r.stdout
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("  r0") && l.contains("mock"))
    );

    let views: Vec<serde_json::Value> = llorch(url, Some(CONTROL), &["--output", "json", "pools"])
        .await
        .ok()
        .json();
    assert_eq!(views.len(), 2);
    assert_eq!(views[0]["pool_id"], "p");
    assert_eq!(views[0]["ready"], true);
    assert_eq!(views[0]["replicas"][0]["slots_total"], 2);
    assert_eq!(views[1]["model_ref"], "mock:other");

    let one: Vec<serde_json::Value> =
        llorch(url, Some(CONTROL), &["pools", "q", "--output", "json"])
            .await
            .ok()
            .json();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["pool_id"], "q");

    llorch(url, Some(CONTROL), &["pools", "nope"])
        .await
        .fails(2, "NOT_FOUND");
    llorch(url, Some(DATA), &["pools"])
        .await
        .fails(2, "FORBIDDEN");
    llorch(url, None, &["pools"])
        .await
        .fails(2, "UNAUTHENTICATED");
    llorch(url, Some("not-a-key-000"), &["pools"])
        .await
        .fails(2, "UNAUTHENTICATED");

    // Capabilities are for any caller.
    let c: Capabilities = llorch(url, Some(DATA), &["capabilities", "--output", "json"])
        .await
        .ok()
        .json();
    assert_eq!(c.engines, vec!["mock".to_string()]);
    assert_eq!(c.ctx_max, 4096);
    let r = llorch(url, Some(DATA), &["capabilities"]).await;
    r.ok();
    assert!(
        r.stdout
            .contains(&format!("api_version          {}", c.api_version)),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("max_concurrent       unlimited"),
        "{}",
        r.stdout
    );

    // A server that is not there: transport error, exit 3.
    let dead = format!("http://127.0.0.1:{}", test_fixtures::free_port());
    let r = llorch(&dead, Some(CONTROL), &["pools"]).await;
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.starts_with("error: TRANSPORT: "), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_and_reload() {
    let s = orchestratord().await;
    let url = s.base.as_str();
    // 1000 tokens at 200/s: still running while the pool drains.
    submit(url, "long", "mock:tiny", "1000").await;

    let r = llorch(url, Some(CONTROL), &["drain", "q", "--deadline", "25h"]).await;
    r.fails(2, "INVALID_PARAMS");
    let r = llorch(url, Some(CONTROL), &["drain", "q", "--deadline", "1d"]).await;
    assert_eq!(r.code, 2, "a local usage error: {}", r.stderr);
    llorch(url, Some(CONTROL), &["drain", "nope", "--deadline", "1s"])
        .await
        .fails(2, "NOT_FOUND");
    llorch(url, Some(DATA), &["drain", "p", "--deadline", "1s"])
        .await
        .fails(2, "FORBIDDEN");

    let h: PoolHealth = llorch(
        url,
        Some(CONTROL),
        &["drain", "p", "--deadline", "30s", "--output", "json"],
    )
    .await
    .ok()
    .json();
    assert!(h.draining && !h.ready, "{h:?}");
    assert_eq!(
        h.replicas[0].slots_busy, 1,
        "the long task still runs: {h:?}"
    );

    let r = llorch(url, Some(CONTROL), &["pools", "p"]).await;
    r.ok();
    assert!(
        r.stdout
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains("draining")),
        "{}",
        r.stdout
    );
    // The drained pool refuses new work.
    let r = llorch(
        url,
        Some(DATA),
        &[
            "submit",
            "--model-ref",
            "mock:tiny",
            "--prompt",
            "x",
            "--no-stream",
        ],
    )
    .await;
    assert_ne!(r.code, 0, "{}", r.stderr);

    // Plain orchestratord manages no engines: reload is refused, retriable (exit 3).
    llorch(
        url,
        Some(CONTROL),
        &["reload", "q", "--model-ref", "mock:tiny"],
    )
    .await
    .fails(3, "POOL_UNAVAILABLE");
    llorch(url, Some(CONTROL), &["reload", "nope", "--model-ref", "m"])
        .await
        .fails(2, "NOT_FOUND");
    llorch(
        url,
        Some(CONTROL),
        &["reload", "q", "--model-ref", "m", "--sha256", "xyz"],
    )
    .await
    .refused_locally("^[0-9a-fA-F]{64}$");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_lifecycle_through_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pm = pool_manager(&dir.path().join("state")).await;
    let s = orchestratord().await;
    let model = dir.path().join("model.gguf");
    std::fs::write(&model, b"GGUF weights for the CLI").expect("write");
    let digest = pool_managerd::provision::sha256_file(&model).expect("digest");
    let id = format!("sha256:{digest}");
    let path = model.display().to_string();
    // Catalog commands go to --catalog-url; everything else still to --url.
    let cat = |args: &[&str]| {
        let mut v = vec!["--catalog-url", pm.base.as_str()];
        v.extend_from_slice(args);
        v.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let url = s.base.clone();
        async move {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            llorch(&url, Some(CONTROL), &a).await
        }
    };

    let r = run(cat(&["catalog", "list"])).await;
    r.ok();
    assert_eq!(r.stdout, "no models in the catalog\n");

    let r = run(cat(&["catalog", "add", &path, "--sha256", &digest])).await;
    r.ok();
    assert!(
        r.stderr.starts_with(&format!("registered: {id} (draft)")),
        "{}",
        r.stderr
    );
    let r = run(cat(&["catalog", "add", &path, "--sha256", &digest])).await;
    assert!(
        r.ok().stderr.starts_with("already registered: "),
        "{}",
        r.stderr
    );
    run(cat(&["catalog", "add", &path, "--sha256", "abc"]))
        .await
        .refused_locally("^(sha256:)?[0-9a-fA-F]{64}$");

    let list: Vec<CatalogEntry> = run(cat(&["--output", "json", "catalog", "list"]))
        .await
        .ok()
        .json();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].id.as_str(), list[0].state),
        (id.as_str(), ModelState::Draft)
    );

    // Active needs a passed verification first.
    run(cat(&["catalog", "activate", &id]))
        .await
        .fails(2, "UNTRUSTED_ARTIFACT");
    let e: CatalogEntry = run(cat(&["catalog", "verify", &id, "--output", "json"]))
        .await
        .ok()
        .json();
    assert_eq!(
        e.verification.map(|v| v.result),
        Some(VerificationResult::Passed)
    );
    let e: CatalogEntry = run(cat(&["catalog", "activate", &id, "--output", "json"]))
        .await
        .ok()
        .json();
    assert_eq!(e.state, ModelState::Active);
    let r = run(cat(&["catalog", "deprecate", &id])).await;
    assert!(
        r.ok()
            .stderr
            .starts_with(&format!("now: {id} (deprecated)")),
        "{}",
        r.stderr
    );
    let r = run(cat(&["catalog", "get", &digest])).await;
    assert!(
        r.ok()
            .stdout
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains("deprecated") && l.contains("passed"))
    );

    // A changed artifact: verification records a mismatch, exit 2.
    std::fs::write(&model, b"tampered").expect("write");
    let r = run(cat(&["catalog", "verify", &id])).await;
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("mismatch"), "{}", r.stdout);

    let e: CatalogEntry = run(cat(&["catalog", "retire", &id, "--output", "json"]))
        .await
        .ok()
        .json();
    assert_eq!(e.state, ModelState::Retired);
    run(cat(&["catalog", "deprecate", &id]))
        .await
        .fails(2, "INVALID_PARAMS");
    run(cat(&["catalog", "get", &"0".repeat(64)]))
        .await
        .fails(2, "NOT_FOUND");
    run(cat(&["catalog", "get", "nonsense"]))
        .await
        .fails(2, "INVALID_PARAMS");

    // The catalog needs a control key too.
    let url = s.base.clone();
    llorch(
        &url,
        Some(DATA),
        &["--catalog-url", &pm.base, "catalog", "list"],
    )
    .await
    .fails(2, "FORBIDDEN");
    // A plain orchestratord serves no catalog: the error, then where to find one.
    let r = llorch(&url, Some(CONTROL), &["catalog", "list"]).await;
    r.fails(2, "NOT_FOUND");
    assert!(r.stderr.contains("--catalog-url"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_shows_running_queued_and_tokens_per_second() {
    let s = orchestratord().await;
    let url = s.base.as_str();
    // Pool q has one slot: one task runs, one waits. Pool p runs two.
    submit(url, "q1", "mock:other", "2000").await;
    submit(url, "q2", "mock:other", "10").await;
    submit(url, "p1", "mock:tiny", "1000").await;
    submit(url, "p2", "mock:tiny", "1000").await;

    let r = llorch(
        url,
        Some(CONTROL),
        &[
            "top",
            "--output",
            "json",
            "--iterations",
            "2",
            "--interval",
            "400ms",
        ],
    )
    .await;
    r.ok();
    let frames: Vec<Frame> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(frames.len(), 2, "{}", r.stdout);
    for f in &frames {
        assert!(f.interval_ms >= 400, "{f:?}");
        let p = f.pools.iter().find(|p| p.pool_id == "p").expect("pool p");
        assert_eq!((p.running, p.slots, p.queued), (2, 2, 0), "{f:?}");
        // Two tasks at 200 tokens/s each; q's one task at 50 tokens/s.
        assert!((150.0..550.0).contains(&p.tokens_per_s), "{f:?}");
        let q = f.pools.iter().find(|p| p.pool_id == "q").expect("pool q");
        assert_eq!((q.running, q.slots, q.queued), (1, 1, 1), "{f:?}");
        assert!((25.0..75.0).contains(&q.tokens_per_s), "{f:?}");
    }
    for f in &frames {
        let t = |pool: &str, tenant: &str| {
            f.pool_tenants
                .iter()
                .find(|t| t.pool_id == pool && t.tenant == tenant)
                .map(|t| (t.running, t.queued))
        };
        assert_eq!(t("p", "alice"), Some((2, 0)), "{f:?}");
        assert_eq!(t("q", "alice"), Some((1, 1)), "{f:?}");
        // The control key's tenant submitted nothing: zeros, but there.
        assert_eq!(t("q", "ops"), Some((0, 0)), "{f:?}");
    }
    assert!(
        frames[1]
            .tenants
            .iter()
            .any(|t| t.tenant == "alice" && t.dispatch_share > 0.0),
        "{:?}",
        frames[1].tenants
    );

    let r = llorch(
        url,
        Some(CONTROL),
        &["top", "--once", "--interval", "200ms"],
    )
    .await;
    r.ok();
    assert!(r.stdout.contains("POOL  ENGINE  RUNNING"), "{}", r.stdout);
    assert!(
        r.stdout.contains(
            "POOL  TENANT  RUNNING  QUEUED\np     alice   2        0\nq     alice   1        1\n"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("q ") && l.contains(" 1 ")),
        "{}",
        r.stdout
    );
    llorch(url, Some(DATA), &["top", "--once"])
        .await
        .fails(2, "FORBIDDEN");
}

#[tokio::test]
async fn completions_and_man_pages_need_no_server() {
    // An unusable --url does not matter: nothing is sent.
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let r = llorch("not a url", None, &["completions", shell]).await;
        r.ok();
        assert!(r.stdout.contains("llorch"), "{shell}");
        assert!(
            r.stdout.contains("catalog") && r.stdout.contains("deprecate"),
            "{shell}"
        );
    }
    let r = llorch("not a url", None, &["man"]).await;
    assert!(r.ok().stdout.contains(".TH llorch 1"));
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("man1");
    llorch(
        "not a url",
        None,
        &["man", "--dir", d.to_str().expect("utf8")],
    )
    .await
    .ok();
    for page in [
        "llorch.1",
        "llorch-pools.1",
        "llorch-catalog.1",
        "llorch-catalog-retire.1",
    ] {
        let text = std::fs::read_to_string(d.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.starts_with(".ie"), "{page}");
    }
    let r = llorch("not a url", None, &["completions", "tcsh"]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn pool_view_json_is_the_replica_set_plus_health() {
    // The JSON shape scripts rely on: flattened replica set fields + ready/draining.
    let v = serde_json::json!({
        "pool_id": "p", "engine": "mock", "model_ref": "m", "ctx_max": 1, "queue_depth": 0,
        "replicas": [], "ready": true, "draining": false,
        "load": {"slots_total": 2, "slots_free": 1, "slots_busy": 1, "replicas_ready": 1,
            "replicas_total": 1, "queue_depth": 0, "queue_capacity": 8},
        "slo": {"predicted_start_ms": 0, "deadline_tasks": 0}
    });
    let set: api_types::ReplicaSet = serde_json::from_value(v.clone()).expect("set");
    let view = PoolView {
        set,
        ready: true,
        draining: false,
        last_error: None,
    };
    assert_eq!(serde_json::to_value(&view).expect("json"), v);
}
