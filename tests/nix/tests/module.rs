//! nixos-module/ evaluated without nixpkgs (tests/nix/module-eval.nix: a stand-in lib and
//! stand-in packages): for the docs' example, the VM tests' node and the appliance, every
//! generated unit equals nixos-module/units.nix except the keys its `moduleDifferences` lists;
//! the generated config passes llama-orch's own `--check-config` checks; the key script run
//! with systemd-style credentials writes a config whose key digests are the keys'. And the
//! assertions refuse what the module cannot do. Needs `nix-instantiate` and bash.

use std::path::{Path, PathBuf};

use llorch_nix_checks::{nix_instantiate, repo};
use serde_json::Value;

struct Eval {
    out: Value,
    _dir: tempfile::TempDir,
    model: PathBuf,
}

/// Evaluates the module for a configuration file (a NixOS module) with stand-in files for the
/// pinned model and llama-server.
fn eval(configuration: &str) -> Eval {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.gguf");
    std::fs::write(&model, b"GGUF stand-in").unwrap();
    let cpp = dir.path().join("llama-cpp");
    std::fs::create_dir_all(cpp.join("bin")).unwrap();
    let server = cpp.join("bin/llama-server");
    std::fs::write(&server, "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = nix_instantiate()
        .args(["--eval", "--strict", "--json", "tests/nix/module-eval.nix"])
        .args(["--arg", "configuration", configuration])
        .args(["--argstr", "modelPath"])
        .arg(&model)
        .args(["--argstr", "llamaCpp"])
        .arg(&cpp)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "evaluating the module for {configuration}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Eval {
        out: serde_json::from_slice(&out.stdout).unwrap(),
        _dir: dir,
        model,
    }
}

fn units_nix() -> Value {
    serde_json::from_str(&llorch_nix_checks::eval_json(
        "import ./nixos-module/units.nix { }",
    ))
    .unwrap()
}

/// `@<tag>:<JSON>@` as the stand-in renderers write it: the JSON value and the rest.
fn take_marked<'a>(s: &'a str, tag: &str) -> Option<(usize, Value, &'a str)> {
    let start = s.find(&format!("@{tag}:"))?;
    let json = &s[start + tag.len() + 2..];
    let mut de = serde_json::Deserializer::from_str(json).into_iter::<Value>();
    let v = de.next()?.ok()?;
    let rest = &json[de.byte_offset()..];
    Some((start, v, rest.strip_prefix('@')?))
}

/// Writes the config JSON as TOML and runs llama-orch's own config check on it.
fn check_config(v: &Value, path: &Path) -> config_schema::Config {
    std::fs::write(path, toml::to_string(v).unwrap()).unwrap();
    config_schema::check_file(path).unwrap_or_else(|e| {
        panic!(
            "generated config refused: {e}\n{}",
            std::fs::read_to_string(path).unwrap()
        )
    })
}

/// Every generated unit is its units.nix entry except the keys moduleDifferences names.
fn units_follow_units_nix(e: &Eval) -> usize {
    let base = units_nix();
    let diffs = &base["moduleDifferences"];
    let mut checked = 0;
    for (kind, section_key, suffix) in [
        ("services", "serviceConfig", "service"),
        ("sockets", "socketConfig", "socket"),
    ] {
        for (name, unit) in e.out[kind].as_object().unwrap() {
            if name.starts_with("llorch-triton-") {
                continue; // the module's own engine unit; no shipped counterpart
            }
            let template = match name.split_once('@') {
                Some((t, _)) => format!("{t}@.{suffix}"),
                None => format!("{name}.{suffix}"),
            };
            let want = &base[&template];
            assert!(want.is_object(), "{name}: no {template} in units.nix");
            let section = if suffix == "service" {
                "Service"
            } else {
                "Socket"
            };
            for (ours, theirs) in [("unitConfig", "Unit"), (section_key, section)] {
                let got = unit[ours].as_object().unwrap();
                let want = want[theirs].as_object().unwrap();
                let allowed: Vec<&str> = diffs[&template][theirs]
                    .as_array()
                    .map(|a| a.iter().map(|k| k.as_str().unwrap()).collect())
                    .unwrap_or_default();
                let keys: std::collections::BTreeSet<&String> =
                    got.keys().chain(want.keys()).collect();
                for k in keys {
                    if got.get(k) != want.get(k) {
                        assert!(
                            allowed.contains(&k.as_str()),
                            "{name} [{theirs}] {k}: module {:?}, units.nix {:?}, and \
                             moduleDifferences does not list it",
                            got.get(k),
                            want.get(k)
                        );
                    }
                }
            }
            assert_eq!(
                unit["wantedBy"],
                serde_json::json!([want["Install"]["WantedBy"]]),
                "{name}"
            );
            checked += 1;
        }
    }
    checked
}

/// For every llama.cpp replica of pool-managerd's config: its engine_port is set, no `--port`
/// is left in the pool's llama-server arguments, its adapter daemon's `--engine-url` is that
/// port on loopback and the replica's endpoint is that daemon's socket. Returns (replica,
/// engine_port) in config order.
fn adapters_point_at_engine_ports(o: &Value, cfg: &config_schema::Config) -> Vec<(String, u16)> {
    let mut ports = Vec::new();
    for pool in cfg.pools.iter().filter(|p| p.llamacpp.is_some()) {
        let args = &pool.llamacpp.as_ref().unwrap().extra_args;
        assert!(
            !args.iter().any(|a| a == "--port"),
            "{}: --port in extra_args {args:?}",
            pool.id
        );
        for replica in &pool.replicas {
            let port = replica
                .engine_port
                .unwrap_or_else(|| panic!("{}/{}: no engine_port", pool.id, replica.id));
            let adapter = o["services"][format!("llorch-adapterd@{}", replica.id)]["serviceConfig"]
                ["ExecStart"]
                .as_str()
                .unwrap_or_else(|| panic!("no llorch-adapterd@{}", replica.id));
            let words: Vec<&str> = adapter.split_whitespace().collect();
            let url = words
                .windows(2)
                .find(|w| w[0] == "--engine-url")
                .map(|w| w[1]);
            assert_eq!(
                url,
                Some(format!("http://127.0.0.1:{port}").as_str()),
                "{}: {adapter}",
                replica.id
            );
            assert_eq!(
                replica.endpoint.as_deref(),
                Some(format!("unix:/run/llorch/adapter-{}.sock", replica.id).as_str())
            );
            ports.push((replica.id.clone(), port));
        }
    }
    ports
}

#[test]
fn example_configuration_generates_what_the_docs_say() {
    let e = eval("./vm-tests/nixos/example-config.nix");
    let o = &e.out;
    assert_eq!(o["failedAssertions"], serde_json::json!([]));
    assert_eq!(units_follow_units_nix(&e), 8, "{:?}", o["services"]);
    assert_eq!(o["firewall"], serde_json::json!([8080]));
    assert_eq!(o["groups"], serde_json::json!(["llorch"]));
    assert_eq!(
        o["scrapeConfigs"],
        serde_json::json!([
            {"job_name": "llama-orch-orchestratord", "static_configs": [{"targets": ["127.0.0.1:8080"]}]},
            {"job_name": "llama-orch-pool-managerd", "static_configs": [{"targets": ["127.0.0.1:8090"]}]}
        ])
    );
    // The shipped alert rules, from the package (nix/package.nix installs monitoring/ there),
    // and they select on exactly these job names.
    assert_eq!(
        o["ruleFiles"],
        serde_json::json!([
            "/nix/store/stand-in-llama-orch/share/llama-orch/monitoring/llama-orch.rules.yml"
        ])
    );
    let rules = std::fs::read_to_string(repo().join("monitoring/llama-orch.rules.yml")).unwrap();
    for job in ["llama-orch-orchestratord", "llama-orch-pool-managerd"] {
        assert!(
            rules.contains(&format!("up{{job=\"{job}\"}}")),
            "monitoring/llama-orch.rules.yml does not select on job {job}"
        );
    }

    let pm = &o["services"]["pool-managerd"]["serviceConfig"];
    // Only GPU 0 (the gpu0 replica), not every NVIDIA device.
    assert_eq!(
        pm["DeviceAllow"],
        serde_json::json!([
            "/dev/nvidiactl rw",
            "/dev/nvidia-uvm rw",
            "/dev/nvidia-uvm-tools rw",
            "/dev/nvidia0 rw"
        ])
    );
    // pool-managerd's config: passes the real check, and supervises both pools' engines on
    // the ports (engine_port) the adapter daemons are pointed at.
    let dir = tempfile::tempdir().unwrap();
    let exec = pm["ExecStart"].as_str().unwrap();
    let (_, pm_json, _) = take_marked(exec, "toml").expect("pool-managerd --config");
    let cfg = check_config(&pm_json, &dir.path().join("pool-managerd.toml"));
    let ids: Vec<_> = cfg.pools.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["llama3-8b", "smollm2"]);
    assert_eq!(cfg.server.listen, "0.0.0.0:8080");
    assert_eq!(
        cfg.pool_manager.registry_url.as_deref(),
        Some("http://127.0.0.1:8090")
    );
    assert_eq!(cfg.queue.capacity, 512);
    let ports = adapters_point_at_engine_ports(o, &cfg);
    assert_eq!(
        ports,
        [("gpu0".to_string(), 8100), ("cpu0".to_string(), 8110)]
    );
    assert_eq!(cfg.pools[1].model_ref, e.model.display().to_string());

    // orchestratord: keys only through credentials, hashed by the ExecStartPre script.
    let orch = &o["services"]["orchestratord"]["serviceConfig"];
    assert_eq!(
        orch["LoadCredential"],
        serde_json::json!([
            "apikey-acme:/run/secrets/llama-orch/acme",
            "apikey-ops:/run/secrets/llama-orch/ops"
        ])
    );
    assert_eq!(orch["SupplementaryGroups"], serde_json::json!(["llorch"]));
    let pre = orch["ExecStartPre"].as_array().unwrap();
    assert_eq!(
        pre[1],
        "/nix/store/stand-in-llama-orch/bin/orchestratord --check-config /run/llorch/orchestratord.toml"
    );
    let (_, script, rest) = take_marked(pre[0].as_str().unwrap(), "script").unwrap();
    assert_eq!(rest, "");
    let script = script.as_str().unwrap();
    let (at, store_json, after) = take_marked(script, "toml").unwrap();
    let store_toml = dir.path().join("store.toml");
    std::fs::write(&store_toml, toml::to_string(&store_json).unwrap()).unwrap();
    let marker_len = script.len() - at - after.len();
    let runtime = dir.path().join("orchestratord.toml");
    let script = format!(
        "{}{}{}",
        &script[..at],
        store_toml.display(),
        &script[at + marker_len..]
    )
    .replace(
        "/run/llorch/orchestratord.toml",
        &runtime.display().to_string(),
    )
    .replace("/nix/store/stand-in-coreutils/bin/", "");
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("apikey-acme"), "acme-secret-key-1\n").unwrap();
    std::fs::write(creds.join("apikey-ops"), "ops-secret-key-22").unwrap();
    let run = std::process::Command::new("bash")
        .args(["-c", &script])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "key script: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&runtime).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let cfg = config_schema::check_file(&runtime).unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<_> = cfg
        .auth
        .api_keys
        .iter()
        .map(|k| (k.key_sha256.clone().unwrap(), k.tenant.clone(), k.role))
        .collect();
    assert_eq!(
        keys,
        [
            (
                config_schema::sha256_hex("acme-secret-key-1"),
                "acme".to_string(),
                config_schema::Role::Data
            ),
            (
                config_schema::sha256_hex("ops-secret-key-22"),
                "ops".to_string(),
                config_schema::Role::Control
            ),
        ]
    );
    assert!(
        !std::fs::read_to_string(&runtime)
            .unwrap()
            .contains("secret-key"),
        "the keys themselves must not be in the config"
    );
}

#[test]
fn vm_test_node_and_appliance_generate_valid_units_and_configs() {
    // The VM tests' node (mock + llama.cpp pools) through a small wrapper, and the appliance.
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node.nix");
    std::fs::write(
        &node,
        format!(
            "import {}/vm-tests/nixos/common.nix {{ self.nixosModules.default = {{ }}; }} {{ llamacpp = true; }}",
            repo().display()
        ),
    )
    .unwrap();
    for (what, file, adapters) in [
        ("vm node", node.display().to_string(), vec!["cpu0", "mock0"]),
        (
            "appliance",
            "./nix/appliance.nix".to_string(),
            vec!["cpu0", "mock0"],
        ),
    ] {
        let e = eval(&file);
        assert_eq!(e.out["failedAssertions"], serde_json::json!([]), "{what}");
        assert_eq!(units_follow_units_nix(&e), 4 + 2 * adapters.len(), "{what}");
        for a in &adapters {
            assert!(
                e.out["sockets"][format!("llorch-adapterd@{a}")].is_object(),
                "{what}: {a}"
            );
        }
        // No GPU: no device opened at all.
        assert_eq!(
            e.out["services"]["pool-managerd"]["serviceConfig"]["DeviceAllow"],
            serde_json::json!([]),
            "{what}"
        );
        let exec = e.out["services"]["pool-managerd"]["serviceConfig"]["ExecStart"]
            .as_str()
            .unwrap();
        let (_, json, _) = take_marked(exec, "toml").unwrap();
        let cfg = check_config(&json, &dir.path().join(format!("{what}.toml")));
        assert_eq!(cfg.pools.len(), 2, "{what}");
        assert_eq!(
            adapters_point_at_engine_ports(&e.out, &cfg),
            [("cpu0".to_string(), 8100)],
            "{what}"
        );
        let mock = e.out["services"]["llorch-adapterd@mock0"]["serviceConfig"]["ExecStart"]
            .as_str()
            .unwrap();
        assert!(
            mock.ends_with("--engine mock --model-ref mock:tiny --slots 4 --ctx-max 4096 --tokens-per-second 20")
                || mock.ends_with("--engine mock --model-ref mock:tiny --slots 4 --ctx-max 4096 --tokens-per-second 50"),
            "{what}: {mock}"
        );
    }
}

#[test]
fn llamacpp_replicas_get_their_own_engine_ports() {
    // A two-replica GPU pool on default ports and a CPU pool whose replica sets its port.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("two-replicas.nix");
    std::fs::write(
        &file,
        r#"{ pkgs, ... }: {
  services.llama-orch = {
    enable = true;
    apiKeys.k = { tenant = "t"; role = "data"; keyFile = "/run/k"; };
    pools = {
      big = {
        engine = "llamacpp";
        model.path = pkgs.llama-orch-model;
        llamacppArgs = [ "--flash-attn" ];
        replicas = { gpu0.devices = [ 0 ]; gpu1.devices = [ 1 ]; };
      };
      small = {
        engine = "llamacpp";
        model.path = pkgs.llama-orch-model;
        allowCpuInference = true;
        replicas.cpu0.enginePort = 9000;
      };
    };
  };
}"#,
    )
    .unwrap();
    let e = eval(&file.display().to_string());
    let o = &e.out;
    assert_eq!(o["failedAssertions"], serde_json::json!([]));
    // orchestratord, pool-managerd and three adapters: socket + service each.
    assert_eq!(units_follow_units_nix(&e), 10, "{:?}", o["services"]);
    let pm = &o["services"]["pool-managerd"]["serviceConfig"];
    assert_eq!(
        pm["DeviceAllow"],
        serde_json::json!([
            "/dev/nvidiactl rw",
            "/dev/nvidia-uvm rw",
            "/dev/nvidia-uvm-tools rw",
            "/dev/nvidia0 rw",
            "/dev/nvidia1 rw"
        ])
    );
    let (_, json, _) = take_marked(pm["ExecStart"].as_str().unwrap(), "toml").unwrap();
    let cfg = check_config(&json, &dir.path().join("pool-managerd.toml"));
    assert_eq!(cfg.pools[0].id, "big");
    assert_eq!(cfg.pools[0].replicas.len(), 2);
    assert_eq!(
        cfg.pools[0].llamacpp.as_ref().unwrap().extra_args,
        ["--flash-attn"],
        "the pool's llama-server arguments as given"
    );
    let ports = adapters_point_at_engine_ports(o, &cfg);
    assert_eq!(
        ports,
        [
            ("gpu0".to_string(), 8100),
            ("gpu1".to_string(), 8110),
            ("cpu0".to_string(), 9000)
        ]
    );
    // orchestratord's config (the same TOML before the keys) passes too.
    let pre = o["services"]["orchestratord"]["serviceConfig"]["ExecStartPre"][0]
        .as_str()
        .unwrap();
    let (_, script, _) = take_marked(pre, "script").unwrap();
    let (_, orch, _) = take_marked(script.as_str().unwrap(), "toml").unwrap();
    let mut orch = orch;
    // The keys are appended at runtime from credentials; stand in a digest for the check.
    orch["auth"] = serde_json::json!({"api_keys": [{"key_sha256": "1".repeat(64), "tenant": "t", "role": "data"}]});
    let ocfg = check_config(&orch, &dir.path().join("orchestratord.toml"));
    let endpoints: Vec<_> = ocfg
        .pools
        .iter()
        .flat_map(|p| p.replicas.iter().map(|r| r.endpoint.clone().unwrap()))
        .collect();
    assert_eq!(
        endpoints,
        [
            "unix:/run/llorch/adapter-gpu0.sock",
            "unix:/run/llorch/adapter-gpu1.sock",
            "unix:/run/llorch/adapter-cpu0.sock"
        ]
    );
}

#[test]
fn assertions_refuse_what_the_module_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "two engines on one port",
            r#"p.engine = "llamacpp"; p.model.ref = "/m.gguf"; p.replicas = { gpu0 = { devices = [ 0 ]; enginePort = 8200; }; gpu1 = { devices = [ 1 ]; enginePort = 8200; }; };"#,
            "same loopback port",
        ),
        (
            "a CPU replica without allowCpuInference",
            r#"p.engine = "llamacpp"; p.model.ref = "/m.gguf"; p.replicas.cpu0 = { };"#,
            "allowCpuInference",
        ),
        (
            "a URL without its hash",
            r#"p.engine = "llamacpp"; p.model.url = "https://x/m.gguf"; p.replicas.gpu0.devices = [ 0 ];"#,
            "model.url needs model.sha256",
        ),
        (
            "a Triton repository without a Triton package",
            r#"p.engine = "triton"; p.model.ref = "m"; p.triton = { model = "m"; modelRepository = "/srv/triton"; }; p.replicas.gpu0.devices = [ 0 ];"#,
            "nixpkgs has no Triton Inference Server",
        ),
        (
            "a TGI replica without the router's URL",
            r#"p.engine = "tgi"; p.model.ref = "m"; p.replicas.gpu0.devices = [ 0 ];"#,
            "needs engineUrl",
        ),
        (
            "a replica id systemd cannot take",
            r#"p.engine = "mock"; p.replicas."a b" = { };"#,
            "systemd instance name",
        ),
    ];
    let bad_key = r#"apiKeys."a/b" = { tenant = "t"; role = "data"; keyFile = "/k"; };"#;
    for (what, pool, message) in cases.into_iter().chain([(
        "a key name systemd cannot take",
        "",
        "names a systemd credential",
    )]) {
        let file = dir.path().join("case.nix");
        let body = if pool.is_empty() {
            bad_key.to_string()
        } else {
            format!("pools.p = {{ {} }};", pool.replace("p.", ""))
        };
        std::fs::write(
            &file,
            format!("{{ ... }}: {{ services.llama-orch = {{ enable = true; {body} }}; }}"),
        )
        .unwrap();
        let e = eval(&file.display().to_string());
        let failed = e.out["failedAssertions"].to_string();
        assert!(failed.contains(message), "{what}: {failed}");
    }
}
