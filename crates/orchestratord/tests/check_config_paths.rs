//! One truth for config validity: each thing the daemons would refuse about the files a
//! config names is refused by `--check-config` too, with file:line:key; and `~/` paths, which
//! `--check-config` accepts, are accepted (expanded against $HOME) by the running daemon.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;

const GOOD_WAT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/plugins/wat/good.wat"
);

/// A home directory with a policy module, a model file and an executable llama-server.
fn home() -> tempfile::TempDir {
    let h = tempfile::tempdir().unwrap();
    std::fs::copy(GOOD_WAT, h.path().join("p.wat")).unwrap();
    std::fs::write(h.path().join("m.gguf"), b"GGUF").unwrap();
    std::fs::create_dir(h.path().join("bin")).unwrap();
    let bin = h.path().join("bin/llama-server");
    std::fs::write(&bin, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    h
}

/// A config with a mock pool (policy module `module`) and a llama.cpp pool.
fn config(module: &str, model: &str, server: &str, cache_dir: &str) -> String {
    format!(
        r#"{auth}
[pool_manager]
cache_dir = "{cache_dir}"

[[pools]]
id = "p"
engine = "mock"
model_ref = "mock:tiny"
ctx_max = 1024
allow_cpu_inference = true
policy = {{ module = "{module}" }}

[[pools.replicas]]
id = "r0"

[[pools]]
id = "l"
engine = "llamacpp"
model_ref = "{model}"
ctx_max = 1024
allow_cpu_inference = true
llamacpp = {{ server_binary = "{server}" }}

[[pools.replicas]]
id = "r0"
endpoint = "http://127.0.0.1:9"
"#,
        auth = auth_toml()
    )
}

/// Runs `--check-config` on `text` with `$HOME` = `home` (unset when `None`).
fn check(dir: &Path, text: &str, home: Option<&Path>) -> (bool, String, std::path::PathBuf) {
    let file = dir.join("orch.toml");
    std::fs::write(&file, text).unwrap();
    let mut cmd = Command::new(bin());
    cmd.arg("--check-config").arg(&file);
    match home {
        Some(h) => cmd.env("HOME", h),
        None => cmd.env_remove("HOME"),
    };
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        file,
    )
}

/// The 1-based line of `text` where `needle` first appears after line `after`.
fn line_of(text: &str, after: &str, needle: &str) -> usize {
    let start = text.lines().position(|l| l.contains(after)).unwrap();
    start
        + 1
        + text
            .lines()
            .skip(start)
            .position(|l| l.contains(needle))
            .unwrap()
}

#[test]
fn check_config_refuses_what_the_daemons_would_with_file_line_key() {
    let h = home();
    let hp = h.path().display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let abs = |p: &str| format!("{hp}/{p}");
    let good = config(
        &abs("p.wat"),
        &abs("m.gguf"),
        &abs("bin/llama-server"),
        &abs("cache"),
    );
    let (ok, err, _) = check(dir.path(), &good, Some(h.path()));
    assert!(ok, "{err}");
    std::fs::write(h.path().join("plain"), "x").unwrap();
    std::fs::write(h.path().join("not-exec"), "x").unwrap();
    // (what is wrong, config, key, line anchor (after, needle), HOME set)
    type Case<'a> = (&'a str, String, &'a str, (&'a str, &'a str), bool);
    let cases: Vec<Case> = vec![
        (
            "missing policy module",
            config(
                &abs("nope.wat"),
                &abs("m.gguf"),
                &abs("bin/llama-server"),
                &abs("c"),
            ),
            "pools[0].policy.module",
            ("id = \"p\"", "policy ="),
            true,
        ),
        (
            "unknown model file",
            config(
                &abs("p.wat"),
                &abs("gone.gguf"),
                &abs("bin/llama-server"),
                &abs("c"),
            ),
            "pools[1].model_ref",
            ("id = \"l\"", "model_ref"),
            true,
        ),
        (
            "unreadable model path (a directory)",
            config(
                &abs("p.wat"),
                &abs("bin"),
                &abs("bin/llama-server"),
                &abs("c"),
            ),
            "pools[1].model_ref",
            ("id = \"l\"", "model_ref"),
            true,
        ),
        (
            "missing engine binary",
            config(&abs("p.wat"), &abs("m.gguf"), &abs("bin/nope"), &abs("c")),
            "pools[1].llamacpp.server_binary",
            ("id = \"l\"", "llamacpp ="),
            true,
        ),
        (
            "engine binary not executable",
            config(&abs("p.wat"), &abs("m.gguf"), &abs("not-exec"), &abs("c")),
            "pools[1].llamacpp.server_binary",
            ("id = \"l\"", "llamacpp ="),
            true,
        ),
        (
            "cache dir that is a file",
            config(
                &abs("p.wat"),
                &abs("m.gguf"),
                &abs("bin/llama-server"),
                &abs("plain/x"),
            ),
            "pool_manager.cache_dir",
            ("[pool_manager]", "cache_dir"),
            true,
        ),
        (
            "~user is not expanded",
            config(
                "~nobody/p.wat",
                &abs("m.gguf"),
                &abs("bin/llama-server"),
                &abs("c"),
            ),
            "pools[0].policy.module",
            ("id = \"p\"", "policy ="),
            true,
        ),
        (
            "~ without $HOME",
            config(
                "~/p.wat",
                &abs("m.gguf"),
                &abs("bin/llama-server"),
                &abs("c"),
            ),
            "pools[0].policy.module",
            ("id = \"p\"", "policy ="),
            false,
        ),
    ];
    for (what, text, key, (after, needle), with_home) in cases {
        let (ok, err, file) = check(dir.path(), &text, with_home.then_some(h.path()));
        assert!(!ok, "{what}: accepted");
        let line = line_of(&text, after, needle);
        let want = format!("{}:{line}: {key}: ", file.display());
        assert!(err.contains(&want), "{what}: want `{want}` in: {err}");
    }
}

#[tokio::test]
async fn tilde_paths_pass_the_check_and_the_daemon_runs_with_them() {
    let h = home();
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        "~/p.wat",
        "~/m.gguf",
        "~/bin/llama-server",
        "~/.cache/llama-orch",
    );
    let (ok, err, _) = check(dir.path(), &text, Some(h.path()));
    assert!(ok, "--check-config refused `~/` paths: {err}");
    // The daemon reads the same paths: a mock pool whose policy module is `~/p.wat` serves.
    let mock_only = mock_config(1, "", "", "").replace(
        "queue = {  }",
        "queue = {  }\npolicy = { module = \"~/p.wat\" }",
    );
    assert!(mock_only.contains("~/p.wat"));
    let s = Server::start_with_env(&mock_only, &[("HOME", &h.path().display().to_string())]);
    let r = s.submit(DATA_KEY, task("t1", 2)).await;
    assert_eq!(r.status(), 202);
    let evs = read_events(s.stream(DATA_KEY, "t1").await).await;
    assert_eq!(evs.last().map(|e| e.0.as_str()), Some("end"));
}
