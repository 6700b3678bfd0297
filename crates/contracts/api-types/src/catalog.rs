//! Model catalog types (SPEC §2, ORCH-3037, 3060–3073): served by pool-managerd (and by
//! `llorch serve`) under `/v1/catalog/models`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Lifecycle of a catalog entry. The legal moves are Draft → Active | Canary | Retired,
/// Active ⇄ Canary, Active | Canary → Deprecated, Deprecated → Active | Retired; Retired is
/// final. Entering Active or Canary needs a passed verification.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ModelState {
    /// Registered, not yet serving.
    Draft,
    /// Serving.
    Active,
    /// Serving a share of traffic beside the Active model.
    Canary,
    /// No new sessions (MODEL_DEPRECATED); its pools drain.
    Deprecated,
    /// Unloaded; final.
    Retired,
}

impl ModelState {
    pub const ALL: [ModelState; 5] = [
        ModelState::Draft,
        ModelState::Active,
        ModelState::Canary,
        ModelState::Deprecated,
        ModelState::Retired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ModelState::Draft => "draft",
            ModelState::Active => "active",
            ModelState::Canary => "canary",
            ModelState::Deprecated => "deprecated",
            ModelState::Retired => "retired",
        }
    }

    pub fn parse(s: &str) -> Option<ModelState> {
        ModelState::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// Outcome of re-hashing an entry's artifact.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum VerificationResult {
    /// The artifact's SHA-256 is the entry's digest.
    Passed,
    /// The artifact exists but hashes to something else (UNTRUSTED_ARTIFACT).
    Mismatch,
    /// The artifact could not be read or downloaded.
    Unavailable,
}

impl VerificationResult {
    pub const ALL: [VerificationResult; 3] = [
        VerificationResult::Passed,
        VerificationResult::Mismatch,
        VerificationResult::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VerificationResult::Passed => "passed",
            VerificationResult::Mismatch => "mismatch",
            VerificationResult::Unavailable => "unavailable",
        }
    }

    pub fn parse(s: &str) -> Option<VerificationResult> {
        VerificationResult::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// Where an entry's artifact comes from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ModelSourceKind {
    /// A file on this host.
    Local,
    /// An `http(s)://` URL, downloaded into the cache directory.
    Url,
}

/// The last verification of an entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, schemars::JsonSchema)]
pub struct Verification {
    pub result: VerificationResult,
    /// When it ran, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The SHA-256 actually found (absent when the artifact was unavailable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_sha256: Option<String>,
    /// Why the artifact was unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `POST /v1/catalog/models` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterModelRequest {
    /// A local path (`file:` prefix optional) or an `http(s)://` URL.
    #[schema(min_length = 1)]
    pub model_ref: String,
    /// Required SHA-256 of the artifact, 64 hex characters; becomes the entry's id.
    #[schema(pattern = "^(sha256:)?[0-9a-fA-F]{64}$")]
    pub sha256: String,
}

/// `POST /v1/catalog/models/{id}/state` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetModelStateRequest {
    pub state: ModelState,
}

/// A catalog entry. Content-addressed: `id` is `sha256:<digest>`, so an entry never changes
/// what it names; `model_ref = "sha256:<digest>"` in a pool config refers to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, schemars::JsonSchema)]
pub struct CatalogEntry {
    /// `sha256:<digest>`.
    pub id: String,
    /// Lower-case hex SHA-256 of the artifact.
    pub digest: String,
    /// Where the artifact comes from, as registered.
    pub model_ref: String,
    pub source: ModelSourceKind,
    /// Artifact size in bytes, known once it was read (registration of a local file, or a
    /// verification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    pub state: ModelState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}
