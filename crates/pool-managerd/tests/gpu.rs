//! NVML (SPEC §4): without NVML there are "no GPUs" — not a crash — and a replica that needs a
//! GPU stays Unready with a clear last_error. The GPU-present path runs only where a GPU is:
//! `LLORCH_GPU_TESTS=1` opts in (and then a missing GPU fails the test).

use std::time::Duration;

use pool_managerd::gpu::{GpuError, Gpus};

#[test]
fn missing_nvml_library_means_no_gpus() {
    // A real load attempt of a library that is not there: the path hosts without the NVIDIA
    // driver take.
    let g = Gpus::discover_from(std::ffi::OsStr::new("/nonexistent/libnvidia-ml.so.1"));
    let why = g.unavailable_reason().expect("NVML cannot have loaded");
    assert!(!why.is_empty());
    assert_eq!(g.count(), 0);
    assert!(g.list().is_empty());
    assert_eq!(g.check_headroom(&[], u64::MAX), Ok(()), "CPU needs no GPU");
    match g.check_headroom(&[0], 1) {
        Err(GpuError::NoGpus { devices, .. }) => assert_eq!(devices, vec![0]),
        other => panic!("expected NoGpus, got {other:?}"),
    }
}

#[test]
fn system_discovery_never_fails() {
    // On this host NVML may or may not exist; either way discovery answers consistently.
    let g = Gpus::discover();
    if g.unavailable_reason().is_some() {
        assert_eq!(g.count(), 0);
        assert!(g.list().is_empty());
    } else {
        assert_eq!(g.list().len() as u32, g.count());
    }
}

#[tokio::test]
async fn gpu_pool_without_that_gpu_stays_unready_with_a_clear_error() {
    // GPU 63 exists on no realistic host, with or without NVML.
    let e = test_fixtures::engine();
    let toml = format!(
        r#"{keys}
[[pools]]
id = "gpu"
engine = "llamacpp"
model_ref = "{model}"
model_sha256 = "{sha}"
ctx_max = 512
llamacpp = {{ server_binary = "{server}", ready_timeout_ms = 60000 }}

[[pools.replicas]]
id = "g0"
devices = [63]
"#,
        keys = test_fixtures::api_keys_toml(&[("gpu-data-key", "t", "data")]),
        model = e.model.display(),
        sha = e.model_sha256,
        server = e.llama_server.display(),
    );
    let cfg = config_schema::parse_str(&toml, "gpu.toml").unwrap();
    let (engines, _) = pool_managerd::engines::Engines::start(&cfg).unwrap();
    let ready = engines.wait_preloaded(Duration::from_secs(30)).await;
    assert!(!ready);
    let rec = engines.records().await;
    assert_eq!(rec.len(), 1);
    let r = &rec[0];
    assert!(!r.ready && !r.cpu, "{r:?}");
    assert!(r.pid.is_none(), "no engine may have been started: {r:?}");
    assert_eq!(r.restarts, 0, "a start that never happened is no restart");
    let err = r.last_error.as_deref().unwrap_or_default();
    assert!(
        err.contains("no GPUs on this host") || err.contains("GPU 63 does not exist"),
        "{err}"
    );
    engines.shutdown().await;
}

#[test]
fn gpu_present_when_opted_in() {
    if std::env::var_os("LLORCH_GPU_TESTS").is_none() {
        eprintln!(
            "SKIPPED gpu_present_when_opted_in: needs an NVIDIA GPU; run with LLORCH_GPU_TESTS=1"
        );
        return;
    }
    let g = Gpus::discover();
    assert!(
        g.unavailable_reason().is_none(),
        "LLORCH_GPU_TESTS=1 but NVML is unavailable: {:?}",
        g.unavailable_reason()
    );
    let list = g.list();
    assert!(!list.is_empty(), "LLORCH_GPU_TESTS=1 but NVML lists no GPU");
    let gpu0 = &list[0];
    assert!(gpu0.memory_total_bytes > 0, "{gpu0:?}");
    assert!(
        gpu0.memory_free_bytes <= gpu0.memory_total_bytes,
        "{gpu0:?}"
    );
    assert!(
        gpu0.utilization_ratio
            .is_some_and(|u| (0.0..=1.0).contains(&u))
    );
    assert_eq!(g.check_headroom(&[0], 1), Ok(()));
    assert!(matches!(
        g.check_headroom(&[0], u64::MAX),
        Err(GpuError::Insufficient { .. })
    ));
    assert!(matches!(
        g.check_headroom(&[g.count()], 1),
        Err(GpuError::Missing { .. })
    ));
}
