//! Every bad value of the finished-task retention budgets (`server.task_log_*`) is a typed
//! config error naming file, line and key; good values and the defaults load.

use llorch_config_schema::{ConfigError, parse_str};

const POOL: &str = r#"
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

[[pools.replicas]]
id = "r0"
slots = 2
"#;

fn with_server(lines: &str) -> String {
    format!("[server]\nlisten = \"127.0.0.1:1\"\n{lines}\n{POOL}")
}

/// (file line, key path, message) of an Invalid error, or the Parse error's.
fn error_of(lines: &str) -> (usize, String, String) {
    match parse_str(&with_server(lines), "orch.toml") {
        Ok(_) => panic!("accepted: {lines}"),
        Err(ConfigError::Invalid {
            file,
            line,
            path,
            message,
        }) => {
            assert_eq!(file, "orch.toml");
            (line, path, message)
        }
        Err(ConfigError::Parse {
            line,
            path,
            message,
            ..
        }) => (line, path, message),
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

#[test]
fn defaults_leave_the_byte_budget_to_the_runtime() {
    let c = parse_str(&with_server(""), "x").unwrap();
    assert_eq!(c.server.task_log_budget_bytes, None);
    assert!(c.server.task_log_max_tasks >= c.server.task_log_max_tasks_per_tenant);
    assert!(c.server.task_log_max_tasks_per_tenant > 0);
}

#[test]
fn good_budgets_load() {
    let c = parse_str(
        &with_server(
            "task_log_budget_bytes = 33554432\ntask_log_max_tasks = 100\ntask_log_max_tasks_per_tenant = 100",
        ),
        "x",
    )
    .unwrap();
    assert_eq!(c.server.task_log_budget_bytes, Some(32 << 20));
    assert_eq!(c.server.task_log_max_tasks, 100);
}

#[test]
fn each_bad_budget_names_its_line_and_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "task_log_budget_bytes = 0",
            "server.task_log_budget_bytes",
            "below the minimum",
        ),
        (
            "task_log_budget_bytes = 1000",
            "server.task_log_budget_bytes",
            "below the minimum",
        ),
        (
            "task_log_budget_bytes = 9223372036854775807",
            "server.task_log_budget_bytes",
            "over the maximum",
        ),
        (
            "task_log_max_tasks = 0",
            "server.task_log_max_tasks",
            "must be > 0",
        ),
        (
            "task_log_max_tasks_per_tenant = 0",
            "server.task_log_max_tasks_per_tenant",
            "must be > 0",
        ),
        (
            "task_log_max_tasks = 99999999999",
            "server.task_log_max_tasks",
            "over the maximum",
        ),
        (
            "task_log_max_tasks = 10\ntask_log_max_tasks_per_tenant = 11",
            "server.task_log_max_tasks_per_tenant",
            "more than task_log_max_tasks",
        ),
    ];
    for (lines, key, msg) in cases {
        let (line, path, message) = error_of(lines);
        assert_eq!(&path, key, "{lines}");
        assert!(message.contains(msg), "{lines}: {message}");
        // The line that writes the offending key.
        let name = key.trim_start_matches("server.");
        let expect = with_server(lines)
            .lines()
            .position(|l| l.split(' ').next() == Some(name))
            .map(|i| i + 1)
            .unwrap();
        assert_eq!(line, expect, "{lines}");
    }
}

#[test]
fn negative_and_mistyped_budgets_are_parse_errors_at_their_line() {
    for lines in [
        "task_log_budget_bytes = -1",
        "task_log_max_tasks = -5",
        "task_log_max_tasks_per_tenant = \"lots\"",
        "task_log_budget_bytes = 1e9",
    ] {
        let (line, path, _) = error_of(lines);
        assert_eq!(line, 3, "{lines}");
        assert!(path.starts_with("server.task_log_"), "{lines}: {path}");
    }
}

#[test]
fn the_error_message_reads_file_line_key() {
    let e = parse_str(&with_server("task_log_max_tasks = 0"), "orch.toml").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("orch.toml:3: server.task_log_max_tasks: "),
        "{e}"
    );
}
