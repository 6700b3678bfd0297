//! The alert rules and the Grafana dashboard under `monitoring/` against the metrics contract.
//!
//! - `promtool check rules` and `promtool test rules` on `monitoring/llama-orch.rules.yml` and
//!   its unit tests (promtool is required: Debian's `prometheus` package; there is no skip).
//! - Every PromQL expression — alert rules, the promtool tests' input series, every dashboard
//!   target and template query — may use only families of `contract.toml` (histograms through
//!   `_bucket`/`_sum`/`_count`) and `up`, with label names the family has (plus `job` and
//!   `instance`, which Prometheus adds, and `le` on buckets).
//! - The dashboard's queries are valid PromQL (promtool checks them as recording rules, with
//!   Grafana's variables substituted) and filter every pool-labelled family by `$pool_id`.
//! - Every alert has `for`, a severity, a summary and a description, and at least one promtool
//!   case where it fires and one where it does not.
//!
//! The rules files are read with a small YAML-subset reader ([`yaml`]): block mappings and
//! sequences, plain/quoted scalars, `|` block scalars, `[]`/`{}`. Anything else is an error, and
//! the number of rules it finds must equal promtool's count, so it cannot miss a rule silently.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use llorch_metrics_contract::{Contract, Family};

const RULES: &str = "monitoring/llama-orch.rules.yml";
const RULE_TESTS: &str = "monitoring/llama-orch.rules.test.yml";
const DASHBOARD: &str = "monitoring/grafana/llama-orch.json";
/// Scrape job names the rules (and the appliance's Prometheus config) use.
const JOBS: [&str; 2] = ["llama-orch-orchestratord", "llama-orch-pool-managerd"];
/// Labels Prometheus attaches to every scraped sample.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];
const SEVERITIES: [&str; 3] = ["critical", "warning", "info"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

fn read(rel: &str) -> String {
    let p = repo_root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn contract() -> Contract {
    llorch_metrics_contract::load().unwrap_or_else(|e| panic!("{e}"))
}

// ---- promtool ---------------------------------------------------------------------------------

fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "promtool not found on PATH: install Debian's `prometheus` package (apt-get install \
             prometheus) or put Prometheus' promtool on PATH; the monitoring rules cannot be \
             checked without it"
        )
    })
}

/// Runs promtool with `args` in the repository root; panics with its output unless it succeeds.
fn run_promtool(args: &[&str]) -> String {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n{text}",
        args.join(" "),
        out.status
    );
    text
}

/// `SUCCESS: N rules found` of `promtool check rules`.
fn promtool_rule_count(output: &str) -> usize {
    output
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("SUCCESS: ")?
                .strip_suffix(" rules found")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no `SUCCESS: N rules found` in promtool's output:\n{output}"))
}

#[test]
fn promtool_checks_the_rules() {
    let out = run_promtool(&["check", "rules", RULES]);
    let parsed = rules().len();
    assert_eq!(
        promtool_rule_count(&out),
        parsed,
        "promtool counts a different number of rules than this test reads from {RULES}"
    );
}

#[test]
fn promtool_unit_tests_of_the_rules_pass() {
    let out = run_promtool(&["test", "rules", RULE_TESTS]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn dashboard_queries_are_valid_promql() {
    // Grafana's variables replaced by values PromQL accepts; each target becomes a recording
    // rule, and promtool parses them all (JSON is YAML).
    let rules: Vec<serde_json::Value> = dashboard_queries()
        .into_iter()
        .enumerate()
        .map(|(i, (place, expr))| {
            serde_json::json!({
                "record": format!("dashboard:query_{i}"),
                "expr": substitute_grafana_vars(&expr, ".*"),
                "labels": {"place": place},
            })
        })
        .collect();
    let n = rules.len();
    let doc = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dashboard-queries.rules.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let out = run_promtool(&["check", "rules", path.to_str().unwrap()]);
    assert_eq!(promtool_rule_count(&out), n);
}

// ---- rules and their tests --------------------------------------------------------------------

struct Rule {
    alert: Option<String>,
    expr: String,
    for_: Option<String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

fn rules() -> Vec<Rule> {
    let doc = yaml::parse(&read(RULES)).unwrap_or_else(|e| panic!("{RULES}: {e}"));
    let groups = doc.get("groups").and_then(yaml::Value::seq);
    let groups = groups.unwrap_or_else(|| panic!("{RULES}: no `groups` list"));
    let mut out = Vec::new();
    for g in groups {
        let name = g.get("name").and_then(yaml::Value::str);
        assert_eq!(
            name,
            Some("llama-orch"),
            "{RULES}: one group, named llama-orch"
        );
        let list = g.get("rules").and_then(yaml::Value::seq);
        for r in list.unwrap_or_else(|| panic!("{RULES}: group without `rules`")) {
            let s = |k: &str| r.get(k).and_then(yaml::Value::str).map(String::from);
            let map = |k: &str| -> BTreeMap<String, String> {
                match r.get(k) {
                    None => BTreeMap::new(),
                    Some(v) => v
                        .map()
                        .unwrap_or_else(|| panic!("{RULES}: `{k}` is not a mapping"))
                        .iter()
                        .map(|(k, v)| (k.clone(), v.str().unwrap_or_default().to_string()))
                        .collect(),
                }
            };
            out.push(Rule {
                alert: s("alert"),
                expr: s("expr").unwrap_or_else(|| panic!("{RULES}: a rule without `expr`")),
                for_: s("for"),
                labels: map("labels"),
                annotations: map("annotations"),
            });
        }
    }
    out
}

/// `(alertname, fires)` of every `alert_rule_test` case, and every input series.
fn rule_tests() -> (Vec<(String, bool)>, Vec<String>) {
    let doc = yaml::parse(&read(RULE_TESTS)).unwrap_or_else(|e| panic!("{RULE_TESTS}: {e}"));
    let files = doc.get("rule_files").and_then(yaml::Value::seq);
    let files: Vec<&str> = files
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.str())
        .collect();
    assert_eq!(
        files,
        ["llama-orch.rules.yml"],
        "{RULE_TESTS} must test the shipped rules file"
    );
    let (mut cases, mut series) = (Vec::new(), Vec::new());
    let groups = doc.get("tests").and_then(yaml::Value::seq);
    for g in groups.unwrap_or_else(|| panic!("{RULE_TESTS}: no `tests`")) {
        for s in g
            .get("input_series")
            .and_then(yaml::Value::seq)
            .unwrap_or_default()
        {
            series.push(
                s.get("series")
                    .and_then(yaml::Value::str)
                    .unwrap()
                    .to_string(),
            );
        }
        let list = g.get("alert_rule_test").and_then(yaml::Value::seq);
        for c in list.unwrap_or_default() {
            let name = c.get("alertname").and_then(yaml::Value::str).unwrap();
            let alerts = c.get("exp_alerts").and_then(yaml::Value::seq);
            let fires = !alerts.unwrap_or_default().is_empty();
            cases.push((name.to_string(), fires));
        }
    }
    (cases, series)
}

#[test]
fn every_alert_is_complete_and_tested_both_ways() {
    let rules = rules();
    let (cases, _) = rule_tests();
    let mut names = BTreeSet::new();
    let mut problems = Vec::new();
    for r in &rules {
        let Some(name) = &r.alert else {
            problems.push(format!("recording rule for `{}`: only alerts here", r.expr));
            continue;
        };
        if !names.insert(name.clone()) {
            problems.push(format!("{name}: duplicate alert name"));
        }
        if r.for_.as_deref().is_none_or(str::is_empty) {
            problems.push(format!("{name}: no `for:`"));
        }
        match r.labels.get("severity") {
            Some(s) if SEVERITIES.contains(&s.as_str()) => {}
            s => problems.push(format!("{name}: severity {s:?} not one of {SEVERITIES:?}")),
        }
        for a in ["summary", "description"] {
            if r.annotations.get(a).is_none_or(|s| s.trim().is_empty()) {
                problems.push(format!("{name}: no `{a}` annotation"));
            }
        }
        for fires in [true, false] {
            if !cases.iter().any(|(n, f)| n == name && *f == fires) {
                problems.push(format!(
                    "{name}: no promtool case in {RULE_TESTS} where it {}",
                    if fires { "fires" } else { "does not fire" }
                ));
            }
        }
    }
    for (n, _) in &cases {
        if !names.contains(n) {
            problems.push(format!("{RULE_TESTS} tests `{n}`, which is not an alert"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn rules_use_only_contract_metrics() {
    let c = contract();
    let mut problems = Vec::new();
    let mut jobs = BTreeSet::new();
    for r in rules() {
        let name = r.alert.as_deref().unwrap_or("(record)");
        match promql::parse(&r.expr) {
            Err(e) => problems.push(format!("{name}: {e}")),
            Ok(q) => {
                problems.extend(check(&c, &q).into_iter().map(|p| format!("{name}: {p}")));
                for s in q.selectors.iter().filter(|s| s.name == "up") {
                    for m in s.matchers.iter().filter(|m| m.label == "job") {
                        jobs.insert(m.value.clone());
                    }
                }
            }
        }
    }
    for job in JOBS {
        if !jobs.contains(job) {
            problems.push(format!("no `up{{job=\"{job}\"}}` alert"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn rule_test_series_look_like_real_scrapes() {
    // Synthetic series carry exactly the labels a scrape gives them: the family's label set,
    // plus job and instance (and le on buckets).
    let c = contract();
    let (_, series) = rule_tests();
    let mut problems = Vec::new();
    for s in &series {
        let q = match promql::parse(s) {
            Ok(q) if q.selectors.len() == 1 => q,
            Ok(_) => {
                problems.push(format!("input series `{s}`: not one selector"));
                continue;
            }
            Err(e) => {
                problems.push(format!("input series `{s}`: {e}"));
                continue;
            }
        };
        problems.extend(check(&c, &q).into_iter().map(|p| format!("`{s}`: {p}")));
        let sel = &q.selectors[0];
        if let Ok(Some((family, bucket))) = resolve(&c, &sel.name) {
            let mut want: BTreeSet<&str> = family.labels.iter().map(String::as_str).collect();
            want.extend(TARGET_LABELS);
            if bucket {
                want.insert("le");
            }
            let got: BTreeSet<&str> = sel.matchers.iter().map(|m| m.label.as_str()).collect();
            if got != want {
                problems.push(format!("`{s}`: labels {got:?}, a scrape gives {want:?}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---- dashboard --------------------------------------------------------------------------------

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

fn panels(d: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// `(where, PromQL)` of every dashboard target, and of the `label_values(...)` template queries
/// as their series selector.
fn dashboard_queries() -> Vec<(String, String)> {
    let d = dashboard();
    let mut out = Vec::new();
    for p in panels(&d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let place = format!("panel {} `{}` {}", p["id"], p["title"], t["refId"]);
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{place}: no expr"));
            out.push((place, expr.to_string()));
        }
    }
    for v in d["templating"]["list"].as_array().expect("templating.list") {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"].as_str().or(v["query"].as_str());
        for (field, q) in [("query", q), ("definition", v["definition"].as_str())] {
            let Some(q) = q else { continue };
            let place = format!("variable {} {field}", v["name"]);
            let Some(sel) = label_values_selector(q) else {
                panic!("{place}: `{q}` is not label_values(<selector>, <label>)");
            };
            out.push((place, sel));
        }
    }
    out
}

/// The selector of Grafana's `label_values(<selector>, <label>)`, as a PromQL expression that
/// also mentions the label (`count by (<label>) (<selector>)`), so that both get checked.
fn label_values_selector(q: &str) -> Option<String> {
    let inner = q.trim().strip_prefix("label_values(")?.strip_suffix(')')?;
    let (sel, label) = inner.rsplit_once(',')?;
    Some(format!("count by ({}) ({})", label.trim(), sel.trim()))
}

/// Replaces Grafana's variables: interval macros by `5m`, others (label values) by `value`.
fn substitute_grafana_vars(expr: &str, value: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = if let Some(b) = after.strip_prefix('{') {
            let end = b.find('}').map_or(b.len(), |e| e + 2);
            let inner = &after[1..end - 1];
            (inner.split(':').next().unwrap_or(""), end)
        } else {
            let n = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..n], n)
        };
        if name.starts_with("__") && name.ends_with("interval") || name == "__range" {
            out.push_str("5m");
        } else {
            out.push_str(value);
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

const POOL_VAR: &str = "__grafana_pool_id__";

#[test]
fn dashboard_uses_only_contract_metrics_and_filters_by_pool() {
    let c = contract();
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for (place, expr) in dashboard_queries() {
        let q = match promql::parse(&substitute_grafana_vars(&expr, POOL_VAR)) {
            Ok(q) => q,
            Err(e) => {
                problems.push(format!("{place}: {e} in `{expr}`"));
                continue;
            }
        };
        problems.extend(check(&c, &q).into_iter().map(|p| format!("{place}: {p}")));
        for s in &q.selectors {
            if let Ok(Some((f, _))) = resolve(&c, &s.name) {
                used.insert(f.name.clone());
                let filtered = s
                    .matchers
                    .iter()
                    .any(|m| m.label == "pool_id" && m.op == "=~" && m.value == POOL_VAR);
                if place.starts_with("panel")
                    && f.labels.iter().any(|l| l == "pool_id")
                    && !filtered
                {
                    problems.push(format!(
                        "{place}: `{}` has a pool_id label but is not filtered by \
                         pool_id=~\"$pool_id\"",
                        s.name
                    ));
                }
            }
        }
    }
    // What the dashboard is for: these families must stay on it.
    for f in [
        "llorch_queue_depth",
        "llorch_queue_wait_seconds",
        "llorch_first_token_latency_seconds",
        "llorch_tokens_out_total",
        "llorch_replica_ready",
        "llorch_replica_restarts_total",
        "llorch_gpu_utilization_ratio",
        "llorch_gpu_memory_used_bytes",
        "llorch_tasks_enqueued_total",
        "llorch_tasks_rejected_total",
        "llorch_deadlines_met_ratio",
    ] {
        if !used.contains(f) {
            problems.push(format!("no panel shows `{f}`"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn dashboard_is_importable_anywhere() {
    let d = dashboard();
    let schema = d["schemaVersion"].as_u64().expect("schemaVersion");
    assert!(
        schema >= 36,
        "schemaVersion {schema}: Grafana 9+ dashboards are 36 or later"
    );
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()), "no uid");
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let var = |name: &str| vars.iter().find(|v| v["name"] == name);
    let ds = var("DS_PROMETHEUS").expect("a DS_PROMETHEUS datasource variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let pool = var("pool_id").expect("a pool_id template variable");
    assert_eq!(pool["type"], "query");
    let mut ids = BTreeSet::new();
    let mut problems = Vec::new();
    for p in panels(&d) {
        let id = p["id"].as_u64().expect("panel id");
        if !ids.insert(id) {
            problems.push(format!("panel id {id} used twice"));
        }
        if p["type"] == "row" {
            continue;
        }
        // A hard-coded datasource uid would not exist on the appliance's Grafana.
        if p["datasource"]["uid"] != "${DS_PROMETHEUS}" {
            problems.push(format!("panel {id}: datasource is not ${{DS_PROMETHEUS}}"));
        }
        let targets = p["targets"].as_array().map_or(&[][..], Vec::as_slice);
        if targets.is_empty() {
            problems.push(format!("panel {id}: no targets"));
        }
        for t in targets {
            if !t["datasource"].is_null() && t["datasource"]["uid"] != "${DS_PROMETHEUS}" {
                problems.push(format!("panel {id} target {}: datasource", t["refId"]));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---- the checker ------------------------------------------------------------------------------

/// The contract family behind a series name, and whether it is a `_bucket` series. `Ok(None)`
/// for `up`; `Err` for anything else that is not a contract series name.
fn resolve<'c>(c: &'c Contract, name: &str) -> Result<Option<(&'c Family, bool)>, String> {
    if name == "up" {
        return Ok(None);
    }
    if !name.starts_with("llorch_") {
        return Err(format!(
            "`{name}` is not a llama-orch metric (only `llorch_` families of contract.toml and \
             `up`)"
        ));
    }
    let family = |n: &str| c.family.iter().find(|f| f.name == n);
    if let Some(f) = family(name) {
        if f.kind == "histogram" {
            return Err(format!(
                "`{name}` is a histogram: use `{name}_bucket`, `_sum` or `_count`"
            ));
        }
        return Ok(Some((f, false)));
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        let base = name.strip_suffix(suffix);
        if let Some(f) = base.and_then(family).filter(|f| f.kind == "histogram") {
            return Ok(Some((f, suffix == "_bucket")));
        }
    }
    Err(format!(
        "`{name}` is not a family of contract.toml (tests/metrics-contract/contract.toml)"
    ))
}

/// Problems of one parsed expression: unknown series names, and label names (in matchers and
/// in by/without/on/ignoring/group_* lists) that the families it uses do not have.
fn check(c: &Contract, q: &promql::Query) -> Vec<String> {
    let mut problems = Vec::new();
    let mut all_labels: BTreeSet<&str> = TARGET_LABELS.into_iter().collect();
    for s in &q.selectors {
        let mut allowed: BTreeSet<&str> = TARGET_LABELS.into_iter().collect();
        match resolve(c, &s.name) {
            Err(e) => {
                problems.push(e);
                continue;
            }
            Ok(None) => {}
            Ok(Some((f, bucket))) => {
                allowed.extend(f.labels.iter().map(String::as_str));
                if bucket {
                    allowed.insert("le");
                }
            }
        }
        for m in &s.matchers {
            if !allowed.contains(m.label.as_str()) {
                problems.push(format!(
                    "`{}` has no label `{}` (labels: {allowed:?})",
                    s.name, m.label
                ));
            }
        }
        all_labels.extend(allowed);
    }
    for l in &q.grouping {
        if !all_labels.contains(l.as_str()) {
            problems.push(format!(
                "grouping label `{l}` is on none of the series used ({all_labels:?})"
            ));
        }
    }
    problems
}

#[test]
fn checker_accepts_contract_queries() {
    let c = contract();
    for e in [
        "sum by (pool_id) (rate(llorch_tasks_enqueued_total{pool_id=~\"a|b\"}[5m]))",
        "histogram_quantile(0.95, sum by (pool_id, le) (rate(llorch_first_token_latency_seconds_bucket[5m])))",
        "rate(llorch_queue_wait_seconds_sum[1m]) / rate(llorch_queue_wait_seconds_count[1m])",
        "up{job=\"llama-orch-orchestratord\"} == 0",
        "llorch_registry_feed_up == 0 unless on () absent(up{job='x'})",
        "max without (instance) (llorch_replica_ready) offset 5m > bool 0",
        "label_replace(up, \"fake\", \"llorch_made_up_total\", \"job\", \"(.*)\")",
        "sum(llorch_gpu_memory_used_bytes) / sum(llorch_gpu_memory_total_bytes) > 1e-3",
    ] {
        let q = promql::parse(e).unwrap_or_else(|err| panic!("`{e}`: {err}"));
        let p = check(&c, &q);
        assert!(p.is_empty(), "`{e}`: {p:?}");
    }
}

#[test]
fn checker_rejects_what_the_contract_does_not_have() {
    let c = contract();
    for (e, why) in [
        ("rate(llorch_made_up_total[5m]) > 0", "llorch_made_up_total"),
        (
            "sum by (pool_id) (llorch_queue_depth) > node_load1",
            "node_load1",
        ),
        ("llorch_first_token_latency_seconds > 1", "is a histogram"),
        (
            "llorch_tasks_enqueued_total_count",
            "llorch_tasks_enqueued_total_count",
        ),
        ("llorch_queue_depth{pool=\"a\"}", "no label `pool`"),
        (
            "llorch_queue_depth_bucket{le=\"1\"}",
            "llorch_queue_depth_bucket",
        ),
        ("llorch_queue_depth{le=\"1\"}", "no label `le`"),
        (
            "sum by (tenant) (llorch_queue_depth)",
            "grouping label `tenant`",
        ),
    ] {
        let q = promql::parse(e).unwrap_or_else(|err| panic!("`{e}`: {err}"));
        let p = check(&c, &q).join("; ");
        assert!(
            p.contains(why),
            "`{e}` must be rejected for {why}; got: {p:?}"
        );
    }
    for (e, why) in [
        ("rat(llorch_queue_depth[5m])", "unknown function `rat`"),
        ("{__name__=~\"llorch_.*\"}", "no metric name"),
        ("sum(llorch_queue_depth{pool_id=\"a\"", "unclosed"),
        ("sum($metric)", "`$`"),
        (
            "rate(llorch_tasks_enqueued_total[$__rate_interval])",
            "bad range",
        ),
    ] {
        let err = promql::parse(e).err().unwrap_or_default();
        assert!(
            err.contains(why),
            "`{e}` must not parse ({why}); got {err:?}"
        );
    }
}

#[test]
fn grafana_variables_are_substituted() {
    assert_eq!(
        substitute_grafana_vars(
            "rate(x{pool_id=~\"$pool_id\", r=\"${replica:regex}\"}[$__rate_interval])",
            ".*"
        ),
        "rate(x{pool_id=~\".*\", r=\".*\"}[5m])"
    );
    assert_eq!(
        label_values_selector("label_values(llorch_replica_ready, pool_id)").as_deref(),
        Some("count by (pool_id) (llorch_replica_ready)")
    );
}

/// A PromQL scanner that finds series selectors and grouping labels; enough to check names,
/// not a parser of the whole grammar (promtool checks the syntax).
mod promql {
    pub struct Matcher {
        pub label: String,
        pub op: String,
        pub value: String,
    }

    pub struct Selector {
        pub name: String,
        pub matchers: Vec<Matcher>,
    }

    #[derive(Default)]
    pub struct Query {
        pub selectors: Vec<Selector>,
        /// Labels in by/without/on/ignoring/group_left/group_right lists.
        pub grouping: Vec<String>,
    }

    const AGGREGATORS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const FUNCTIONS: &[&str] = &[
        "abs",
        "absent",
        "absent_over_time",
        "acos",
        "acosh",
        "asin",
        "asinh",
        "atan",
        "atanh",
        "avg_over_time",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "cos",
        "cosh",
        "count_over_time",
        "day_of_month",
        "day_of_week",
        "day_of_year",
        "days_in_month",
        "deg",
        "delta",
        "deriv",
        "exp",
        "floor",
        "histogram_count",
        "histogram_fraction",
        "histogram_quantile",
        "histogram_sum",
        "holt_winters",
        "hour",
        "idelta",
        "increase",
        "irate",
        "label_join",
        "label_replace",
        "last_over_time",
        "ln",
        "log10",
        "log2",
        "max_over_time",
        "min_over_time",
        "minute",
        "month",
        "pi",
        "predict_linear",
        "present_over_time",
        "quantile_over_time",
        "rad",
        "rate",
        "resets",
        "round",
        "scalar",
        "sgn",
        "sin",
        "sinh",
        "sort",
        "sort_desc",
        "sqrt",
        "stddev_over_time",
        "stdvar_over_time",
        "sum_over_time",
        "tan",
        "tanh",
        "time",
        "timestamp",
        "vector",
        "year",
    ];
    /// Keywords followed by a parenthesized label list.
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: &[&str] = &[
        "and", "or", "unless", "offset", "bool", "atan2", "inf", "nan",
    ];

    fn skip_ws(b: &[u8], mut i: usize) -> usize {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    }

    /// The end (after the closing quote) and the unescaped content of a string at `b[i]`.
    fn string(b: &[u8], i: usize) -> Result<(usize, String), String> {
        let q = b[i];
        let mut j = i + 1;
        let mut s = Vec::new();
        while j < b.len() && b[j] != q {
            if b[j] == b'\\' && q != b'`' && j + 1 < b.len() {
                j += 1;
            }
            s.push(b[j]);
            j += 1;
        }
        if j >= b.len() {
            return Err("unclosed string".into());
        }
        Ok((j + 1, String::from_utf8_lossy(&s).into_owned()))
    }

    fn ident(b: &[u8], i: usize) -> usize {
        let mut j = i;
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b':') {
            j += 1;
        }
        j
    }

    /// `{label op "value", ...}` starting at `b[i] == '{'`; returns the end and the matchers.
    fn matchers(b: &[u8], mut i: usize) -> Result<(usize, Vec<Matcher>), String> {
        let mut out = Vec::new();
        i += 1;
        loop {
            i = skip_ws(b, i);
            match b.get(i) {
                None => return Err("unclosed `{`".into()),
                Some(b'}') => return Ok((i + 1, out)),
                Some(b',') => {
                    i += 1;
                    continue;
                }
                _ => {}
            }
            let end = ident(b, i);
            if end == i {
                return Err(format!("bad label matcher at `{}`", tail(b, i)));
            }
            let label = String::from_utf8_lossy(&b[i..end]).into_owned();
            i = skip_ws(b, end);
            let op_end = b[i..]
                .iter()
                .position(|c| !b"=!~".contains(c))
                .map_or(b.len(), |p| i + p);
            let op = String::from_utf8_lossy(&b[i..op_end]).into_owned();
            if !["=", "!=", "=~", "!~"].contains(&op.as_str()) {
                return Err(format!("bad matcher operator `{op}` after `{label}`"));
            }
            i = skip_ws(b, op_end);
            if !matches!(b.get(i), Some(b'"' | b'\'' | b'`')) {
                return Err(format!("matcher of `{label}` without a quoted value"));
            }
            let (end, value) = string(b, i)?;
            out.push(Matcher { label, op, value });
            i = end;
        }
    }

    fn tail(b: &[u8], i: usize) -> String {
        String::from_utf8_lossy(&b[i..b.len().min(i + 30)]).into_owned()
    }

    pub fn parse(expr: &str) -> Result<Query, String> {
        let b = expr.as_bytes();
        let mut q = Query::default();
        let mut depth = 0i32;
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            match c {
                c if c.is_ascii_whitespace() => i += 1,
                b'"' | b'\'' | b'`' => i = string(b, i)?.0,
                b'#' => {
                    // Comment to the end of the line.
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                }
                b'$' => return Err(format!("`$` outside a string at `{}`", tail(b, i))),
                b'[' => {
                    // Range or subquery: durations only (`5m`, `1h:30s`).
                    let end = i + b[i..]
                        .iter()
                        .position(|&c| c == b']')
                        .ok_or("unclosed `[`")?;
                    let inner = &b[i + 1..end];
                    if inner.is_empty()
                        || !inner
                            .iter()
                            .all(|c| c.is_ascii_alphanumeric() || *c == b':')
                    {
                        return Err(format!("bad range `[{}]`", String::from_utf8_lossy(inner)));
                    }
                    i = end + 1;
                }
                b'{' => return Err(format!("selector with no metric name at `{}`", tail(b, i))),
                b'(' => {
                    depth += 1;
                    i += 1;
                }
                b')' => {
                    depth -= 1;
                    if depth < 0 {
                        return Err("unbalanced `)`".into());
                    }
                    i += 1;
                }
                c if c.is_ascii_digit() || c == b'.' => {
                    // Number or duration: 0.95, 1e-3, 0x1f, 5m, 1h30m.
                    let mut j = i;
                    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'.') {
                        j += 1;
                        if (b[j - 1] == b'e' || b[j - 1] == b'E')
                            && matches!(b.get(j), Some(b'+' | b'-'))
                        {
                            j += 1;
                        }
                    }
                    i = j;
                }
                c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                    let end = ident(b, i);
                    let word = String::from_utf8_lossy(&b[i..end]).into_owned();
                    let next = skip_ws(b, end);
                    let lower = word.to_ascii_lowercase();
                    if GROUPING.contains(&word.as_str()) {
                        if b.get(next) == Some(&b'(') {
                            let close = b[next..].iter().position(|&c| c == b')');
                            let close = next + close.ok_or("unclosed label list")?;
                            for l in String::from_utf8_lossy(&b[next + 1..close]).split(',') {
                                let l = l.trim();
                                if !l.is_empty() {
                                    q.grouping.push(l.to_string());
                                }
                            }
                            i = close + 1;
                        } else {
                            i = end;
                        }
                    } else if KEYWORDS.contains(&lower.as_str())
                        || AGGREGATORS.contains(&word.as_str())
                    {
                        i = end;
                    } else if b.get(next) == Some(&b'(') {
                        if !FUNCTIONS.contains(&word.as_str()) {
                            return Err(format!("unknown function `{word}`"));
                        }
                        i = end;
                    } else if b.get(next) == Some(&b'{') {
                        let (after, m) = matchers(b, next)?;
                        q.selectors.push(Selector {
                            name: word,
                            matchers: m,
                        });
                        i = after;
                    } else {
                        q.selectors.push(Selector {
                            name: word,
                            matchers: Vec::new(),
                        });
                        i = end;
                    }
                }
                _ => i += 1,
            }
        }
        if depth != 0 {
            return Err("unclosed `(`".into());
        }
        Ok(q)
    }
}

/// A reader for the YAML subset the rules files use (see the module docs).
mod yaml {
    #[derive(Debug, Clone)]
    pub enum Value {
        Str(String),
        Seq(Vec<Value>),
        Map(Vec<(String, Value)>),
    }

    impl Value {
        pub fn get(&self, key: &str) -> Option<&Value> {
            match self {
                Value::Map(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
                _ => None,
            }
        }
        pub fn str(&self) -> Option<&str> {
            match self {
                Value::Str(s) => Some(s),
                _ => None,
            }
        }
        pub fn seq(&self) -> Option<&[Value]> {
            match self {
                Value::Seq(s) => Some(s),
                _ => None,
            }
        }
        pub fn map(&self) -> Option<&[(String, Value)]> {
            match self {
                Value::Map(m) => Some(m),
                _ => None,
            }
        }
    }

    struct Line {
        no: usize,
        indent: usize,
        text: String,
    }

    struct Reader {
        lines: Vec<Line>,
        pos: usize,
        /// Raw lines, for block scalars (which keep blank lines and `#`).
        raw: Vec<String>,
    }

    pub fn parse(text: &str) -> Result<Value, String> {
        let raw: Vec<String> = text.lines().map(String::from).collect();
        let mut lines = Vec::new();
        for (no, l) in raw.iter().enumerate() {
            if l.contains('\t') {
                return Err(format!("line {}: tab", no + 1));
            }
            let t = l.trim_start();
            if t.is_empty() || t.starts_with('#') || t == "---" {
                continue;
            }
            lines.push(Line {
                no,
                indent: l.len() - t.len(),
                text: t.trim_end().to_string(),
            });
        }
        let mut r = Reader { lines, pos: 0, raw };
        if r.lines.is_empty() {
            return Err("empty document".into());
        }
        let indent = r.lines[0].indent;
        let v = r.node(indent)?;
        if let Some(l) = r.lines.get(r.pos) {
            return Err(format!("line {}: unexpected `{}`", l.no + 1, l.text));
        }
        Ok(v)
    }

    /// `key: rest` when the line starts with a plain key.
    fn split_key(t: &str) -> Option<(&str, &str)> {
        let (k, rest) = if let Some(k) = t.strip_suffix(':') {
            (k, "")
        } else {
            let i = t.find(": ")?;
            (&t[..i], t[i + 2..].trim_start())
        };
        let ok = !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
        ok.then_some((k, rest))
    }

    impl Reader {
        fn node(&mut self, indent: usize) -> Result<Value, String> {
            let l = &self.lines[self.pos];
            if l.indent != indent {
                return Err(format!("line {}: bad indentation", l.no + 1));
            }
            if l.text == "-" || l.text.starts_with("- ") {
                self.seq(indent)
            } else if split_key(&l.text).is_some() {
                self.map(indent)
            } else {
                Err(format!("line {}: expected a key or `- `", l.no + 1))
            }
        }

        fn seq(&mut self, indent: usize) -> Result<Value, String> {
            let mut items = Vec::new();
            while let Some(l) = self.lines.get(self.pos) {
                let dash = l.text == "-" || l.text.starts_with("- ");
                if l.indent < indent || (l.indent == indent && !dash) {
                    break;
                }
                if l.indent > indent {
                    return Err(format!("line {}: expected `- ` at this indent", l.no + 1));
                }
                let rest = l.text[1..].trim_start().to_string();
                if rest.is_empty() {
                    self.pos += 1;
                    let next = self.lines.get(self.pos).map(|l| l.indent);
                    match next {
                        Some(n) if n > indent => items.push(self.node(n)?),
                        _ => return Err(format!("line {}: empty item", l.no + 1)),
                    }
                } else if split_key(&rest).is_some() || rest.starts_with("- ") {
                    // `- key: v`: a mapping whose keys sit two columns right of the dash.
                    let inner = l.indent + (l.text.len() - rest.len());
                    self.lines[self.pos] = Line {
                        no: l.no,
                        indent: inner,
                        text: rest,
                    };
                    items.push(self.node(inner)?);
                } else {
                    let no = l.no;
                    self.pos += 1;
                    items.push(self.scalar(&rest, no, indent)?);
                }
            }
            Ok(Value::Seq(items))
        }

        fn map(&mut self, indent: usize) -> Result<Value, String> {
            let mut entries: Vec<(String, Value)> = Vec::new();
            while let Some(l) = self.lines.get(self.pos) {
                if l.indent < indent {
                    break;
                }
                let no = l.no;
                let Some((k, rest)) = split_key(&l.text).filter(|_| l.indent == indent) else {
                    return Err(format!("line {}: expected `key:` at this indent", no + 1));
                };
                let (k, rest) = (k.to_string(), rest.to_string());
                if entries.iter().any(|(e, _)| *e == k) {
                    return Err(format!("line {}: duplicate key `{k}`", no + 1));
                }
                self.pos += 1;
                let v = if rest.is_empty() {
                    match self.lines.get(self.pos) {
                        // Block sequences may sit at the key's own indent.
                        Some(n)
                            if n.indent > indent
                                || (n.indent == indent && n.text.starts_with("- ")) =>
                        {
                            let n = n.indent;
                            self.node(n)?
                        }
                        _ => Value::Str(String::new()),
                    }
                } else if rest == "|" || rest == "|-" || rest == "|+" {
                    self.block(indent, no)?
                } else {
                    self.scalar(&rest, no, indent)?
                };
                entries.push((k, v));
            }
            Ok(Value::Map(entries))
        }

        /// A `|` block scalar under the key on raw line `no`: every following raw line more
        /// indented than the key (or blank), with the common indentation removed.
        fn block(&mut self, indent: usize, no: usize) -> Result<Value, String> {
            let mut body = Vec::new();
            let mut end = no + 1;
            while end < self.raw.len() {
                let l = &self.raw[end];
                let t = l.trim_start();
                if !t.is_empty() && l.len() - t.len() <= indent {
                    break;
                }
                body.push(l.as_str());
                end += 1;
            }
            while body.last().is_some_and(|l| l.trim().is_empty()) {
                body.pop();
            }
            let cut = body
                .iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.len() - l.trim_start().len())
                .min()
                .ok_or(format!("line {}: empty block scalar", no + 1))?;
            let text: Vec<&str> = body.iter().map(|l| l.get(cut..).unwrap_or("")).collect();
            while self.lines.get(self.pos).is_some_and(|l| l.no < end) {
                self.pos += 1;
            }
            Ok(Value::Str(text.join("\n") + "\n"))
        }

        fn scalar(&mut self, s: &str, no: usize, indent: usize) -> Result<Value, String> {
            if let Some(l) = self.lines.get(self.pos).filter(|l| l.indent > indent) {
                return Err(format!(
                    "line {}: multi-line plain scalars are not read",
                    l.no + 1
                ));
            }
            let err = |m: &str| format!("line {}: {m}", no + 1);
            match s {
                "[]" => return Ok(Value::Seq(Vec::new())),
                "{}" => return Ok(Value::Map(Vec::new())),
                _ => {}
            }
            if let Some(body) = s.strip_prefix('"') {
                let mut out = String::new();
                let mut chars = body.chars();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => {
                            let rest: String = chars.collect();
                            return trailing(&rest, out).map_err(|m| err(&m));
                        }
                        '\\' => match chars.next() {
                            Some('n') => out.push('\n'),
                            Some('t') => out.push('\t'),
                            Some(c @ ('"' | '\\' | '/')) => out.push(c),
                            other => return Err(err(&format!("escape \\{other:?} not read"))),
                        },
                        c => out.push(c),
                    }
                }
                return Err(err("unclosed double quote"));
            }
            if let Some(body) = s.strip_prefix('\'') {
                let mut out = String::new();
                let mut chars = body.chars().peekable();
                while let Some(c) = chars.next() {
                    if c == '\'' {
                        if chars.peek() == Some(&'\'') {
                            chars.next();
                            out.push('\'');
                        } else {
                            let rest: String = chars.collect();
                            return trailing(&rest, out).map_err(|m| err(&m));
                        }
                    } else {
                        out.push(c);
                    }
                }
                return Err(err("unclosed single quote"));
            }
            if s.starts_with(['[', '{', '&', '*', '!', '>', '|', '%', '@', '`']) {
                return Err(err(&format!("`{s}`: YAML feature not read here")));
            }
            let plain = s.split(" #").next().unwrap_or("").trim_end();
            Ok(Value::Str(plain.to_string()))
        }
    }

    fn trailing(rest: &str, out: String) -> Result<Value, String> {
        let rest = rest.trim();
        if rest.is_empty() || rest.starts_with('#') {
            Ok(Value::Str(out))
        } else {
            Err(format!("text after a quoted scalar: `{rest}`"))
        }
    }
}

#[test]
fn yaml_reader_reads_the_subset_and_refuses_the_rest() {
    let doc = yaml::parse(
        "a:\n  - alert: X\n    expr: |\n      sum(x)\n        > 1\n    for: 5m\n    labels:\n      \
         severity: 'it''s'\n  - alert: \"Y: z\" # c\n    e: []\nb: plain text\n",
    )
    .unwrap();
    let a = doc.get("a").and_then(yaml::Value::seq).unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(a[0].get("expr").unwrap().str(), Some("sum(x)\n  > 1\n"));
    assert_eq!(a[0].get("for").unwrap().str(), Some("5m"));
    let sev = a[0].get("labels").and_then(|l| l.get("severity"));
    assert_eq!(sev.and_then(yaml::Value::str), Some("it's"));
    assert_eq!(a[1].get("alert").unwrap().str(), Some("Y: z"));
    assert_eq!(
        a[1].get("e").and_then(yaml::Value::seq).map(<[_]>::len),
        Some(0)
    );
    assert_eq!(doc.get("b").unwrap().str(), Some("plain text"));
    for bad in [
        "a: &anchor x\n",
        "a: [1, 2]\n",
        "a: x\n   continued\n",
        "a:\n  b: 1\n c: 2\n",
        "a: 1\na: 2\n",
        "a: >\n  folded\n",
    ] {
        assert!(yaml::parse(bad).is_err(), "{bad:?} must be refused");
    }
}
