//! nix/package.nix evaluated without nixpkgs (tests/nix/package-eval.nix): its postInstall,
//! run with bash on a tree holding only the package's source file set, installs the units
//! (ExecStart= into $out/bin), the sysusers file, the docs, the examples and monitoring/ (the
//! alert rules and the Grafana dashboard under share/llama-orch/monitoring, where the Debian
//! package has them under /usr/share/llama-orch/monitoring and where the module's
//! `prometheus.scrape` loads the rules from). Needs `nix-instantiate` and bash.

use llorch_nix_checks::{nix_instantiate, repo};
use serde_json::Value;

#[test]
fn package_installs_units_docs_and_monitoring() {
    let out = nix_instantiate()
        .args(["--eval", "--strict", "--json", "tests/nix/package-eval.nix"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "evaluating nix/package.nix:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let root = std::path::PathBuf::from(v["root"].as_str().unwrap());

    // The source as lib.fileset.toSource would make it: only the listed paths.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for p in v["src"].as_array().unwrap() {
        let p = std::path::Path::new(p.as_str().unwrap());
        let rel = p.strip_prefix(&root).unwrap();
        let to = src.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(p, &to).unwrap();
    }
    assert!(
        src.join("monitoring").exists(),
        "nix/package.nix's source file set lacks monitoring/"
    );
    let pkg = dir.path().join("out");
    let run = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", v["postInstall"].as_str().unwrap()])
        .current_dir(&src)
        .env("out", &pkg)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "postInstall failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let mon = pkg.join("share/llama-orch/monitoring");
    for f in ["llama-orch.rules.yml", "grafana/llama-orch.json"] {
        assert_eq!(
            std::fs::read(mon.join(f))
                .unwrap_or_else(|e| panic!("$out/share/llama-orch/monitoring/{f}: {e}")),
            std::fs::read(repo().join("monitoring").join(f)).unwrap(),
            "{f}"
        );
    }
    let unit =
        std::fs::read_to_string(pkg.join("lib/systemd/system/orchestratord.service")).unwrap();
    assert!(
        unit.contains(&format!("ExecStart={}/bin/orchestratord", pkg.display())),
        "{unit}"
    );
    assert!(pkg.join("lib/sysusers.d/llorch.conf").is_file());
    assert!(
        pkg.join("share/llama-orch/examples/dev-mock.toml")
            .is_file()
    );
    assert!(pkg.join("share/doc/llama-orch/nixos.md").is_file());
}
