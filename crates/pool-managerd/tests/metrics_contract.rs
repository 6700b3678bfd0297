//! Linter for pool-managerd's Prometheus contract (SPEC §7): names, types and label sets of
//! every `llorch_` family, parsed from a real scrape of a pool manager supervising a real
//! llama-server, after real traffic (a completion, a catalog verification). The engine's own
//! `/metrics` must show up folded into the replica families.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use pool_managerd::daemon::PoolManager;

/// name → (type, label set, always present). Families that are not always present appear
/// only where their source exists (NVML, an engine that reports KV cache usage).
fn contract() -> BTreeMap<&'static str, (&'static str, &'static [&'static str], bool)> {
    const REPLICA: &[&str] = &["engine", "pool_id", "replica_id"];
    const ENGINE: &[&str] = &["engine", "engine_version", "pool_id", "replica_id"];
    BTreeMap::from([
        (
            "llorch_replica_ready",
            (
                "gauge",
                &["cpu", "engine", "engine_version", "pool_id", "replica_id"][..],
                true,
            ),
        ),
        (
            "llorch_replica_state",
            (
                "gauge",
                &["cpu", "engine", "pool_id", "replica_id", "state"][..],
                true,
            ),
        ),
        ("llorch_replica_restarts_total", ("counter", REPLICA, true)),
        ("llorch_replica_circuit_open", ("gauge", REPLICA, true)),
        (
            "llorch_preload_outcomes_total",
            (
                "counter",
                &["engine", "outcome", "pool_id", "replica_id"][..],
                true,
            ),
        ),
        (
            "llorch_catalog_verifications_total",
            ("counter", &["result"][..], true),
        ),
        (
            "llorch_model_state",
            ("gauge", &["model_id", "state"][..], true),
        ),
        (
            "llorch_gpu_utilization_ratio",
            ("gauge", &["device"][..], false),
        ),
        (
            "llorch_gpu_memory_used_bytes",
            ("gauge", &["device"][..], false),
        ),
        (
            "llorch_gpu_memory_total_bytes",
            ("gauge", &["device"][..], false),
        ),
        ("llorch_kv_cache_usage_ratio", ("gauge", ENGINE, false)),
        ("llorch_engine_requests_processing", ("gauge", ENGINE, true)),
        ("llorch_engine_requests_deferred", ("gauge", ENGINE, true)),
        (
            "llorch_engine_prompt_tokens_total",
            ("counter", ENGINE, true),
        ),
        (
            "llorch_engine_generated_tokens_total",
            ("counter", ENGINE, true),
        ),
    ])
}

fn labels_of(sample: &str) -> BTreeSet<String> {
    let Some(start) = sample.find('{') else {
        return BTreeSet::new();
    };
    let end = sample.rfind('}').unwrap();
    sample[start + 1..end]
        .split("\",")
        .filter(|kv| !kv.is_empty())
        .map(|kv| kv.split('=').next().unwrap().trim().to_string())
        .collect()
}

fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_contract() {
    let e = test_fixtures::engine();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[pool_manager]\nstate_dir = \"{}\"\n{}{}",
        dir.path().join("state").display(),
        test_fixtures::api_keys_toml(&[("m-data-key", "t", "data"), ("m-ctl-key", "o", "control")]),
        test_fixtures::llamacpp_pool_toml(&e, "llm", 512, &[("cpu0", 1)])
    );
    let cfg = config_schema::parse_str(&toml, "m.toml").unwrap();
    let (pm, _) = PoolManager::start(&cfg).unwrap();
    assert!(pm.engines.wait_preloaded(Duration::from_secs(120)).await);
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let app = pm.router(stop_rx);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    let http = reqwest::Client::new();

    // Traffic: one completion on the engine, one catalog verification.
    let engine_url = pm.engines.records().await[0].engine_url.clone();
    let before = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(before.status(), 200);
    let before = before.text().await.unwrap();
    let r = http
        .post(format!("{engine_url}/completion"))
        .json(
            &serde_json::json!({"prompt": "Count: one two", "n_predict": 6, "cache_prompt": false}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(format!("{base}/v1/catalog/models"))
        .bearer_auth("m-ctl-key")
        .json(&serde_json::json!({"model_ref": e.model.display().to_string(), "sha256": e.model_sha256}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .post(format!(
            "{base}/v1/catalog/models/{}/verify",
            e.model_sha256
        ))
        .bearer_auth("m-ctl-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let contract = contract();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            types.insert(
                it.next().unwrap().to_string(),
                it.next().unwrap().to_string(),
            );
        }
    }
    for (name, ty) in &types {
        assert!(
            name.starts_with("llorch_"),
            "{name} lacks the llorch_ prefix"
        );
        let (want_ty, _, _) = contract
            .get(name.as_str())
            .unwrap_or_else(|| panic!("{name} is not in the contract"));
        assert_eq!(ty, want_ty, "{name}");
        if ty == "counter" {
            assert!(name.ends_with("_total"), "{name}: counters end in _total");
        }
    }
    for (name, (_, labels, always)) in &contract {
        if *always {
            assert!(types.contains_key(*name), "{name} missing from the scrape");
        }
        let want: BTreeSet<String> = labels.iter().map(|s| s.to_string()).collect();
        for sample in text
            .lines()
            .filter(|l| !l.starts_with('#') && l.split(['{', ' ']).next() == Some(name))
        {
            assert_eq!(labels_of(sample), want, "labels of {sample}");
        }
    }

    // The CPU replica is labelled as such, Ready, and its engine_version is the real build.
    let ready = text
        .lines()
        .find(|l| l.starts_with("llorch_replica_ready{"))
        .unwrap();
    assert!(
        ready.contains("cpu=\"true\"")
            && ready.contains("engine_version=\"llamacpp-b")
            && ready.ends_with(" 1"),
        "{ready}"
    );
    assert!(text.contains("llorch_replica_state{cpu=\"true\",engine=\"llamacpp\",pool_id=\"llm\",replica_id=\"cpu0\",state=\"ready\"} 1"), "{text}");
    assert!(
        text.contains("outcome=\"ready\",pool_id=\"llm\",replica_id=\"cpu0\"} 1"),
        "{text}"
    );
    // llama-server's own counters, folded in: the completion shows.
    let generated = "llorch_engine_generated_tokens_total{";
    let (b, a) = (
        value(&before, generated).unwrap_or(0.0),
        value(&text, generated).unwrap(),
    );
    assert!(a >= b + 1.0, "generated tokens {b} -> {a}");
    assert!(value(&text, "llorch_engine_prompt_tokens_total{").unwrap() >= 1.0);
    assert!(text.contains("llorch_catalog_verifications_total{result=\"passed\"} 1"));
    pm.engines.shutdown().await;
}
