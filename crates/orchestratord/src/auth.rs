//! API keys → (tenant, role) (ORCH-3035). Keys are looked up by SHA-256 digest so plain keys
//! never need to be kept, compared or logged. The request extractors that check a caller's
//! key are in `api::auth`.

use std::collections::HashMap;

use config_schema::{AuthConfig, Role, sha256_hex};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    pub role: Role,
}

#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    by_digest: HashMap<String, Principal>,
}

impl KeyRing {
    pub fn new(cfg: &AuthConfig) -> Self {
        let by_digest = cfg
            .api_keys
            .iter()
            .filter_map(|k| {
                k.digest_hex().map(|d| {
                    (
                        d,
                        Principal {
                            tenant: k.tenant.clone(),
                            role: k.role,
                        },
                    )
                })
            })
            .collect();
        KeyRing { by_digest }
    }

    pub fn lookup(&self, key: &str) -> Option<&Principal> {
        self.by_digest.get(&sha256_hex(key))
    }
}
