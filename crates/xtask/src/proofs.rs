//! The generated proof documents: `spec-map` (docs/requirements.md, the requirement → test map)
//! and `regen`, which rewrites every generated, committed file through the freshness tests
//! that guard them (LLORCH_BLESS=1): the OpenAPI document and config JSON Schema
//! (orchestratord's contracts_fresh), docs/requirements.md (tools/spec-extract) and
//! docs/crates.md (tools/readme-index). Only sequences cargo invocations, like the rest of xtask.

use crate::cargo;

/// `cargo xtask spec-map`: writes docs/requirements.md; fails on a requirement without a test
/// or a test citing an unknown id.
pub fn spec_map() -> bool {
    cargo(
        &[
            "run",
            "--quiet",
            "-p",
            "llorch-spec-extract",
            "--bin",
            "llorch-spec-map",
        ],
        &[],
    )
}

/// `cargo xtask regen`: every generated file at once. Runs them all even when one fails (a
/// requirement without a test still gets its map written), and fails if any did.
pub fn regen() -> bool {
    let bless = [("LLORCH_BLESS", "1")];
    let runs: [&[&str]; 5] = [
        &["test", "-p", "orchestratord", "--test", "contracts_fresh"],
        // After the document: the client is generated from it, and the consumer contract is
        // re-recorded from the servers and then checked through the client and llorch.
        &["test", "-p", "llorch-openapi-client", "--test", "fresh"],
        &["test", "-p", "llorch-consumer-tests", "--test", "contract"],
        &["test", "-p", "llorch-spec-extract", "--test", "fresh"],
        &["test", "-p", "llorch-readme-index", "--test", "fresh"],
    ];
    let mut ok = true;
    for args in runs {
        ok &= cargo(args, &bless);
    }
    ok
}
