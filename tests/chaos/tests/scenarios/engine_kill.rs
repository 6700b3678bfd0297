//! Engine SIGKILL mid-stream under `llorch serve` with the real llama-server.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use llorch_chaos::client::{Api, Outcome, Tally, finish, read_tokens, until};
use llorch_chaos::procs::{Daemon, Spawn, bin, children_named, tcp_listener};
use llorch_chaos::report::{Row, record_and_check};

use super::{CONTROL, DATA, keys, write};

/// `llorch serve` (one llama.cpp pool `llm`, replica `cpu0` with `slots` slots) on a socket
/// this process holds; READY=1 (engines preloaded) awaited.
pub struct Serve {
    pub daemon: Daemon,
    pub api: Api,
    pub model: String,
    _listener: std::net::TcpListener,
}

impl Serve {
    pub fn start(dir: &Path, slots: u32) -> Serve {
        let e = test_fixtures::engine();
        let toml = format!(
            "{}{}",
            keys(),
            test_fixtures::llamacpp_pool_toml(&e, "llm", 512, &[("cpu0", slots)])
        );
        let cfg = write(dir, "serve.toml", &toml);
        let (listener, base) = tcp_listener();
        let mut daemon = Spawn::new("llorch-serve", bin("llorch"), dir)
            .args([
                "serve".to_string(),
                "--config".into(),
                cfg.display().to_string(),
            ])
            .listen_fd(listener.as_raw_fd())
            .start();
        let took = daemon.wait_ready(Duration::from_secs(180));
        println!("  llorch serve ready (engine preloaded, self-tested) in {took:.1?}");
        Serve {
            daemon,
            api: Api::new(&base, DATA, CONTROL),
            model: e.model.display().to_string(),
            _listener: listener,
        }
    }

    /// A real-model task.
    pub fn task(&self, id: &str, max_tokens: u32) -> serde_json::Value {
        serde_json::json!({
            "task_id": id, "workload": "completion", "model_ref": self.model, "ctx": 512,
            "prompt": "Write a long story about a lighthouse keeper and the sea. Chapter one:",
            "max_tokens": max_tokens, "seed": 7
        })
    }

    /// The pid of the one llama-server `llorch serve` supervises.
    pub fn engine_pid(&self) -> i32 {
        let pids = children_named(self.daemon.pid(), "llama-server");
        assert_eq!(
            pids.len(),
            1,
            "llama-server children of llorch serve: {pids:?}"
        );
        pids[0]
    }
}

/// SIGKILL of the engine while a token stream is running. Requirements: ORCH-3038 (engine crash
/// → Unready, restart), ORCH-3053 (restart under backoff/breaker), ORCH-2006/3093 (the client
/// gets a typed `error`, WORKER_RESET, not a broken stream), ORCH-3002 (Ready again only after
/// preload + decode), ORCH-3008 (placement only on Ready replicas).
pub fn run() {
    llorch_chaos::runtime().block_on(scenario());
}

async fn scenario() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut serve = Serve::start(dir.path(), 1);
    let api = serve.api.clone();
    let mut tally = Tally::default();
    let per_event = Duration::from_secs(60);

    let warm = api.run_task(&serve.task("warm", 4), per_event).await;
    tally.add("warm", &warm);
    assert!(
        matches!(warm, Outcome::End { .. }),
        "warm-up task: {warm:?}"
    );

    // The victim: kill the engine after its first token.
    let engine = serve.engine_pid();
    let accepted = api
        .submit(&serve.task("victim", 400))
        .await
        .expect("submit");
    assert_eq!(accepted.status(), 202);
    let stream = read_tokens(
        api.open_stream("victim").await.expect("open stream"),
        1,
        per_event,
    )
    .await;
    // SAFETY: kill(2) on the engine process (a child of our child) by pid.
    unsafe {
        libc::kill(engine, libc::SIGKILL);
    }
    let killed = Instant::now();
    let victim = finish(stream, 1, Duration::from_secs(10)).await;
    let error_after = killed.elapsed();
    tally.add("victim", &victim);
    println!("  victim after SIGKILL of llama-server {engine}: {victim:?} in {error_after:.2?}");

    // A task submitted while the engine is down: refused with a type, or queued until the
    // replica is back; never lost.
    let during = api
        .run_task(&serve.task("during", 4), Duration::from_secs(120))
        .await;
    tally.add("during", &during);
    println!("  task submitted while the engine was down: {during:?}");

    let back = until(
        "replica cpu0 Ready again after the supervisor's restart",
        Duration::from_secs(120),
        || async {
            let r = api.replica("llm", "cpu0").await;
            r.status == api_types::ReplicaStatus::Ready && r.restarts >= 1
        },
    )
    .await;
    let snap = api.replica("llm", "cpu0").await;
    let new_engine = serve.engine_pid();
    let leaked = api.settle_busy("llm", Duration::from_secs(10)).await;
    let fresh = api.run_task(&serve.task("fresh", 8), per_event).await;
    tally.add("fresh", &fresh);

    let row = Row {
        scenario: "engine_sigkill_mid_stream".into(),
        injected: format!(
            "SIGKILL llama-server (pid {engine}) after the 1st token of a 400-token stream, llorch serve"
        ),
        observed: format!(
            "victim: {} after {error_after:.2?}; replica Ready again after {back:.1?} (restarts={}, new pid {new_engine}); task during outage: {}; fresh task: {}",
            describe(&victim),
            snap.restarts,
            describe(&during),
            describe(&fresh)
        ),
        lost: tally.lost.len(),
        leaked,
    };
    for l in &tally.lost {
        println!("  LOST {l}");
    }
    record_and_check(row);
    assert!(
        matches!(&victim, Outcome::Error { code, .. } if code == "WORKER_RESET"),
        "the victim must get a typed WORKER_RESET error, got {victim:?}"
    );
    assert!(
        error_after <= Duration::from_secs(2),
        "typed error took {error_after:?} (> 2 s)"
    );
    assert_ne!(new_engine, engine, "the engine was not restarted");
    assert!(
        matches!(fresh, Outcome::End { tokens } if tokens >= 1),
        "fresh task: {fresh:?}"
    );
    let st = serve.daemon.terminate(Duration::from_secs(30));
    assert!(st.success(), "llorch serve exit after SIGTERM: {st}");
}

/// Short text of an outcome for the table.
pub fn describe(o: &Outcome) -> String {
    match o {
        Outcome::End { tokens } => format!("end ({tokens} tokens)"),
        Outcome::Error { code, tokens } => format!("error {code} after {tokens} tokens"),
        Outcome::Refused { status, code } => format!("refused {status} {code}"),
        Outcome::Lost { why } => format!("LOST ({why})"),
    }
}
