//! Which policy plugin each pool runs (ORCH-3048): loads each pool's `[pools.policy]` module
//! into the policy host at startup, and names the module a reload re-reads. Depends on the
//! config only; the snapshots the hooks decide on are built in [`crate::policy`].

use std::path::Path;

use config_schema::Config;
use policy_host::{PluginSpec, PolicyHost};

/// Loads every configured pool plugin; any load error (wrong ABI, forbidden import, missing
/// file) refuses the whole config, naming the pool: a policy that silently did not load would
/// be worse than not starting.
pub fn install_configured(cfg: &Config, host: &PolicyHost) -> anyhow::Result<()> {
    for pool in &cfg.pools {
        if let Some(spec) = spec_for(cfg, &pool.id) {
            let plugin = host
                .load(&spec)
                .map_err(|e| anyhow::anyhow!("pool `{}`: policy plugin: {e}", pool.id))?;
            let info = plugin.info().clone();
            host.install(&pool.id, Some(plugin));
            tracing::info!(pool_id = %pool.id, plugin = %info.id, version = %info.version, "policy plugin installed");
        }
    }
    Ok(())
}

/// The plugin spec of a pool, with its module path resolved against the config's directory.
pub fn spec_for(cfg: &Config, pool_id: &str) -> Option<PluginSpec> {
    let pc = cfg.pool(pool_id)?.policy.as_ref()?;
    let dir = cfg.source_dir.as_deref().unwrap_or(Path::new("."));
    Some(PluginSpec::from_config(pc, dir))
}
