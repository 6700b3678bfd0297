//! `cargo xtask package`: the Debian packages of the appliance, built with `dpkg-deb`.
//!
//! - `llama-orch` — the daemons and the CLI (release build, stripped), the units from
//!   `systemd/`, the sysusers file, default configs under /etc/llama-orch (conffiles), the
//!   alert rules and dashboard from `monitoring/`, examples and docs; maintainer scripts from
//!   `packaging/debian/`.
//! - `llama-orch-llamacpp` — the CPU `llama-server` that `cargo xtask fetch-engine` built from
//!   the pinned llama.cpp sources, at /usr/lib/llama-orch/llama-server.
//!
//! Why `dpkg-deb` and not cargo-deb: one package carries binaries of four crates plus files
//! from across the repository, and a second one carries a C++ engine; dpkg-deb is on every
//! Debian/Ubuntu host already, so packaging adds no tool to compile. The control files are
//! written here, in a few lines, from the workspace version.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The binaries of the `llama-orch` package: (cargo package, binary).
const BINARIES: [(&str, &str); 4] = [
    ("orchestratord", "orchestratord"),
    ("pool-managerd", "pool-managerd"),
    ("llorch-adapterd", "llorch-adapterd"),
    ("llama-orch-cli", "llorch"),
];

/// Files are dated to this (the workspace's first release) so that two builds of the same
/// inputs give the same package bytes (dpkg-deb also honours SOURCE_DATE_EPOCH).
const SOURCE_DATE_EPOCH: &str = "1767225600";

/// What `package` built.
pub struct Built {
    pub orch: PathBuf,
    pub llamacpp: PathBuf,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let status = cmd.status().map_err(|e| format!("{cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed: {status}"))
    }
}

fn copy(src: &Path, dest: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::copy(src, dest).map_err(|e| format!("{} → {}: {e}", src.display(), dest.display()))?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", dest.display()))
}

fn write(dest: &Path, text: &str, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(dest, text).map_err(|e| format!("{}: {e}", dest.display()))?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", dest.display()))
}

fn files_in(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    Ok(out)
}

/// The shared libraries a binary needs, by soname, as `ldd` reports them.
fn needed_libraries(bin: &Path) -> Result<Vec<String>, String> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .map_err(|e| format!("ldd: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.contains(".so"))
        .map(str::to_owned)
        .collect())
}

/// The Debian packages that provide the libraries our binaries link. A library we do not know
/// fails the build: a package whose `Depends` misses a library installs but cannot start.
fn depends_for(bins: &[PathBuf], extra: &[&str]) -> Result<String, String> {
    let mut deps: Vec<&str> = vec!["libc6 (>= 2.36)"];
    for bin in bins {
        for lib in needed_libraries(bin)? {
            let dep = match lib.as_str() {
                l if l.starts_with("linux-vdso") || l.starts_with("/lib64/ld-linux") => continue,
                "libc.so.6" | "libm.so.6" | "libpthread.so.0" | "libdl.so.2" | "librt.so.1" => {
                    continue;
                }
                "libgcc_s.so.1" => "libgcc-s1",
                "libstdc++.so.6" => "libstdc++6",
                "libgomp.so.1" => "libgomp1",
                other => {
                    return Err(format!(
                        "{} links {other}: add its Debian package to package.rs depends_for",
                        bin.display()
                    ));
                }
            };
            if !deps.contains(&dep) {
                deps.push(dep);
            }
        }
    }
    deps.extend(extra);
    Ok(deps.join(", "))
}

fn control(name: &str, version: &str, depends: &str, description: &str) -> String {
    format!(
        "Package: {name}\nVersion: {version}\nArchitecture: amd64\nMaintainer: llama-orch \
         developers <llama-orch@localhost>\nSection: net\nPriority: optional\nDepends: \
         {depends}\nHomepage: https://github.com/llama-orch/llama-orch\nDescription: \
         {description}\n"
    )
}

/// `dpkg-deb --build` with root-owned files and fixed dates.
fn build_deb(stage: &Path, out: &Path) -> Result<(), String> {
    run(Command::new("find").arg(stage).args([
        "-exec",
        "touch",
        "-h",
        "-d",
        &format!("@{SOURCE_DATE_EPOCH}"),
        "{}",
        "+",
    ]))?;
    run(Command::new("dpkg-deb")
        .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        .args(["--root-owner-group", "-Zzstd", "--build"])
        .arg(stage)
        .arg(out))
}

/// Builds both packages into `target/debian/`. `version_suffix` (e.g. `+rebuild1`) makes a
/// newer version of the same code: the VM tests install it to exercise an upgrade.
pub fn package(root: &Path, cache: &Path, version_suffix: &str) -> Result<Built, String> {
    let mut args = vec!["build", "--release", "--locked", "--bins"];
    for (pkg, _) in BINARIES {
        args.extend(["-p", pkg]);
    }
    if !crate::cargo(&args, &[]) {
        return Err("the release build failed".into());
    }
    let version = format!("{}{version_suffix}", env!("CARGO_PKG_VERSION"));
    let out_dir = crate::soak::target_dir(root).join("debian");
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;

    // ---- llama-orch ----
    let stage = out_dir.join(format!("llama-orch_{version}_amd64"));
    let _ = std::fs::remove_dir_all(&stage);
    let release = crate::soak::target_dir(root).join("release");
    let mut installed = Vec::new();
    for (_, bin) in BINARIES {
        let dest = stage.join("usr/bin").join(bin);
        std::fs::create_dir_all(dest.parent().unwrap_or(&stage)).map_err(|e| e.to_string())?;
        // Release binaries carry debug info for backtraces in development; the package does
        // not need it (it takes the CLI from ~170 MB to ~30 MB).
        run(Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&dest)
            .arg(release.join(bin)))?;
        installed.push(dest);
    }
    let units = root.join("systemd");
    for f in files_in(&units)? {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.ends_with(".service") || name.ends_with(".socket") {
            copy(&f, &stage.join("lib/systemd/system").join(name), 0o644)?;
        }
    }
    copy(
        &units.join("llorch.sysusers.conf"),
        &stage.join("usr/lib/sysusers.d/llorch.conf"),
        0o644,
    )?;
    let deb = root.join("packaging/debian");
    for conf in ["orchestratord.toml", "pool-managerd.toml"] {
        copy(
            &deb.join(conf),
            &stage.join("etc/llama-orch").join(conf),
            0o644,
        )?;
    }
    let monitoring = root.join("monitoring");
    if monitoring.is_dir() {
        let share = stage.join("usr/share/llama-orch");
        std::fs::create_dir_all(&share).map_err(|e| e.to_string())?;
        run(Command::new("cp").arg("-r").arg(&monitoring).arg(&share))?;
    }
    let doc = stage.join("usr/share/doc/llama-orch");
    copy(&root.join("README.md"), &doc.join("README.md"), 0o644)?;
    for f in files_in(&root.join("docs"))? {
        if f.extension().is_some_and(|e| e == "md") {
            copy(&f, &doc.join(f.file_name().unwrap_or_default()), 0o644)?;
        }
    }
    for f in files_in(&root.join("examples"))? {
        copy(
            &f,
            &doc.join("examples").join(f.file_name().unwrap_or_default()),
            0o644,
        )?;
    }
    write(
        &doc.join("copyright"),
        "llama-orch\nLicense: Apache-2.0\n(see /usr/share/common-licenses/Apache-2.0)\n",
        0o644,
    )?;
    let depends = depends_for(&installed, &["systemd (>= 252)"])?;
    write(
        &stage.join("DEBIAN/control"),
        &control(
            "llama-orch",
            &version,
            &depends,
            "queue-centric LLM inference orchestrator\n orchestratord (the OrchQueue v1 and \
             OpenAI-compatible API), pool-managerd (engine\n supervision, model catalog), \
             llorch-adapterd (one per engine replica) and\n the llorch CLI, as \
             socket-activated systemd services.",
        ),
        0o644,
    )?;
    write(
        &stage.join("DEBIAN/conffiles"),
        "/etc/llama-orch/orchestratord.toml\n/etc/llama-orch/pool-managerd.toml\n",
        0o644,
    )?;
    for script in ["postinst", "prerm", "postrm"] {
        copy(&deb.join(script), &stage.join("DEBIAN").join(script), 0o755)?;
    }
    let orch = out_dir.join(format!("llama-orch_{version}_amd64.deb"));
    build_deb(&stage, &orch)?;

    // ---- llama-orch-llamacpp ----
    let server = crate::provisioned(cache, "llama_server")?;
    let engine_version = crate::pins::Pins::committed()
        .llama_cpp_sdist
        .0
        .split("==")
        .nth(1)
        .unwrap_or("0")
        .to_owned();
    let stage = out_dir.join(format!("llama-orch-llamacpp_{engine_version}_amd64"));
    let _ = std::fs::remove_dir_all(&stage);
    let dest = stage.join("usr/lib/llama-orch/llama-server");
    copy(&server, &dest, 0o755)?;
    let depends = depends_for(std::slice::from_ref(&dest), &[])?;
    write(
        &stage.join("DEBIAN/control"),
        &control(
            "llama-orch-llamacpp",
            &engine_version,
            &depends,
            "llama.cpp's llama-server (CPU build) for llama-orch\n Built by `cargo xtask \
             fetch-engine` from the llama.cpp sources pinned by SHA-256\n (vendored in the \
             llama-cpp-python sdist). pool-managerd runs it for pools\n with a \
             [pools.llamacpp] section: server_binary = \"/usr/lib/llama-orch/llama-server\".",
        ),
        0o644,
    )?;
    let llamacpp = out_dir.join(format!("llama-orch-llamacpp_{engine_version}_amd64.deb"));
    build_deb(&stage, &llamacpp)?;
    for p in [&orch, &llamacpp] {
        let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        eprintln!("xtask: built {} ({:.1} MB)", p.display(), size as f64 / 1e6);
    }
    Ok(Built { orch, llamacpp })
}
