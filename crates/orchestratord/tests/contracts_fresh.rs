//! The committed contracts are what the code produces (ORCH-3044): OpenAPI document, config
//! JSON Schema, and every example config validates. Run `cargo xtask regen` (which sets
//! LLORCH_BLESS=1) to rewrite the committed files after an intentional change.

mod common;

use std::path::PathBuf;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn check_fresh(rel: &str, generated: &str) {
    let path = repo_root().join(rel);
    if std::env::var_os("LLORCH_BLESS").is_some() {
        std::fs::write(&path, generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{rel} is stale: run `cargo xtask regen` and commit the result"
    );
}

#[test]
fn openapi_document_is_fresh() {
    check_fresh(
        "docs/api/openapi.json",
        &orchestratord::openapi::document_json(),
    );
}

#[test]
fn openapi_version_is_the_api_version() {
    let doc: serde_json::Value =
        serde_json::from_str(&orchestratord::openapi::document_json()).unwrap();
    assert_eq!(doc["info"]["version"], api_types::API_VERSION);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for p in [
        "/v1/tasks",
        "/v1/tasks/{id}/stream",
        "/v1/tasks/{id}/cancel",
        "/v1/sessions/{id}",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing from OpenAPI");
    }
}

#[test]
fn config_schema_is_fresh() {
    check_fresh(
        "docs/config.schema.json",
        &config_schema::json_schema_pretty(),
    );
}

#[test]
fn example_configs_validate() {
    let dir = repo_root().join("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            config_schema::load_file(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 1, "no example configs found");
}

/// The server serves exactly the committed document, and `/v1/capabilities` reports its
/// `info.version` as api_version (ORCH-3096).
#[tokio::test]
async fn served_openapi_matches_committed() {
    let s = common::Server::start(&common::mock_config(1, "", "", ""));
    let served = s
        .http
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(served, orchestratord::openapi::document_json());
    let caps: serde_json::Value = s
        .get(common::DATA_KEY, "/v1/capabilities")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(caps["api_version"], api_types::API_VERSION);
    assert_eq!(caps["engines"], serde_json::json!(["mock"]));
}

/// The document tells the truth about the answers every route gives before its own logic
/// runs (schemathesis found them undocumented): each secured route answers a request without
/// a key with 401, and each route that reads a JSON body answers a body without
/// `Content-Type: application/json` with 415 (a key of the right role sent) — and both
/// statuses are in that operation's documented responses. The OpenAI front door (on here)
/// reads any content type, as OpenAI-compatible servers do (`curl -d` sends a form type), so
/// its routes neither answer nor document 415.
#[tokio::test]
async fn served_statuses_for_missing_key_and_media_type_are_documented() {
    let s = common::Server::start(&common::mock_config(
        1,
        "",
        "",
        "[server]\nopenai_compat = true",
    ));
    let doc = orchestratord::openapi::document();
    let mut checked = 0;
    for (path, item) in &doc.paths.paths {
        // Served by pool-managerd (and `llorch serve`), not by a plain orchestratord.
        if path.starts_with("/v1/catalog") {
            continue;
        }
        let url = s.url(&path.replace("{id}", "mock"));
        for (method, op) in [
            (reqwest::Method::GET, &item.get),
            (reqwest::Method::POST, &item.post),
            (reqwest::Method::DELETE, &item.delete),
        ] {
            let Some(op) = op else { continue };
            let documented = |status: u16| op.responses.responses.contains_key(&status.to_string());
            if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                let r = s.http.request(method.clone(), &url).send().await.unwrap();
                assert_eq!(r.status(), 401, "{method} {path} without a key");
                assert!(documented(401), "{method} {path}: 401 undocumented");
                checked += 1;
            }
            let openai = op
                .tags
                .as_ref()
                .is_some_and(|t| t.iter().any(|t| t == "openai"));
            if op.request_body.is_some() && openai {
                let r = s
                    .http
                    .request(method.clone(), &url)
                    .bearer_auth(common::DATA_KEY)
                    .body("{}")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 400, "{method} {path}: `{{}}` lacks `model`");
                assert!(
                    !documented(415),
                    "{method} {path}: 415 documented, never answered"
                );
                checked += 1;
            } else if op.request_body.is_some() {
                let mut status = 0;
                for key in [common::DATA_KEY, common::CONTROL_KEY] {
                    let r = s
                        .http
                        .request(method.clone(), &url)
                        .bearer_auth(key)
                        .body("{}")
                        .send()
                        .await
                        .unwrap();
                    status = r.status().as_u16();
                    if status != 403 {
                        break;
                    }
                }
                assert_eq!(status, 415, "{method} {path} without a JSON content type");
                assert!(documented(415), "{method} {path}: 415 undocumented");
                checked += 1;
            }
        }
    }
    assert!(checked >= 12, "only {checked} checks ran");
}

/// `GET /v1/capabilities` reports the calling tenant's own quotas (ORCH-3095, 3075–3077): a
/// tenant with limits sees them, another tenant sees the defaults (here: none = unlimited),
/// and the limits it reports are the ones admission enforces (one more than max_concurrent is
/// refused).
#[tokio::test]
async fn orch_3095_capabilities_report_the_callers_rate_limits() {
    let s = common::Server::start(&common::mock_config(
        4,
        "",
        "stall_after_tokens = 1",
        "[[tenants]]\nid = \"tenant-a\"\nmax_concurrent = 1\nrequests_per_second = 50.0\ntokens_per_minute = 100000\n",
    ));
    let caps = |key| {
        let s = &s;
        async move {
            s.get(key, "/v1/capabilities")
                .await
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        caps(common::DATA_KEY).await["rate_limits"],
        serde_json::json!({
            "max_concurrent": 1,
            "requests_per_second": 50.0,
            "burst": 1,
            "tokens_per_minute": 100000
        })
    );
    assert_eq!(
        caps(common::DATA_KEY_B).await["rate_limits"],
        serde_json::json!({}),
        "tenant-b has no quotas"
    );
    let task = |id: &str| {
        serde_json::json!({"task_id": id, "workload": "completion", "model_ref": "mock:tiny",
            "ctx": 512, "prompt": "hi", "max_tokens": 5})
    };
    assert_eq!(s.submit(common::DATA_KEY, task("q1")).await.status(), 202);
    assert_eq!(
        s.submit(common::DATA_KEY, task("q2")).await.status(),
        429,
        "the reported max_concurrent is the enforced one"
    );
}
