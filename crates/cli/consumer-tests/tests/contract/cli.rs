//! `llorch` as a consumer: each command runs in-process (`llama_orch_cli::run`, the binary's
//! code path) against the stub serving the recorded interactions it relies on. The command must
//! send only recorded requests, exit with the documented code, and show the recorded answer:
//! `--output json` prints the recorded document, errors print the recorded code and message.

use clap::Parser;
use llama_orch_cli::{ApiKey, Cli};
use llorch_consumer_tests::{Contract, Role, diff};
use serde_json::Value;

use crate::stub::Stub;

enum Expect {
    /// stdout is the named interaction's response body.
    Body(&'static str),
    /// stdout is one `{"event":"accepted","data":BODY}` line.
    Accepted(&'static str),
    /// stderr starts with `error: CODE: message` of the named interaction's envelope.
    Error(&'static str),
    /// stderr starts with this text.
    Stderr(String),
    /// stdout is `pools --output json`: the replica sets with each pool's health.
    Pools,
    /// Refused before anything was sent.
    Local,
}

struct Check {
    args: Vec<String>,
    role: Role,
    serves: &'static [&'static str],
    exit: i32,
    expect: Expect,
}

fn check(
    args: &str,
    role: Role,
    serves: &'static [&'static str],
    exit: i32,
    expect: Expect,
) -> Check {
    Check {
        args: args.split(' ').map(String::from).collect(),
        role,
        serves,
        exit,
        expect,
    }
}

fn checks(model_path: &str, digest: &str) -> Vec<Check> {
    use Expect::*;
    use Role::*;
    let id = format!("sha256:{digest}");
    let mut add = check(
        "catalog add PATH --sha256 DIGEST",
        Control,
        &["register a model"],
        0,
        Stderr(format!("registered: {id} (draft)\n")),
    );
    let mut again = check(
        "catalog add PATH --sha256 DIGEST",
        Control,
        &["register it again"],
        0,
        Stderr(format!("already registered: {id} (draft)\n")),
    );
    let mut bad = check("catalog add PATH --sha256 abc", Control, &[], 2, Local);
    for c in [&mut add, &mut again, &mut bad] {
        for a in c.args.iter_mut() {
            if a == "PATH" {
                *a = model_path.to_string();
            } else if a == "DIGEST" {
                *a = digest.to_string();
            }
        }
    }
    let zero = format!("sha256:{}", "0".repeat(64));
    vec![
        check(
            "capabilities --output json",
            Data,
            &["capabilities"],
            0,
            Body("capabilities"),
        ),
        check(
            "capabilities",
            None,
            &["capabilities without a key"],
            2,
            Error("capabilities without a key"),
        ),
        check(
            "capabilities",
            Unknown,
            &["capabilities with an unknown key"],
            2,
            Error("capabilities with an unknown key"),
        ),
        check(
            "pools --output json",
            Control,
            &["replica sets", "health of pool p", "health of pool q"],
            0,
            Pools,
        ),
        check(
            "pools",
            Data,
            &["replica sets with a data key"],
            2,
            Error("replica sets with a data key"),
        ),
        check(
            "pools nope",
            Control,
            &["replica sets", "health of an unknown pool"],
            2,
            Error("health of an unknown pool"),
        ),
        check(
            "drain q --deadline 86400001",
            Control,
            &["drain longer than a day"],
            2,
            Error("drain longer than a day"),
        ),
        check(
            "drain nope --deadline 1s",
            Control,
            &["drain an unknown pool"],
            2,
            Error("drain an unknown pool"),
        ),
        check(
            "reload q --model-ref mock:tiny",
            Control,
            &["reload without a pool manager"],
            3,
            Error("reload without a pool manager"),
        ),
        check(
            "reload nope --model-ref mock:tiny",
            Control,
            &["reload an unknown pool"],
            2,
            Error("reload an unknown pool"),
        ),
        check(
            "submit --model-ref mock:tiny --prompt hi --max-tokens 1000 --ctx 2048 --task-id contract-1 --no-stream --output json",
            Data,
            &["submit"],
            0,
            Accepted("submit"),
        ),
        check(
            "submit --model-ref mock:none --prompt hi --max-tokens 8 --ctx 2048 --task-id contract-2 --no-stream",
            Data,
            &["submit for an unknown model"],
            2,
            Error("submit for an unknown model"),
        ),
        check(
            "cancel contract-1",
            Data,
            &["cancel"],
            0,
            Stderr("canceled: task contract-1\n".into()),
        ),
        check(
            "cancel contract-1",
            Data,
            &["cancel a canceled task"],
            2,
            Error("cancel a canceled task"),
        ),
        check(
            "session get nope",
            Data,
            &["unknown session"],
            2,
            Error("unknown session"),
        ),
        check(
            "drain q --deadline 1s --output json",
            Control,
            &["drain pool q"],
            0,
            Body("drain pool q"),
        ),
        add,
        again,
        bad,
        check(
            "catalog list --output json",
            Control,
            &["list the catalog"],
            0,
            Body("list the catalog"),
        ),
        check(
            "catalog list",
            Data,
            &["list the catalog with a data key"],
            2,
            Error("list the catalog with a data key"),
        ),
        check(
            &format!("catalog get {id} --output json"),
            Control,
            &["get a model"],
            0,
            Body("get a model"),
        ),
        check(
            &format!("catalog activate {id}"),
            Control,
            &["activate before verification"],
            2,
            Error("activate before verification"),
        ),
        check(
            &format!("catalog verify {id} --output json"),
            Control,
            &["verify"],
            0,
            Body("verify"),
        ),
        check(
            &format!("catalog activate {id} --output json"),
            Control,
            &["activate"],
            0,
            Body("activate"),
        ),
        check(
            &format!("catalog get {zero}"),
            Control,
            &["get an unknown model"],
            2,
            Error("get an unknown model"),
        ),
        check(
            "catalog get nonsense",
            Control,
            &["get a malformed id"],
            2,
            Error("get a malformed id"),
        ),
    ]
}

fn body(contract: &Contract, name: &str) -> Value {
    contract
        .get(name)
        .response
        .body
        .clone()
        .unwrap_or_else(|| panic!("{name} has no recorded body"))
}

pub async fn check_all(
    stub: &Stub,
    contract: &Contract,
    model_path: &str,
    digest: &str,
) -> Vec<String> {
    let mut failures = Vec::new();
    for c in checks(model_path, digest) {
        let what = format!("llorch {}", c.args.join(" "));
        stub.serve(c.serves.iter().map(|n| contract.get(n).clone()).collect());
        let mut argv = vec![
            "llorch".to_string(),
            "--url".into(),
            stub.base.clone(),
            "--catalog-url".into(),
            stub.base.clone(),
        ];
        argv.extend(c.args.iter().cloned());
        let mut cli = match Cli::try_parse_from(&argv) {
            Ok(cli) => cli,
            Err(e) => {
                failures.push(format!("{what}: does not parse: {e}"));
                continue;
            }
        };
        // Explicitly, whatever LLORCH_API_KEY the environment has.
        cli.api_key = c.role.key().map(ApiKey::new);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = llama_orch_cli::run(cli, &mut out, &mut err).await;
        let (out, err) = (
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        );
        let (served, unmatched) = stub.log();
        let mut fail =
            |m: String| failures.push(format!("{what}: {m}\n  stdout: {out}\n  stderr: {err}"));
        if !unmatched.is_empty() {
            fail(format!(
                "sent requests that are not in the contract: {unmatched:?}"
            ));
            continue;
        }
        if matches!(c.expect, Expect::Local) != served.is_empty() {
            fail(format!("served {served:?}"));
            continue;
        }
        if code != c.exit {
            fail(format!("exit code {code}, expected {}", c.exit));
            continue;
        }
        let json = |s: &str| {
            serde_json::from_str::<Value>(s).map_err(|e| format!("stdout is not JSON: {e}"))
        };
        match c.expect {
            Expect::Body(name) => match json(&out) {
                Ok(v) => {
                    for d in diff(&body(contract, name), &v, &[], false) {
                        fail(d);
                    }
                }
                Err(e) => fail(e),
            },
            Expect::Accepted(name) => match json(&out) {
                Ok(v) if v["event"] == "accepted" => {
                    for d in diff(&body(contract, name), &v["data"], &[], false) {
                        fail(d);
                    }
                }
                Ok(v) => fail(format!("not an accepted event: {v}")),
                Err(e) => fail(e),
            },
            Expect::Error(name) => {
                let env = body(contract, name);
                let want = format!(
                    "error: {}: {}\n",
                    env["code"].as_str().unwrap_or("?"),
                    env["message"].as_str().unwrap_or("?")
                );
                if !err.starts_with(&want) {
                    fail(format!("stderr does not start with {want:?}"));
                }
            }
            Expect::Stderr(want) => {
                if !err.starts_with(&want) {
                    fail(format!("stderr does not start with {want:?}"));
                }
            }
            Expect::Pools => match serde_json::from_str::<Vec<Value>>(&out) {
                Ok(views) => {
                    let sets = body(contract, "replica sets");
                    let ids: Vec<&Value> = sets
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|s| &s["pool_id"])
                        .collect();
                    let got: Vec<&Value> = views.iter().map(|v| &v["pool_id"]).collect();
                    if ids != got {
                        fail(format!("pools {got:?}, recorded {ids:?}"));
                    }
                    for v in &views {
                        let h = body(
                            contract,
                            &format!("health of pool {}", v["pool_id"].as_str().unwrap_or("?")),
                        );
                        for k in ["ready", "draining", "queue_depth", "replicas"] {
                            if v[k] != h[k] {
                                fail(format!(
                                    "pool {}: {k} is {}, recorded health says {}",
                                    v["pool_id"], v[k], h[k]
                                ));
                            }
                        }
                        if let Err(e) = serde_json::from_value::<api_types::ReplicaSet>(v.clone()) {
                            fail(format!("not a replica set: {e}"));
                        }
                    }
                }
                Err(e) => fail(format!("stdout is not a JSON array: {e}")),
            },
            Expect::Local => {
                if !err.starts_with("error: invalid request: ") {
                    fail("expected a local refusal".into());
                }
            }
        }
    }
    failures
}
