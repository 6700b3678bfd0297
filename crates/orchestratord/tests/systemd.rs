//! systemd semantics of the real binary: socket activation, READY/WATCHDOG/STOPPING over
//! NOTIFY_SOCKET, graceful SIGTERM, and the `--listen` fallback.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// READY=1 arrives once serving (the harness waits for it), the socket passed as fd 3 serves,
/// watchdog pings follow when WATCHDOG_USEC is set.
#[tokio::test]
async fn socket_activation_ready_and_watchdog() {
    let mut s = Server::start_with_env(&mock_config(1, "", "", ""), &[("WATCHDOG_USEC", "200000")]);
    let r = s.http.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(s.stderr_log().contains("using socket passed by systemd"));
    s.wait_notify("WATCHDOG=1", Duration::from_secs(2));
    s.wait_notify("WATCHDOG=1", Duration::from_secs(2));
}

/// SIGTERM: STOPPING=1, new submissions refused, running streams finish, exit 0.
#[tokio::test]
async fn sigterm_drains_running_streams_then_exits() {
    let mut s = Server::start(&mock_config(1, "", "tokens_per_second = 50", ""));
    assert_eq!(s.submit(DATA_KEY, task("long", 25)).await.status(), 202);
    let stream = s.stream(DATA_KEY, "long").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.sigterm();
    s.wait_notify("STOPPING=1", Duration::from_secs(5));
    let evs = read_events(stream).await;
    assert_eq!(
        evs.last().unwrap().0,
        "end",
        "stream finished during drain: {evs:?}"
    );
    assert_eq!(evs.iter().filter(|(n, _)| n == "token").count(), 25);
    let start = Instant::now();
    loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            assert!(st.success(), "exit status {st}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "did not exit after drain"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The shutdown grace bounds how long a stuck stream can hold the process.
#[tokio::test]
async fn sigterm_grace_is_bounded() {
    let mut s = Server::start(&mock_config(
        1,
        "",
        "stall_after_tokens = 1",
        "[server]\nshutdown_grace_ms = 300",
    ));
    assert_eq!(s.submit(DATA_KEY, task("stuck", 5)).await.status(), 202);
    let _stream = s.stream(DATA_KEY, "stuck").await;
    s.sigterm();
    s.wait_notify("STOPPING=1", Duration::from_secs(5));
    let start = Instant::now();
    while s.child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "grace not enforced"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Without LISTEN_FDS the daemon binds `--listen` itself.
#[tokio::test]
async fn listen_fallback_without_socket_activation() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, mock_config(1, "", "", "")).unwrap();
    let mut child = Command::new(bin())
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env_remove("LISTEN_FDS")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let mut ok = false;
    for _ in 0..200 {
        if let Ok(r) = reqwest::get(&url).await {
            ok = r.status() == 200;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "daemon did not serve on --listen");
}

/// `--check-config` exits non-zero with file:line and the key path; zero for good files.
#[test]
fn check_config_reports_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        mock_config(1, "", "", "").replace("slots = 1", "slots = 1\nslotz = 2"),
    )
    .unwrap();
    let out = Command::new(bin())
        .arg("--check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:", bad.display())), "{err}");
    assert!(err.contains("pools[0].replicas[0].slotz"), "{err}");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, mock_config(1, "", "", "")).unwrap();
    let out = Command::new(bin())
        .arg("--check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
