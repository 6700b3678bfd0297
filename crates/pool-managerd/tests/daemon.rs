//! The pool-managerd daemon the systemd way: socket-activated, READY=1 after the engines
//! preloaded, the catalog in $STATE_DIRECTORY and /metrics served, the replica registry and its change feed following a real engine crash and
//! restart, STOPPING=1 and the engines gone after SIGTERM. The replica is one engine process
//! of its own (its pid in the registry), started and preloaded before READY=1 (ORCH-3001).

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::StreamExt;

fn wait_notify(sock: &UnixDatagram, needle: &str) {
    let limit = Duration::from_secs(120);
    assert!(
        daemon_kit::testing::wait_notify(sock, needle, limit),
        "no {needle} from pool-managerd"
    );
}

async fn next_snapshot<S, E>(feed: &mut S) -> Vec<api_types::ReplicaRecord>
where
    S: futures::Stream<Item = Result<eventsource_stream::Event, E>> + Unpin,
    E: std::fmt::Debug,
{
    let ev = tokio::time::timeout(Duration::from_secs(60), feed.next())
        .await
        .expect("feed stalled")
        .expect("feed ended")
        .expect("sse parse");
    assert_eq!(ev.event, "snapshot");
    serde_json::from_str(&ev.data).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_follows_a_crash_and_restart() {
    let e = test_fixtures::engine();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("pm.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}{}",
            test_fixtures::api_keys_toml(&[
                ("pm-data-key", "t", "data"),
                ("pm-ctl-key", "o", "control")
            ]),
            test_fixtures::llamacpp_pool_toml(&e, "llm", 512, &[("cpu0", 1)])
        ),
    )
    .unwrap();
    let notify_path = dir.path().join("notify");
    let state_dir = dir.path().join("state");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let cfg_arg = cfg.display().to_string();
    let mut child = daemon_kit::testing::spawn_socket_activated(
        env!("CARGO_BIN_EXE_pool-managerd"),
        &["serve", "--config", &cfg_arg],
        listener.as_raw_fd(),
        |cmd| {
            cmd.env("NOTIFY_SOCKET", &notify_path)
                .env("STATE_DIRECTORY", &state_dir)
                .stderr(Stdio::null());
        },
    )
    .unwrap();
    drop(listener);
    wait_notify(&notify, "READY=1");

    let http = reqwest::Client::new();
    let list: Vec<api_types::ReplicaRecord> = http
        .get(format!("{base}/v1/replicas"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.len(), 1);
    let r = &list[0];
    assert!(
        r.ready && r.cpu && r.engine == "llamacpp" && r.phase == "ready",
        "{r:?}"
    );
    let pid = r.pid.unwrap();
    // The engine is really there.
    let health = http
        .get(format!("{}/health", r.engine_url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // The catalog lives in systemd's $STATE_DIRECTORY; /metrics is served.
    let cat = http
        .get(format!("{base}/v1/catalog/models"))
        .bearer_auth("pm-ctl-key")
        .send()
        .await
        .unwrap();
    assert_eq!(cat.status(), 200);
    assert_eq!(cat.text().await.unwrap(), "[]");
    assert!(state_dir.join(pool_managerd::catalog::DB_FILE).is_file());
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains("llorch_replica_ready{")
    );

    use eventsource_stream::Eventsource;
    let mut feed = Box::pin(
        http.get(format!("{base}/v1/replicas/watch"))
            .send()
            .await
            .unwrap()
            .bytes_stream()
            .eventsource(),
    );
    assert!(next_snapshot(&mut feed).await[0].ready);
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let down = next_snapshot(&mut feed).await;
    assert!(!down[0].ready, "{down:?}");
    let mut up = down;
    while !up[0].ready {
        up = next_snapshot(&mut feed).await;
    }
    assert_eq!(up[0].restarts, 1);
    assert_ne!(up[0].pid, Some(pid));
    let new_pid = up[0].pid.unwrap();

    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    wait_notify(&notify, "STOPPING=1");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "pool-managerd did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its engine went with it.
    let alive = unsafe { libc::kill(new_pid as i32, 0) } == 0;
    assert!(!alive, "engine {new_pid} outlived pool-managerd");
}
