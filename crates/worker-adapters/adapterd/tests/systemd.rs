//! llorch-adapterd under systemd semantics: a unix socket passed as fd 3 (LISTEN_FDS),
//! READY=1 and STOPPING=1 on NOTIFY_SOCKET, clean exit on SIGTERM.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, Instant};

use adapter_api::WorkerAdapter;
use adapter_api::client::{Endpoint, HttpWorker};

fn wait_for(sock: &UnixDatagram, needle: &str) {
    let limit = Duration::from_secs(10);
    assert!(
        daemon_kit::testing::wait_notify(sock, needle, limit),
        "no {needle} from llorch-adapterd"
    );
}

#[tokio::test]
async fn socket_activated_on_a_unix_socket_with_sd_notify() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("adapter.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut child = daemon_kit::testing::spawn_socket_activated(
        env!("CARGO_BIN_EXE_llorch-adapterd"),
        &[
            "--engine",
            "mock",
            "--listen",
            "unix:/nonexistent/ignored.sock",
        ],
        listener.as_raw_fd(),
        |cmd| {
            cmd.env("NOTIFY_SOCKET", &notify_path).stderr(Stdio::null());
        },
    )
    .unwrap();
    drop(listener);
    wait_for(&notify, "READY=1");
    let client = HttpWorker::new(&Endpoint::Unix(sock)).unwrap();
    assert_eq!(client.properties().await.unwrap().engine, "mock");
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    wait_for(&notify, "STOPPING=1");
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success());
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
