//! A real NVIDIA Triton Inference Server for the Triton adapter's tests, from PyPI only: the
//! `nvidia-pytriton` wheel bundles a `tritonserver` binary (2.51.0) with its libraries and the
//! Python backend, which runs on CPU. Installed lean (`--no-deps`, plus numpy for the Python
//! backend) into a venv made with Debian's `/usr/bin/python3.11`: the backend stub links
//! `libpython3.11.so.1.0` from the default library path, and a venv from another 3.11 build
//! (pyenv) mismatches it. The venv lives at `<cache>/triton-<key>`, `key` derived from every
//! input (wheel digest, numpy pin, Python version); `<cache>/triton.json` records it for the
//! tests, which fail (never skip) when it is missing.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// The wheel carrying `tritonserver` 2.51.0 (`py3-none-manylinux_2_35_x86_64`, 55 MB).
pub const WHEEL: (&str, &str, &str) = (
    "nvidia-pytriton==0.7.0",
    "nvidia_pytriton-0.7.0-py3-none-manylinux_2_35_x86_64.whl",
    "21f063ff93bb426d0c06b7a55e7eb9efcfe62c0dddd9a908e9877e18710128df",
);
/// The Python backend stub imports numpy; the wheel requires `numpy<2`.
pub const NUMPY_PIN: &str = "numpy==1.26.4";
/// Debian's Python, whose libpython matches the one the backend stub loads.
pub const PYTHON: &str = "/usr/bin/python3.11";
const MARKER: &str = "llorch-inputs";

fn python_version() -> Result<String, String> {
    let out = Command::new(PYTHON)
        .arg("--version")
        .output()
        .map_err(|e| {
            format!("{PYTHON}: {e} (Triton's Python backend needs Debian's python3.11: apt-get install python3.11 python3.11-venv libpython3.11)")
        })?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Provisions (or finds) the Triton venv; prints how long it took and the disk left.
pub fn fetch_triton(cache: &Path) -> Result<(), String> {
    let started = Instant::now();
    let inputs = format!(
        "{} {} {} {}",
        WHEEL.0,
        WHEEL.2,
        NUMPY_PIN,
        python_version()?
    );
    let key = {
        let tmp = std::env::temp_dir().join(format!("llorch-triton-key-{}", std::process::id()));
        std::fs::write(&tmp, &inputs).map_err(|e| e.to_string())?;
        let k = super::sha256(&tmp);
        let _ = std::fs::remove_file(&tmp);
        k?
    };
    let venv = cache.join(format!("triton-{}", &key[..12]));
    let marker = venv.join(MARKER);
    let server = venv.join("lib/python3.11/site-packages/pytriton/tritonserver/bin/tritonserver");
    let cached = std::fs::read_to_string(&marker).ok().as_deref() == Some(inputs.as_str())
        && server.is_file();
    if !cached {
        let dl = cache.join("downloads");
        std::fs::create_dir_all(&dl).map_err(|e| e.to_string())?;
        let wheel = super::pip_download(PYTHON, &dl, WHEEL, false)?;
        let _ = std::fs::remove_dir_all(&venv);
        super::sh(
            Command::new(PYTHON).args(["-m", "venv"]).arg(&venv),
            "creating the Triton venv",
        )?;
        super::sh(
            Command::new(venv.join("bin/pip"))
                .args([
                    "install",
                    "--quiet",
                    "--no-deps",
                    "--no-cache-dir",
                    "--disable-pip-version-check",
                ])
                .arg(&wheel)
                .arg(NUMPY_PIN),
            &format!("pip install --no-deps {} {NUMPY_PIN}", WHEEL.0),
        )?;
        // The Python backend looks for its stub next to itself; the wheel keeps one per Python.
        let ts = venv.join("lib/python3.11/site-packages/pytriton/tritonserver");
        std::fs::copy(
            ts.join("python_backend_stubs/3.11/triton_python_backend_stub"),
            ts.join("backends/python/triton_python_backend_stub"),
        )
        .map_err(|e| format!("copying the python backend stub: {e}"))?;
        if !server.is_file() {
            return Err(format!("{} missing after install", server.display()));
        }
        std::fs::write(&marker, &inputs).map_err(|e| e.to_string())?;
    }
    let record = format!(
        "{{\n  \"venv\": \"{}\",\n  \"tritonserver\": \"{}\",\n  \"backends\": \"{}\"\n}}\n",
        venv.display(),
        server.display(),
        venv.join("lib/python3.11/site-packages/pytriton/tritonserver/backends")
            .display()
    );
    std::fs::write(cache.join("triton.json"), &record).map_err(|e| e.to_string())?;
    eprintln!(
        "xtask: Triton ({}) {} in {:.1} s: {}",
        WHEEL.0,
        if cached { "cached" } else { "installed (cold)" },
        started.elapsed().as_secs_f64(),
        venv.display()
    );
    let _ = Command::new("du").args(["-sh"]).arg(&venv).status();
    let _ = Command::new("df")
        .args(["-h", "--output=target,avail,pcent"])
        .arg(cache)
        .status();
    Ok(())
}
