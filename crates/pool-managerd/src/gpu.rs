//! GPUs through NVML (nvml-wrapper): discovery, VRAM headroom before an engine starts
//! (SPEC §4: fail fast, stay Unready with backoff) and utilization for `/metrics`.
//!
//! NVML is loaded at runtime (libnvidia-ml.so). A host without it, or without GPUs, has "no
//! GPUs": that is logged once and is not an error. Replicas with a device mask then cannot
//! start (they stay Unready with a clear `last_error`); CPU replicas run only where the config
//! says `allow_cpu_inference = true`.
//!
//! Device ordinals are NVML indices, which follow the PCI bus order; the supervisor starts
//! engines with `CUDA_DEVICE_ORDER=PCI_BUS_ID` so that CUDA numbers GPUs the same way.

use std::sync::OnceLock;

use nvml_wrapper::Nvml;

/// One GPU as NVML reports it now.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuInfo {
    /// NVML index (= CUDA ordinal under `CUDA_DEVICE_ORDER=PCI_BUS_ID`).
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub memory_free_bytes: u64,
    /// Share of the last sample period a kernel ran, 0..=1.
    pub utilization_ratio: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GpuError {
    #[error("no GPUs on this host ({reason}); the replica needs GPU {devices:?}")]
    NoGpus { reason: String, devices: Vec<u32> },
    #[error("GPU {device} does not exist (this host has {count})")]
    Missing { device: u32, count: u32 },
    #[error("GPU {device}: NVML error: {message}")]
    Nvml { device: u32, message: String },
    #[error(
        "insufficient VRAM headroom on GPU {devices:?}: need ~{need_bytes} bytes, {free_bytes} free"
    )]
    Insufficient {
        devices: Vec<u32>,
        need_bytes: u64,
        free_bytes: u64,
    },
}

/// NVML, or why there is none.
pub struct Gpus {
    nvml: Result<Nvml, String>,
}

impl Gpus {
    /// Initializes NVML. Never fails: without NVML the result reports no GPUs.
    pub fn discover() -> Gpus {
        Self::discover_with(Nvml::init())
    }

    /// [`Gpus::discover`] loading NVML from `lib` (a path to libnvidia-ml.so) instead of the
    /// system default.
    pub fn discover_from(lib: &std::ffi::OsStr) -> Gpus {
        Self::discover_with(Nvml::builder().lib_path(lib).init())
    }

    fn discover_with(nvml: Result<Nvml, nvml_wrapper::error::NvmlError>) -> Gpus {
        let gpus = Gpus {
            nvml: nvml.map_err(|e| e.to_string()),
        };
        match &gpus.nvml {
            Ok(_) => {
                let list = gpus.list();
                tracing::info!(
                    count = list.len(),
                    gpus = ?list.iter().map(|g| format!("{}:{}", g.index, g.name)).collect::<Vec<_>>(),
                    "NVML: GPUs discovered"
                );
            }
            Err(e) => tracing::info!(reason = %e, "NVML unavailable: no GPUs (CPU replicas only)"),
        }
        gpus
    }

    /// Why there are no GPUs, when NVML could not be loaded or initialized.
    pub fn unavailable_reason(&self) -> Option<&str> {
        self.nvml.as_ref().err().map(String::as_str)
    }

    pub fn count(&self) -> u32 {
        self.nvml
            .as_ref()
            .ok()
            .and_then(|n| n.device_count().ok())
            .unwrap_or(0)
    }

    /// Every GPU with its memory and utilization now; empty without NVML.
    pub fn list(&self) -> Vec<GpuInfo> {
        let Ok(nvml) = &self.nvml else {
            return Vec::new();
        };
        (0..self.count())
            .filter_map(|i| {
                let d = nvml.device_by_index(i).ok()?;
                let mem = d.memory_info().ok()?;
                Some(GpuInfo {
                    index: i,
                    name: d.name().unwrap_or_default(),
                    uuid: d.uuid().unwrap_or_default(),
                    memory_total_bytes: mem.total,
                    memory_used_bytes: mem.used,
                    memory_free_bytes: mem.free,
                    utilization_ratio: d
                        .utilization_rates()
                        .ok()
                        .map(|u| f64::from(u.gpu.min(100)) / 100.0),
                })
            })
            .collect()
    }

    /// Checks that every GPU of `devices` exists and that together they have `need_bytes`
    /// of free memory. An empty mask (CPU) always passes.
    pub fn check_headroom(&self, devices: &[u32], need_bytes: u64) -> Result<(), GpuError> {
        if devices.is_empty() {
            return Ok(());
        }
        let nvml = self.nvml.as_ref().map_err(|reason| GpuError::NoGpus {
            reason: reason.clone(),
            devices: devices.to_vec(),
        })?;
        let count = self.count();
        if count == 0 {
            return Err(GpuError::NoGpus {
                reason: "NVML reports 0 devices".into(),
                devices: devices.to_vec(),
            });
        }
        let mut free = 0u64;
        for &device in devices {
            if device >= count {
                return Err(GpuError::Missing { device, count });
            }
            let mem = nvml
                .device_by_index(device)
                .and_then(|d| d.memory_info())
                .map_err(|e| GpuError::Nvml {
                    device,
                    message: e.to_string(),
                })?;
            free = free.saturating_add(mem.free);
        }
        if free < need_bytes {
            return Err(GpuError::Insufficient {
                devices: devices.to_vec(),
                need_bytes,
                free_bytes: free,
            });
        }
        Ok(())
    }
}

/// The process-wide NVML handle, initialized (and logged) once on first use.
pub fn gpus() -> &'static Gpus {
    static GPUS: OnceLock<Gpus> = OnceLock::new();
    GPUS.get_or_init(Gpus::discover)
}

/// VRAM an engine needs for a model file of `model_bytes`: the weights plus a fifth for the
/// KV cache, compute buffers and the CUDA context. A coarse floor, meant to refuse loads that
/// cannot fit rather than to pack GPUs tightly.
pub fn vram_estimate(model_bytes: u64) -> u64 {
    model_bytes.saturating_add(model_bytes / 5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_mask_needs_no_gpu() {
        let g = Gpus {
            nvml: Err("no NVML here".into()),
        };
        assert_eq!(g.check_headroom(&[], u64::MAX), Ok(()));
        assert!(g.list().is_empty());
        assert_eq!(
            g.check_headroom(&[0, 1], 1),
            Err(GpuError::NoGpus {
                reason: "no NVML here".into(),
                devices: vec![0, 1]
            })
        );
    }

    #[test]
    fn estimate_adds_headroom() {
        assert_eq!(vram_estimate(1000), 1200);
        assert_eq!(vram_estimate(u64::MAX), u64::MAX);
    }
}
