//! The catalog API over real HTTP (SPEC §2, ORCH-3037, 3060–3073): register, get, verify,
//! lifecycle; bad input gets the typed error envelope and changes nothing; entries survive a
//! restart of the pool manager.

use api_types::{CatalogEntry, ErrorCode, ErrorEnvelope, ModelState, VerificationResult};
use pool_managerd::daemon::PoolManager;
use serde_json::json;

const CONTROL: &str = "cat-control-key";
const DATA: &str = "cat-data-key";

struct Pm {
    base: String,
    http: reqwest::Client,
    _stop: tokio::sync::watch::Sender<bool>,
    pm: PoolManager,
}

fn config(state: &std::path::Path) -> config_schema::Config {
    let toml = format!(
        "[pool_manager]\nstate_dir = \"{}\"\n{}",
        state.display(),
        test_fixtures::api_keys_toml(&[(DATA, "t", "data"), (CONTROL, "ops", "control")])
    );
    config_schema::parse_str(&toml, "cat.toml").unwrap()
}

async fn start(state: &std::path::Path) -> Pm {
    let (pm, _) = PoolManager::start(&config(state)).unwrap();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let app = pm.router(stop_rx);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    Pm {
        base,
        http: reqwest::Client::new(),
        _stop: stop,
        pm,
    }
}

impl Pm {
    fn post(&self, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
    }
    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(CONTROL)
            .send()
            .await
            .unwrap()
    }
    async fn entry(&self, id: &str) -> CatalogEntry {
        let r = self.get(&format!("/v1/catalog/models/{id}")).await;
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }
}

async fn envelope(r: reqwest::Response, status: u16, code: ErrorCode) -> ErrorEnvelope {
    assert_eq!(r.status(), status);
    let cid = r
        .headers()
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let env: ErrorEnvelope = r.json().await.expect("error envelope");
    assert_eq!(env.code, code, "{env:?}");
    assert_eq!(Some(env.correlation_id.clone()), cid);
    env
}

fn model_file(dir: &std::path::Path, bytes: &[u8]) -> (String, String) {
    let p = dir.join("model.gguf");
    std::fs::write(&p, bytes).unwrap();
    let d = pool_managerd::provision::sha256_file(&p).unwrap();
    (p.display().to_string(), d)
}

#[tokio::test]
async fn register_verify_promote_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (path, digest) = model_file(dir.path(), b"GGUF weights");
    let id = format!("sha256:{digest}");
    {
        let s = start(&state).await;
        let r = s
            .post("/v1/catalog/models", CONTROL)
            .json(&json!({"model_ref": path, "sha256": digest}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(
            r.headers()["location"],
            format!("/v1/catalog/models/{id}").as_str()
        );
        let e: CatalogEntry = r.json().await.unwrap();
        assert_eq!(
            (e.id.as_str(), e.state, e.size_bytes),
            (id.as_str(), ModelState::Draft, Some(12))
        );
        // Registering the same thing again is idempotent.
        let r = s
            .post("/v1/catalog/models", CONTROL)
            .json(&json!({"model_ref": path, "sha256": digest.to_uppercase()}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);

        let r = s
            .post(&format!("/v1/catalog/models/{id}/verify"), CONTROL)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let e: CatalogEntry = r.json().await.unwrap();
        let v = e.verification.unwrap();
        assert_eq!(v.result, VerificationResult::Passed);
        assert_eq!(v.actual_sha256.as_deref(), Some(digest.as_str()));
        assert!(v.at_ms > 0);

        for to in ["active", "canary"] {
            let r = s
                .post(&format!("/v1/catalog/models/{digest}/state"), CONTROL)
                .json(&json!({ "state": to }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        assert_eq!(s.entry(&id).await.state, ModelState::Canary);
        let m = s.get("/metrics").await.text().await.unwrap();
        assert!(
            m.contains("llorch_catalog_verifications_total{result=\"passed\"} 1"),
            "{m}"
        );
        assert!(
            m.contains(&format!(
                "llorch_model_state{{model_id=\"{id}\",state=\"canary\"}} 1"
            )),
            "{m}"
        );
        drop(s);
    }
    // A new pool manager on the same state directory: the entry is still there.
    let s = start(&state).await;
    let e = s.entry(&id).await;
    assert_eq!(e.state, ModelState::Canary);
    assert_eq!(e.verification.unwrap().result, VerificationResult::Passed);
    let list: Vec<CatalogEntry> = s.get("/v1/catalog/models").await.json().await.unwrap();
    assert_eq!(list.len(), 1);
    assert!(state.join(pool_managerd::catalog::DB_FILE).is_file());
    assert_eq!(
        s.pm.catalog.path(),
        state.join(pool_managerd::catalog::DB_FILE)
    );
}

#[tokio::test]
async fn bad_input_gets_the_envelope_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("state")).await;
    let (path, digest) = model_file(dir.path(), b"weights v1");
    let id = format!("sha256:{digest}");
    let r = s
        .post("/v1/catalog/models", CONTROL)
        .json(&json!({"model_ref": path, "sha256": digest}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let before = s.entry(&id).await;

    // Unknown id, and an id that is not a digest.
    let unknown = format!("/v1/catalog/models/sha256:{}", "f".repeat(64));
    envelope(s.get(&unknown).await, 404, ErrorCode::NotFound).await;
    let r = s
        .post(&format!("{unknown}/verify"), CONTROL)
        .send()
        .await
        .unwrap();
    envelope(r, 404, ErrorCode::NotFound).await;
    envelope(
        s.get("/v1/catalog/models/not-a-digest").await,
        400,
        ErrorCode::InvalidParams,
    )
    .await;
    // Bad digest on register; a digest already bound to another file.
    for body in [
        json!({"model_ref": path, "sha256": "abc"}),
        json!({"model_ref": "/elsewhere.gguf", "sha256": digest}),
        json!({"model_ref": "ftp://x/y", "sha256": "a".repeat(64)}),
        json!({"model_ref": format!("sha256:{digest}"), "sha256": digest}),
    ] {
        let r = s
            .post("/v1/catalog/models", CONTROL)
            .json(&body)
            .send()
            .await
            .unwrap();
        envelope(r, 400, ErrorCode::InvalidParams).await;
    }
    // Malformed JSON, unknown fields, unknown states.
    let state_url = format!("/v1/catalog/models/{id}/state");
    for raw in [
        "{",
        "{\"state\": \"live\"}",
        "{\"state\": \"active\", \"force\": true}",
        "[]",
    ] {
        let r = s
            .post(&state_url, CONTROL)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        envelope(r, 400, ErrorCode::InvalidParams).await;
    }
    let r = s
        .post("/v1/catalog/models", CONTROL)
        .header("content-type", "application/json")
        .body("{\"model_ref\": 1}")
        .send()
        .await
        .unwrap();
    envelope(r, 400, ErrorCode::InvalidParams).await;
    // Illegal transition; promotion of an unverified artifact.
    let r = s
        .post(&state_url, CONTROL)
        .json(&json!({"state": "deprecated"}))
        .send()
        .await
        .unwrap();
    let env = envelope(r, 400, ErrorCode::InvalidParams).await;
    assert!(env.message.contains("draft -> deprecated"), "{env:?}");
    let r = s
        .post(&state_url, CONTROL)
        .json(&json!({"state": "active"}))
        .send()
        .await
        .unwrap();
    envelope(r, 422, ErrorCode::UntrustedArtifact).await;
    // Auth: no key, a data key.
    let r = s
        .http
        .get(format!("{}/v1/catalog/models/{id}", s.base))
        .send()
        .await
        .unwrap();
    envelope(r, 401, ErrorCode::Unauthenticated).await;
    let r = s
        .post(&state_url, DATA)
        .json(&json!({"state": "retired"}))
        .send()
        .await
        .unwrap();
    envelope(r, 403, ErrorCode::Forbidden).await;
    // Correlation ids are echoed.
    let r = s
        .http
        .get(format!("{}{unknown}", s.base))
        .bearer_auth(CONTROL)
        .header("x-correlation-id", "corr-123")
        .send()
        .await
        .unwrap();
    assert_eq!(
        envelope(r, 404, ErrorCode::NotFound).await.correlation_id,
        "corr-123"
    );
    // Unknown routes get the envelope too.
    envelope(s.get("/v1/nope").await, 404, ErrorCode::NotFound).await;

    assert_eq!(
        s.entry(&id).await,
        before,
        "a refused request changed the entry"
    );
    let list: Vec<CatalogEntry> = s.get("/v1/catalog/models").await.json().await.unwrap();
    assert_eq!(list.len(), 1);
}

#[tokio::test]
async fn verify_records_a_mismatch_and_blocks_promotion() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("state")).await;
    let (path, digest) = model_file(dir.path(), b"the registered bytes");
    let id = format!("sha256:{digest}");
    let r = s
        .post("/v1/catalog/models", CONTROL)
        .json(&json!({"model_ref": path, "sha256": digest}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // The artifact changes on disk after registration.
    std::fs::write(&path, b"tampered").unwrap();
    let e: CatalogEntry = s
        .post(&format!("/v1/catalog/models/{id}/verify"), CONTROL)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let v = e.verification.unwrap();
    assert_eq!(v.result, VerificationResult::Mismatch);
    assert_ne!(v.actual_sha256.as_deref(), Some(digest.as_str()));
    let r = s
        .post(&format!("/v1/catalog/models/{id}/state"), CONTROL)
        .json(&json!({"state": "active"}))
        .send()
        .await
        .unwrap();
    envelope(r, 422, ErrorCode::UntrustedArtifact).await;
    // Gone entirely: unavailable.
    std::fs::remove_file(&path).unwrap();
    let e: CatalogEntry = s
        .post(&format!("/v1/catalog/models/{id}/verify"), CONTROL)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        e.verification.unwrap().result,
        VerificationResult::Unavailable
    );
    let m = s.get("/metrics").await.text().await.unwrap();
    for r in ["mismatch", "unavailable"] {
        assert!(
            m.contains(&format!(
                "llorch_catalog_verifications_total{{result=\"{r}\"}} 1"
            )),
            "{m}"
        );
    }
    assert_eq!(s.entry(&id).await.state, ModelState::Draft);
}

/// Every catalog route the OpenAPI document describes (api-types' `catalog_api`) is one this
/// router serves, behind the control key: a data key gets 403 with the envelope, where an
/// unrouted path or method would get 404 or 405.
#[tokio::test]
async fn documented_routes_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let pm = start(dir.path()).await;
    let id = format!("sha256:{}", "0".repeat(64));
    let check = |method: &str, path: &str| {
        let url = format!("{}{}", pm.base, path.replace("{id}", &id));
        let body = if path.ends_with("/state") {
            Some(json!({"state": "active"}))
        } else if path == "/v1/catalog/models" {
            Some(json!({"model_ref": "/nope.gguf", "sha256": "0".repeat(64)}))
        } else {
            None
        };
        let req = match method {
            "GET" => pm.http.get(url),
            "POST" => {
                let r = pm.http.post(url);
                match body {
                    Some(b) => r.json(&b),
                    None => r,
                }
            }
            other => panic!("undocumented method {other}"),
        };
        req.bearer_auth(DATA).send()
    };
    for (method, path) in api_types::catalog_api::ROUTES {
        let r = check(method, path).await.unwrap();
        assert_eq!(r.status(), 403, "{method} {path}");
        let env: ErrorEnvelope = r.json().await.unwrap();
        assert_eq!(env.code, ErrorCode::Forbidden, "{method} {path}");
    }
    // The check can tell an unrouted path from a routed one.
    let r = check("POST", "/v1/catalog/models/{id}/nope").await.unwrap();
    assert_ne!(r.status(), 403);
    // And ROUTES are exactly the document's catalog paths.
    let doc = serde_json::to_value(api_types::catalog_api::document()).unwrap();
    let mut documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), p.clone()))
        })
        .collect();
    let mut routes: Vec<(String, String)> = api_types::catalog_api::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    routes.sort();
    assert_eq!(documented, routes);
}
