//! Consumer contract tests of llama-orch's HTTP API: `contract/orchqueue-v1.json` records
//! request/response pairs per endpoint (error cases included). One test run checks the record
//! three ways: against the live servers (orchestratord with mock pools, pool-managerd's catalog
//! API), and the two consumers — `llorch` and the generated client (`llorch-openapi-client`) —
//! against a stub that answers only with recorded responses. A server change that breaks what a
//! consumer relies on fails the first check; re-recording it (`LLORCH_BLESS=1`, `cargo xtask
//! regen`) makes the consumer checks run on the new answers.
//!
//! This library holds the contract's model and its matching rules. It must not depend on the
//! server crates or on the consumers (the tests bring those in): the contract is data.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The contract file, relative to this crate.
pub const CONTRACT: &str = "contract/orchqueue-v1.json";

/// The keys the live servers are configured with and the stubs recognise.
pub const DATA_KEY: &str = "contract-data-key";
pub const CONTROL_KEY: &str = "contract-control-key";
pub const UNKNOWN_KEY: &str = "contract-unknown-key";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    /// What the file is, for a reader.
    pub about: String,
    pub interactions: Vec<Interaction>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interaction {
    /// Unique; consumer checks refer to interactions by name.
    pub name: String,
    pub target: Target,
    /// The OpenAPI `operationId`.
    pub operation: String,
    pub request: Request,
    pub response: Response,
    /// JSON pointers into the response body whose values vary between runs (ids, times): they
    /// must be present with the same JSON type, their values are not compared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    Orchestratord,
    PoolManagerd,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub key: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

/// Which key a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Data,
    Control,
    /// No `Authorization` header.
    None,
    /// A key no server knows.
    Unknown,
}

impl Role {
    pub fn key(self) -> Option<&'static str> {
        match self {
            Role::Data => Some(DATA_KEY),
            Role::Control => Some(CONTROL_KEY),
            Role::Unknown => Some(UNKNOWN_KEY),
            Role::None => None,
        }
    }

    /// The role of an `Authorization` header value as a stub sees it.
    pub fn from_authorization(h: Option<&str>) -> Role {
        match h.and_then(|h| h.strip_prefix("Bearer ")) {
            None => Role::None,
            Some(DATA_KEY) => Role::Data,
            Some(CONTROL_KEY) => Role::Control,
            Some(_) => Role::Unknown,
        }
    }
}

/// Values that differ per run and stand in the file as `{{name}}`.
#[derive(Debug, Clone)]
pub struct Vars(pub Vec<(&'static str, String)>);

impl Vars {
    fn fill(&self, text: &str) -> String {
        self.0.iter().fold(text.to_string(), |t, (k, v)| {
            t.replace(&format!("{{{{{k}}}}}"), &json_escaped(v))
        })
    }
    fn unfill(&self, text: &str) -> String {
        self.0.iter().fold(text.to_string(), |t, (k, v)| {
            t.replace(&json_escaped(v), &format!("{{{{{k}}}}}"))
        })
    }
}

/// `v` as it appears inside a JSON string.
fn json_escaped(v: &str) -> String {
    let s = serde_json::to_string(v).unwrap_or_default();
    // Exactly the enclosing quotes (an escaped quote may end the content).
    s.get(1..s.len().saturating_sub(1))
        .unwrap_or_default()
        .to_string()
}

impl Contract {
    /// Parses the file's text with `{{vars}}` filled in; checks names are unique.
    pub fn parse(text: &str, vars: &Vars) -> Result<Contract, String> {
        let c: Contract = serde_json::from_str(&vars.fill(text)).map_err(|e| e.to_string())?;
        let mut names: Vec<&str> = c.interactions.iter().map(|i| i.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("interaction `{}` is named twice", w[0]));
        }
        Ok(c)
    }

    /// The file's text for this contract, with the run's values put back as `{{vars}}`.
    pub fn render(&self, vars: &Vars) -> String {
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        vars.unfill(&text) + "\n"
    }

    pub fn get(&self, name: &str) -> &Interaction {
        self.interactions
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("no interaction `{name}` in the contract"))
    }
}

/// Where `actual` breaks `expected`: every field of `expected` must be in `actual` with the
/// same value (fields under an `ignore` pointer: the same JSON type); arrays must have the same
/// length. Fields only in `actual` are allowed (a consumer must tolerate additions) when
/// `allow_additions`; otherwise they are reported too.
pub fn diff(
    expected: &Value,
    actual: &Value,
    ignore: &[String],
    allow_additions: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    walk(expected, actual, "", ignore, allow_additions, &mut out);
    out
}

fn walk(e: &Value, a: &Value, at: &str, ignore: &[String], add: bool, out: &mut Vec<String>) {
    if ignore.iter().any(|p| p == at) {
        if std::mem::discriminant(e) != std::mem::discriminant(a) {
            out.push(format!("{at}: expected a value like {e}, got {a}"));
        }
        return;
    }
    match (e, a) {
        (Value::Object(eo), Value::Object(ao)) => {
            for (k, ev) in eo {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                match ao.get(k) {
                    Some(av) => walk(ev, av, &p, ignore, add, out),
                    None => out.push(format!("{p}: missing (expected {ev})")),
                }
            }
            if !add {
                for k in ao.keys().filter(|k| !eo.contains_key(*k)) {
                    out.push(format!("{at}/{k}: not in the contract"));
                }
            }
        }
        (Value::Array(ea), Value::Array(aa)) if ea.len() == aa.len() => {
            for (i, (ev, av)) in ea.iter().zip(aa).enumerate() {
                walk(ev, av, &format!("{at}/{i}"), ignore, add, out);
            }
        }
        _ if e == a => {}
        _ => out.push(format!(
            "{}: expected {e}, got {a}",
            if at.is_empty() { "/" } else { at }
        )),
    }
}

/// Whether a concrete path matches an OpenAPI path template (`/v1/pools/{id}/health`).
pub fn path_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && !p.is_empty()) || t == p)
}

/// The value of the template's `{name}` segment in `path`.
pub fn path_param(template: &str, path: &str, name: &str) -> Option<String> {
    let want = format!("{{{name}}}");
    template
        .split('/')
        .zip(path.split('/'))
        .find(|(t, _)| *t == want)
        .map(|(_, p)| p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_rules() {
        let e = json!({"a": 1, "b": {"c": [1, 2]}, "t": 5});
        assert!(
            diff(
                &e,
                &json!({"a": 1, "b": {"c": [1, 2]}, "t": 9, "new": 0}),
                &["/t".into()],
                true
            )
            .is_empty()
        );
        let d = diff(
            &e,
            &json!({"a": 2, "b": {"c": [1]}, "t": "x", "new": 0}),
            &["/t".into()],
            false,
        );
        assert_eq!(d.len(), 4, "{d:?}");
        assert!(
            diff(&e, &json!({"b": {"c": [1, 2]}, "t": 5}), &[], true)[0].starts_with("/a: missing")
        );
    }

    #[test]
    fn vars_round_trip_and_paths() {
        let vars = Vars(vec![
            ("digest", "ab12".into()),
            ("model_path", "/tmp/a \"b\"".into()),
        ]);
        let text = r#"{"about": "x", "interactions": [{"name": "n", "target": "pool-managerd",
            "operation": "get_model", "request": {"method": "GET", "path": "/v1/catalog/models/sha256:{{digest}}", "key": "control"},
            "response": {"status": 200, "body": {"model_ref": "{{model_path}}"}}}]}"#;
        let c = Contract::parse(text, &vars).expect("parses");
        assert_eq!(
            c.interactions[0].request.path,
            "/v1/catalog/models/sha256:ab12"
        );
        assert_eq!(
            c.interactions[0].response.body,
            Some(json!({"model_ref": "/tmp/a \"b\""}))
        );
        let rendered = c.render(&vars);
        let again = Contract::parse(&rendered, &vars).unwrap_or_else(|e| panic!("{e}: {rendered}"));
        assert_eq!(again.interactions[0].request, c.interactions[0].request);
        assert!(c.render(&vars).contains("{{model_path}}"));
        assert!(path_matches("/v1/pools/{id}/health", "/v1/pools/p/health"));
        assert!(!path_matches("/v1/pools/{id}/health", "/v1/pools//health"));
        assert!(!path_matches("/v1/pools/{id}/health", "/v1/pools/p/drain"));
        assert_eq!(
            path_param("/v1/pools/{id}/drain", "/v1/pools/q/drain", "id").as_deref(),
            Some("q")
        );
        assert_eq!(
            Role::from_authorization(Some("Bearer contract-data-key")),
            Role::Data
        );
        assert_eq!(
            Role::from_authorization(Some("Bearer other")),
            Role::Unknown
        );
        assert_eq!(Role::from_authorization(None), Role::None);
    }
}
