//! Real WebAssembly modules (examples/plugins/wat, compiled with the `wat` crate) in the real
//! host (ORCH-3048): decisions, limits, fallbacks, refusals, determinism, atomic swap.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use llorch_policy_host::{
    AdmissionDecision, FallbackReason, Grant, Limits, LoadError, ModuleSource, Outcome,
    PlacementDecision, PluginSpec, Priority,
};

const DECISIONS: &str = "llorch_policy_decisions_total";
const FALLBACKS: &str = "llorch_policy_fallbacks_total";
const LATENCY: &str = "llorch_policy_call_duration_seconds";

fn fallback_reason<D: std::fmt::Debug>(o: Outcome<D>) -> FallbackReason {
    match o {
        Outcome::Fallback { reason, .. } => reason,
        other => panic!("expected a fallback, got {other:?}"),
    }
}

#[test]
fn orch_3048_good_plugin_decisions_are_applied() {
    let (host, reg) = host();
    host.reload("p", &spec("good", wasm("good.wat"))).unwrap();
    let builtin = AdmissionDecision::Admit;

    let o = host.admit(&admission("p", "blocked"));
    assert_eq!(
        o.clone().decision_or(builtin.clone()),
        AdmissionDecision::Reject {
            reason: "tenant blocked by policy".into()
        }
    );
    match &o {
        Outcome::Decided { plugin, .. } => {
            assert_eq!(plugin.id, "good");
            assert!(plugin.version.starts_with("sha256:"), "{}", plugin.version);
            assert_eq!(plugin.abi, (1, 0));
            assert!(plugin.admits && plugin.places);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        host.admit(&admission("p", "bulk"))
            .decision_or(builtin.clone()),
        AdmissionDecision::Reprioritize {
            priority: Priority::Batch
        }
    );
    // "blockedX" is another tenant: the plugin really reads the tenant field.
    for tenant in ["acme", "blockedX"] {
        assert_eq!(
            host.admit(&admission("p", tenant)).decision(),
            Some(&AdmissionDecision::Admit),
            "{tenant}"
        );
    }

    // Placement: most free slots among candidates. r1 has the most free slots of all but is
    // not a candidate; r3 (6 free) beats r2 (3 free) and r0 (1 free).
    let snap = placement(
        "p",
        vec![
            replica("r0", 3, 4, true),
            replica("r1", 0, 16, false),
            replica("r2", 1, 4, true),
            replica("r3", 2, 8, true),
        ],
    );
    assert_eq!(
        host.place(&snap).decision_or(PlacementDecision::Defer),
        PlacementDecision::Place {
            replica_id: "r3".into()
        }
    );
    // No candidate at all: the plugin defers.
    let none = placement("p", vec![replica("r0", 0, 4, false)]);
    assert_eq!(
        host.place(&none).decision(),
        Some(&PlacementDecision::Defer)
    );

    let labels = |hook, decision| {
        [
            ("pool_id", "p"),
            ("plugin", "good"),
            ("hook", hook),
            ("decision", decision),
        ]
    };
    assert_eq!(metric(&reg, DECISIONS, &labels("admission", "reject")), 1);
    assert_eq!(metric(&reg, DECISIONS, &labels("admission", "admit")), 2);
    assert_eq!(
        metric(&reg, DECISIONS, &labels("admission", "reprioritize")),
        1
    );
    assert_eq!(metric(&reg, DECISIONS, &labels("placement", "place")), 1);
    assert_eq!(metric(&reg, DECISIONS, &labels("placement", "defer")), 1);
    assert_eq!(
        metric(&reg, LATENCY, &[("pool_id", "p"), ("hook", "admission")]),
        4
    );
}

#[test]
fn pools_without_plugin_or_hook_are_not_configured() {
    let (host, reg) = host();
    assert_eq!(host.admit(&admission("p", "acme")), Outcome::NotConfigured);
    // The constant plugin has no placement hook.
    host.reload("p", &spec("c", constant_plugin(r#"{"decision":"admit"}"#)))
        .unwrap();
    assert_eq!(host.place(&placement("p", vec![])), Outcome::NotConfigured);
    assert_eq!(
        host.admit(&admission("other", "acme")),
        Outcome::NotConfigured
    );
    assert!(host.admit(&admission("p", "acme")).decision().is_some());
    assert_eq!(host.pools(), ["p"]);
    host.install("p", None);
    assert_eq!(host.admit(&admission("p", "acme")), Outcome::NotConfigured);
    assert_eq!(metric(&reg, FALLBACKS, &[]), 0);
}

#[test]
fn orch_3048_infinite_loop_is_stopped_by_fuel_and_falls_back() {
    let (host, reg) = host();
    let limits = Limits {
        fuel: 2_000_000,
        ..Limits::default()
    };
    host.reload("p", &spec_with("loop", wasm("loop.wat"), limits, &[]))
        .unwrap();
    let started = Instant::now();
    let o = host.admit(&admission("p", "acme"));
    let took = started.elapsed();
    assert_eq!(fallback_reason(o.clone()), FallbackReason::OutOfFuel);
    // The caller's built-in decision applies.
    assert_eq!(
        o.decision_or(AdmissionDecision::Reject {
            reason: "builtin".into()
        }),
        AdmissionDecision::Reject {
            reason: "builtin".into()
        }
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(
        fallback_reason(host.place(&placement("p", vec![replica("r0", 0, 1, true)]))),
        FallbackReason::OutOfFuel
    );

    // Fuel is the bound, deterministically: a finite loop of 10 000 iterations fits in 1M
    // fuel and is stopped with 10k (timing would be flaky on a loaded machine; fuel is not).
    let counting = |fuel| {
        let text = r#"(module (memory (export "memory") 1)
            (data (i32.const 0) "{\"decision\":\"admit\"}")
            (func (export "llorch_abi_version") (result i32) (i32.const 0x10000))
            (func (export "llorch_alloc") (param i32) (result i32) (i32.const 1024))
            (func (export "llorch_admit") (param i32 i32) (result i64) (local $i i32)
              (loop $l
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br_if $l (i32.lt_u (local.get $i) (i32.const 10000))))
              (i64.const 20)))"#;
        host.load(&spec_with(
            "count",
            wat::parse_str(text).unwrap(),
            Limits {
                fuel,
                ..Limits::default()
            },
            &[],
        ))
        .unwrap()
    };
    assert_eq!(
        counting(1_000_000).admit(&admission("p", "acme")),
        Ok(Some(AdmissionDecision::Admit))
    );
    assert_eq!(
        counting(10_000).admit(&admission("p", "acme")),
        Err(FallbackReason::OutOfFuel)
    );

    let labels = |hook| {
        [
            ("pool_id", "p"),
            ("plugin", "loop"),
            ("hook", hook),
            ("reason", "out_of_fuel"),
        ]
    };
    assert_eq!(metric(&reg, FALLBACKS, &labels("admission")), 1);
    assert_eq!(metric(&reg, FALLBACKS, &labels("placement")), 1);
}

#[test]
fn orch_3048_unbounded_memory_growth_is_refused() {
    let (host, reg) = host();
    let limits = Limits {
        memory_bytes: 1024 * 1024,
        ..Limits::default()
    };
    host.reload("p", &spec_with("grow", wasm("grow.wat"), limits, &[]))
        .unwrap();
    assert_eq!(
        fallback_reason(host.admit(&admission("p", "acme"))),
        FallbackReason::MemoryLimit
    );
    assert_eq!(
        metric(
            &reg,
            FALLBACKS,
            &[
                ("pool_id", "p"),
                ("plugin", "grow"),
                ("hook", "admission"),
                ("reason", "memory_limit")
            ]
        ),
        1
    );
    // The same module with a limit below its initial memory (2 pages) cannot even start:
    // refused at load, not at the first call.
    let err = host
        .load(&spec_with(
            "good",
            wasm("good.wat"),
            Limits {
                memory_bytes: 64 * 1024,
                ..Limits::default()
            },
            &[],
        ))
        .unwrap_err();
    assert!(matches!(err, LoadError::Instantiate(_)), "{err}");
}

#[test]
fn orch_3048_garbage_answers_fall_back() {
    let (host, reg) = host();
    host.reload("p", &spec("garbage", wasm("garbage.wat")))
        .unwrap();
    for (tenant, needle) in [
        ("json", "invalid decision JSON"),
        ("oob", "outside memory"),
        ("huge", "limit is"),
        ("extra", "invalid decision JSON"),
        ("long", "reason is 300 bytes"),
        ("acme", "invalid decision JSON"),
    ] {
        match fallback_reason(host.admit(&admission("p", tenant))) {
            FallbackReason::Malformed(detail) => {
                assert!(detail.contains(needle), "{tenant}: {detail}")
            }
            other => panic!("{tenant}: {other:?}"),
        }
    }
    // A replica that is not a candidate is malformed too.
    let snap = placement("p", vec![replica("r0", 0, 4, true)]);
    match fallback_reason(host.place(&snap)) {
        FallbackReason::Malformed(d) => assert!(d.contains("not a candidate"), "{d}"),
        other => panic!("{other:?}"),
    }
    let malformed = |hook| {
        metric(
            &reg,
            FALLBACKS,
            &[
                ("pool_id", "p"),
                ("plugin", "garbage"),
                ("hook", hook),
                ("reason", "malformed"),
            ],
        )
    };
    assert_eq!(malformed("admission"), 6);
    assert_eq!(malformed("placement"), 1);
    assert_eq!(metric(&reg, DECISIONS, &[]), 0);
}

#[test]
fn orch_3048_wrong_abi_is_refused_at_load() {
    let (host, _) = host();
    let err = host.load(&spec("v2", wasm("abi_v2.wat"))).unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::AbiIncompatible {
                found: (2, 0),
                supported: (1, 0)
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("ABI 2.0"), "{err}");
    // A newer minor of the same major is refused too (it may rely on what this host lacks)...
    let text = std::fs::read_to_string(wat_dir().join("abi_v2.wat"))
        .unwrap()
        .replace("0x20000", "0x10001");
    let err = host
        .load(&spec("v1.1", wat::parse_str(&text).unwrap()))
        .unwrap_err();
    assert!(
        matches!(err, LoadError::AbiIncompatible { found: (1, 1), .. }),
        "{err:?}"
    );
    // ...while 1.0 loads: the refusal is about the version, not the module.
    let text = text.replace("0x10001", "0x10000");
    host.load(&spec("v1.0", wat::parse_str(&text).unwrap()))
        .unwrap();
    // The pool keeps no plugin after failed loads.
    assert!(host.pools().is_empty());
}

#[test]
fn orch_3048_module_shape_errors_are_typed() {
    let (host, _) = host();
    let no_hooks = wat::parse_str(
        r#"(module (memory (export "memory") 1)
            (func (export "llorch_abi_version") (result i32) (i32.const 0x10000))
            (func (export "llorch_alloc") (param i32) (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    assert!(matches!(
        host.load(&spec("x", no_hooks)),
        Err(LoadError::NoHooks)
    ));
    let no_memory = wat::parse_str(
        r#"(module (func (export "llorch_abi_version") (result i32) (i32.const 0x10000)))"#,
    )
    .unwrap();
    assert!(matches!(
        host.load(&spec("x", no_memory)),
        Err(LoadError::MissingExport("memory"))
    ));
    let bad_sig = wat::parse_str(
        r#"(module (memory (export "memory") 1)
            (func (export "llorch_abi_version") (result i32) (i32.const 0x10000))
            (func (export "llorch_alloc") (param i32) (result i32) (i32.const 0))
            (func (export "llorch_admit") (param i32) (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    assert!(matches!(
        host.load(&spec("x", bad_sig)),
        Err(LoadError::BadExport {
            name: "llorch_admit",
            ..
        })
    ));
    assert!(matches!(
        host.load(&spec("x", b"\0asm garbage".to_vec())),
        Err(LoadError::Compile(_))
    ));
    let env_import = wat::parse_str(
        r#"(module (import "env" "now" (func (result i64))) (memory (export "memory") 1))"#,
    )
    .unwrap();
    let err = host.load(&spec("x", env_import)).unwrap_err();
    assert!(err.to_string().contains("env::now"), "{err}");
    let missing = PluginSpec {
        module: ModuleSource::File("/nonexistent/policy.wasm".into()),
        ..spec("x", vec![])
    };
    assert!(matches!(host.load(&missing), Err(LoadError::Read { .. })));
}

#[test]
fn orch_3048_plugins_cannot_reach_files_or_sockets() {
    let (host, _) = host();
    // Refused at load, and no grant changes that: there is no grant for files or sockets.
    for (file, import) in [
        ("wasi_fs.wat", "wasi_snapshot_preview1::path_open"),
        ("wasi_sock.wat", "wasi_snapshot_preview1::sock_accept"),
    ] {
        for grants in [&[][..], &[Grant::Clock, Grant::Random][..]] {
            let err = host
                .load(&spec_with("x", wasm(file), Limits::default(), grants))
                .unwrap_err();
            assert!(
                matches!(err, LoadError::ImportNotAllowed { grant: None, .. }),
                "{file}: {err:?}"
            );
            assert!(err.to_string().contains(import), "{err}");
        }
    }
    // The functions every plugin does get reach no descriptor: no preopened directory (so
    // nothing for path_open to resolve against even if it existed) and no inherited fd.
    host.reload("p", &spec("probe", wasm("wasi_probe.wat")))
        .unwrap();
    assert_eq!(
        host.admit(&admission("p", "acme")).decision(),
        Some(&AdmissionDecision::Admit)
    );
}

#[test]
fn orch_3048_grants_are_explicit_and_deterministic() {
    let (host, _) = host();
    let err = host.load(&spec("g", wasm("granted.wat"))).unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::ImportNotAllowed {
                grant: Some(Grant::Clock),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("grant `clock`"), "{err}");
    let err = host
        .load(&spec_with(
            "g",
            wasm("granted.wat"),
            Limits::default(),
            &[Grant::Clock],
        ))
        .unwrap_err();
    assert!(err.to_string().contains("grant `random`"), "{err}");

    let both = [Grant::Clock, Grant::Random];
    host.reload(
        "p",
        &spec_with("g", wasm("granted.wat"), Limits::default(), &both),
    )
    .unwrap();
    let reason = |snap| match host.admit(&snap).decision() {
        Some(AdmissionDecision::Reject { reason }) => reason.clone(),
        other => panic!("{other:?}"),
    };
    let snap = admission("p", "acme");
    let first = reason(snap.clone());
    assert_eq!(first.len(), 32);
    // The clock is the snapshot's now_ms, in nanoseconds.
    let clock_hex = hex::encode((snap.now_ms * 1_000_000).to_le_bytes());
    assert_eq!(&first[..16], clock_hex);
    // Randomness is a function of the snapshot: same snapshot, same bytes...
    for _ in 0..20 {
        assert_eq!(reason(snap.clone()), first);
    }
    // ...another snapshot, other bytes.
    let other = reason(admission("p", "other-tenant"));
    assert_eq!(&other[..16], clock_hex);
    assert_ne!(&other[16..], &first[16..]);
}

#[test]
fn orch_3048_same_snapshot_same_decision_even_after_traps() {
    let (host, _) = host();
    host.reload("good", &spec("good", wasm("good.wat")))
        .unwrap();
    host.reload("state", &spec("stateful", wasm("stateful.wat")))
        .unwrap();
    host.reload("loop", &spec("loop", wasm("loop.wat")))
        .unwrap();

    let snap = placement(
        "good",
        vec![
            replica("a", 1, 4, true),
            replica("b", 0, 4, true),
            replica("c", 0, 4, true),
        ],
    );
    let first = host.place(&snap).decision().cloned();
    assert_eq!(
        first,
        Some(PlacementDecision::Place {
            replica_id: "b".into()
        })
    );
    for i in 0..300 {
        // Interleave traps and fuel exhaustion: they must leave nothing behind.
        if i % 50 == 0 {
            let mut l = admission("loop", "acme");
            l.pool_id = "loop".into();
            assert_eq!(fallback_reason(host.admit(&l)), FallbackReason::OutOfFuel);
        }
        assert_eq!(host.place(&snap).decision().cloned(), first, "call {i}");
    }

    // The stateful plugin admits only in pristine state; a crash scribbles on its memory and
    // globals before trapping. Every call must still see a fresh instance.
    for i in 0..100 {
        assert_eq!(
            host.admit(&admission("state", "acme")).decision(),
            Some(&AdmissionDecision::Admit),
            "call {i}"
        );
        assert!(matches!(
            fallback_reason(host.admit(&admission("state", "crash"))),
            FallbackReason::Trap(_)
        ));
    }
}

#[test]
fn orch_3048_swap_mid_traffic_is_atomic() {
    let (host, reg) = host();
    let host = Arc::new(host);
    // Each plugin's answer names its own id: a call that used one plugin's identity with the
    // other's module (a half state) would show up as a mismatch.
    let load = |id: &str| {
        host.load(&spec(
            id,
            constant_plugin(&format!(r#"{{"decision":"reject","reason":"{id}"}}"#)),
        ))
        .unwrap()
    };
    let (a, b) = (load("A"), load("B"));
    host.install("p", Some(a.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (host, stop) = (host.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut seen_a, mut seen_b) = (0u32, 0u32);
                while !stop.load(Ordering::Relaxed) {
                    match host.admit(&admission("p", "acme")) {
                        Outcome::Decided {
                            decision: AdmissionDecision::Reject { reason },
                            plugin,
                        } => {
                            assert_eq!(reason, plugin.id, "decision and plugin disagree");
                            if reason == "A" {
                                seen_a += 1
                            } else {
                                seen_b += 1
                            }
                        }
                        other => panic!("{other:?}"),
                    }
                }
                (seen_a, seen_b)
            })
        })
        .collect();
    for i in 0..400 {
        host.install("p", Some(if i % 2 == 0 { b.clone() } else { a.clone() }));
        std::thread::sleep(Duration::from_micros(250));
    }
    // A failed reload in the middle of traffic changes nothing.
    assert!(host.reload("p", &spec("bad", wasm("abi_v2.wat"))).is_err());
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::Relaxed);
    let (mut total_a, mut total_b) = (0, 0);
    for w in workers {
        let (sa, sb) = w.join().expect("worker panicked");
        total_a += sa;
        total_b += sb;
    }
    assert!(total_a > 0 && total_b > 0, "A {total_a}, B {total_b}");
    assert_eq!(metric(&reg, FALLBACKS, &[]), 0);

    // replace_all is all-or-nothing.
    let good = spec("good", wasm("good.wat"));
    let bad = spec("bad", wasm("abi_v2.wat"));
    let err = host.replace_all([("p", &good), ("q", &bad)]).unwrap_err();
    assert_eq!(err.0, "q");
    assert_eq!(host.plugin("p").unwrap().info().id, "A");
    host.replace_all([("q", &good)]).unwrap();
    assert_eq!(host.pools(), ["q"]);
}

#[test]
fn plugin_spec_from_config_loads_a_wat_file_relative_to_the_config() {
    let text = r#"
[[auth.api_keys]]
key = "secret-data-key"
tenant = "acme"
role = "data"

[[pools]]
id = "p"
engine = "mock"
model_ref = "mock:tiny"
ctx_max = 2048
allow_cpu_inference = true

[pools.policy]
module = "wat/good.wat"
fuel = 1000000
memory_bytes = 1048576
grants = ["random"]

[[pools.replicas]]
id = "r0"
"#;
    let cfg = config_schema::parse_str(text, "t.toml").unwrap();
    let pol = cfg.pools[0].policy.as_ref().unwrap();
    let config_dir = wat_dir().join("..");
    let spec = PluginSpec::from_config(pol, &config_dir);
    assert_eq!(spec.id, "good");
    assert_eq!(spec.grants, [Grant::Random]);
    assert_eq!(
        spec.limits,
        Limits {
            fuel: 1_000_000,
            memory_bytes: 1_048_576
        }
    );
    let (host, _) = host();
    host.reload("p", &spec).unwrap();
    assert_eq!(
        host.admit(&admission("p", "blocked")).decision(),
        Some(&AdmissionDecision::Reject {
            reason: "tenant blocked by policy".into()
        })
    );
}
