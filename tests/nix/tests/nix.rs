//! The Nix side, as far as it can be checked without nixpkgs (docs/nixos.md, "What is verified
//! where"): every .nix file parses; the pure files evaluate; the flake's lock pins the branch
//! flake.nix names; the pins agree with `cargo xtask fetch-engine`; the units of
//! nixos-module/units.nix agree key by key with the shipped systemd/ files; docs/nixos.md
//! documents exactly the module's options and shows the evaluated example configuration.
//! Needs `nix-instantiate` (Debian's nix-bin) and fails without it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use llorch_nix_checks::{eval_json, nix_instantiate, repo};
use serde_json::Value;

#[allow(dead_code)]
#[path = "../../../crates/xtask/src/pins.rs"]
mod pins;

fn nix_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            if !(name.starts_with('.') || name == "target" || name == "node_modules") {
                nix_files(&p, out);
            }
        } else if name.ends_with(".nix") {
            out.push(p);
        }
    }
}

#[test]
fn every_nix_file_parses() {
    let mut files = Vec::new();
    nix_files(&repo(), &mut files);
    files.sort();
    let rel: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(repo()).unwrap().display().to_string())
        .collect();
    for must in [
        "flake.nix",
        "nixos-module/default.nix",
        "nixos-module/options.nix",
        "nixos-module/units.nix",
        "nix/pins.nix",
        "vm-tests/nixos/single-node.nix",
    ] {
        assert!(rel.iter().any(|r| r == must), "{must} missing: {rel:?}");
    }
    for f in &files {
        let out = nix_instantiate().arg("--parse").arg(f).output().unwrap();
        assert!(
            out.status.success(),
            "{} does not parse:\n{}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("parsed {} .nix files", files.len());
}

#[test]
fn flake_lock_pins_the_branch_flake_nix_names() {
    let lock: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("flake.lock")).unwrap()).unwrap();
    assert_eq!(lock["version"], 7);
    assert_eq!(lock["root"], "root");
    let inputs = lock["nodes"]["root"]["inputs"].as_object().unwrap();
    assert_eq!(
        inputs.keys().collect::<Vec<_>>(),
        ["nixpkgs"],
        "flake.lock inputs"
    );
    let node = &lock["nodes"]["nixpkgs"];
    let locked = &node["locked"];
    let rev = locked["rev"].as_str().unwrap();
    assert!(
        rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()),
        "{rev}"
    );
    let nar = locked["narHash"].as_str().unwrap();
    assert!(nar.starts_with("sha256-") && nar.len() == 51, "{nar}");
    assert_eq!(locked["type"], "github");
    assert_eq!(locked["owner"], "NixOS");
    assert_eq!(locked["repo"], "nixpkgs");
    let branch = node["original"]["ref"].as_str().unwrap();
    assert!(
        branch.starts_with("nixos-"),
        "a NixOS release branch: {branch}"
    );

    // flake.nix is evaluated (its inputs and the outputs' arguments are plain data).
    let url: String =
        serde_json::from_str(&eval_json("(import ./flake.nix).inputs.nixpkgs.url")).unwrap();
    assert_eq!(url, format!("github:NixOS/nixpkgs/{branch}"));
    let args: Value = serde_json::from_str(&eval_json(
        "builtins.attrNames (builtins.functionArgs (import ./flake.nix).outputs)",
    ))
    .unwrap();
    assert_eq!(args, serde_json::json!(["nixpkgs", "self"]));

    // docs/nixos.md names the revision and where its hash comes from.
    let doc = std::fs::read_to_string(repo().join("docs/nixos.md")).unwrap();
    assert!(
        doc.contains(rev) && doc.contains(nar),
        "docs/nixos.md must cite {rev} {nar}"
    );
}

#[test]
fn pins_agree_between_the_flake_and_cargo_xtask() {
    let nix: Value = serde_json::from_str(&eval_json("import ./nix/pins.nix")).unwrap();
    let x = pins::Pins::committed();
    let s = |v: &Value| v.as_str().unwrap().to_string();

    let (req, file, digest) = &x.llama_cpp_sdist;
    let src = &nix["llamaCpp"]["src"];
    assert_eq!(&s(&src["name"]), file);
    assert_eq!(&s(&src["sha256"]), digest);
    assert!(s(&src["url"]).ends_with(&format!("/{file}")));
    assert_eq!(
        format!("llama-cpp-python=={}", s(&nix["llamaCpp"]["version"])),
        *req
    );
    assert_eq!(
        s(&nix["llamaCpp"]["sourceRoot"]),
        format!(
            "{}/{}",
            file.trim_end_matches(".tar.gz"),
            x.llama_cpp_source_root
        )
    );

    let (req, file, digest) = &x.model_wheel;
    let m = &nix["model"];
    assert_eq!(&s(&m["wheel"]["name"]), file);
    assert_eq!(&s(&m["wheel"]["sha256"]), digest);
    assert!(s(&m["wheel"]["url"]).ends_with(&format!("/{file}")));
    assert!(req.ends_with(&format!("=={}", s(&m["version"]))), "{req}");
    assert_eq!(s(&m["gguf_in_wheel"]), x.model_in_wheel);
    assert_eq!(s(&m["gguf"]["name"]), x.model_file);
    assert_eq!(s(&m["gguf"]["sha256"]), x.model_sha256);
}

/// A unit file as section → key → values (repeated keys keep their order; comments dropped).
type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn parse_unit(text: &str) -> Unit {
    let mut unit = Unit::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (k, v) = line.split_once('=').expect("key=value");
        unit.entry(section.clone())
            .or_default()
            .entry(k.trim().to_string())
            .or_default()
            .push(v.trim().to_string());
    }
    unit
}

/// units.nix's form (string or list of strings) as the same shape.
fn from_nix(v: &Value) -> Unit {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(section, keys)| {
            let keys = keys
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| {
                    let vals = match v {
                        Value::String(s) => vec![s.clone()],
                        Value::Array(a) => a.iter().map(|s| s.as_str().unwrap().into()).collect(),
                        _ => panic!("{section}.{k}: {v}"),
                    };
                    (k.clone(), vals)
                })
                .collect();
            (section.clone(), keys)
        })
        .collect()
}

/// The documented difference: where the binaries are (/usr/bin, /usr/local/bin, the store).
fn normalize(mut u: Unit) -> Unit {
    for keys in u.values_mut() {
        for (k, vals) in keys.iter_mut() {
            if k.starts_with("Exec") {
                for v in vals.iter_mut() {
                    *v = v.replace("/usr/local/bin/", "").replace("/usr/bin/", "");
                }
            }
        }
    }
    u
}

#[test]
fn module_units_are_the_shipped_units() {
    let nix: Value =
        serde_json::from_str(&eval_json("import ./nixos-module/units.nix { }")).unwrap();
    let mut shipped = BTreeSet::new();
    for e in std::fs::read_dir(repo().join("systemd")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.ends_with(".service") || name.ends_with(".socket")) {
            continue;
        }
        let ours = nix
            .get(&name)
            .unwrap_or_else(|| panic!("nixos-module/units.nix has no {name}"));
        let file = normalize(parse_unit(&std::fs::read_to_string(&p).unwrap()));
        let desc = normalize(from_nix(ours));
        // Key by key, so a failure names the setting.
        for (section, keys) in file.iter() {
            for (k, v) in keys {
                assert_eq!(
                    desc.get(section).and_then(|s| s.get(k)),
                    Some(v),
                    "{name} [{section}] {k}: systemd/ vs nixos-module/units.nix"
                );
            }
        }
        assert_eq!(
            desc, file,
            "{name}: nixos-module/units.nix has extra settings"
        );
        shipped.insert(name);
    }
    let described: BTreeSet<String> = nix
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.ends_with(".service") || k.ends_with(".socket"))
        .cloned()
        .collect();
    assert_eq!(described, shipped, "units in units.nix vs systemd/");
    assert_eq!(shipped.len(), 6, "{shipped:?}");

    // sysusers
    let sysusers: Vec<String> =
        std::fs::read_to_string(repo().join("systemd/llorch.sysusers.conf"))
            .unwrap()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect();
    assert_eq!(nix["sysusers"], serde_json::json!(sysusers));

    // Every difference the module declares is a real key of the unit, set by the module and
    // explained in docs/nixos.md.
    let module = std::fs::read_to_string(repo().join("nixos-module/default.nix")).unwrap();
    let doc = std::fs::read_to_string(repo().join("docs/nixos.md")).unwrap();
    let diffs = nix["moduleDifferences"].as_object().unwrap();
    assert!(!diffs.is_empty());
    for (unit, sections) in diffs {
        let desc = from_nix(&nix[unit]);
        for (section, keys) in sections.as_object().unwrap() {
            for k in keys.as_array().unwrap() {
                let k = k.as_str().unwrap();
                let added = ["LoadCredential", "SupplementaryGroups"].contains(&k);
                assert!(
                    added || desc.get(section).is_some_and(|s| s.contains_key(k)),
                    "moduleDifferences names {unit} [{section}] {k}, which units.nix does not set"
                );
                assert!(
                    module.contains(&format!("{k} =")) || module.contains(&format!("\"{k}\"")),
                    "nixos-module/default.nix does not set {k} ({unit})"
                );
                assert!(
                    doc.contains(&format!("`{k}=`")),
                    "docs/nixos.md does not explain the module's {k}= ({unit})"
                );
            }
        }
    }
}

#[test]
fn docs_option_reference_is_the_modules_options() {
    let declared: BTreeSet<String> =
        serde_json::from_str(&eval_json("import ./tests/nix/options-list.nix")).unwrap();
    assert!(declared.contains("services.llama-orch.pools.<name>.replicas.<name>.devices"));
    let doc = std::fs::read_to_string(repo().join("docs/nixos.md")).unwrap();
    let reference = doc
        .split("\n## Option reference")
        .nth(1)
        .expect("docs/nixos.md has an `## Option reference` section");
    let reference = reference.split("\n## ").next().unwrap();
    let documented: BTreeSet<String> = reference
        .lines()
        .filter_map(|l| l.strip_prefix("### `"))
        .map(|l| l.trim_end_matches('`').to_string())
        .collect();
    let missing: Vec<_> = declared.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&declared).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/nixos.md option reference: undocumented {missing:?}, not in the module {unknown:?}"
    );
}

#[test]
fn docs_example_is_the_evaluated_example() {
    let example =
        std::fs::read_to_string(repo().join("vm-tests/nixos/example-config.nix")).unwrap();
    let body = &example[example.find("{ pkgs, ... }:").expect("example header")..];
    let doc = std::fs::read_to_string(repo().join("docs/nixos.md")).unwrap();
    assert!(
        doc.contains(body.trim_end()),
        "docs/nixos.md must show vm-tests/nixos/example-config.nix (from `{{ pkgs, ... }}:` on) verbatim"
    );
}

/// The VM tests' Python (testScript) parses; evaluated with stand-ins for nixpkgs.
#[test]
fn vm_test_scripts_are_python() {
    let scenarios = repo().join("vm-tests/scenarios/appliance.py");
    let mut files = vec!["two-node.nix", "switch.nix"];
    if scenarios.is_file() {
        // The single-node test imports the shared scenarios (and so needs them to exist).
        let text = std::fs::read_to_string(&scenarios).unwrap();
        assert!(
            text.contains("SCENARIOS") && text.contains("class Env"),
            "vm-tests/scenarios/appliance.py must define SCENARIOS and Env (single-node.nix uses them)"
        );
        files.push("single-node.nix");
    } else {
        eprintln!(
            "vm-tests/scenarios/appliance.py not present: single-node.nix checked for parsing only"
        );
    }
    for f in files {
        let script: String = serde_json::from_str(&eval_json(&format!(
            "import ./tests/nix/vm-test-script.nix ./vm-tests/nixos/{f}"
        )))
        .unwrap();
        let out = std::process::Command::new("python3")
            .args(["-c", "import ast, sys; ast.parse(sys.stdin.read())"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(script.as_bytes())?;
                c.wait_with_output()
            })
            .expect("python3 (the CI image has it)");
        assert!(
            out.status.success(),
            "{f}: testScript is not valid Python:\n{}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
