//! The state directory's filesystem runs full under pool-managerd's model catalog.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use llorch_chaos::procs::{Daemon, Spawn, bin, tcp_listener};
use llorch_chaos::report::{Row, record_and_check};

use super::{CONTROL, keys, write};

/// A 1 MiB tmpfs mounted for the scenario, unmounted (lazily) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mountpoint");
        let c = |s: &str| CString::new(s).expect("no NUL");
        let target = c(&at.display().to_string());
        // SAFETY: mount(2) with valid NUL-terminated strings.
        let rc = unsafe {
            libc::mount(
                c("tmpfs").as_ptr(),
                target.as_ptr(),
                c("tmpfs").as_ptr(),
                0,
                c("size=1m").as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mounting a 1 MiB tmpfs at {} failed ({}): this scenario needs root (CAP_SYS_ADMIN), as CI has",
            at.display(),
            std::io::Error::last_os_error()
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Ok(target) = CString::new(self.0.display().to_string()) {
            // SAFETY: umount2(2) with a valid path.
            unsafe {
                libc::umount2(target.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
}

fn pool_managerd(dir: &Path, cfg: &Path, state: &Path, l: &std::net::TcpListener) -> Daemon {
    let mut d = Spawn::new("pool-managerd", bin("pool-managerd"), dir)
        .args([
            "serve".to_string(),
            "--config".into(),
            cfg.display().to_string(),
        ])
        .listen_fd(l.as_raw_fd())
        .env("STATE_DIRECTORY", state.display().to_string())
        .start();
    d.wait_ready(Duration::from_secs(30));
    d
}

/// (status, error code if any) of registering entry `i`.
async fn register(http: &reqwest::Client, base: &str, i: u32) -> (u16, Option<String>) {
    let body = serde_json::json!({
        // A long ref makes each row (and WAL frame) bigger, so the disk fills sooner.
        "model_ref": format!("/srv/models/chaos-{i}-{}.gguf", "x".repeat(900)),
        "sha256": format!("{:064x}", i + 1),
    });
    let r = http
        .post(format!("{base}/v1/catalog/models"))
        .bearer_auth(CONTROL)
        .json(&body)
        .send()
        .await
        .expect("register request answered");
    let status = r.status().as_u16();
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    (status, v["code"].as_str().map(String::from))
}

/// Sorted digests in the catalog (GET /v1/catalog/models); panics unless 200.
async fn listed(http: &reqwest::Client, base: &str) -> Vec<String> {
    let r = http
        .get(format!("{base}/v1/catalog/models"))
        .bearer_auth(CONTROL)
        .send()
        .await
        .expect("list answered");
    assert_eq!(r.status(), 200, "catalog list must stay readable");
    let v: Vec<serde_json::Value> = r.json().await.expect("list JSON");
    let mut ids: Vec<String> = v
        .iter()
        .filter_map(|e| e["id"].as_str().map(String::from))
        .collect();
    ids.sort();
    ids
}

/// Fills the filesystem of `dir` with a file until ENOSPC; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 16 * 1024];
    let mut n = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(k) => n += k as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "filling: {e}");
                break;
            }
        }
    }
    let _ = f.flush();
    n
}

/// pool-managerd's catalog (SQLite in $STATE_DIRECTORY) on a 1 MiB tmpfs that is filled to the
/// last byte, then freed, then pool-managerd restarted. Requirements: ORCH-3060–3073 (catalog
/// entries; "change nothing on failure"), ORCH-2006/3093 (every failure is a typed envelope),
/// ORCH-3037 (the catalog stays the record of truth: readable while full, intact after).
pub fn run() {
    llorch_chaos::runtime().block_on(scenario());
}

async fn scenario() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let _tmpfs = Tmpfs::mount(&state);
    let cfg = write(dir.path(), "pool-managerd.toml", &keys());
    let (listener, base) = tcp_listener();
    let mut pm = pool_managerd(dir.path(), &cfg, &state, &listener);
    let http = reqwest::Client::new();

    let mut committed = Vec::new(); // digests whose registration answered 201
    let mut untyped = Vec::new();
    for i in 0..5 {
        let (status, code) = register(&http, &base, i).await;
        assert_eq!(
            status, 201,
            "register {i} before the disk is full: {code:?}"
        );
        committed.push(format!("sha256:{:064x}", i + 1));
    }
    let filler = state.join("filler");
    let filled = fill(&filler);

    // Disk full: registrations fail with a typed error (possibly after a few that still fit in
    // pages SQLite already had), and the catalog stays readable.
    let mut failures = Vec::new();
    let mut fit = 0;
    for i in 5..200 {
        let (status, code) = register(&http, &base, i).await;
        match (status, code) {
            (201, _) => {
                fit += 1;
                committed.push(format!("sha256:{:064x}", i + 1));
            }
            (s, Some(code)) => failures.push(format!("{s} {code}")),
            (s, None) => untyped.push(format!("register {i}: {s} without an envelope")),
        }
        if failures.len() >= 5 {
            break;
        }
    }
    committed.sort();
    let during = listed(&http, &base).await;

    // Space returns: writes work again and the catalog holds exactly what was acknowledged.
    std::fs::remove_file(&filler).expect("remove filler");
    let (status, code) = register(&http, &base, 1000).await;
    let after_ok = status == 201;
    if after_ok {
        committed.push(format!("sha256:{:064x}", 1001));
        committed.sort();
    }
    let after = listed(&http, &base).await;
    let exit = pm.terminate(Duration::from_secs(15));
    let _pm = pool_managerd(dir.path(), &cfg, &state, &listener);
    let reopened = listed(&http, &base).await;

    let missing = committed.iter().filter(|d| !reopened.contains(d)).count();
    let mut codes = failures.clone();
    codes.dedup();
    record_and_check(Row {
        scenario: "disk_full_state_directory".into(),
        injected: format!(
            "1 MiB tmpfs as $STATE_DIRECTORY filled to ENOSPC ({filled} filler bytes) under catalog writes; freed; pool-managerd restarted"
        ),
        observed: format!(
            "{} writes refused with {codes:?} ({fit} still fit); list readable while full ({} entries); after freeing: register {status}{}; {} entries before and after the restart",
            failures.len(),
            during.len(),
            code.map(|c| format!(" {c}")).unwrap_or_default(),
            reopened.len()
        ),
        // Acknowledged writes missing afterwards, and untyped failures, count as lost.
        lost: missing + untyped.len(),
        leaked: 0,
    });
    assert!(!failures.is_empty(), "no write failed on a full disk");
    assert!(
        failures.iter().all(|f| f.starts_with('5')),
        "failures: {failures:?}"
    );
    assert_eq!(
        during,
        {
            let mut d = committed.clone();
            d.retain(|x| x != &format!("sha256:{:064x}", 1001));
            d
        },
        "catalog while full = exactly the acknowledged entries"
    );
    assert!(after_ok, "registration after space returned: {status}");
    assert_eq!(after, committed, "catalog after space returned");
    assert_eq!(reopened, committed, "catalog after a restart");
    assert!(exit.success(), "pool-managerd exit after SIGTERM: {exit}");
}
