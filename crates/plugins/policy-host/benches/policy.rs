//! Per-call overhead of policy plugin decisions through the real host: the well-behaved WAT
//! plugin (examples/plugins/wat/good.wat) on a pool of 8 replicas. Prints p50/p99 latency of
//! admission and placement calls, host decisions/s on one thread and on all cores, and the
//! cost of a fallback (fuel exhausted) for comparison.
//!
//! `cargo bench -p llorch-policy-host --bench policy` (`-- --quick` for fewer iterations).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use llorch_policy_host::{
    AdmissionSnapshot, Limits, ModuleSource, Outcome, PlacementSnapshot, PluginSpec, PolicyHost,
    Priority, QueueState, ReplicaLoad, ReplicaState, TaskInfo, TenantUsage,
};

fn wasm(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../examples/plugins/wat")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("read example plugin");
    wat::parse_str(&text).expect("compile example plugin")
}

fn task() -> TaskInfo {
    TaskInfo {
        task_id: "0b7f9d52-2f4e-4d7e-9a61-3f0c1c5b9e11".into(),
        tenant: "acme".into(),
        priority: Priority::Interactive,
        model_ref: "hf:HuggingFaceTB/SmolLM2-135M-Instruct".into(),
        ctx: 4096,
        max_tokens: 256,
        prompt_tokens: 120,
        deadline_ms: Some(30_000),
        session_id: Some("sess-42".into()),
    }
}

fn replicas() -> Vec<ReplicaLoad> {
    (0..8)
        .map(|i| ReplicaLoad {
            replica_id: format!("replica-{i}"),
            candidate: i % 3 != 0,
            state: ReplicaState::Ready,
            slots_total: 8,
            slots_busy: (i * 3) % 8,
            devices: vec![i],
            running_by_tenant: BTreeMap::from([
                ("acme".to_string(), 1),
                ("globex".to_string(), (i * 3) % 8),
            ]),
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn measure(n: usize, mut f: impl FnMut()) -> (Duration, Duration, f64) {
    for _ in 0..n / 10 {
        f();
    }
    let mut samples = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        f();
        samples.push(t.elapsed());
    }
    let total = start.elapsed();
    samples.sort();
    (
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        n as f64 / total.as_secs_f64(),
    )
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 2_000 } else { 20_000 };
    let registry = prometheus::Registry::new();
    let host = Arc::new(PolicyHost::new(&registry).expect("host"));
    let spec = |id: &str, bytes, fuel| PluginSpec {
        id: id.into(),
        module: ModuleSource::Bytes(bytes),
        limits: Limits {
            fuel,
            ..Limits::default()
        },
        grants: vec![],
    };
    host.reload("pool", &spec("good", wasm("good.wat"), 10_000_000))
        .expect("load good.wat");
    // Answers a constant: what remains is the host's own per-call overhead (serialize,
    // instantiate, copy in/out, validate, log, count).
    let constant = r#"(module (memory (export "memory") 1)
        (data (i32.const 0) "{\"decision\":\"admit\"}")
        (func (export "llorch_abi_version") (result i32) (i32.const 0x10000))
        (func (export "llorch_alloc") (param i32) (result i32) (i32.const 1024))
        (func (export "llorch_admit") (param i32 i32) (result i64) (i64.const 20)))"#;
    host.reload(
        "const",
        &spec(
            "const",
            wat::parse_str(constant).expect("constant plugin"),
            10_000_000,
        ),
    )
    .expect("load constant plugin");
    host.reload("loop", &spec("loop", wasm("loop.wat"), 100_000))
        .expect("load loop.wat");

    let adm = AdmissionSnapshot {
        pool_id: "pool".into(),
        now_ms: 1_700_000_000_000,
        task: task(),
        queue: QueueState {
            capacity: 256,
            depth_interactive: 12,
            depth_batch: 40,
        },
        tenant_usage: TenantUsage {
            running: 3,
            queued: 5,
        },
        replicas: replicas(),
    };
    let pla = PlacementSnapshot {
        pool_id: "pool".into(),
        now_ms: 1_700_000_000_000,
        task: task(),
        queue: adm.queue,
        replicas: replicas(),
    };
    let mut constant_adm = adm.clone();
    constant_adm.pool_id = "const".into();
    let mut looping = adm.clone();
    looping.pool_id = "loop".into();
    let bytes = |s: &dyn erased::Ser| s.len();
    let (adm_len, pla_len) = (bytes(&adm), bytes(&pla));

    assert!(matches!(host.admit(&adm), Outcome::Decided { .. }));
    assert!(matches!(host.place(&pla), Outcome::Decided { .. }));
    assert!(matches!(host.admit(&looping), Outcome::Fallback { .. }));
    assert!(matches!(host.admit(&constant_adm), Outcome::Decided { .. }));

    // The same plugin in a host without the instance pool (what `PolicyHost::new` falls back
    // to where the pool's address space cannot be reserved): the pool's gain, measured.
    let on_demand =
        Arc::new(PolicyHost::new_on_demand(&prometheus::Registry::new()).expect("host"));
    on_demand
        .reload("pool", &spec("good", wasm("good.wat"), 10_000_000))
        .expect("load good.wat on demand");
    assert!(matches!(on_demand.admit(&adm), Outcome::Decided { .. }));

    let rows = [
        (
            format!("admission, good.wat ({adm_len} B)"),
            measure(n, || {
                std::hint::black_box(host.admit(&adm));
            }),
        ),
        (
            format!("placement, good.wat ({pla_len} B)"),
            measure(n, || {
                std::hint::black_box(host.place(&pla));
            }),
        ),
        (
            "admission, constant answer (overhead)".to_string(),
            measure(n, || {
                std::hint::black_box(host.admit(&constant_adm));
            }),
        ),
        (
            "admission, good.wat, no instance pool".to_string(),
            measure(n, || {
                std::hint::black_box(on_demand.admit(&adm));
            }),
        ),
        (
            "fallback: out of fuel (100k fuel)".to_string(),
            measure(n / 4, || {
                std::hint::black_box(host.admit(&looping));
            }),
        ),
    ];

    // Throughput on every core: the host is shared (&self calls, no lock held during a call).
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per_thread = n / 2;
    let parallel = |host: &Arc<PolicyHost>| {
        let start = Instant::now();
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (host, adm) = (host.clone(), adm.clone());
                std::thread::spawn(move || {
                    for _ in 0..per_thread {
                        std::hint::black_box(host.admit(&adm));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("bench thread");
        }
        (threads * per_thread) as f64 / start.elapsed().as_secs_f64()
    };
    let parallel_rows = [
        (
            format!("admission, good.wat, {threads} threads"),
            parallel(&host),
        ),
        (
            format!("same, no instance pool, {threads} threads"),
            parallel(&on_demand),
        ),
    ];

    println!();
    println!("policy plugin calls through PolicyHost (good.wat, 8 replicas, {n} calls per row)");
    println!(
        "{:<40} {:>10} {:>10} {:>14}",
        "call", "p50 µs", "p99 µs", "decisions/s"
    );
    for (name, (p50, p99, rate)) in &rows {
        println!(
            "{name:<40} {:>10} {:>10} {:>14.0}",
            us(*p50),
            us(*p99),
            rate
        );
    }
    for (name, rate) in &parallel_rows {
        println!("{name:<40} {:>10} {:>10} {rate:>14.0}", "-", "-");
    }
}

/// Snapshot size in bytes as the host serializes it.
mod erased {
    pub trait Ser {
        fn len(&self) -> usize;
    }
    impl<T: serde::Serialize> Ser for T {
        fn len(&self) -> usize {
            serde_json::to_vec(self).map_or(0, |v| v.len())
        }
    }
}
