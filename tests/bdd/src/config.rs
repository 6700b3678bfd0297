//! The configs the journeys run the daemons with: fixed API keys for two tenants and an
//! operator, and one mock pool `p` whose shape and fault knobs the scenario's `Given` steps set.

use std::collections::BTreeMap;

/// Data-plane key of tenant `alice`.
pub const ALICE_KEY: &str = "bdd-alice-data-key";
/// Data-plane key of tenant `bob`.
pub const BOB_KEY: &str = "bdd-bob-data-key";
/// Control-plane key (tenant `ops`).
pub const OPERATOR_KEY: &str = "bdd-operator-control-key";

fn keys_toml() -> String {
    [
        (ALICE_KEY, "alice", "data"),
        (BOB_KEY, "bob", "data"),
        (OPERATOR_KEY, "ops", "control"),
    ]
    .iter()
    .map(|(k, t, r)| {
        format!("[[auth.api_keys]]\nkey = \"{k}\"\ntenant = \"{t}\"\nrole = \"{r}\"\n\n")
    })
    .collect()
}

/// orchestratord's config, built up by `Given` steps and rendered when the server starts.
#[derive(Debug, Clone)]
pub struct OrchConfig {
    /// Slots of the pool's one replica.
    pub slots: u32,
    /// Context limit of the pool's model.
    pub ctx_max: u32,
    /// `queue = { … }` of the pool (capacity, full_policy), empty for the defaults.
    pub queue: Vec<String>,
    /// `mock = { … }` of the replica: the mock engine's speed and faults.
    pub mock: Vec<String>,
    /// Top-level sections (`timeouts`, `sessions`, …) and their `key = value` lines.
    pub sections: BTreeMap<String, Vec<String>>,
    /// `[[tenants]]` entries, each as its body lines.
    pub tenants: Vec<Vec<String>>,
}

impl Default for OrchConfig {
    fn default() -> Self {
        OrchConfig {
            slots: 1,
            ctx_max: 1024,
            queue: Vec::new(),
            // Fast by default so journeys stay short; scenarios that need a task to be
            // running for a while slow it down or stall it.
            mock: vec![
                "tokens_per_second = 400".into(),
                "first_token_latency_ms = 5".into(),
            ],
            sections: BTreeMap::new(),
            tenants: Vec::new(),
        }
    }
}

impl OrchConfig {
    /// Sets (or replaces) `key = value` in the mock engine's table.
    pub fn mock(&mut self, key: &str, value: &str) {
        self.mock.retain(|l| !l.starts_with(&format!("{key} ")));
        self.mock.push(format!("{key} = {value}"));
    }

    /// Sets (or replaces) `key = value` in the pool's queue table.
    pub fn queue(&mut self, key: &str, value: &str) {
        self.queue.retain(|l| !l.starts_with(&format!("{key} ")));
        self.queue.push(format!("{key} = {value}"));
    }

    /// Sets `key = value` in top-level section `[section]`.
    pub fn set(&mut self, section: &str, key: &str, value: &str) {
        let lines = self.sections.entry(section.to_string()).or_default();
        lines.retain(|l| !l.starts_with(&format!("{key} ")));
        lines.push(format!("{key} = {value}"));
    }

    pub fn to_toml(&self) -> String {
        let mut t = keys_toml();
        for (section, lines) in &self.sections {
            t.push_str(&format!("[{section}]\n{}\n\n", lines.join("\n")));
        }
        for tenant in &self.tenants {
            t.push_str(&format!("[[tenants]]\n{}\n\n", tenant.join("\n")));
        }
        t.push_str(&format!(
            "[[pools]]\nid = \"p\"\nengine = \"mock\"\nmodel_ref = \"mock:tiny\"\nctx_max = {}\n\
             allow_cpu_inference = true\nqueue = {{ {} }}\n\n\
             [[pools.replicas]]\nid = \"r0\"\nslots = {}\nmock = {{ {} }}\n",
            self.ctx_max,
            self.queue.join(", "),
            self.slots,
            self.mock.join(", ")
        ));
        t
    }
}

/// pool-managerd's config: the same keys, no pools, the catalog under `state_dir`.
pub fn pool_manager_toml(state_dir: &std::path::Path) -> String {
    format!(
        "[pool_manager]\nstate_dir = \"{}\"\n\n{}",
        state_dir.display(),
        keys_toml()
    )
}
