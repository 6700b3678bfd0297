//! The generated client (`llorch-openapi-client`) as a consumer: every recorded interaction is
//! called through its operation against the stub; the client must send exactly the recorded
//! request and hand back exactly the recorded answer (its types model the body losslessly,
//! errors arrive as the envelope). A request body the client's types refuse must be one the
//! server refuses too (recorded 400).

use llorch_consumer_tests::{Contract, Interaction, path_param};
use openapi_client::{Error, ResponseValue, types};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::stub::Stub;

/// What the client returned: (status, body), a local refusal of the request, or a failure
/// to use the answer.
enum Outcome {
    Answer(u16, Option<Value>),
    Refused(String),
    Failed(String),
}

fn client(base: &str, i: &Interaction) -> openapi_client::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(k) = i.request.key.key() {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {k}").parse().expect("header"),
        );
    }
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client");
    openapi_client::Client::new_with_client(base, http)
}

async fn outcome<T: Serialize, E: Serialize + std::fmt::Debug>(
    r: Result<ResponseValue<T>, Error<E>>,
) -> Outcome {
    let body = |v: Value| if v.is_null() { None } else { Some(v) };
    match r {
        Ok(rv) => {
            let status = rv.status().as_u16();
            let v = serde_json::to_value(rv.into_inner()).expect("serializes");
            Outcome::Answer(status, body(v))
        }
        Err(Error::ErrorResponse(rv)) => {
            let status = rv.status().as_u16();
            let v = serde_json::to_value(rv.into_inner()).expect("serializes");
            Outcome::Answer(status, body(v))
        }
        Err(Error::UnexpectedResponse(resp)) => {
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.expect("body");
            let v = if bytes.is_empty() {
                None
            } else {
                serde_json::from_slice(&bytes).ok()
            };
            Outcome::Answer(status, v)
        }
        Err(e) => Outcome::Failed(format!("{e:?}")),
    }
}

fn typed<T: DeserializeOwned>(i: &Interaction) -> Result<T, String> {
    serde_json::from_value(i.request.body.clone().unwrap_or(Value::Null)).map_err(|e| e.to_string())
}

async fn call(c: &openapi_client::Client, template: &str, i: &Interaction) -> Outcome {
    let id = path_param(template, &i.request.path, "id").unwrap_or_default();
    macro_rules! with_body {
        ($ty:ty, |$b:ident| $call:expr) => {
            match typed::<$ty>(i) {
                Ok($b) => outcome($call.await).await,
                Err(e) => Outcome::Refused(e),
            }
        };
    }
    match i.operation.as_str() {
        "capabilities" => outcome(c.capabilities().await).await,
        "replicasets" => outcome(c.replicasets().await).await,
        "pool_health" => outcome(c.pool_health(&id).await).await,
        "drain" => with_body!(types::DrainRequest, |b| c.drain(&id, &b)),
        "reload" => with_body!(types::ReloadRequest, |b| c.reload(&id, &b)),
        "submit" => with_body!(types::TaskRequest, |b| c.submit(&b)),
        "cancel" => outcome(c.cancel(&id).await).await,
        "get_session" => outcome(c.get_session(&id).await).await,
        "register_model" => with_body!(types::RegisterModelRequest, |b| c.register_model(&b)),
        "list_models" => outcome(c.list_models().await).await,
        "get_model" => outcome(c.get_model(&id).await).await,
        "verify_model" => outcome(c.verify_model(&id).await).await,
        "set_model_state" => {
            with_body!(types::SetModelStateRequest, |b| c.set_model_state(&id, &b))
        }
        other => Outcome::Refused(format!("operation {other} has no client call in this test")),
    }
}

/// The path template of an operation in the OpenAPI document.
fn template(doc: &Value, operation: &str) -> String {
    doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .find(|(_, item)| {
            item.as_object()
                .into_iter()
                .flatten()
                .any(|(_, op)| op["operationId"] == operation)
        })
        .map(|(t, _)| t.clone())
        .unwrap_or_else(|| panic!("operation {operation} is not in the document"))
}

pub async fn check(stub: &Stub, contract: &Contract, doc: &Value) -> Vec<String> {
    let mut failures = Vec::new();
    for i in &contract.interactions {
        stub.serve(vec![i.clone()]);
        let t = template(doc, &i.operation);
        let got = call(&client(&stub.base, i), &t, i).await;
        let (served, unmatched) = stub.log();
        match got {
            Outcome::Failed(why) => {
                failures.push(format!("client, {}: cannot use the answer: {why}", i.name));
                continue;
            }
            Outcome::Refused(why) => {
                if i.response.status != 400 || !served.is_empty() {
                    failures.push(format!(
                        "client, {}: refused locally ({why}) but the server answers {}",
                        i.name, i.response.status
                    ));
                }
                continue;
            }
            Outcome::Answer(status, body) => {
                if served != [i.name.clone()] || !unmatched.is_empty() {
                    failures.push(format!(
                        "client, {}: the request is not the recorded one: {unmatched:?}",
                        i.name
                    ));
                    continue;
                }
                if status != i.response.status {
                    failures.push(format!(
                        "client, {}: status {status}, recorded {}",
                        i.name, i.response.status
                    ));
                }
                match (&i.response.body, &body) {
                    (None, None) => {}
                    (Some(e), Some(a)) => failures.extend(
                        llorch_consumer_tests::diff(e, a, &[], false)
                            .into_iter()
                            .map(|d| format!("client, {}: {d}", i.name)),
                    ),
                    (e, a) => {
                        failures.push(format!("client, {}: body {a:?}, recorded {e:?}", i.name))
                    }
                }
            }
        }
    }
    failures
}
