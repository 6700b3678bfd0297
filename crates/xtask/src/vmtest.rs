//! `cargo xtask vm-test`: the appliance, booted. Builds the Debian packages (`package`), the
//! image (images/, cached by the hash of its inputs) and runs every VM scenario
//! (vm-tests/run.py) on one boot under QEMU, printing the summary table.
//!
//! Two cache layers under `~/.cache/llama-orch/images/`, so that a code change costs a
//! package build and ~1 minute of image assembly, not a Debian bootstrap:
//! - `base-<key>`: debootstrap of the pinned suite with images/packages.txt (key: that list,
//!   build-base.sh, suite, mirror);
//! - `appliance-<key>`: base + our packages + images/overlay + the test model → disk.img,
//!   kernel, initrd, manifest.txt (key: the base key, build-image.sh, the overlay, the
//!   packages' bytes, the model's digest).
//!
//! Only the newest entry of each layer is kept: an image is ~1.5 GB on disk.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SUITE: &str = "bookworm";
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Room the first build needs: the base tree (~650 MB), the image tree and its ext4 copy.
const NEEDED_FREE_GB: u64 = 6;

fn sha256_of(input: &[u8]) -> Result<String, String> {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("sha256sum: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("sha256sum: no stdin")?
        .write_all(input)
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

fn file_digest(path: &Path) -> Result<String, String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .map_err(|e| format!("sha256sum: {e}"))?;
    if !out.status.success() {
        return Err(format!("sha256sum {}: failed", path.display()));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

/// The digest of a directory's files, names and modes (a tar stream with fixed metadata).
fn tree_digest(dir: &Path) -> Result<String, String> {
    let out = Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-cf",
            "-",
            ".",
        ])
        .current_dir(dir)
        .output()
        .map_err(|e| format!("tar: {e}"))?;
    if !out.status.success() {
        return Err(format!("tar {}: failed", dir.display()));
    }
    sha256_of(&out.stdout)
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    eprintln!("xtask: {what}");
    let status = cmd.status().map_err(|e| format!("{what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what}: {status}"))
    }
}

fn free_gb(path: &Path) -> Option<u64> {
    let out = Command::new("df")
        .args(["--output=avail", "-B1G"])
        .arg(path)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)?
        .trim()
        .parse()
        .ok()
}

/// Fails with what to install when a tool the image build or the VM needs is missing.
fn require_tools() -> Result<(), String> {
    let tools = [
        ("debootstrap", "debootstrap"),
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("mkfs.ext4", "e2fsprogs"),
        ("dpkg-deb", "dpkg"),
        ("python3", "python3"),
        ("strip", "binutils"),
    ];
    let missing: Vec<String> = tools
        .iter()
        .filter(|(bin, _)| {
            Command::new("sh")
                .args(["-c", &format!("command -v {bin}")])
                .stdout(Stdio::null())
                .status()
                .map(|s| !s.success())
                .unwrap_or(true)
        })
        .map(|(bin, pkg)| format!("{bin} (apt-get install {pkg})"))
        .collect();
    if !missing.is_empty() {
        return Err(format!("vm-test needs: {}", missing.join(", ")));
    }
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("vm-test builds the image with debootstrap and chroot: run it as root".into());
    }
    Ok(())
}

/// Removes the other entries `<prefix>-*` of a cache layer.
fn prune(dir: &Path, prefix: &str, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if p != keep && name.starts_with(&format!("{prefix}-")) {
            eprintln!("xtask: removing the old {}", p.display());
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

/// The base root filesystem, built once per key.
fn base(root: &Path, images: &Path) -> Result<(PathBuf, String), String> {
    let mirror = std::env::var("LLORCH_DEBIAN_MIRROR").unwrap_or_else(|_| DEFAULT_MIRROR.into());
    let mut key_input = format!("{SUITE}\n{mirror}\n");
    for f in ["packages.txt", "build-base.sh"] {
        key_input.push_str(&file_digest(&root.join("images").join(f))?);
        key_input.push('\n');
    }
    let key = sha256_of(key_input.as_bytes())?[..16].to_owned();
    let dir = images.join(format!("base-{key}"));
    if dir.join("usr/bin/systemctl").exists() {
        eprintln!("xtask: base root filesystem cached: {}", dir.display());
    } else {
        let started = std::time::Instant::now();
        run(
            Command::new(root.join("images/build-base.sh"))
                .arg(&dir)
                .arg(SUITE)
                .arg(&mirror),
            &format!("debootstrap {SUITE} from {mirror} (cold: a few minutes)"),
        )?;
        eprintln!(
            "xtask: base root filesystem built in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    prune(images, "base", &dir);
    Ok((dir, key))
}

/// The appliance image (disk.img, vmlinuz, initrd.img, manifest.txt), built once per key.
fn image(root: &Path, cache: &Path, images: &Path, debs: &[&Path]) -> Result<PathBuf, String> {
    let (base_dir, base_key) = base(root, images)?;
    let model = crate::provisioned(cache, "model")?;
    let mut key_input = format!("{base_key}\n");
    key_input.push_str(&file_digest(&root.join("images/build-image.sh"))?);
    key_input.push('\n');
    key_input.push_str(&tree_digest(&root.join("images/overlay"))?);
    key_input.push('\n');
    for f in debs.iter().copied().chain([model.as_path()]) {
        key_input.push_str(&file_digest(f)?);
        key_input.push('\n');
    }
    let key = sha256_of(key_input.as_bytes())?[..16].to_owned();
    let dir = images.join(format!("appliance-{key}"));
    if dir.join("disk.img").exists() && dir.join("manifest.txt").exists() {
        eprintln!("xtask: appliance image cached: {}", dir.display());
    } else {
        let started = std::time::Instant::now();
        let mut cmd = Command::new(root.join("images/build-image.sh"));
        cmd.arg(&base_dir).arg(&dir).arg(&model).args(debs);
        run(&mut cmd, "assembling the appliance image")?;
        eprintln!(
            "xtask: appliance image built in {:.0} s: {}",
            started.elapsed().as_secs_f64(),
            dir.display()
        );
    }
    prune(images, "appliance", &dir);
    report_drift(root, &dir);
    Ok(dir)
}

/// Debian's archive moves at point releases: say which package versions differ from the
/// manifest committed in images/manifest.txt (the image that last passed the scenarios), so a
/// changed image is never a surprise. Our own packages' versions are expected to move.
fn report_drift(root: &Path, dir: &Path) {
    let read = |p: &Path| -> std::collections::BTreeSet<String> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with("llama-orch"))
            .map(str::to_owned)
            .collect()
    };
    let committed = read(&root.join("images/manifest.txt"));
    let built = read(&dir.join("manifest.txt"));
    let added: Vec<_> = built.difference(&committed).collect();
    let gone: Vec<_> = committed.difference(&built).collect();
    if added.is_empty() && gone.is_empty() {
        eprintln!(
            "xtask: image manifest: the {} Debian package versions match images/manifest.txt",
            built.len()
        );
    } else {
        eprintln!(
            "xtask: image manifest differs from images/manifest.txt (Debian moved): {} new, {} gone",
            added.len(),
            gone.len()
        );
        for l in added.iter().take(20) {
            eprintln!("  + {l}");
        }
        for l in gone.iter().take(20) {
            eprintln!("  - {l}");
        }
    }
}

/// A small raw ext4 disk with files for the guest (/dev/vdb, mounted at /mnt/host).
fn share_disk(out: &Path, files: &[&Path]) -> Result<(), String> {
    let dir = out.with_extension("d");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut bytes = 0;
    for f in files {
        let dest = dir.join(f.file_name().unwrap_or_default());
        std::fs::copy(f, &dest).map_err(|e| format!("{}: {e}", f.display()))?;
        bytes += std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
    }
    let size_mb = bytes / 1_000_000 * 2 + 32;
    let _ = std::fs::remove_file(out);
    run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(&dir)
            .arg(out)
            .arg(format!("{size_mb}M")),
        "writing the share disk",
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

pub fn vm_test(root: &Path, cache: &Path, args: &[&str]) -> Result<(), String> {
    let started = std::time::Instant::now();
    require_tools()?;
    let images = cache.join("images");
    std::fs::create_dir_all(&images).map_err(|e| e.to_string())?;
    if let Some(gb) = free_gb(&images)
        && gb < NEEDED_FREE_GB
    {
        return Err(format!(
            "vm-test needs ~{NEEDED_FREE_GB} GB free under {} (has {gb} GB): the image build \
             would fail half-way",
            images.display()
        ));
    }
    let built = crate::package::package(root, cache, "")?;
    let upgrade = crate::package::package(root, cache, "+rebuild1")?;
    let t_pkg = started.elapsed().as_secs_f64();
    let dir = image(root, cache, &images, &[&built.orch, &built.llamacpp])?;
    let t_img = started.elapsed().as_secs_f64() - t_pkg;
    let state = crate::soak::target_dir(root).join("vm-test");
    std::fs::create_dir_all(&state).map_err(|e| e.to_string())?;
    let share = state.join("share.img");
    share_disk(&share, &[&upgrade.orch])?;
    eprintln!(
        "xtask: packages {t_pkg:.0} s, image {t_img:.0} s; booting {} ({} packages in the \
         manifest)",
        dir.display(),
        std::fs::read_to_string(dir.join("manifest.txt"))
            .map(|m| m.lines().count())
            .unwrap_or(0)
    );
    let upgrade_name = upgrade
        .orch
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    let mut cmd = Command::new("python3");
    cmd.arg(root.join("vm-tests/run.py"))
        .arg("--image-dir")
        .arg(&dir)
        .arg("--state-dir")
        .arg(&state)
        .arg("--share-image")
        .arg(&share)
        .arg("--upgrade-deb")
        .arg(&upgrade_name)
        .arg("--summary-json")
        .arg(state.join("summary.json"))
        .args(args);
    let result = run(&mut cmd, "running the VM scenarios");
    eprintln!(
        "xtask: vm-test took {:.0} s (packages {t_pkg:.0} s, image {t_img:.0} s)",
        started.elapsed().as_secs_f64()
    );
    result
}
