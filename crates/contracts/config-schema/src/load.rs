use std::collections::HashSet;
use std::path::Path;

use crate::types::{Config, PolicyPluginConfig, Role, TenantLimits};

/// Why a config was refused. `Display` gives the operator-facing message.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    /// TOML syntax or shape error (unknown key, wrong type, missing key).
    #[error("{file}:{line}:{column}: {path}: {message}")]
    Parse {
        file: String,
        line: usize,
        column: usize,
        /// Dotted key path, e.g. `pools[0].replicas[1].slotz`.
        path: String,
        message: String,
    },
    /// The TOML is well-formed but says something impossible.
    #[error("{file}:{line}: {path}: {message}")]
    Invalid {
        file: String,
        /// Where the key is written (best effort; 1 when it is not written at all).
        line: usize,
        path: String,
        message: String,
    },
}

pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        file: file.clone(),
        source,
    })?;
    let mut cfg = parse_str(&text, &file)?;
    cfg.source_dir = Some(
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| Path::new(".").to_path_buf(), Path::to_path_buf),
    );
    Ok(cfg)
}

/// Parses and validates a config; `file` is only used in messages.
pub fn parse_str(text: &str, file: &str) -> Result<Config, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| toml_error(text, file, "", e))?;
    let mut cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        toml_error(text, file, &path, e.into_inner())
    })?;
    validate(&cfg, file).map_err(|e| match e {
        ConfigError::Invalid {
            file,
            path,
            message,
            ..
        } => ConfigError::Invalid {
            line: crate::retention::line_of(text, &path),
            file,
            path,
            message,
        },
        other => other,
    })?;
    let home = std::env::var("HOME").ok();
    crate::paths::expand_home(&mut cfg, home.as_deref()).map_err(|(path, message)| {
        ConfigError::Invalid {
            file: file.to_string(),
            line: crate::retention::line_of(text, &path),
            path,
            message,
        }
    })?;
    Ok(cfg)
}

fn toml_error(text: &str, file: &str, path: &str, e: toml::de::Error) -> ConfigError {
    let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
    ConfigError::Parse {
        file: file.to_string(),
        line,
        column,
        path: if path.is_empty() || path == "." {
            "(top level)".into()
        } else {
            path.to_string()
        },
        message: e.message().trim().to_string(),
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn check_limits(l: &TenantLimits, at: &str) -> Result<(), (String, String)> {
    let positive = "must be > 0".to_string();
    if l.max_concurrent == Some(0) {
        return Err((format!("{at}.max_concurrent"), positive));
    }
    if let Some(r) = l.requests_per_second
        && !(r.is_finite() && r > 0.0)
    {
        return Err((
            format!("{at}.requests_per_second"),
            "must be a positive number".into(),
        ));
    }
    if l.burst == Some(0) {
        return Err((format!("{at}.burst"), positive));
    }
    if l.burst.is_some() && l.requests_per_second.is_none() {
        return Err((
            format!("{at}.burst"),
            "burst needs requests_per_second".into(),
        ));
    }
    if l.tokens_per_minute == Some(0) {
        return Err((format!("{at}.tokens_per_minute"), positive));
    }
    Ok(())
}

/// Most fuel a config may give one call (≈ a second of CPU): a plugin is on the admission
/// and dispatch path, so a typo like an extra zero must not stall the scheduler.
pub const MAX_POLICY_FUEL: u64 = 1_000_000_000;
/// Smallest and largest memory a policy plugin may be given: one WebAssembly page (64 KiB)
/// up to 1 GiB.
pub const MIN_POLICY_MEMORY_BYTES: u64 = 64 * 1024;
pub const MAX_POLICY_MEMORY_BYTES: u64 = 1024 * 1024 * 1024;

fn validate_policy(pol: &PolicyPluginConfig, p: &str) -> Result<(), (String, String)> {
    let module = pol.module.trim();
    if module.is_empty() {
        return Err((format!("{p}.module"), "must not be empty".into()));
    }
    let lower = module.to_ascii_lowercase();
    if !(lower.ends_with(".wasm") || lower.ends_with(".wat")) {
        return Err((
            format!("{p}.module"),
            format!("`{module}` must be a `.wasm` module or `.wat` text"),
        ));
    }
    if let Some(id) = &pol.id
        && !is_valid_id(id)
    {
        return Err((
            format!("{p}.id"),
            "must be 1-64 chars of [A-Za-z0-9._-]".into(),
        ));
    }
    if pol.fuel == 0 || pol.fuel > MAX_POLICY_FUEL {
        return Err((
            format!("{p}.fuel"),
            format!("must be in 1..={MAX_POLICY_FUEL}"),
        ));
    }
    if !(MIN_POLICY_MEMORY_BYTES..=MAX_POLICY_MEMORY_BYTES).contains(&pol.memory_bytes) {
        return Err((
            format!("{p}.memory_bytes"),
            format!("must be in {MIN_POLICY_MEMORY_BYTES}..={MAX_POLICY_MEMORY_BYTES}"),
        ));
    }
    let mut seen = HashSet::new();
    if let Some(g) = pol.grants.iter().find(|g| !seen.insert(**g)) {
        return Err((format!("{p}.grants"), format!("{g:?} listed twice")));
    }
    Ok(())
}

/// A `[pools.triton]` section: only on triton pools, a usable model name, a metrics URL only
/// where it names one server, and every replica reachable over HTTP.
fn validate_triton(
    t: &crate::types::TritonConfig,
    pool: &crate::types::PoolConfig,
    p: &str,
) -> Result<(), (String, String)> {
    if pool.engine != api_types::Engine::Triton {
        return Err((format!("{p}.triton"), "only for engine = \"triton\"".into()));
    }
    if t.model.is_empty()
        || t.model.len() > 128
        || t.model.starts_with('.')
        || !t
            .model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err((
            format!("{p}.triton.model"),
            format!(
                "`{}` is not a Triton model name (1-128 chars of [A-Za-z0-9._-])",
                t.model
            ),
        ));
    }
    if let Some(u) = &t.metrics_url {
        let ok = u.strip_prefix("http://").is_some_and(|rest| {
            let authority = rest.split('/').next().unwrap_or("");
            !authority.is_empty()
        });
        if !ok {
            return Err((
                format!("{p}.triton.metrics_url"),
                format!("`{u}` must be `http://host:port/path`"),
            ));
        }
        if pool.replicas.len() > 1 {
            return Err((
                format!("{p}.triton.metrics_url"),
                "one metrics URL cannot serve several replicas: leave it out (port 8002 of each \
                 replica's endpoint is used)"
                    .into(),
            ));
        }
    }
    for (j, r) in pool.replicas.iter().enumerate().filter(|_| !t.supervised()) {
        if !r
            .endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"))
        {
            return Err((
                format!("{p}.replicas[{j}].endpoint"),
                "a replica of a [pools.triton] pool needs Triton's HTTP endpoint, `http://host:port`"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// `unix:/abs/path.sock` or `http://host[:port]` (no path: the APIs live at fixed paths).
fn is_endpoint(s: &str) -> bool {
    if let Some(p) = s.strip_prefix("unix:") {
        return p.starts_with('/') && p.len() > 1 && !p.ends_with('/');
    }
    s.strip_prefix("http://").is_some_and(|rest| {
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        !authority.is_empty()
            && authority
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    })
}

fn validate(cfg: &Config, file: &str) -> Result<(), ConfigError> {
    let bad = |path: String, message: String| ConfigError::Invalid {
        file: file.to_string(),
        line: 1,
        path,
        message,
    };
    if cfg.server.listen.parse::<std::net::SocketAddr>().is_err() {
        return Err(bad(
            "server.listen".into(),
            format!("`{}` is not an IP:port address", cfg.server.listen),
        ));
    }
    if cfg.server.max_body_bytes == 0 {
        return Err(bad("server.max_body_bytes".into(), "must be > 0".into()));
    }
    // Zero would be a busy loop (keep-alive: a panicking timer); below 100 ms is a typo.
    for (key, v) in [
        ("server.sse_keepalive_ms", cfg.server.sse_keepalive_ms),
        (
            "server.idle_probe_interval_ms",
            cfg.server.idle_probe_interval_ms,
        ),
    ] {
        if v < 100 {
            return Err(bad(key.into(), format!("{v} is below 100 ms")));
        }
    }
    crate::retention::check(&cfg.server).map_err(|(p, m)| bad(p, m))?;
    if let Some(url) = &cfg.pool_manager.registry_url
        && !is_endpoint(url)
    {
        return Err(bad(
            "pool_manager.registry_url".into(),
            format!("`{url}` must be `unix:/abs/path.sock` or `http://host:port`"),
        ));
    }
    let mut digests = HashSet::new();
    for (i, k) in cfg.auth.api_keys.iter().enumerate() {
        let p = format!("auth.api_keys[{i}]");
        match (&k.key, &k.key_sha256) {
            (Some(key), None) if key.len() < 8 => {
                return Err(bad(
                    format!("{p}.key"),
                    "must be at least 8 characters".into(),
                ));
            }
            (None, Some(d)) if d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()) => {
                return Err(bad(
                    format!("{p}.key_sha256"),
                    "must be 64 hex characters".into(),
                ));
            }
            (Some(_), None) | (None, Some(_)) => {}
            _ => {
                return Err(bad(p, "give exactly one of `key` or `key_sha256`".into()));
            }
        }
        if !is_valid_id(&k.tenant) {
            return Err(bad(
                format!("{p}.tenant"),
                "must be 1-64 chars of [A-Za-z0-9._-]".into(),
            ));
        }
        if !digests.insert(k.digest_hex()) {
            return Err(bad(p, "duplicate API key".into()));
        }
    }
    if !cfg.auth.api_keys.iter().any(|k| k.role == Role::Data) && !cfg.pools.is_empty() {
        return Err(bad(
            "auth.api_keys".into(),
            "no key with role = \"data\": nobody could submit tasks".into(),
        ));
    }
    if cfg.queue.capacity == 0 {
        return Err(bad("queue.capacity".into(), "must be > 0".into()));
    }
    if cfg.priorities.interactive_weight == 0 || cfg.priorities.batch_weight == 0 {
        return Err(bad("priorities".into(), "weights must be > 0".into()));
    }
    let t = &cfg.timeouts;
    if t.queue_ms == 0 || t.first_token_ms == 0 || t.idle_ms == 0 || t.wall_ms == 0 {
        return Err(bad("timeouts".into(), "timeouts must be > 0".into()));
    }
    let ss = &cfg.sessions;
    if ss.ttl_ms == 0
        || ss.max_turns == 0
        || ss.max_sessions == 0
        || ss.kv_sessions_per_replica == 0
        || ss.token_budget == Some(0)
        || ss.time_budget_ms == Some(0)
    {
        return Err(bad("sessions".into(), "values must be > 0".into()));
    }
    check_limits(&cfg.tenant_defaults, "tenant_defaults").map_err(|(p, m)| bad(p, m))?;
    let key_tenants: HashSet<&str> = cfg
        .auth
        .api_keys
        .iter()
        .map(|k| k.tenant.as_str())
        .collect();
    let mut tenant_ids = HashSet::new();
    for (i, t) in cfg.tenants.iter().enumerate() {
        let p = format!("tenants[{i}]");
        if !tenant_ids.insert(t.id.as_str()) {
            return Err(bad(
                format!("{p}.id"),
                format!("duplicate tenant `{}`", t.id),
            ));
        }
        if !key_tenants.contains(t.id.as_str()) {
            return Err(bad(
                format!("{p}.id"),
                format!("no API key belongs to tenant `{}`", t.id),
            ));
        }
        if t.weight == 0 {
            return Err(bad(format!("{p}.weight"), "must be > 0".into()));
        }
        check_limits(&t.limits(), &p).map_err(|(p, m)| bad(p, m))?;
    }
    let mut pool_ids = HashSet::new();
    // Engine ports are host-wide: two replicas on one port would fight over it at every start.
    let mut engine_ports = HashSet::new();
    for (i, pool) in cfg.pools.iter().enumerate() {
        let p = format!("pools[{i}]");
        if !is_valid_id(&pool.id) {
            return Err(bad(
                format!("{p}.id"),
                "must be 1-64 chars of [A-Za-z0-9._-]".into(),
            ));
        }
        if !pool_ids.insert(pool.id.as_str()) {
            return Err(bad(
                format!("{p}.id"),
                format!("duplicate pool id `{}`", pool.id),
            ));
        }
        if pool.model_ref.trim().is_empty() {
            return Err(bad(format!("{p}.model_ref"), "must not be empty".into()));
        }
        if pool.ctx_max == 0 {
            return Err(bad(format!("{p}.ctx_max"), "must be > 0".into()));
        }
        if let Some(d) = &pool.model_sha256
            && (d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(bad(
                format!("{p}.model_sha256"),
                "must be 64 hex characters".into(),
            ));
        }
        let is_hex64 = |d: &str| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit());
        let lower = pool.model_ref.trim().to_ascii_lowercase();
        if (lower.starts_with("http://") || lower.starts_with("https://"))
            && pool.model_sha256.is_none()
        {
            return Err(bad(
                format!("{p}.model_sha256"),
                "required when model_ref is an http(s) URL: downloads are only trusted by digest"
                    .into(),
            ));
        }
        if let Some(d) = lower.strip_prefix("sha256:") {
            if !is_hex64(d) {
                return Err(bad(
                    format!("{p}.model_ref"),
                    "sha256:<digest> needs 64 hex characters".into(),
                ));
            }
            if let Some(s) = &pool.model_sha256
                && !s.eq_ignore_ascii_case(d)
            {
                return Err(bad(
                    format!("{p}.model_sha256"),
                    "differs from the digest in model_ref".into(),
                ));
            }
        }
        crate::supervised::validate(pool, &p).map_err(|(path, m)| bad(path, m))?;
        if let Some(t) = &pool.triton {
            validate_triton(t, pool, &p).map_err(|(path, m)| bad(path, m))?;
        }
        if let Some(pol) = &pool.policy {
            validate_policy(pol, &format!("{p}.policy")).map_err(|(path, m)| bad(path, m))?;
        }
        if pool.queue.capacity == Some(0) {
            return Err(bad(format!("{p}.queue.capacity"), "must be > 0".into()));
        }
        if pool.replicas.is_empty() {
            return Err(bad(
                format!("{p}.replicas"),
                "a pool needs at least one replica".into(),
            ));
        }
        let mut replica_ids = HashSet::new();
        for (j, r) in pool.replicas.iter().enumerate() {
            let rp = format!("{p}.replicas[{j}]");
            if !is_valid_id(&r.id) {
                return Err(bad(
                    format!("{rp}.id"),
                    "must be 1-64 chars of [A-Za-z0-9._-]".into(),
                ));
            }
            if !replica_ids.insert(r.id.as_str()) {
                return Err(bad(
                    format!("{rp}.id"),
                    format!("duplicate replica id `{}`", r.id),
                ));
            }
            if r.slots == 0 || r.slots > 1024 {
                return Err(bad(format!("{rp}.slots"), "must be in 1..=1024".into()));
            }
            if r.devices.is_empty() && !pool.allow_cpu_inference {
                return Err(bad(
                    format!("{rp}.devices"),
                    "no GPU devices and the pool does not set allow_cpu_inference = true".into(),
                ));
            }
            let mut seen = HashSet::new();
            if let Some(d) = r.devices.iter().find(|d| !seen.insert(**d)) {
                return Err(bad(
                    format!("{rp}.devices"),
                    format!("device {d} listed twice"),
                ));
            }
            if let Some(url) = &r.engine_url {
                let field = format!("{rp}.engine_url");
                if !matches!(
                    pool.engine,
                    api_types::Engine::Tgi | api_types::Engine::Vllm
                ) {
                    return Err(bad(
                        field,
                        "only for engine = \"tgi\" or \"vllm\" (other engines: an adapter daemon `endpoint`)"
                            .into(),
                    ));
                }
                if r.endpoint.is_some() {
                    return Err(bad(
                        field,
                        "set either endpoint or engine_url, not both".into(),
                    ));
                }
                if !(url.starts_with("http://") && is_endpoint(url)) {
                    return Err(bad(field, format!("`{url}` must be `http://host:port`")));
                }
            }
            if let Some(port) = r.engine_port {
                let field = format!("{rp}.engine_port");
                if !pool.supervised() {
                    return Err(bad(
                        field,
                        "only for pools whose engine pool-managerd supervises ([pools.llamacpp], \
                         [pools.vllm], [pools.tgi], or [pools.triton] with server_binary)"
                            .into(),
                    ));
                }
                if port == 0 {
                    return Err(bad(field, "must be in 1..=65535".into()));
                }
                if !engine_ports.insert(port) {
                    return Err(bad(
                        field,
                        format!("port {port} is used by another replica"),
                    ));
                }
            }
            match (&r.endpoint, pool.engine) {
                (Some(ep), _) => {
                    let ok = ep
                        .strip_prefix("unix:")
                        .map(|p| p.starts_with('/'))
                        .unwrap_or(false)
                        || ep.starts_with("http://");
                    if !ok {
                        return Err(bad(
                            format!("{rp}.endpoint"),
                            format!("`{ep}` must be `unix:/abs/path.sock` or `http://host:port`"),
                        ));
                    }
                }
                (None, api_types::Engine::Mock) => {}
                (None, _) if pool.supervised() => {}
                (None, api_types::Engine::Tgi | api_types::Engine::Vllm)
                    if r.engine_url.is_some() => {}
                (None, e) => {
                    return Err(bad(
                        format!("{rp}.endpoint"),
                        format!(
                            "engine `{}` runs in an adapter daemon: set the replica's endpoint{}",
                            e.as_str(),
                            match e {
                                api_types::Engine::Llamacpp => {
                                    " (or the pool's [pools.llamacpp] section to supervise it in-process)"
                                }
                                api_types::Engine::Tgi => {
                                    " (or its engine_url: the TGI router, reached in-process)"
                                }
                                api_types::Engine::Vllm => {
                                    " (or its engine_url: vLLM's OpenAI server, reached in-process)"
                                }
                                _ => "",
                            }
                        ),
                    ));
                }
            }
            if r.mock.is_some() && pool.engine != api_types::Engine::Mock {
                return Err(bad(
                    format!("{rp}.mock"),
                    "mock settings on a non-mock engine".into(),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[auth.api_keys]]
key = "secret-data-key"
tenant = "acme"
role = "data"

[[pools]]
id = "p"
engine = "mock"
model_ref = "mock:tiny"
ctx_max = 2048
allow_cpu_inference = true

[[pools.replicas]]
id = "r0"
slots = 2
"#;

    #[test]
    fn good_config_parses_with_defaults() {
        let c = parse_str(GOOD, "t.toml").unwrap();
        assert_eq!(c.pools[0].replicas[0].slots, 2);
        assert_eq!(c.queue.capacity, 256);
        assert_eq!(c.sessions.max_turns, 8);
    }

    #[test]
    fn unknown_key_names_file_line_and_path() {
        let text = GOOD.replace("slots = 2", "slots = 2\nslotz = 3");
        let err = parse_str(&text, "t.toml").unwrap_err().to_string();
        assert!(err.starts_with("t.toml:17:"), "{err}");
        assert!(err.contains("pools[0].replicas[0]"), "{err}");
        assert!(err.contains("slotz"), "{err}");
    }

    #[test]
    fn timer_intervals_below_100_ms_are_rejected() {
        for key in ["sse_keepalive_ms", "idle_probe_interval_ms"] {
            for v in [0, 99] {
                let text = format!("[server]\n{key} = {v}\n{GOOD}");
                let err = parse_str(&text, "t.toml").unwrap_err().to_string();
                assert!(err.contains(&format!("server.{key}")), "{err}");
            }
            parse_str(&format!("[server]\n{key} = 100\n{GOOD}"), "t.toml").unwrap();
        }
    }

    #[test]
    fn unknown_top_level_key_is_rejected() {
        let text = format!("bogus = 1\n{GOOD}");
        let err = parse_str(&text, "t.toml").unwrap_err().to_string();
        assert!(err.starts_with("t.toml:1:"), "{err}");
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let text = GOOD.replace("ctx_max = 2048", "ctx_max = \"big\"");
        let err = parse_str(&text, "t.toml").unwrap_err().to_string();
        assert!(err.contains("pools[0].ctx_max"), "{err}");
        assert!(err.starts_with("t.toml:11:"), "{err}");
    }

    #[test]
    fn url_model_ref_needs_a_digest() {
        let text = GOOD.replace("mock:tiny", "https://models.example/m.gguf");
        let err = parse_str(&text, "t.toml").unwrap_err().to_string();
        assert!(
            err.contains("pools[0].model_sha256") && err.contains("http(s) URL"),
            "{err}"
        );
        let with = text.replace(
            "ctx_max = 2048",
            &format!("ctx_max = 2048\nmodel_sha256 = \"{}\"", "a".repeat(64)),
        );
        parse_str(&with, "t.toml").unwrap();
    }

    #[test]
    fn catalog_model_ref_needs_a_valid_digest() {
        let err = parse_str(&GOOD.replace("mock:tiny", "sha256:abc"), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("pools[0].model_ref"), "{err}");
        let d = "b".repeat(64);
        let ok = GOOD.replace("mock:tiny", &format!("sha256:{d}"));
        parse_str(&ok, "t.toml").unwrap();
        let clash = ok.replace(
            "ctx_max = 2048",
            &format!("ctx_max = 2048\nmodel_sha256 = \"{}\"", "c".repeat(64)),
        );
        let err = parse_str(&clash, "t.toml").unwrap_err().to_string();
        assert!(err.contains("differs"), "{err}");
    }

    #[test]
    fn pool_manager_section() {
        let text = format!("[pool_manager]\nstate_dir = \"/var/lib/x\"\n{GOOD}");
        let c = parse_str(&text, "t.toml").unwrap();
        assert_eq!(c.pool_manager.state_dir.as_deref(), Some("/var/lib/x"));
        let bad = format!("[pool_manager]\nstate_dirr = \"/x\"\n{GOOD}");
        assert!(parse_str(&bad, "t.toml").is_err());
    }

    #[test]
    fn registry_url_is_validated() {
        for ok in [
            "unix:/run/llama-orch/pool-managerd.sock",
            "http://127.0.0.1:8090",
            "http://pm.local:8090/",
        ] {
            let text = format!("[pool_manager]\nregistry_url = \"{ok}\"\n{GOOD}");
            let c = parse_str(&text, "t.toml").unwrap();
            assert_eq!(c.pool_manager.registry_url.as_deref(), Some(ok));
        }
        for bad in [
            "unix:relative.sock",
            "unix:/",
            "https://pm:8090",
            "http://",
            "http://pm:8090/v1/replicas",
            "127.0.0.1:8090",
        ] {
            let text = format!("[pool_manager]\nregistry_url = \"{bad}\"\n{GOOD}");
            let err = parse_str(&text, "t.toml").unwrap_err().to_string();
            assert!(err.contains("pool_manager.registry_url"), "{bad}: {err}");
        }
    }

    #[test]
    fn cpu_replica_needs_explicit_permission() {
        let text = GOOD.replace("allow_cpu_inference = true", "");
        let err = parse_str(&text, "t.toml").unwrap_err().to_string();
        assert!(err.contains("allow_cpu_inference"), "{err}");
    }

    #[test]
    fn key_given_twice_ways_is_rejected() {
        let text = GOOD.replace(
            "key = \"secret-data-key\"",
            &format!(
                "key = \"secret-data-key\"\nkey_sha256 = \"{}\"",
                "a".repeat(64)
            ),
        );
        let err = parse_str(&text, "t.toml").unwrap_err().to_string();
        assert!(err.contains("exactly one"), "{err}");
    }

    #[test]
    fn non_mock_engine_needs_endpoint() {
        let text = GOOD.replace("engine = \"mock\"", "engine = \"llamacpp\"");
        let err = parse_str(&text, "t.toml").unwrap_err().to_string();
        assert!(err.contains("endpoint"), "{err}");
    }

    /// A fixed engine port: only where pool-managerd starts the engine, and once per host.
    #[test]
    fn engine_port_only_for_supervised_pools_and_unique() {
        let mock = GOOD.replace("slots = 2", "slots = 2\nengine_port = 8101");
        let err = parse_str(&mock, "t.toml").unwrap_err().to_string();
        assert!(
            err.contains("engine_port") && err.contains("[pools.llamacpp]"),
            "{err}"
        );
        let supervised = |ports: [u16; 2]| {
            GOOD.replace("engine = \"mock\"", "engine = \"llamacpp\"")
                .replace(
                    "[[pools.replicas]]\nid = \"r0\"\nslots = 2\n",
                    &format!(
                        "[pools.llamacpp]\nserver_binary = \"/bin/true\"\n\n[[pools.replicas]]\n\
                         id = \"r0\"\nengine_port = {}\n\n[[pools.replicas]]\nid = \"r1\"\n\
                         engine_port = {}\n",
                        ports[0], ports[1]
                    ),
                )
        };
        let c = parse_str(&supervised([8101, 8102]), "t.toml").unwrap();
        assert_eq!(c.pools[0].replicas[1].engine_port, Some(8102));
        let err = parse_str(&supervised([8101, 8101]), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("replicas[1].engine_port") && err.contains("8101"),
            "{err}"
        );
    }

    /// A vLLM replica is reached in-process through `engine_url` too (or a daemon `endpoint`).
    #[test]
    fn vllm_replica_engine_url() {
        let vllm = GOOD.replace("engine = \"mock\"", "engine = \"vllm\"");
        let err = parse_str(&vllm, "t.toml").unwrap_err().to_string();
        assert!(err.contains("engine_url") && err.contains("vLLM"), "{err}");
        let with = vllm.replace(
            "slots = 2",
            "slots = 2\nengine_url = \"http://127.0.0.1:8000\"",
        );
        let c = parse_str(&with, "t.toml").unwrap();
        assert_eq!(c.pools[0].engine, api_types::Engine::Vllm);
        assert_eq!(
            c.pools[0].replicas[0].engine_url.as_deref(),
            Some("http://127.0.0.1:8000")
        );
        let bad_url = vllm.replace("slots = 2", "slots = 2\nengine_url = \"https://v:8000\"");
        let err = parse_str(&bad_url, "t.toml").unwrap_err().to_string();
        assert!(err.contains("http://host:port"), "{err}");
    }

    /// A TGI replica is reached in-process through `engine_url` (or a daemon `endpoint`).
    #[test]
    fn tgi_replica_engine_url() {
        let tgi = GOOD.replace("engine = \"mock\"", "engine = \"tgi\"");
        let err = parse_str(&tgi, "t.toml").unwrap_err().to_string();
        assert!(err.contains("engine_url"), "{err}");
        let with =
            |url: &str| tgi.replace("slots = 2", &format!("slots = 2\nengine_url = \"{url}\""));
        let c = parse_str(&with("http://127.0.0.1:3000"), "t.toml").unwrap();
        assert_eq!(
            c.pools[0].replicas[0].engine_url.as_deref(),
            Some("http://127.0.0.1:3000")
        );
        for (bad_url, why) in [
            ("https://tgi:3000", "http://host:port"),
            ("http://tgi:3000/generate", "http://host:port"),
            ("unix:/run/tgi.sock", "http://host:port"),
        ] {
            let err = parse_str(&with(bad_url), "t.toml").unwrap_err().to_string();
            assert!(
                err.contains("engine_url") && err.contains(why),
                "{bad_url}: {err}"
            );
        }
        let both = with("http://127.0.0.1:3000")
            .replace("slots = 2", "slots = 2\nendpoint = \"unix:/run/a.sock\"");
        let err = parse_str(&both, "t.toml").unwrap_err().to_string();
        assert!(err.contains("not both"), "{err}");
        let mock = GOOD.replace(
            "slots = 2",
            "slots = 2\nengine_url = \"http://127.0.0.1:3000\"",
        );
        let err = parse_str(&mock, "t.toml").unwrap_err().to_string();
        assert!(err.contains("only for engine = \"tgi\""), "{err}");
    }

    fn triton(section: &str, replicas: &str) -> String {
        GOOD.replace("engine = \"mock\"", "engine = \"triton\"")
            .replace(
                "allow_cpu_inference = true\n",
                &format!("allow_cpu_inference = true\n{section}"),
            )
            .replace("slots = 2\n", &format!("slots = 2\n{replicas}"))
    }

    /// The `[pools.triton]` section and its typed refusals.
    #[test]
    fn triton_section() {
        let ep = "endpoint = \"http://127.0.0.1:8000\"\n";
        let ok = triton(
            "triton = { model = \"ensemble\", inputs = \"tensorrt_llm\", metrics_url = \"http://127.0.0.1:8002/metrics\" }\n",
            ep,
        );
        let c = parse_str(&ok, "t.toml").unwrap();
        let t = c.pools[0].triton.as_ref().unwrap();
        assert_eq!(
            (t.model.as_str(), t.inputs),
            ("ensemble", crate::TritonInputs::TensorrtLlm)
        );
        let bad = |section: &str, replicas: &str| {
            parse_str(&triton(section, replicas), "t.toml")
                .unwrap_err()
                .to_string()
        };
        let e = bad("triton = { model = \"m\", inputs = \"onnx\" }\n", ep);
        assert!(e.contains("inputs") && e.contains("unknown variant"), "{e}");
        let e = bad("triton = { model = \"../m\", inputs = \"vllm\" }\n", ep);
        assert!(e.contains("pools[0].triton.model"), "{e}");
        let e = bad(
            "triton = { model = \"m\", inputs = \"vllm\" }\n",
            "endpoint = \"unix:/run/t.sock\"\n",
        );
        assert!(
            e.contains("pools[0].replicas[0].endpoint") && e.contains("Triton's HTTP endpoint"),
            "{e}"
        );
        let e = bad(
            "triton = { model = \"m\", inputs = \"vllm\", metrics_url = \"ftp://x\" }\n",
            ep,
        );
        assert!(e.contains("pools[0].triton.metrics_url"), "{e}");
        let two = format!("{ep}\n[[pools.replicas]]\nid = \"r1\"\n{ep}");
        let e = bad(
            "triton = { model = \"m\", inputs = \"vllm\", metrics_url = \"http://h:8002/metrics\" }\n",
            &two,
        );
        assert!(e.contains("several replicas"), "{e}");
        assert!(
            parse_str(
                &triton("triton = { model = \"m\", inputs = \"vllm\" }\n", &two),
                "t.toml"
            )
            .is_ok()
        );
        let on_mock = GOOD.replace(
            "allow_cpu_inference = true\n",
            "allow_cpu_inference = true\ntriton = { model = \"m\", inputs = \"vllm\" }\n",
        );
        let e = parse_str(&on_mock, "t.toml").unwrap_err().to_string();
        assert!(e.contains("only for engine = \"triton\""), "{e}");
    }

    const POLICY: &str = "\n[pools.policy]\nmodule = \"plugins/quota.wasm\"\n";

    fn with_policy(extra: &str) -> String {
        // The [pools.policy] table must come before [[pools.replicas]] closes the pool table.
        GOOD.replace(
            "allow_cpu_inference = true\n",
            &format!("allow_cpu_inference = true\n{POLICY}{extra}\n"),
        )
    }

    #[test]
    fn policy_plugin_parses_with_defaults() {
        let c = parse_str(&with_policy(""), "t.toml").unwrap();
        let pol = c.pools[0].policy.as_ref().unwrap();
        assert_eq!(pol.module, "plugins/quota.wasm");
        assert_eq!(pol.fuel, crate::default_policy_fuel());
        assert_eq!(pol.memory_bytes, 16 * 1024 * 1024);
        assert!(pol.grants.is_empty());
        let c = parse_str(
            &with_policy("fuel = 5000\nmemory_bytes = 131072\ngrants = [\"clock\", \"random\"]"),
            "t.toml",
        )
        .unwrap();
        let pol = c.pools[0].policy.as_ref().unwrap();
        assert_eq!((pol.fuel, pol.memory_bytes), (5000, 131072));
        assert_eq!(
            pol.grants,
            [crate::PolicyGrant::Clock, crate::PolicyGrant::Random]
        );
    }

    #[test]
    fn policy_plugin_is_strictly_validated() {
        for (extra, needle) in [
            ("fuell = 1", "fuell"),
            ("fuel = 0", "pools[0].policy.fuel"),
            ("fuel = 2000000000", "pools[0].policy.fuel"),
            ("memory_bytes = 100", "pools[0].policy.memory_bytes"),
            ("grants = [\"filesystem\"]", "unknown variant `filesystem`"),
            ("grants = [\"network\"]", "unknown variant `network`"),
            ("grants = [\"clock\", \"clock\"]", "listed twice"),
            ("id = \"bad id\"", "pools[0].policy.id"),
        ] {
            let err = parse_str(&with_policy(extra), "t.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{extra}: {err}");
        }
        let text = with_policy("").replace("quota.wasm", "quota.so");
        let err = parse_str(&text, "t.toml").unwrap_err().to_string();
        assert!(err.contains("pools[0].policy.module"), "{err}");
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse_str("[server\nlisten=1", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("t.toml:1:"), "{err}");
    }

    #[test]
    fn tenant_quotas_parse_and_bad_ones_name_the_key() {
        let good = format!(
            "{GOOD}\n[tenant_defaults]\nmax_concurrent = 4\n\n[[tenants]]\nid = \"acme\"\nweight = 3\nrequests_per_second = 2.5\nburst = 5\ntokens_per_minute = 1000\n"
        );
        let c = parse_str(&good, "t.toml").unwrap();
        assert_eq!(c.tenants[0].weight, 3);
        assert_eq!(c.tenant_limits("acme").burst, Some(5));
        assert_eq!(c.tenant_limits("other").max_concurrent, Some(4));
        for (from, to, key) in [
            ("weight = 3", "weight = 0", "tenants[0].weight"),
            ("burst = 5", "burst = 0", "tenants[0].burst"),
            (
                "requests_per_second = 2.5",
                "requests_per_second = -1.0",
                "tenants[0].requests_per_second",
            ),
            (
                "requests_per_second = 2.5",
                "requests_per_second = nan",
                "tenants[0].requests_per_second",
            ),
            ("requests_per_second = 2.5\n", "", "tenants[0].burst"),
            ("id = \"acme\"", "id = \"ghost\"", "tenants[0].id"),
            (
                "max_concurrent = 4",
                "max_concurrent = 0",
                "tenant_defaults.max_concurrent",
            ),
            ("burst = 5", "bursts = 5", "bursts"),
        ] {
            let err = parse_str(&good.replace(from, to), "t.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{to}: {err}");
        }
    }
}
