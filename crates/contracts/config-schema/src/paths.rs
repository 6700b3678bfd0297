//! Paths in the config, one truth for the daemons and `--check-config`:
//! - `~/…` is expanded against `$HOME` when the config is loaded (every reader sees the same
//!   absolute path); `~user/…` and a `~` without `$HOME` are refused with the key.
//! - [`check_file`] loads a config and then checks what it names on disk, read-only: policy
//!   modules and local model files must be readable files, `llama-server` binaries executable
//!   files, state and cache directories directories (or creatable). This is the one place
//!   that touches the files a config names; `orchestratord --check-config` runs it.

use std::path::{Path, PathBuf};

use crate::load::{ConfigError, load_file};
use crate::types::Config;

/// A local model path, or `None` for `mock:`, `http(s)://` and `sha256:` refs.
pub fn local_model_path(model_ref: &str) -> Option<&str> {
    if ["mock:", "http://", "https://", "sha256:"]
        .iter()
        .any(|p| model_ref.starts_with(p))
    {
        return None;
    }
    Some(model_ref.strip_prefix("file:").unwrap_or(model_ref))
}

/// Expands `~` and `~/…` in every path-valued key; `(key, message)` of the first that cannot be.
pub(crate) fn expand_home(cfg: &mut Config, home: Option<&str>) -> Result<(), (String, String)> {
    let mut fields: Vec<(String, &mut String)> = Vec::new();
    if let Some(d) = cfg.pool_manager.state_dir.as_mut() {
        fields.push(("pool_manager.state_dir".into(), d));
    }
    if let Some(d) = cfg.pool_manager.cache_dir.as_mut() {
        fields.push(("pool_manager.cache_dir".into(), d));
    }
    for (i, p) in cfg.pools.iter_mut().enumerate() {
        if local_model_path(&p.model_ref).is_some() {
            fields.push((format!("pools[{i}].model_ref"), &mut p.model_ref));
        }
        if let Some(pol) = p.policy.as_mut() {
            fields.push((format!("pools[{i}].policy.module"), &mut pol.module));
        }
        if let Some(l) = p.llamacpp.as_mut() {
            fields.push((
                format!("pools[{i}].llamacpp.server_binary"),
                &mut l.server_binary,
            ));
        }
        if let Some(v) = p.vllm.as_mut() {
            fields.push((
                format!("pools[{i}].vllm.server_binary"),
                &mut v.server_binary,
            ));
            if let Some(d) = v.model_dir.as_mut() {
                fields.push((format!("pools[{i}].vllm.model_dir"), d));
            }
        }
        if let Some(t) = p.tgi.as_mut() {
            fields.push((
                format!("pools[{i}].tgi.server_binary"),
                &mut t.server_binary,
            ));
        }
        if let Some(t) = p.triton.as_mut() {
            if let Some(b) = t.server_binary.as_mut() {
                fields.push((format!("pools[{i}].triton.server_binary"), b));
            }
            if let Some(d) = t.model_repository.as_mut() {
                fields.push((format!("pools[{i}].triton.model_repository"), d));
            }
        }
    }
    for (key, value) in fields {
        let (prefix, rest) = match value.strip_prefix("file:") {
            Some(r) => ("file:", r),
            None => ("", value.as_str()),
        };
        let Some(after) = rest.strip_prefix('~') else {
            continue;
        };
        if !(after.is_empty() || after.starts_with('/')) {
            return Err((
                key,
                format!("`{rest}`: `~user` paths are not expanded; write the absolute path"),
            ));
        }
        let Some(home) = home.filter(|h| h.starts_with('/')) else {
            return Err((
                key,
                format!("`{rest}` starts with `~` but $HOME is not set to an absolute path"),
            ));
        };
        *value = format!("{prefix}{}{after}", home.trim_end_matches('/'));
    }
    Ok(())
}

/// Loads `path` like the daemons do, then checks the files and directories it names.
pub fn check_file(path: &Path) -> Result<Config, ConfigError> {
    let cfg = load_file(path)?;
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        file: file.clone(),
        source,
    })?;
    check_files(&cfg).map_err(|(key, message)| ConfigError::Invalid {
        line: crate::retention::line_of(&text, &key),
        file,
        path: key,
        message,
    })?;
    Ok(cfg)
}

fn readable_file(p: &Path) -> Result<(), String> {
    let f = std::fs::File::open(p).map_err(|e| format!("`{}`: cannot read: {e}", p.display()))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("`{}`: {e}", p.display()))?;
    if !meta.is_file() {
        return Err(format!("`{}` is not a file", p.display()));
    }
    Ok(())
}

fn executable_file(p: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    readable_file(p)?;
    let mode = std::fs::metadata(p)
        .map_err(|e| format!("`{}`: {e}", p.display()))?
        .permissions()
        .mode();
    if mode & 0o111 == 0 {
        return Err(format!("`{}` is not executable", p.display()));
    }
    Ok(())
}

/// A directory, or a path whose nearest existing ancestor is a directory (created at start).
fn usable_dir(p: &Path) -> Result<(), String> {
    let mut at: Option<&Path> = Some(p);
    while let Some(a) = at {
        match std::fs::metadata(a) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => return Err(format!("`{}` is not a directory", a.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => at = a.parent(),
            Err(e) => return Err(format!("`{}`: {e}", a.display())),
        }
    }
    Ok(())
}

/// `(key, message)` of the first thing the config names that the daemons could not use.
pub fn check_files(cfg: &Config) -> Result<(), (String, String)> {
    let base: PathBuf = cfg.source_dir.clone().unwrap_or_else(|| ".".into());
    for (key, d) in [
        ("pool_manager.state_dir", &cfg.pool_manager.state_dir),
        ("pool_manager.cache_dir", &cfg.pool_manager.cache_dir),
    ] {
        if let Some(d) = d {
            usable_dir(Path::new(d)).map_err(|m| (key.to_string(), m))?;
        }
    }
    for (i, p) in cfg.pools.iter().enumerate() {
        // A Triton pool's model lives in Triton's model repository: model_ref is a name; a
        // vLLM or TGI pool's model is a directory or hub id.
        if !matches!(
            p.engine,
            api_types::Engine::Triton | api_types::Engine::Vllm | api_types::Engine::Tgi
        ) && let Some(m) = local_model_path(&p.model_ref)
        {
            readable_file(Path::new(m)).map_err(|e| (format!("pools[{i}].model_ref"), e))?;
        }
        if let Some(pol) = &p.policy {
            readable_file(&base.join(&pol.module))
                .map_err(|e| (format!("pools[{i}].policy.module"), e))?;
        }
        if let Some(proc_cfg) = p.process() {
            let section = match p.engine {
                api_types::Engine::Llamacpp => "llamacpp",
                api_types::Engine::Vllm => "vllm",
                api_types::Engine::Tgi => "tgi",
                _ => "triton",
            };
            executable_file(Path::new(proc_cfg.server_binary))
                .map_err(|e| (format!("pools[{i}].{section}.server_binary"), e))?;
        }
        let dirs = [
            (
                "vllm.model_dir",
                p.vllm
                    .as_ref()
                    .map(|v| v.model_dir.as_deref().unwrap_or(&p.model_ref)),
            ),
            (
                "triton.model_repository",
                p.triton
                    .as_ref()
                    .and_then(|t| t.model_repository.as_deref()),
            ),
        ];
        for (key, dir) in dirs {
            if let Some(d) = dir {
                let d = d.strip_prefix("file:").unwrap_or(d);
                if !Path::new(d).is_dir() {
                    return Err((
                        format!("pools[{i}].{key}"),
                        format!("`{d}` is not a directory"),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra_pool: &str, pm: &str) -> Config {
        let text = format!(
            r#"
{pm}
[[auth.api_keys]]
key = "secret-data-key"
tenant = "acme"
role = "data"

[[pools]]
id = "p"
engine = "mock"
allow_cpu_inference = true
ctx_max = 2048
{extra_pool}

[[pools.replicas]]
id = "r0"
"#
        );
        let de = toml::Deserializer::parse(&text).unwrap();
        serde::Deserialize::deserialize(de).unwrap()
    }

    #[test]
    fn tilde_paths_expand_against_home() {
        let mut c = cfg(
            "model_ref = \"file:~/m.gguf\"\npolicy = { module = \"~/p.wat\" }",
            "[pool_manager]\ncache_dir = \"~/.cache/x\"\nstate_dir = \"~\"",
        );
        expand_home(&mut c, Some("/home/u/")).unwrap();
        assert_eq!(c.pools[0].model_ref, "file:/home/u/m.gguf");
        assert_eq!(c.pools[0].policy.as_ref().unwrap().module, "/home/u/p.wat");
        assert_eq!(
            c.pool_manager.cache_dir.as_deref(),
            Some("/home/u/.cache/x")
        );
        assert_eq!(c.pool_manager.state_dir.as_deref(), Some("/home/u"));
    }

    #[test]
    fn triton_model_refs_are_names_not_files() {
        let mut c = cfg("model_ref = \"llama-3-8b-trtllm\"", "");
        assert!(check_files(&c).is_err());
        c.pools[0].engine = api_types::Engine::Triton;
        check_files(&c).unwrap();
    }

    #[test]
    fn unexpandable_tildes_name_the_key() {
        let mut c = cfg("model_ref = \"~bob/m.gguf\"", "");
        let (k, m) = expand_home(&mut c, Some("/h")).unwrap_err();
        assert_eq!(k, "pools[0].model_ref");
        assert!(m.contains("~user"), "{m}");
        let mut c = cfg("model_ref = \"~/m.gguf\"", "");
        let (k, _) = expand_home(&mut c, None).unwrap_err();
        assert_eq!(k, "pools[0].model_ref");
        // Non-path refs are left alone.
        let mut c = cfg("model_ref = \"mock:~x\"", "");
        expand_home(&mut c, None).unwrap();
        assert_eq!(c.pools[0].model_ref, "mock:~x");
    }
}
