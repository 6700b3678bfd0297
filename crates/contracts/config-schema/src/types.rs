use api_types::{Engine, Priority};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Whole-appliance configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    /// Defaults for every pool's queue; a pool may override them.
    #[serde(default)]
    pub queue: QueueConfig,
    #[serde(default)]
    pub priorities: PrioritiesConfig,
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    #[serde(default)]
    pub sessions: SessionsConfig,
    /// Quotas of every tenant that has no `[[tenants]]` entry of its own.
    #[serde(default)]
    pub tenant_defaults: TenantLimits,
    /// Per-tenant fair-share weight and quotas (ORCH-3075–3077).
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    #[serde(default)]
    pub pool_manager: PoolManagerConfig,
    #[serde(default)]
    pub pools: Vec<PoolConfig>,
    /// Directory of the file this config was loaded from (set by [`crate::load_file`]):
    /// relative paths in it (policy modules) are resolved against it, not the working
    /// directory of whoever started the daemon.
    #[serde(skip)]
    #[schemars(skip)]
    pub source_dir: Option<std::path::PathBuf>,
}

/// Quotas of a tenant; an absent limit is unlimited. Violations are 429 ADMISSION_REJECT with
/// a Retry-After of when the request would pass.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TenantLimits {
    /// Most tasks admitted and not yet finished (queued + running), over all pools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Sustained submissions per second (token bucket).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
    /// Submissions allowed at once above the sustained rate (bucket size; default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Tokens (prompt estimate + max_tokens, unused part refunded at the end) per minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
}

/// One tenant's share and quotas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// The tenant name used by `auth.api_keys[].tenant`.
    pub id: String,
    /// Fair-share weight relative to other tenants (default 1); multiplied by the priority
    /// weight to give each (tenant, priority) flow its share.
    #[serde(default = "default_weight")]
    pub weight: u32,
    // The limits are spelled out rather than `#[serde(flatten)]`ed: serde cannot combine
    // flatten with deny_unknown_fields, and misspelled quota keys must be errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
}

impl TenantConfig {
    pub fn limits(&self) -> TenantLimits {
        TenantLimits {
            max_concurrent: self.max_concurrent,
            requests_per_second: self.requests_per_second,
            burst: self.burst,
            tokens_per_minute: self.tokens_per_minute,
        }
    }
}

fn default_weight() -> u32 {
    1
}

/// Where pool-managerd (and `llorch serve`) keep state and downloads.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PoolManagerConfig {
    /// Directory of the model catalog database (`catalog.sqlite3`). Default: systemd's
    /// `$STATE_DIRECTORY`, else `$XDG_STATE_HOME/llama-orch`, else `~/.local/state/llama-orch`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<String>,
    /// Directory for downloaded models (`<cache_dir>/models/sha256-<digest>`). Default:
    /// `$XDG_CACHE_HOME/llama-orch`, else `~/.cache/llama-orch`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<String>,
    /// orchestratord only: pool-managerd's registry, `unix:/abs/path.sock` or
    /// `http://host:port`. When set, orchestratord follows its change feed
    /// (`/v1/replicas/watch`) for readiness, engine versions, restarts and model lifecycle;
    /// its own 1 s adapter probe stays on as the fallback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind when no socket is passed by systemd (LISTEN_FDS).
    pub listen: String,
    /// Largest accepted request body.
    pub max_body_bytes: u64,
    /// On SIGTERM, how long running streams may continue before the process exits.
    pub shutdown_grace_ms: u64,
    /// How long a finished task's events stay readable on its stream URL (at most; the
    /// budgets below may evict a log sooner, oldest first).
    pub task_retention_ms: u64,
    /// Interval of SSE keep-alive comments.
    pub sse_keepalive_ms: u64,
    /// How long a task keeps running after the last reader of its stream disconnected before
    /// the terminal event, waiting for a reader to reconnect (`Last-Event-ID` resumes where it
    /// left off). When nobody has reattached by then, the task is canceled (reason
    /// `client_disconnect`) and its slot freed. 0 cancels at once (streams cannot be resumed
    /// then, only replayed after the task ends).
    pub stream_resume_grace_ms: u64,
    /// How often replicas are health-probed while nothing is queued or running and every
    /// replica is Ready: a slow safety net, since readiness then comes from pool-managerd's
    /// registry feed and from dispatch outcomes. While work exists, or a replica is not Ready,
    /// probes run every second.
    pub idle_probe_interval_ms: u64,
    /// Byte budget of all finished tasks' event logs kept for replay. Over it, the oldest
    /// finished logs are evicted (their stream URL answers 410 TASK_EVICTED). Default: 1/8 of
    /// the service's cgroup memory limit (systemd `MemoryMax=`/`MemoryHigh=`), between 16 MiB
    /// and 1 GiB; 256 MiB when there is no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_log_budget_bytes: Option<u64>,
    /// Most finished tasks kept for replay, all tenants together (oldest evicted first).
    pub task_log_max_tasks: u64,
    /// Most finished tasks kept for replay per tenant (that tenant's oldest evicted first).
    pub task_log_max_tasks_per_tenant: u64,
    /// Serve the OpenAI-compatible front door (`/v1/chat/completions`, `/v1/completions`,
    /// `/v1/models`) beside OrchQueue v1, through the same admission, quotas and queues.
    /// Off by default; `llorch serve`'s embedded config turns it on.
    pub openai_compat: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 1024 * 1024,
            shutdown_grace_ms: 10_000,
            task_retention_ms: 300_000,
            sse_keepalive_ms: 15_000,
            stream_resume_grace_ms: 2_000,
            idle_probe_interval_ms: 10_000,
            task_log_budget_bytes: None,
            task_log_max_tasks: 20_000,
            task_log_max_tasks_per_tenant: 5_000,
            openai_compat: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub api_keys: Vec<ApiKeyConfig>,
}

/// An API key; give exactly one of `key` (plain) or `key_sha256` (hex SHA-256 of the key,
/// preferred: the config may be world-readable, e.g. in the Nix store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_sha256: Option<String>,
    pub tenant: String,
    pub role: Role,
}

impl ApiKeyConfig {
    /// Lower-case hex SHA-256 of the key, whichever way it was given.
    pub fn digest_hex(&self) -> Option<String> {
        match (&self.key, &self.key_sha256) {
            (Some(k), None) => Some(sha256_hex(k)),
            (None, Some(d)) => Some(d.to_ascii_lowercase()),
            _ => None,
        }
    }
}

pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// Data keys submit and read tasks and sessions; control keys manage pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Data,
    Control,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FullPolicy {
    /// Refuse the new task with 429 ADMISSION_REJECT.
    Reject,
    /// Evict the oldest queued task of the same or lower priority (it gets QUEUE_FULL_DROP_LRU).
    DropLru,
    /// Evict the newest queued task of a strictly lower priority; reject if there is none.
    ShedLowPriority,
}

impl FullPolicy {
    pub fn label(self) -> &'static str {
        match self {
            FullPolicy::Reject => "reject",
            FullPolicy::DropLru => "drop-lru",
            FullPolicy::ShedLowPriority => "shed-low-priority",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Most tasks waiting in one pool (all priorities together).
    pub capacity: u32,
    pub full_policy: FullPolicy,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            capacity: 256,
            full_policy: FullPolicy::Reject,
        }
    }
}

/// Overrides of [`QueueConfig`] for one pool.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueOverride {
    pub capacity: Option<u32>,
    pub full_policy: Option<FullPolicy>,
}

/// Relative weights of the priority classes for weighted fair queuing (ORCH-3075).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PrioritiesConfig {
    pub interactive_weight: u32,
    pub batch_weight: u32,
}

impl Default for PrioritiesConfig {
    fn default() -> Self {
        PrioritiesConfig {
            interactive_weight: 8,
            batch_weight: 1,
        }
    }
}

impl PrioritiesConfig {
    pub fn weight(&self, p: Priority) -> u32 {
        match p {
            Priority::Interactive => self.interactive_weight,
            Priority::Batch => self.batch_weight,
        }
    }
}

/// Watchdog limits for running tasks (ORCH-3016).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// Longest wait in a queue before a task fails (POOL_UNREADY when its pool has no Ready
    /// replica, else ADMISSION_REJECT): nothing waits forever for a pool that never comes back.
    pub queue_ms: u64,
    /// Longest wait from dispatch to the first token.
    pub first_token_ms: u64,
    /// Longest gap between two tokens.
    pub idle_ms: u64,
    /// Longest total decode time.
    pub wall_ms: u64,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            queue_ms: 300_000,
            first_token_ms: 30_000,
            idle_ms: 10_000,
            wall_ms: 600_000,
        }
    }
}

/// Short-lived sessions (ORCH-3021, 3022).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    pub ttl_ms: u64,
    pub max_turns: u32,
    /// Most live sessions; the least recently used is evicted beyond it.
    pub max_sessions: u32,
    /// Tokens (prompt + generated) one session may use over all its turns; unlimited if absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_budget: Option<u64>,
    /// Decode time one session may use over all its turns; unlimited if absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_budget_ms: Option<u64>,
    /// Most sessions whose KV cache one replica is assumed to keep (least recently used goes
    /// cold: its next turn is placed without affinity).
    pub kv_sessions_per_replica: u32,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            ttl_ms: 600_000,
            max_turns: 8,
            max_sessions: 10_000,
            token_budget: None,
            time_budget_ms: None,
            kv_sessions_per_replica: 64,
        }
    }
}

/// A pool: replicas of one engine serving one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub id: String,
    pub engine: Engine,
    /// The model: a local path (`file:` prefix optional), an `http(s)://` URL (downloaded
    /// with resume into the cache; needs `model_sha256`), or `sha256:<digest>` naming a
    /// catalog entry. Mock pools use `mock:<name>`.
    pub model_ref: String,
    /// Largest context a task may ask for.
    pub ctx_max: u32,
    /// Allow replicas without GPU devices (development and CI only; labelled everywhere).
    #[serde(default)]
    pub allow_cpu_inference: bool,
    #[serde(default)]
    pub queue: QueueOverride,
    /// Required SHA-256 of the model file; the engine is not started on a mismatch
    /// (UNTRUSTED_ARTIFACT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_sha256: Option<String>,
    /// Run the replicas' llama.cpp engines under our supervision (`llorch serve`) instead of
    /// reaching them through an adapter daemon `endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llamacpp: Option<LlamaCppProcessConfig>,
    /// Reach the replicas' NVIDIA Triton servers directly (engine = "triton"): each replica's
    /// `endpoint` is then Triton's HTTP endpoint and the adapter runs in-process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triton: Option<TritonConfig>,
    /// Run the replicas' vLLM servers (`vllm serve`) under pool-managerd's supervision
    /// (engine = "vllm"); the replicas then set no `endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vllm: Option<VllmProcessConfig>,
    /// Run the replicas' TGI launchers (`text-generation-launcher`) under pool-managerd's
    /// supervision (engine = "tgi"); the replicas then set no `endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tgi: Option<TgiProcessConfig>,
    /// A WebAssembly policy plugin for this pool's admission and placement (ORCH-3048,
    /// docs/plugins.md). Absent: the built-in policies only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyPluginConfig>,
    pub replicas: Vec<ReplicaConfig>,
}

/// A pool's policy plugin: a WebAssembly module run by the policy host with bounded fuel and
/// memory and no files, sockets, clock or entropy beyond its `grants`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyPluginConfig {
    /// Path of the module: a compiled `.wasm` or WebAssembly text (`.wat`). Relative paths are
    /// resolved against the directory of the config file.
    pub module: String,
    /// Name in logs and metrics (`plugin` label); defaults to the module's file stem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// WebAssembly fuel (≈ instructions) one call may burn before it is stopped and the
    /// built-in decision is used. Bounds CPU per call.
    #[serde(default = "default_policy_fuel")]
    pub fuel: u64,
    /// Most linear memory the module may hold during one call.
    #[serde(default = "default_policy_memory_bytes")]
    pub memory_bytes: u64,
    /// Extra host functions the module may import. Both stay deterministic: `clock` reads the
    /// snapshot's `now_ms`, `random` is seeded from the snapshot. Files and sockets are never
    /// granted.
    #[serde(default)]
    pub grants: Vec<PolicyGrant>,
}

pub fn default_policy_fuel() -> u64 {
    10_000_000
}

pub fn default_policy_memory_bytes() -> u64 {
    16 * 1024 * 1024
}

/// A capability a policy plugin may be given (see docs/plugins.md).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PolicyGrant {
    /// WASI `clock_time_get` / `clock_res_get`, answering the snapshot's `now_ms`.
    Clock,
    /// WASI `random_get`, a pseudo-random stream seeded from the snapshot bytes.
    Random,
}

/// How a supervised llama.cpp engine is started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LlamaCppProcessConfig {
    /// Path of the `llama-server` binary (e.g. from the Nix store or `cargo xtask fetch-engine`).
    pub server_binary: String,
    /// Extra command-line arguments for llama-server.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// Longest time from start to Ready (model loaded, one-token decode answered).
    #[serde(default = "default_ready_timeout_ms")]
    pub ready_timeout_ms: u64,
}

/// How a supervised vLLM server is started: `<server_binary> serve <model_dir> --host
/// 127.0.0.1 --port <port> --max-num-seqs <slots> --max-model-len <ctx_max> --seed 0
/// <extra_args…>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VllmProcessConfig {
    /// Path of the `vllm` executable (the venv's `bin/vllm`).
    pub server_binary: String,
    /// The model directory (Hugging Face layout: `config.json`, safetensors, tokenizer).
    /// Absent: the pool's `model_ref`, a local directory. A reload serves the new model_ref.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_dir: Option<String>,
    /// Extra command-line arguments (e.g. `--dtype`, `--enforce-eager`).
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// Extra environment of the server (e.g. `VLLM_BATCH_INVARIANT = "1"`).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Longest time from start to Ready (vLLM imports and loads for a minute or more).
    #[serde(default = "default_long_ready_timeout_ms")]
    pub ready_timeout_ms: u64,
}

/// How a supervised TGI is started: `<server_binary> --model-id <model_ref> --hostname
/// 127.0.0.1 --port <port> --max-concurrent-requests <slots> <extra_args…>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TgiProcessConfig {
    /// Path of `text-generation-launcher` (or a stand-in with its flags).
    pub server_binary: String,
    #[serde(default)]
    pub extra_args: Vec<String>,
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Longest time from start to Ready (TGI downloads and shards the model first).
    #[serde(default = "default_long_ready_timeout_ms")]
    pub ready_timeout_ms: u64,
}

/// How a Triton Inference Server serves the pool's model (generate extension, SSE).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TritonConfig {
    /// The Triton model name (its directory in the model repository), e.g. `ensemble`.
    pub model: String,
    /// How the model takes its inputs.
    pub inputs: TritonInputs,
    /// Triton's Prometheus endpoint, e.g. `http://127.0.0.1:8002/metrics`. Absent: port 8002
    /// of each replica endpoint's host. Only for single-replica pools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_url: Option<String>,
    /// Path of `tritonserver`: with `model_repository`, pool-managerd starts and supervises
    /// one Triton per replica (`--model-repository <dir> --http-port <port> --metrics-port
    /// <port> --allow-grpc=false …`) and the replicas set no `endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_binary: Option<String>,
    /// The model repository directory of a supervised Triton (holds `<model>/config.pbtxt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_repository: Option<String>,
    /// Extra command-line arguments of a supervised Triton (e.g. `--backend-directory=…`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
    /// Extra environment of a supervised Triton.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
    /// Longest time from start to Ready of a supervised Triton.
    #[serde(default = "default_ready_timeout_ms")]
    pub ready_timeout_ms: u64,
}

impl TritonConfig {
    /// Whether pool-managerd starts this pool's Triton servers.
    pub fn supervised(&self) -> bool {
        self.server_binary.is_some() && self.model_repository.is_some()
    }
}

/// The input convention of a Triton LLM model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TritonInputs {
    /// The vLLM backend: `text_input` + `sampling_parameters` (a JSON string).
    Vllm,
    /// The TensorRT-LLM ensemble: `text_input`, `max_tokens`, `seed`, … as inputs.
    TensorrtLlm,
}

fn default_ready_timeout_ms() -> u64 {
    300_000
}

fn default_long_ready_timeout_ms() -> u64 {
    600_000
}

/// What pool-managerd needs to start one engine process of a supervised pool.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSettings<'a> {
    pub server_binary: &'a str,
    pub extra_args: &'a [String],
    pub env: Option<&'a std::collections::BTreeMap<String, String>>,
    pub ready_timeout_ms: u64,
}

impl PoolConfig {
    /// The process settings of a pool whose engines pool-managerd supervises
    /// (`[pools.llamacpp]`, `[pools.vllm]`, `[pools.tgi]`, or `[pools.triton]` with
    /// `server_binary` and `model_repository`); None when they run elsewhere.
    pub fn process(&self) -> Option<ProcessSettings<'_>> {
        if let Some(l) = &self.llamacpp {
            return Some(ProcessSettings {
                server_binary: &l.server_binary,
                extra_args: &l.extra_args,
                env: None,
                ready_timeout_ms: l.ready_timeout_ms,
            });
        }
        if let Some(v) = &self.vllm {
            return Some(ProcessSettings {
                server_binary: &v.server_binary,
                extra_args: &v.extra_args,
                env: Some(&v.env),
                ready_timeout_ms: v.ready_timeout_ms,
            });
        }
        if let Some(t) = &self.tgi {
            return Some(ProcessSettings {
                server_binary: &t.server_binary,
                extra_args: &t.extra_args,
                env: Some(&t.env),
                ready_timeout_ms: t.ready_timeout_ms,
            });
        }
        match &self.triton {
            Some(t) if t.supervised() => Some(ProcessSettings {
                server_binary: t.server_binary.as_deref().unwrap_or_default(),
                extra_args: &t.extra_args,
                env: Some(&t.env),
                ready_timeout_ms: t.ready_timeout_ms,
            }),
            _ => None,
        }
    }

    /// Whether pool-managerd starts and supervises this pool's engines.
    pub fn supervised(&self) -> bool {
        self.process().is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    pub id: String,
    /// GPU ordinals of the replica's device mask (CUDA_VISIBLE_DEVICES); empty = CPU.
    #[serde(default)]
    pub devices: Vec<u32>,
    /// Concurrent decode slots.
    #[serde(default = "default_slots")]
    pub slots: u32,
    /// Worker-protocol endpoint of an adapter daemon: `unix:/path.sock` or `http://host:port`.
    /// Absent for the in-process mock engine. In a pool with a `[pools.triton]` section:
    /// Triton's own HTTP endpoint, `http://host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Base URL (`http://host:port`) of an engine run outside llama-orch that orchestratord
    /// reaches through its in-process adapter, without an adapter daemon (engine = "tgi": the
    /// TGI router; engine = "vllm": vLLM's OpenAI-compatible server). Either this or
    /// `endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_url: Option<String>,
    /// Loopback port of the llama-server that pool-managerd starts for this replica (pools
    /// with `[pools.llamacpp]`). Absent: a free port at each start. Set it when a separate
    /// `llorch-adapterd` reaches the engine (`--engine-url http://127.0.0.1:<port>`), as in
    /// the systemd deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_port: Option<u16>,
    /// Mock-engine behaviour (engine = "mock" only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mock: Option<MockEngineConfig>,
}

fn default_slots() -> u32 {
    1
}

/// Behaviour of the deterministic mock engine, including fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
#[derive(Default)]
pub struct MockEngineConfig {
    /// Tokens per second per stream; 0 = as fast as possible.
    pub tokens_per_second: u32,
    /// Delay before the first token.
    pub first_token_latency_ms: u64,
    /// Fail with an engine error after this many tokens.
    pub error_after_tokens: Option<u32>,
    /// Stop producing tokens (without closing) after this many tokens.
    pub stall_after_tokens: Option<u32>,
    /// Drop the stream (as if the engine died) after this many tokens.
    pub disconnect_after_tokens: Option<u32>,
    /// Declare interruptible decode, which allows hard preemption of batch work on this
    /// replica (no real engine declares it yet; the mock exercises the hook).
    pub interruptible: bool,
    /// Report engine_version `mock-<version>+b<N>` instead of `mock-<version>`: a replica
    /// running another engine build, as in the middle of an upgrade.
    pub engine_build: Option<u32>,
}

impl Config {
    /// Quotas of a tenant: its own entry, else `tenant_defaults`.
    pub fn tenant_limits(&self, tenant: &str) -> TenantLimits {
        self.tenants
            .iter()
            .find(|t| t.id == tenant)
            .map_or(self.tenant_defaults, TenantConfig::limits)
    }

    pub fn pool(&self, id: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|p| p.id == id)
    }

    /// Effective queue settings of a pool (its overrides over the global defaults).
    pub fn queue_for(&self, pool: &PoolConfig) -> QueueConfig {
        QueueConfig {
            capacity: pool.queue.capacity.unwrap_or(self.queue.capacity),
            full_policy: pool.queue.full_policy.unwrap_or(self.queue.full_policy),
        }
    }
}
