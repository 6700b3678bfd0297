//! One compiled policy module: loading (compile, import/export and ABI checks) and the
//! per-call sandbox (fresh instance, fuel, memory limit, answer validation).

use std::path::PathBuf;
use std::sync::Arc;

use policy_sdk::{
    ABI_MAJOR, ABI_MINOR, AdmissionDecision, AdmissionSnapshot, MAX_REASON_BYTES,
    PlacementDecision, PlacementSnapshot, PluginError, exports,
};
use sha2::Digest;
use wasmtime::{
    Engine, ExternType, InstancePre, Linker, Module, ModuleExport, ResourceLimiter, Store, Trap,
    TypedFunc,
};

use crate::wasi::{self, HasWasi, WasiState};
use crate::{FallbackReason, Grant, Hook, LoadError};

/// Longest decision JSON accepted from a plugin; anything longer is malformed.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Per-call resource bounds of a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// WebAssembly fuel one call may burn (≈ one unit per instruction), instantiation
    /// included. Exhausting it ends the call with [`FallbackReason::OutOfFuel`].
    pub fuel: u64,
    /// Most linear memory the instance may have; a `memory.grow` past it fails (returns -1)
    /// and the call's outcome becomes [`FallbackReason::MemoryLimit`] unless the plugin copes.
    pub memory_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 10_000_000,
            memory_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Where a module's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleSource {
    /// A `.wasm` binary or `.wat` text file.
    File(PathBuf),
    /// Binary WebAssembly or WebAssembly text, already in memory.
    Bytes(Vec<u8>),
}

/// Everything needed to load a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSpec {
    /// Name in logs and metrics.
    pub id: String,
    pub module: ModuleSource,
    pub limits: Limits,
    pub grants: Vec<Grant>,
}

/// Identity of a loaded plugin, shared by every outcome it produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// From the spec (config `id`, default the module's file stem).
    pub id: String,
    /// `sha256:` + the first 16 hex digits of the module bytes' SHA-256: two loads report the
    /// same version exactly when they run the same module.
    pub version: String,
    /// ABI version the module declared, `(major, minor)`.
    pub abi: (u16, u16),
    pub admits: bool,
    pub places: bool,
    pub limits: Limits,
    pub grants: Vec<Grant>,
}

/// Store data of one call.
struct CallState {
    limiter: Limiter,
    wasi: WasiState,
}

impl HasWasi for CallState {
    fn wasi(&mut self) -> &mut WasiState {
        &mut self.wasi
    }
}

struct Limiter {
    memory_max: usize,
    /// A growth was refused: explains a trap that follows it.
    memory_denied: bool,
}

/// Plenty for any policy; bounds `table.grow` the way `memory_bytes` bounds memory.
pub(crate) const MAX_TABLE_ELEMENTS: usize = 100_000;

/// The largest `memory_bytes` a plugin may be given (the config's limit too): each pooled
/// instance slot reserves this much address space.
pub(crate) const MAX_MEMORY_BYTES: usize = config_schema::MAX_POLICY_MEMORY_BYTES as usize;

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_max {
            self.memory_denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    // One module, one memory: also what the ABI's `memory` export means.
    fn instances(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }
}

/// A compiled, checked policy module. Calls are `&self` and independent: each one gets a new
/// `Store` and instance, so nothing a call does (including trapping half-way through writing
/// its memory) is visible to the next one.
pub struct Plugin {
    info: Arc<PluginInfo>,
    pre: InstancePre<CallState>,
    engine: Engine,
    alloc: ModuleExport,
    admit: Option<ModuleExport>,
    place: Option<ModuleExport>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("info", &self.info).finish()
    }
}

/// Checks that the export `name` exists with the given kind; functions' signatures are checked
/// when the probe instance looks them up as typed functions.
fn export_kind(module: &Module, name: &'static str) -> Option<ExternType> {
    module.get_export(name)
}

impl Plugin {
    pub(crate) fn load(engine: &Engine, spec: &PluginSpec) -> Result<Plugin, LoadError> {
        let bytes = match &spec.module {
            ModuleSource::File(path) => std::fs::read(path).map_err(|source| LoadError::Read {
                path: path.clone(),
                source,
            })?,
            ModuleSource::Bytes(b) => b.clone(),
        };
        if spec.limits.fuel == 0 {
            return Err(LoadError::InvalidLimits("fuel must be > 0".into()));
        }
        let memory_max = usize::try_from(spec.limits.memory_bytes)
            .ok()
            .filter(|m| *m <= MAX_MEMORY_BYTES)
            .ok_or_else(|| {
                LoadError::InvalidLimits(format!(
                    "memory_bytes is {}, the limit is {MAX_MEMORY_BYTES}",
                    spec.limits.memory_bytes
                ))
            })?;
        let version = format!(
            "sha256:{}",
            &hex::encode(sha2::Sha256::digest(&bytes))[..16]
        );
        // Accepts binary and text modules (wasmtime's `wat` feature).
        let module =
            Module::new(engine, &bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))?;

        // Imports: only the WASI shim's functions, each allowed by the grants.
        for import in module.imports() {
            let (m, name) = (import.module(), import.name());
            let allowed = m == wasi::WASI
                && matches!(import.ty(), ExternType::Func(_))
                && wasi::is_provided(name, &spec.grants);
            if !allowed {
                return Err(LoadError::ImportNotAllowed {
                    module: m.to_string(),
                    name: name.to_string(),
                    grant: if m == wasi::WASI {
                        wasi::grant_for(name)
                    } else {
                        None
                    },
                });
            }
        }

        // Exports.
        if !matches!(
            export_kind(&module, exports::MEMORY),
            Some(ExternType::Memory(_))
        ) {
            return Err(LoadError::MissingExport(exports::MEMORY));
        }
        for name in [exports::ABI_VERSION, exports::ALLOC] {
            if !matches!(export_kind(&module, name), Some(ExternType::Func(_))) {
                return Err(LoadError::MissingExport(name));
            }
        }
        let hook = |name: &'static str| {
            matches!(export_kind(&module, name), Some(ExternType::Func(_)))
                .then(|| module.get_export_index(name))
                .flatten()
        };
        let admit = hook(exports::ADMIT);
        let place = hook(exports::PLACE);
        if admit.is_none() && place.is_none() {
            return Err(LoadError::NoHooks);
        }
        let alloc = module
            .get_export_index(exports::ALLOC)
            .ok_or(LoadError::MissingExport(exports::ALLOC))?;

        let mut linker = Linker::new(engine);
        wasi::link(&mut linker, &spec.grants).map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;

        let plugin = Plugin {
            info: Arc::new(PluginInfo {
                id: spec.id.clone(),
                version,
                abi: (0, 0),
                admits: admit.is_some(),
                places: place.is_some(),
                limits: spec.limits,
                grants: spec.grants.clone(),
            }),
            pre,
            engine: engine.clone(),
            alloc,
            admit,
            place,
        };
        let abi = plugin.probe(memory_max)?;
        let mut info = (*plugin.info).clone();
        info.abi = abi;
        Ok(Plugin {
            info: Arc::new(info),
            ..plugin
        })
    }

    /// Instantiates once under the configured limits: proves the module can start within them,
    /// reads and checks its ABI version, and checks the exported functions' signatures.
    fn probe(&self, memory_max: usize) -> Result<(u16, u16), LoadError> {
        let mut store = self.store(memory_max, 0, &[]);
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| LoadError::Instantiate(describe(&store, &e).to_string()))?;
        let version_fn = instance
            .get_typed_func::<(), i32>(&mut store, exports::ABI_VERSION)
            .map_err(|e| LoadError::BadExport {
                name: exports::ABI_VERSION,
                detail: format!("{e:#}"),
            })?;
        let v = version_fn
            .call(&mut store, ())
            .map_err(|e| LoadError::Instantiate(describe(&store, &e).to_string()))?;
        let (major, minor) = ((v as u32 >> 16) as u16, v as u32 as u16);
        if major != ABI_MAJOR || minor > ABI_MINOR {
            return Err(LoadError::AbiIncompatible {
                found: (major, minor),
                supported: (ABI_MAJOR, ABI_MINOR),
            });
        }
        instance
            .get_typed_func::<i32, i32>(&mut store, exports::ALLOC)
            .map_err(|e| LoadError::BadExport {
                name: exports::ALLOC,
                detail: format!("{e:#}"),
            })?;
        for (name, present) in [
            (exports::ADMIT, self.admit.is_some()),
            (exports::PLACE, self.place.is_some()),
        ] {
            if present {
                instance
                    .get_typed_func::<(i32, i32), i64>(&mut store, name)
                    .map_err(|e| LoadError::BadExport {
                        name,
                        detail: format!("{e:#}"),
                    })?;
            }
        }
        Ok((major, minor))
    }

    fn store(&self, memory_max: usize, now_ms: u64, input: &[u8]) -> Store<CallState> {
        let mut store = Store::new(
            &self.engine,
            CallState {
                limiter: Limiter {
                    memory_max,
                    memory_denied: false,
                },
                wasi: WasiState::new(now_ms, input),
            },
        );
        store.limiter(|s| &mut s.limiter);
        // Cannot fail: the engine is always built with fuel consumption on.
        let _ = store.set_fuel(self.info.limits.fuel);
        store
    }

    pub fn info(&self) -> &Arc<PluginInfo> {
        &self.info
    }

    /// Runs the admission hook. `Ok(None)`: the module has no admission hook.
    pub fn admit(
        &self,
        snapshot: &AdmissionSnapshot,
    ) -> Result<Option<AdmissionDecision>, FallbackReason> {
        let Some(hook) = &self.admit else {
            return Ok(None);
        };
        let answer = self.call(Hook::Admission, hook, snapshot, snapshot.now_ms)?;
        let decision: AdmissionDecision = parse(&answer)?;
        if let AdmissionDecision::Reject { reason } = &decision
            && reason.len() > MAX_REASON_BYTES
        {
            return Err(FallbackReason::Malformed(format!(
                "reject reason is {} bytes, the limit is {MAX_REASON_BYTES}",
                reason.len()
            )));
        }
        Ok(Some(decision))
    }

    /// Runs the placement hook. A replica that is not a candidate of the snapshot is a
    /// malformed answer. `Ok(None)`: the module has no placement hook.
    pub fn place(
        &self,
        snapshot: &PlacementSnapshot,
    ) -> Result<Option<PlacementDecision>, FallbackReason> {
        let Some(hook) = &self.place else {
            return Ok(None);
        };
        let answer = self.call(Hook::Placement, hook, snapshot, snapshot.now_ms)?;
        let decision: PlacementDecision = parse(&answer)?;
        if let PlacementDecision::Place { replica_id } = &decision
            && !snapshot.is_candidate(replica_id)
        {
            return Err(FallbackReason::Malformed(format!(
                "replica `{}` is not a candidate",
                truncate(replica_id, 64)
            )));
        }
        Ok(Some(decision))
    }

    fn call(
        &self,
        hook: Hook,
        export: &ModuleExport,
        snapshot: &impl serde::Serialize,
        now_ms: u64,
    ) -> Result<Vec<u8>, FallbackReason> {
        let input = serde_json::to_vec(snapshot)
            .map_err(|e| FallbackReason::Host(format!("snapshot serialization: {e}")))?;
        let len = i32::try_from(input.len())
            .map_err(|_| FallbackReason::Host("snapshot larger than 2 GiB".into()))?;
        // Fits: `load` checked it converts.
        let memory_max = self.info.limits.memory_bytes as usize;
        let mut store = self.store(memory_max, now_ms, &input);
        let result = self.run(&mut store, export, &input, len);
        let output = std::mem::take(&mut store.data_mut().wasi.output);
        if !output.is_empty() {
            tracing::debug!(
                target: "llorch_policy",
                plugin = %self.info.id,
                hook = hook.as_str(),
                output = %String::from_utf8_lossy(&output),
                "plugin wrote to stdout/stderr"
            );
        }
        result.map_err(|e| match e {
            RunError::Wasm(e) => describe(&store, &e),
            RunError::Reason(r) => r,
        })
    }

    fn run(
        &self,
        store: &mut Store<CallState>,
        export: &ModuleExport,
        input: &[u8],
        len: i32,
    ) -> Result<Vec<u8>, RunError> {
        let instance = self.pre.instantiate(&mut *store)?;
        let memory = instance
            .get_memory(&mut *store, exports::MEMORY)
            .ok_or_else(|| malformed("no memory export"))?;
        let alloc: TypedFunc<i32, i32> = typed(&instance, store, &self.alloc)?;
        let hook: TypedFunc<(i32, i32), i64> = typed(&instance, store, export)?;
        let ptr = alloc.call(&mut *store, len)?;
        memory
            .write(&mut *store, ptr as u32 as usize, input)
            .map_err(|_| malformed("llorch_alloc returned a buffer outside memory"))?;
        let packed = hook.call(&mut *store, (ptr, len))? as u64;
        let (out_ptr, out_len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
        if out_len > MAX_ANSWER_BYTES {
            return Err(malformed(&format!(
                "answer is {out_len} bytes, the limit is {MAX_ANSWER_BYTES}"
            )));
        }
        let mut answer = vec![0; out_len];
        memory
            .read(&*store, out_ptr, &mut answer)
            .map_err(|_| malformed("answer lies outside memory"))?;
        Ok(answer)
    }
}

enum RunError {
    Wasm(wasmtime::Error),
    Reason(FallbackReason),
}

impl From<wasmtime::Error> for RunError {
    fn from(e: wasmtime::Error) -> Self {
        RunError::Wasm(e)
    }
}

fn malformed(detail: &str) -> RunError {
    RunError::Reason(FallbackReason::Malformed(detail.to_string()))
}

fn typed<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
    instance: &wasmtime::Instance,
    store: &mut Store<CallState>,
    export: &ModuleExport,
) -> Result<TypedFunc<P, R>, RunError> {
    let func = instance
        .get_module_export(&mut *store, export)
        .and_then(|e| e.into_func())
        .ok_or_else(|| malformed("hook export missing"))?;
    Ok(func.typed::<P, R>(&*store)?)
}

/// Why a call failed, from the wasmtime error and what the limiter saw.
fn describe(store: &Store<CallState>, e: &wasmtime::Error) -> FallbackReason {
    if store.data().limiter.memory_denied {
        return FallbackReason::MemoryLimit;
    }
    if let Some(Trap::OutOfFuel) = e.downcast_ref::<Trap>() {
        return FallbackReason::OutOfFuel;
    }
    if let Some(wasi::ProcExit(code)) = e.downcast_ref::<wasi::ProcExit>() {
        return FallbackReason::Trap(format!("proc_exit({code})"));
    }
    let msg = match e.downcast_ref::<Trap>() {
        Some(t) => t.to_string(),
        None => format!("{e:#}"),
    };
    FallbackReason::Trap(truncate(&msg, 200).to_string())
}

fn parse<D: serde::de::DeserializeOwned>(answer: &[u8]) -> Result<D, FallbackReason> {
    match serde_json::from_slice::<D>(answer) {
        Ok(d) => Ok(d),
        Err(e) => {
            // An SDK plugin that could not read the snapshot says why; keep that.
            let detail = match serde_json::from_slice::<PluginError>(answer) {
                Ok(pe) => format!("plugin error: {}", truncate(&pe.error, 200)),
                Err(_) => format!("invalid decision JSON: {e}"),
            };
            Err(FallbackReason::Malformed(detail))
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
