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

/// The server serves exactly the committed document.
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
        .http
        .get(s.url("/v1/capabilities"))
        .bearer_auth(common::DATA_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(caps["api_version"], api_types::API_VERSION);
    assert_eq!(caps["engines"], serde_json::json!(["mock"]));
}
