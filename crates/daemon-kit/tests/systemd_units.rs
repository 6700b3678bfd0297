//! The shipped systemd units (systemd/) are ones systemd accepts: `systemd-analyze verify`
//! parses every unit, reports unknown keys, bad values and missing referenced units, and must
//! print nothing. The binaries are stand-ins at a temporary path (verify only checks that
//! ExecStart= names an executable); the template units are checked as an instance.

use std::path::{Path, PathBuf};
use std::process::Command;

fn units_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../systemd")
}

#[test]
fn systemd_accepts_every_shipped_unit() {
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        analyze.is_ok_and(|o| o.status.success()),
        "systemd-analyze is missing: install Debian's `systemd` package (.ci/run does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for name in ["orchestratord", "pool-managerd", "llorch-adapterd"] {
        let path = bin.join(name);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(units_dir()).unwrap() {
        let src = entry.unwrap().path();
        let name = src.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.ends_with(".service") || name.ends_with(".socket")) {
            continue;
        }
        let text = std::fs::read_to_string(&src)
            .unwrap()
            .replace("/usr/bin/", &format!("{}/", bin.display()));
        // A template is verified as an instance of itself.
        let name = name.replace("@.", "@cpu0.");
        std::fs::write(dir.path().join(&name), text).unwrap();
        checked.push(name);
    }
    checked.sort();
    assert!(
        [
            "orchestratord.service",
            "pool-managerd.socket",
            "llorch-adapterd@cpu0.service"
        ]
        .iter()
        .all(|u| checked.iter().any(|c| c == u)),
        "{checked:?}"
    );
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(checked.iter().map(|u| Path::new(".").join(u)))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify {checked:?}: {}\n{said}",
        out.status
    );
}
