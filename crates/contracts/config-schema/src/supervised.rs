//! Validation of the process sections of supervised pools (`[pools.llamacpp]`,
//! `[pools.vllm]`, `[pools.tgi]`, and `[pools.triton]` with `server_binary`): each only on its
//! engine, at most one per pool, sane values, and replicas that pool-managerd starts set no
//! `endpoint` of their own.

use api_types::Engine;

use crate::types::PoolConfig;

/// `(key path, message)` of the first problem.
pub(crate) fn validate(pool: &PoolConfig, p: &str) -> Result<(), (String, String)> {
    let sections = [
        ("llamacpp", pool.llamacpp.is_some(), Engine::Llamacpp),
        ("vllm", pool.vllm.is_some(), Engine::Vllm),
        ("tgi", pool.tgi.is_some(), Engine::Tgi),
    ];
    for (name, present, engine) in sections {
        if present && pool.engine != engine {
            return Err((
                format!("{p}.{name}"),
                format!("only for engine = \"{}\"", engine.as_str()),
            ));
        }
    }
    if let Some(t) = &pool.triton {
        match (&t.server_binary, &t.model_repository) {
            (Some(_), None) => {
                return Err((
                    format!("{p}.triton.model_repository"),
                    "a supervised Triton (server_binary set) needs its model_repository".into(),
                ));
            }
            (None, Some(_)) => {
                return Err((
                    format!("{p}.triton.server_binary"),
                    "model_repository is only used by a supervised Triton: set server_binary too"
                        .into(),
                ));
            }
            (Some(_), Some(_)) if t.metrics_url.is_some() => {
                return Err((
                    format!("{p}.triton.metrics_url"),
                    "a supervised Triton's metrics port is chosen by pool-managerd: leave it out"
                        .into(),
                ));
            }
            _ => {}
        }
        if !t.supervised() && (!t.extra_args.is_empty() || !t.env.is_empty()) {
            return Err((
                format!("{p}.triton.extra_args"),
                "extra_args and env are only for a supervised Triton (server_binary set)".into(),
            ));
        }
    }
    let Some(proc_cfg) = pool.process() else {
        return Ok(());
    };
    let section = match pool.engine {
        Engine::Llamacpp => "llamacpp",
        Engine::Vllm => "vllm",
        Engine::Tgi => "tgi",
        _ => "triton",
    };
    if proc_cfg.server_binary.trim().is_empty() {
        return Err((
            format!("{p}.{section}.server_binary"),
            "must name the engine's executable".into(),
        ));
    }
    if proc_cfg.ready_timeout_ms < 1_000 {
        return Err((
            format!("{p}.{section}.ready_timeout_ms"),
            format!("{} ms is below 1000 ms", proc_cfg.ready_timeout_ms),
        ));
    }
    if let Some(env) = proc_cfg.env
        && let Some(k) = env
            .keys()
            .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
    {
        return Err((
            format!("{p}.{section}.env"),
            format!("`{k}` is not an environment variable name"),
        ));
    }
    if pool.engine != Engine::Llamacpp {
        // The model of a supervised vLLM, TGI or Triton is a directory or a hub id handed
        // to the engine, never a single file to download and checksum.
        let mr = pool.model_ref.trim();
        if mr.starts_with("http://")
            || mr.starts_with("https://")
            || mr
                .get(..7)
                .is_some_and(|s| s.eq_ignore_ascii_case("sha256:"))
        {
            return Err((
                format!("{p}.model_ref"),
                format!(
                    "a supervised {} pool serves a local model directory (or hub id): URLs and \
                     catalog refs are for llama.cpp GGUF files",
                    pool.engine.as_str()
                ),
            ));
        }
        if pool.model_sha256.is_some() {
            return Err((
                format!("{p}.model_sha256"),
                format!(
                    "only for llama.cpp model files (a supervised {} pool's model is a directory)",
                    pool.engine.as_str()
                ),
            ));
        }
    }
    if let Some(v) = &pool.vllm
        && v.model_dir.as_deref().is_some_and(|d| d.trim().is_empty())
    {
        return Err((
            format!("{p}.vllm.model_dir"),
            "must not be empty (leave it out to serve model_ref)".into(),
        ));
    }
    if pool.engine == Engine::Llamacpp {
        // llama.cpp keeps its split form: a replica with an `endpoint` is reached through an
        // adapter daemon, one without it is supervised here.
        return Ok(());
    }
    for (j, r) in pool.replicas.iter().enumerate() {
        let rp = format!("{p}.replicas[{j}]");
        if r.endpoint.is_some() {
            return Err((
                format!("{rp}.endpoint"),
                format!(
                    "pool-managerd starts this replica's engine ([pools.{section}]): it has no \
                     endpoint of its own (set engine_port to pin the engine's loopback port)"
                ),
            ));
        }
        if let Some(url) = &r.engine_url {
            let port = url
                .trim_end_matches('/')
                .rsplit(':')
                .next()
                .and_then(|s| s.parse::<u16>().ok());
            if r.engine_port.is_none() || port != r.engine_port {
                return Err((
                    format!("{rp}.engine_url"),
                    "a supervised replica's engine_url must name its engine_port \
                     (`http://127.0.0.1:<engine_port>`)"
                        .into(),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::parse_str;

    fn pool(engine: &str, model_ref: &str, section: &str, replica: &str) -> String {
        format!(
            r#"
[[auth.api_keys]]
key = "secret-data-key"
tenant = "acme"
role = "data"

[[pools]]
id = "p"
engine = "{engine}"
model_ref = "{model_ref}"
ctx_max = 2048
allow_cpu_inference = true
{section}
[[pools.replicas]]
id = "r0"
slots = 2
{replica}"#
        )
    }

    fn err(text: &str) -> String {
        parse_str(text, "t.toml").unwrap_err().to_string()
    }

    #[test]
    fn supervised_vllm_tgi_and_triton_parse() {
        let c = parse_str(
            &pool(
                "vllm",
                "/models/smollm2",
                "[pools.vllm]\nserver_binary = \"/venv/bin/vllm\"\nextra_args = [\"--dtype\", \"float32\"]\nenv = { VLLM_CPU_KVCACHE_SPACE = \"1\" }\n",
                "engine_port = 8011\nengine_url = \"http://127.0.0.1:8011\"\n",
            ),
            "t.toml",
        )
        .unwrap();
        let v = c.pools[0].vllm.as_ref().unwrap();
        assert_eq!(v.ready_timeout_ms, 600_000);
        assert!(c.pools[0].supervised());
        assert_eq!(
            c.pools[0].process().unwrap().server_binary,
            "/venv/bin/vllm"
        );

        let c = parse_str(
            &pool(
                "tgi",
                "HuggingFaceTB/SmolLM2-135M-Instruct",
                "[pools.tgi]\nserver_binary = \"/bin/text-generation-launcher\"\n",
                "",
            ),
            "t.toml",
        )
        .unwrap();
        assert!(c.pools[0].supervised());

        let c = parse_str(
            &pool(
                "triton",
                "llm",
                "[pools.triton]\nmodel = \"llm\"\ninputs = \"vllm\"\nserver_binary = \"/bin/tritonserver\"\nmodel_repository = \"/srv/repo\"\n",
                "",
            ),
            "t.toml",
        )
        .unwrap();
        assert!(c.pools[0].supervised());
        // Without server_binary it is the external Triton it was: replicas need endpoints.
        let e = err(&pool(
            "triton",
            "llm",
            "[pools.triton]\nmodel = \"llm\"\ninputs = \"vllm\"\n",
            "",
        ));
        assert!(e.contains("pools[0].replicas[0].endpoint"), "{e}");
    }

    /// Typed refusals, each naming its key path.
    #[test]
    fn bad_supervised_sections_are_refused_with_the_key_path() {
        let vllm = "[pools.vllm]\nserver_binary = \"/venv/bin/vllm\"\n";
        let cases = [
            (
                pool("vllm", "/m", vllm, "endpoint = \"http://127.0.0.1:9\"\n"),
                "pools[0].replicas[0].endpoint",
                "no endpoint",
            ),
            (
                pool("tgi", "/m", vllm, ""),
                "pools[0].vllm",
                "only for engine = \"vllm\"",
            ),
            (
                pool("vllm", &format!("sha256:{}", "a".repeat(64)), vllm, ""),
                "pools[0].model_ref",
                "local model directory",
            ),
            (
                pool(
                    "vllm",
                    "/m",
                    "[pools.vllm]\nserver_binary = \"/venv/bin/vllm\"\nready_timeout_ms = 5\n",
                    "",
                ),
                "pools[0].vllm.ready_timeout_ms",
                "below 1000",
            ),
            (
                pool("tgi", "m", "[pools.tgi]\nserver_binary = \"\"\n", ""),
                "pools[0].tgi.server_binary",
                "executable",
            ),
            (
                pool(
                    "tgi",
                    "m",
                    "[pools.tgi]\nserver_binary = \"/x\"\nenv = { \"A=B\" = \"1\" }\n",
                    "",
                ),
                "pools[0].tgi.env",
                "not an environment variable name",
            ),
            (
                pool(
                    "vllm",
                    "/m",
                    vllm,
                    "engine_port = 8011\nengine_url = \"http://127.0.0.1:8012\"\n",
                ),
                "pools[0].replicas[0].engine_url",
                "engine_port",
            ),
            (
                pool(
                    "triton",
                    "llm",
                    "[pools.triton]\nmodel = \"llm\"\ninputs = \"vllm\"\nserver_binary = \"/bin/tritonserver\"\n",
                    "",
                ),
                "pools[0].triton.model_repository",
                "needs its model_repository",
            ),
            (
                pool(
                    "triton",
                    "llm",
                    "[pools.triton]\nmodel = \"llm\"\ninputs = \"vllm\"\nserver_binary = \"/t\"\nmodel_repository = \"/r\"\nmetrics_url = \"http://h:1/metrics\"\n",
                    "",
                ),
                "pools[0].triton.metrics_url",
                "chosen by pool-managerd",
            ),
            (
                pool(
                    "triton",
                    "llm",
                    "[pools.triton]\nmodel = \"llm\"\ninputs = \"vllm\"\nserver_binary = \"/t\"\nmodel_repository = \"/r\"\n",
                    "endpoint = \"http://127.0.0.1:8000\"\n",
                ),
                "pools[0].replicas[0].endpoint",
                "[pools.triton]",
            ),
        ];
        for (text, path, msg) in cases {
            let e = err(&text);
            assert!(
                e.contains(path) && e.contains(msg),
                "want {path} / {msg}: {e}"
            );
        }
    }
}
