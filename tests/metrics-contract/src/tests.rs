//! The linter itself can fail: each kind of break in a small synthetic scrape is reported.

use super::*;

fn tiny() -> Contract {
    toml::from_str(
        r#"
[[family]]
name = "llorch_x_total"
type = "counter"
unit = "count"
labels = ["pool_id"]
exporters = ["orchestratord"]
doc = "x"

[[family]]
name = "llorch_wait_seconds"
type = "histogram"
unit = "seconds"
labels = ["pool_id"]
exporters = ["orchestratord"]
doc = "w"

[[family]]
name = "llorch_rare_total"
type = "counter"
unit = "count"
labels = []
exporters = ["orchestratord"]
optional = true
reason = "rare"
doc = "r"
"#,
    )
    .unwrap()
}

const GOOD: &str = "# HELP llorch_x_total X.\n# TYPE llorch_x_total counter\n\
llorch_x_total{pool_id=\"p\"} 1\n# HELP llorch_wait_seconds W.\n\
# TYPE llorch_wait_seconds histogram\nllorch_wait_seconds_bucket{pool_id=\"p\",le=\"+Inf\"} 1\n\
llorch_wait_seconds_sum{pool_id=\"p\"} 0.1\nllorch_wait_seconds_count{pool_id=\"p\"} 1\n";

fn lint_text(text: &str) -> Vec<Violation> {
    lint(&tiny(), "orchestratord", &parse(text).unwrap())
}

#[test]
fn a_conforming_scrape_passes_and_optional_may_be_absent() {
    assert!(tiny().self_check().is_empty());
    assert_eq!(lint_text(GOOD), vec![]);
}

#[test]
fn undocumented_family_fails() {
    let v = lint_text(&format!(
        "{GOOD}# HELP llorch_new_total N.\n# TYPE llorch_new_total counter\nllorch_new_total 1\n"
    ));
    assert!(
        matches!(&v[..], [Violation::Undocumented { name, .. }] if name == "llorch_new_total"),
        "{v:?}"
    );
    assert!(
        v[0].to_string()
            .contains("undocumented family `llorch_new_total`")
    );
}

#[test]
fn missing_family_fails() {
    let text: String = GOOD
        .lines()
        .filter(|l| !l.contains("llorch_x_total"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        lint_text(&text),
        vec![Violation::Missing {
            name: "llorch_x_total".into()
        }]
    );
}

#[test]
fn wrong_type_and_wrong_labels_fail() {
    let v = lint_text(&GOOD.replace("llorch_x_total counter", "llorch_x_total gauge"));
    assert!(
        v.iter().any(|v| matches!(v, Violation::WrongType { .. })),
        "{v:?}"
    );
    // A gauge ending in _total breaks the naming convention too.
    assert!(v.iter().any(|v| matches!(v, Violation::Naming(_))), "{v:?}");
    let v = lint_text(&GOOD.replace(
        "llorch_x_total{pool_id=\"p\"}",
        "llorch_x_total{pool_id=\"p\",extra=\"1\"}",
    ));
    assert!(matches!(&v[..], [Violation::WrongLabels { .. }]), "{v:?}");
    let v = lint_text(&GOOD.replace(
        "llorch_wait_seconds_sum{pool_id=\"p\"}",
        "llorch_wait_seconds_sum",
    ));
    assert!(matches!(&v[..], [Violation::WrongLabels { .. }]), "{v:?}");
}

#[test]
fn missing_help_fails() {
    let v = lint_text(&GOOD.replace("# HELP llorch_x_total X.\n", ""));
    assert_eq!(
        v,
        vec![Violation::NoHelp {
            name: "llorch_x_total".into()
        }]
    );
}

#[test]
fn naming_conventions() {
    let bad = |n: &str, k: &str, u: Option<&str>| !naming_problems(n, k, u).is_empty();
    assert!(!bad("llorch_tokens_out_total", "counter", Some("count")));
    assert!(!bad(
        "llorch_first_token_latency_seconds",
        "histogram",
        Some("seconds")
    ));
    assert!(!bad("llorch_gpu_memory_used_bytes", "gauge", Some("bytes")));
    assert!(
        bad("llorch_tokens_out", "counter", None),
        "counter without _total"
    );
    assert!(
        bad("llorch_slots_total", "gauge", None),
        "gauge with _total"
    );
    assert!(
        bad("tokens_out_total", "counter", None),
        "no llorch_ prefix"
    );
    assert!(
        bad("llorch_tokensOut_total", "counter", None),
        "not snake_case"
    );
    assert!(bad("llorch_latency_ms", "gauge", None), "non-base unit");
    assert!(
        bad("llorch_wait_milliseconds", "histogram", None),
        "non-base unit"
    );
    assert!(
        bad("llorch_latency", "histogram", None),
        "histogram without unit suffix"
    );
    assert!(
        bad("llorch_latency", "gauge", Some("seconds")),
        "unit not in the name"
    );
    assert!(
        bad("llorch_wait_seconds", "gauge", Some("count")),
        "count with a unit suffix"
    );
}

#[test]
fn contract_self_check_catches_bad_entries() {
    let mut c = tiny();
    c.family.push(c.family[0].clone());
    c.family[2].reason = None;
    c.family[1].unit = "milliseconds".into();
    c.family[0].exporters = vec!["nobody".into()];
    let p = c.self_check();
    for needle in [
        "documented twice",
        "needs a reason",
        "unknown unit",
        "exporters must be",
    ] {
        assert!(p.iter().any(|p| p.contains(needle)), "{needle}: {p:?}");
    }
}

#[test]
fn the_committed_contract_is_valid() {
    let c = load().unwrap_or_else(|e| panic!("{e}"));
    for exporter in EXPORTERS {
        assert!(c.of(exporter).count() > 10, "{exporter} has few families");
    }
}
