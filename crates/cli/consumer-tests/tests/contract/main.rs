//! The recorded contract (`contract/orchqueue-v1.json`) checked three ways in one run: against
//! the live servers, and through both consumers (the generated client, `llorch`) against a
//! stub that answers only with the recording. `LLORCH_BLESS=1` re-records it from the live
//! servers first (`cargo xtask regen`).

mod cli;
mod client;
mod provider;
mod stub;

use std::path::Path;

use llorch_consumer_tests::{CONTRACT, Contract, Vars};
use sha2::Digest;

/// The catalog's model file: fixed bytes, so its digest is fixed.
const MODEL_BYTES: &[u8] = b"GGUF bytes of the consumer contract's model";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_contract_holds_for_the_servers_llorch_and_the_generated_client() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("model.gguf");
    std::fs::write(&model, MODEL_BYTES).expect("model file");
    let digest = hex::encode(sha2::Sha256::digest(MODEL_BYTES));
    let model_path = model.display().to_string();
    let vars = Vars(vec![
        ("model_path", model_path.clone()),
        ("digest", digest.clone()),
    ]);

    let path = crate_dir.join(CONTRACT);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{CONTRACT}: {e}"));
    let contract = Contract::parse(&text, &vars).unwrap_or_else(|e| panic!("{CONTRACT}: {e}"));
    let doc_path = crate_dir.join("../../../docs/api/openapi.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&doc_path).expect("docs/api/openapi.json"))
            .expect("the document is JSON");

    // 1. The live servers keep the recorded contract (or re-record it).
    let bless = std::env::var_os("LLORCH_BLESS").is_some();
    let live = provider::start(crate_dir, &dir.path().join("state")).await;
    let (contract, failures) = provider::verify(&live, &contract, &doc, bless).await;
    if bless {
        std::fs::write(&path, contract.render(&vars)).unwrap_or_else(|e| panic!("{CONTRACT}: {e}"));
    }
    assert!(
        failures.is_empty(),
        "the servers break the recorded contract ({} difference(s)); if the change is meant, \
         re-record with `cargo xtask regen` and the consumer checks will tell whether llorch and \
         the client still work:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );

    // 2. and 3. The consumers work with exactly the recorded answers.
    let stub = stub::Stub::start().await;
    let mut failures = client::check(&stub, &contract, &doc).await;
    failures.extend(cli::check_all(&stub, &contract, &model_path, &digest).await);
    assert!(
        failures.is_empty(),
        "a consumer breaks on the recorded contract ({} failure(s)):\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    println!(
        "{} interactions: live servers, generated client and llorch agree",
        contract.interactions.len()
    );
}
