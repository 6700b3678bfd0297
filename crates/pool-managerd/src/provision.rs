//! Engine and model provisioning: build `llama-server` from llama.cpp sources with cmake (CUDA
//! when `nvcc` is on PATH, CPU otherwise), cached by the sources' SHA-256 so a rebuild only
//! happens when the sources change; verify model artifacts against their digest before load
//! (UNTRUSTED_ARTIFACT on mismatch).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use sha2::Digest;

/// Where provisioned engines, models and build tools live: `$XDG_CACHE_HOME/llama-orch` or
/// `~/.cache/llama-orch`. (`cargo xtask fetch-engine` and the test fixtures use the same rule;
/// they stay dependency-free, so they spell it out themselves.)
pub fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("llama-orch")
}

/// Lower-case hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Checksum mismatch of an artifact: it must not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UntrustedArtifact {
    pub path: PathBuf,
    pub expected: String,
    pub actual: String,
}

impl std::fmt::Display for UntrustedArtifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "UNTRUSTED_ARTIFACT: {} has sha256 {} but {} was required",
            self.path.display(),
            self.actual,
            self.expected
        )
    }
}

impl std::error::Error for UntrustedArtifact {}

/// Verifies `path` against `expected` (hex SHA-256).
pub fn verify_artifact(path: &Path, expected: &str) -> anyhow::Result<()> {
    let actual = sha256_file(path).with_context(|| format!("reading {}", path.display()))?;
    if !actual.eq_ignore_ascii_case(expected) {
        return Err(UntrustedArtifact {
            path: path.to_path_buf(),
            expected: expected.to_ascii_lowercase(),
            actual,
        }
        .into());
    }
    Ok(())
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    tracing::info!(command = ?cmd, "{what}");
    let status = cmd
        .status()
        .with_context(|| format!("{what}: cannot start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Finds the llama.cpp source root inside an unpacked tree: the directory holding
/// `CMakeLists.txt` and `tools/server` (llama-cpp-python vendors it under `vendor/llama.cpp`).
fn find_llama_cpp_root(dir: &Path) -> Option<PathBuf> {
    let is_root = |p: &Path| p.join("CMakeLists.txt").is_file() && p.join("tools/server").is_dir();
    if is_root(dir) {
        return Some(dir.to_path_buf());
    }
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        if depth > 4 {
            continue;
        }
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                if is_root(&p) {
                    return Some(p);
                }
                stack.push((p, depth + 1));
            }
        }
    }
    None
}

/// Builds `llama-server` from a source tarball (llama.cpp's own, or any tarball that vendors
/// it) into `cache/llamacpp-<digest12>-<cpu|cuda>/`, or returns the cached binary.
pub fn build_llama_server(source: &Path, cache: &Path, cmake: &Path) -> anyhow::Result<PathBuf> {
    let digest = sha256_file(source).with_context(|| format!("reading {}", source.display()))?;
    let cuda = which("nvcc").is_some();
    let flavour = if cuda { "cuda" } else { "cpu" };
    let out = cache.join(format!("llamacpp-{}-{flavour}", &digest[..12]));
    let bin = out.join("bin/llama-server");
    if bin.is_file() {
        tracing::info!(path = %bin.display(), "llama-server cached");
        return Ok(bin);
    }
    let work = cache.join(format!("build-{}", &digest[..12]));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    run(
        Command::new("tar")
            .arg("-xzf")
            .arg(source)
            .arg("-C")
            .arg(&work),
        "unpacking llama.cpp sources",
    )?;
    let root = find_llama_cpp_root(&work)
        .context("no llama.cpp source tree (CMakeLists.txt + tools/server) in the tarball")?;
    let build = work.join("build");
    let mut configure = Command::new(cmake);
    configure
        .arg("-S")
        .arg(&root)
        .arg("-B")
        .arg(&build)
        .args([
            "-DCMAKE_BUILD_TYPE=Release",
            "-DGGML_NATIVE=OFF",
            "-DBUILD_SHARED_LIBS=OFF",
        ])
        .args(["-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF"])
        // No network during the build: the web UI would be downloaded, TLS is not needed on a
        // loopback engine, and older trees know LLAMA_CURL instead of LLAMA_OPENSSL.
        .args([
            "-DLLAMA_BUILD_UI=OFF",
            "-DLLAMA_USE_PREBUILT_UI=OFF",
            "-DLLAMA_OPENSSL=OFF",
            "-DLLAMA_CURL=OFF",
        ]);
    if cuda {
        configure.arg("-DGGML_CUDA=ON");
    }
    if which("ninja").is_some() || cmake.parent().is_some_and(|d| d.join("ninja").is_file()) {
        configure.args(["-G", "Ninja"]);
        if let Some(dir) = cmake.parent() {
            let path = std::env::var("PATH").unwrap_or_default();
            configure.env("PATH", format!("{}:{path}", dir.display()));
        }
    }
    run(&mut configure, "configuring llama.cpp")?;
    let jobs = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .to_string();
    let mut b = Command::new(cmake);
    b.arg("--build")
        .arg(&build)
        .args(["--target", "llama-server", "-j", &jobs]);
    if let Some(dir) = cmake.parent() {
        let path = std::env::var("PATH").unwrap_or_default();
        b.env("PATH", format!("{}:{path}", dir.display()));
    }
    run(&mut b, "building llama-server")?;
    std::fs::create_dir_all(out.join("bin"))?;
    std::fs::copy(build.join("bin/llama-server"), &bin).context("copying llama-server")?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(bin)
}

/// First `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_rejects_mismatch_with_untrusted_artifact() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        std::fs::write(&p, b"hello").unwrap();
        let good = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        verify_artifact(&p, good).unwrap();
        let err = verify_artifact(&p, &"0".repeat(64)).unwrap_err();
        let u = err.downcast_ref::<UntrustedArtifact>().unwrap();
        assert_eq!(u.actual, good);
        assert!(err.to_string().starts_with("UNTRUSTED_ARTIFACT"));
    }
}
