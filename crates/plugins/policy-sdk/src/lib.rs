//! # llorch-policy-sdk — write llama-orch policy plugins in Rust
//!
//! A policy plugin is a WebAssembly module that llama-orch's policy host
//! (`llorch-policy-host`, wasmtime) calls at two points of the scheduler (ORCH-3048):
//!
//! - **admission** — before a task is queued: [`AdmissionDecision::Admit`],
//!   [`AdmissionDecision::Reject`] with a reason, or [`AdmissionDecision::Reprioritize`];
//! - **placement** — when a task is dispatched: [`PlacementDecision::Place`] on one of the
//!   candidate replicas, or [`PlacementDecision::Defer`] to leave it queued.
//!
//! Both hooks are *pure functions* of a JSON snapshot ([`AdmissionSnapshot`],
//! [`PlacementSnapshot`]): the host instantiates the module afresh for every call, meters it
//! with fuel, bounds its memory and gives it no files, sockets, clock or entropy. The same
//! snapshot therefore always yields the same decision. When a plugin traps, runs out of fuel,
//! exceeds its memory or answers something malformed, the host uses its built-in decision.
//!
//! This crate is the **single definition of the snapshot and decision JSON**: the host depends
//! on it for the types, so a plugin compiled against version `x.y` of this ABI
//! ([`ABI_MAJOR`], [`ABI_MINOR`]) speaks exactly what the host parses.
//!
//! It must not depend on wasmtime or on anything that does I/O: it is compiled into plugins
//! for `wasm32-wasip1`, and everything a plugin may know arrives in the snapshot.
//!
//! ## Example: tenant `tenant-a` never uses more than half of the replicas
//!
//! ```
//! use llorch_policy_sdk::{PlacementDecision, PlacementPolicy, PlacementSnapshot, ReplicaLoad};
//!
//! pub struct TenantHalf;
//!
//! const LIMITED: &str = "tenant-a";
//!
//! impl PlacementPolicy for TenantHalf {
//!     fn place(s: &PlacementSnapshot) -> PlacementDecision {
//!         let uses = |r: &ReplicaLoad| r.running_by_tenant.get(LIMITED).copied().unwrap_or(0) > 0;
//!         let limit = (s.replicas.len() / 2).max(1);
//!         let used = s.replicas.iter().filter(|r| uses(r)).count();
//!         let allowed = |r: &ReplicaLoad| {
//!             s.task.tenant != LIMITED || uses(r) || used < limit
//!         };
//!         match s.candidates().filter(|r| allowed(r)).min_by(|a, b| a.load_cmp(b)) {
//!             Some(r) => PlacementDecision::Place { replica_id: r.replica_id.clone() },
//!             // Every candidate would give tenant-a one replica too many: keep it queued.
//!             None => PlacementDecision::Defer,
//!         }
//!     }
//! }
//!
//! // Generates the ABI exports (`llorch_abi_version`, `llorch_alloc`, `llorch_place`) when
//! // compiled for wasm32; a no-op on other targets, so the logic is unit-testable natively.
//! llorch_policy_sdk::export_policy!(TenantHalf, placement);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip1` (crate type `cdylib`) and point
//! a pool's `[pools.policy] module` at the `.wasm`. The complete example, with tests, is
//! `examples/plugins/tenant-half`; the ABI is described in `docs/plugins.md`.
//!
//! ## The ABI (version 1.0), for authors who do not use this crate
//!
//! The module exports `memory`, `llorch_abi_version() -> i32` (`major << 16 | minor`),
//! `llorch_alloc(len: i32) -> i32`, and one or both of `llorch_admit(ptr: i32, len: i32) -> i64`
//! and `llorch_place(ptr: i32, len: i32) -> i64`. The host allocates `len` bytes with
//! `llorch_alloc`, writes the UTF-8 JSON snapshot there and calls the hook, which returns
//! `ptr << 32 | len` of its UTF-8 JSON decision in the same memory.

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Major version of the plugin ABI: the host refuses modules with another major.
pub const ABI_MAJOR: u16 = 1;
/// Minor version: additive changes. The host accepts modules whose minor is ≤ its own.
pub const ABI_MINOR: u16 = 0;
/// What `llorch_abi_version` returns: `major << 16 | minor`.
pub const ABI_VERSION: i32 = ((ABI_MAJOR as i32) << 16) | ABI_MINOR as i32;

/// Names of the module exports the ABI defines.
pub mod exports {
    pub const MEMORY: &str = "memory";
    pub const ABI_VERSION: &str = "llorch_abi_version";
    pub const ALLOC: &str = "llorch_alloc";
    pub const ADMIT: &str = "llorch_admit";
    pub const PLACE: &str = "llorch_place";
}

/// Longest reason a plugin may give for a rejection; longer answers are malformed.
pub const MAX_REASON_BYTES: usize = 256;

/// Priority class of a task (same spelling as the public API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Interactive,
    Batch,
}

/// The task being admitted or placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub task_id: String,
    /// Tenant of the API key that submitted the task.
    pub tenant: String,
    pub priority: Priority,
    pub model_ref: String,
    /// Context length the task asked for.
    pub ctx: u32,
    pub max_tokens: u32,
    /// Estimated prompt tokens (an over-estimate: ⌈bytes / 3⌉).
    pub prompt_tokens: u32,
    /// Relative deadline from `now_ms`, when the client gave one.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    #[serde(default)]
    pub session_id: Option<String>,
}

/// The pool's queue at the time of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QueueState {
    /// Most tasks the pool's queue holds (all priorities together).
    pub capacity: u32,
    pub depth_interactive: u32,
    pub depth_batch: u32,
}

impl QueueState {
    pub fn depth(&self, p: Priority) -> u32 {
        match p {
            Priority::Interactive => self.depth_interactive,
            Priority::Batch => self.depth_batch,
        }
    }

    pub fn total(&self) -> u32 {
        self.depth_interactive.saturating_add(self.depth_batch)
    }
}

/// Readiness of a replica as the scheduler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaState {
    Ready,
    Unready,
    /// Finishing in-flight work; takes no new tasks.
    Draining,
}

/// Load of one replica of the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaLoad {
    pub replica_id: String,
    /// Placement only: the built-in rules allow this replica for this task (Ready, a free
    /// slot, inside the task's device mask). A plugin may only place on candidates. Always
    /// false in admission snapshots.
    #[serde(default)]
    pub candidate: bool,
    pub state: ReplicaState,
    pub slots_total: u32,
    pub slots_busy: u32,
    /// GPU ordinals of the replica's device mask (empty = CPU replica).
    #[serde(default)]
    pub devices: Vec<u32>,
    /// Running tasks on this replica, by tenant (tenants with none are absent).
    #[serde(default)]
    pub running_by_tenant: BTreeMap<String, u32>,
}

impl ReplicaLoad {
    pub fn free_slots(&self) -> u32 {
        self.slots_total.saturating_sub(self.slots_busy)
    }

    /// The built-in least-loaded order: lower busy fraction first, then more free slots.
    /// (Ties keep snapshot order when used with `min_by`, as the built-in policy does.)
    pub fn load_cmp(&self, other: &ReplicaLoad) -> Ordering {
        let a = u64::from(self.slots_busy) * u64::from(other.slots_total.max(1));
        let b = u64::from(other.slots_busy) * u64::from(self.slots_total.max(1));
        a.cmp(&b)
            .then_with(|| other.free_slots().cmp(&self.free_slots()))
    }
}

/// What the tenant of the task currently has in this pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TenantUsage {
    pub running: u32,
    pub queued: u32,
}

/// Input of the admission hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionSnapshot {
    pub pool_id: String,
    /// Wall-clock time of the call in ms since the Unix epoch (given by the caller: plugins
    /// have no clock of their own).
    pub now_ms: u64,
    pub task: TaskInfo,
    pub queue: QueueState,
    pub tenant_usage: TenantUsage,
    pub replicas: Vec<ReplicaLoad>,
}

/// Input of the placement hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementSnapshot {
    pub pool_id: String,
    pub now_ms: u64,
    pub task: TaskInfo,
    pub queue: QueueState,
    /// Every replica of the pool, in config order; `candidate` marks those the task may go to.
    pub replicas: Vec<ReplicaLoad>,
}

impl PlacementSnapshot {
    /// The replicas the task may be placed on, in config order.
    pub fn candidates(&self) -> impl Iterator<Item = &ReplicaLoad> {
        self.replicas.iter().filter(|r| r.candidate)
    }

    pub fn is_candidate(&self, replica_id: &str) -> bool {
        self.candidates().any(|r| r.replica_id == replica_id)
    }
}

/// Answer of the admission hook. JSON: `{"decision":"admit"}`,
/// `{"decision":"reject","reason":"…"}`, `{"decision":"reprioritize","priority":"batch"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
#[serde(try_from = "DecisionWire")]
pub enum AdmissionDecision {
    Admit,
    /// Refuse the task (ADMISSION_REJECT); `reason` (≤ [`MAX_REASON_BYTES`]) reaches logs and
    /// the client's error message.
    Reject {
        reason: String,
    },
    /// Admit the task with another priority class.
    Reprioritize {
        priority: Priority,
    },
}

impl AdmissionDecision {
    /// Short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            AdmissionDecision::Admit => "admit",
            AdmissionDecision::Reject { .. } => "reject",
            AdmissionDecision::Reprioritize { .. } => "reprioritize",
        }
    }
}

/// Answer of the placement hook. JSON: `{"decision":"place","replica_id":"r1"}` or
/// `{"decision":"defer"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
#[serde(try_from = "DecisionWire")]
pub enum PlacementDecision {
    /// Run the task on this replica; it must be a candidate of the snapshot.
    Place { replica_id: String },
    /// Place nothing now: the task stays at the head of its queue until the next dispatch
    /// opportunity (a slot frees up, a replica becomes Ready).
    Defer,
}

impl PlacementDecision {
    pub fn label(&self) -> &'static str {
        match self {
            PlacementDecision::Place { .. } => "place",
            PlacementDecision::Defer => "defer",
        }
    }
}

/// The flat wire form both decisions are parsed through. serde's internally tagged enums
/// ignore unknown fields on unit variants (`{"decision":"admit","x":1}` would pass), and a
/// plugin answer is untrusted input: every field must be known and belong to its decision.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionWire {
    decision: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    priority: Option<Priority>,
    #[serde(default)]
    replica_id: Option<String>,
}

impl TryFrom<DecisionWire> for AdmissionDecision {
    type Error = String;

    fn try_from(w: DecisionWire) -> Result<Self, String> {
        match (w.decision.as_str(), w.reason, w.priority, w.replica_id) {
            ("admit", None, None, None) => Ok(AdmissionDecision::Admit),
            ("reject", Some(reason), None, None) => Ok(AdmissionDecision::Reject { reason }),
            ("reprioritize", None, Some(priority), None) => {
                Ok(AdmissionDecision::Reprioritize { priority })
            }
            (d @ ("admit" | "reject" | "reprioritize"), ..) => {
                Err(format!("wrong fields for admission decision `{d}`"))
            }
            (d, ..) => Err(format!(
                "unknown admission decision `{d}`, expected admit, reject or reprioritize"
            )),
        }
    }
}

impl TryFrom<DecisionWire> for PlacementDecision {
    type Error = String;

    fn try_from(w: DecisionWire) -> Result<Self, String> {
        match (w.decision.as_str(), w.reason, w.priority, w.replica_id) {
            ("place", None, None, Some(replica_id)) => Ok(PlacementDecision::Place { replica_id }),
            ("defer", None, None, None) => Ok(PlacementDecision::Defer),
            (d @ ("place" | "defer"), ..) => {
                Err(format!("wrong fields for placement decision `{d}`"))
            }
            (d, ..) => Err(format!(
                "unknown placement decision `{d}`, expected place or defer"
            )),
        }
    }
}

/// What a plugin built with this SDK answers when it cannot parse the snapshot (the host
/// counts it as a malformed answer and logs `error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginError {
    pub error: String,
}

/// An admission policy: a pure function of the snapshot.
pub trait AdmissionPolicy {
    fn admit(snapshot: &AdmissionSnapshot) -> AdmissionDecision;
}

/// A placement policy: a pure function of the snapshot.
pub trait PlacementPolicy {
    fn place(snapshot: &PlacementSnapshot) -> PlacementDecision;
}

/// Generates the ABI exports for a policy type. Forms:
///
/// - `export_policy!(MyPolicy)` — both hooks (`MyPolicy: AdmissionPolicy + PlacementPolicy`);
/// - `export_policy!(MyPolicy, admission)` — only `llorch_admit`;
/// - `export_policy!(MyPolicy, placement)` — only `llorch_place`.
///
/// The exports exist only when compiling for `wasm32` (on other targets the macro checks the
/// trait bounds and expands to nothing), so a plugin crate can be unit-tested natively. Use it
/// once per module.
#[macro_export]
macro_rules! export_policy {
    ($ty:ty) => {
        $crate::export_policy!(@common);
        $crate::export_policy!(@admit $ty);
        $crate::export_policy!(@place $ty);
    };
    ($ty:ty, admission) => {
        $crate::export_policy!(@common);
        $crate::export_policy!(@admit $ty);
    };
    ($ty:ty, placement) => {
        $crate::export_policy!(@common);
        $crate::export_policy!(@place $ty);
    };
    (@common) => {
        #[cfg(target_arch = "wasm32")]
        #[unsafe(no_mangle)]
        pub extern "C" fn llorch_abi_version() -> i32 {
            $crate::ABI_VERSION
        }
        #[cfg(target_arch = "wasm32")]
        #[unsafe(no_mangle)]
        pub extern "C" fn llorch_alloc(len: i32) -> i32 {
            $crate::__private::alloc(len)
        }
    };
    (@admit $ty:ty) => {
        const _: fn(&$crate::AdmissionSnapshot) -> $crate::AdmissionDecision =
            <$ty as $crate::AdmissionPolicy>::admit;
        #[cfg(target_arch = "wasm32")]
        #[unsafe(no_mangle)]
        pub extern "C" fn llorch_admit(ptr: i32, len: i32) -> i64 {
            // SAFETY: the host wrote `len` bytes at `ptr`, a buffer it got from llorch_alloc.
            let input = unsafe { $crate::__private::input(ptr, len) };
            $crate::__private::answer($crate::__private::admit_json::<$ty>(input))
        }
    };
    (@place $ty:ty) => {
        const _: fn(&$crate::PlacementSnapshot) -> $crate::PlacementDecision =
            <$ty as $crate::PlacementPolicy>::place;
        #[cfg(target_arch = "wasm32")]
        #[unsafe(no_mangle)]
        pub extern "C" fn llorch_place(ptr: i32, len: i32) -> i64 {
            // SAFETY: as in llorch_admit.
            let input = unsafe { $crate::__private::input(ptr, len) };
            $crate::__private::answer($crate::__private::place_json::<$ty>(input))
        }
    };
}

/// Glue used by [`export_policy!`]; not a stable API. The byte-level functions are separate
/// from the pointer handling so that they are unit-tested natively.
#[doc(hidden)]
pub mod __private {
    use super::*;

    /// Snapshot bytes → decision bytes (or a [`PluginError`] the host reports as malformed).
    pub fn admit_json<P: AdmissionPolicy>(input: &[u8]) -> Vec<u8> {
        decide(input, P::admit)
    }

    pub fn place_json<P: PlacementPolicy>(input: &[u8]) -> Vec<u8> {
        decide(input, P::place)
    }

    fn decide<S: for<'de> Deserialize<'de>, D: Serialize>(
        input: &[u8],
        f: impl FnOnce(&S) -> D,
    ) -> Vec<u8> {
        let out = match serde_json::from_slice::<S>(input) {
            Ok(snapshot) => serde_json::to_vec(&f(&snapshot)),
            Err(e) => serde_json::to_vec(&PluginError {
                error: format!("snapshot: {e}"),
            }),
        };
        // Serializing these plain structs cannot fail; an empty answer would be reported by
        // the host as malformed, which is the right outcome if it ever did.
        out.unwrap_or_default()
    }

    /// A buffer for the host to write the snapshot into. The instance lives for one call, so
    /// leaking is the intended lifetime, not a leak.
    pub fn alloc(len: i32) -> i32 {
        let len = usize::try_from(len).unwrap_or(0);
        let mut buf = std::mem::ManuallyDrop::new(Vec::<u8>::with_capacity(len));
        buf.as_mut_ptr() as usize as i32
    }

    /// # Safety
    /// `ptr..ptr+len` must be a buffer returned by [`alloc`] and filled by the host.
    pub unsafe fn input<'a>(ptr: i32, len: i32) -> &'a [u8] {
        let len = usize::try_from(len).unwrap_or(0);
        if len == 0 {
            return &[];
        }
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts(ptr as usize as *const u8, len) }
    }

    /// Leaks the answer and packs `ptr << 32 | len` for the host.
    pub fn answer(out: Vec<u8>) -> i64 {
        let len = out.len() as u64;
        let ptr = out.leak().as_ptr() as usize as u64;
        ((ptr << 32) | (len & 0xffff_ffff)) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(tenant: &str) -> TaskInfo {
        TaskInfo {
            task_id: "t1".into(),
            tenant: tenant.into(),
            priority: Priority::Interactive,
            model_ref: "m".into(),
            ctx: 2048,
            max_tokens: 64,
            prompt_tokens: 10,
            deadline_ms: None,
            session_id: None,
        }
    }

    fn replica(id: &str, busy: u32, total: u32, candidate: bool) -> ReplicaLoad {
        ReplicaLoad {
            replica_id: id.into(),
            candidate,
            state: ReplicaState::Ready,
            slots_total: total,
            slots_busy: busy,
            devices: vec![0],
            running_by_tenant: BTreeMap::new(),
        }
    }

    struct Blocker;
    impl AdmissionPolicy for Blocker {
        fn admit(s: &AdmissionSnapshot) -> AdmissionDecision {
            match s.task.tenant.as_str() {
                "blocked" => AdmissionDecision::Reject {
                    reason: "tenant blocked".into(),
                },
                "bulk" => AdmissionDecision::Reprioritize {
                    priority: Priority::Batch,
                },
                _ => AdmissionDecision::Admit,
            }
        }
    }
    impl PlacementPolicy for Blocker {
        fn place(s: &PlacementSnapshot) -> PlacementDecision {
            s.candidates()
                .min_by(|a, b| a.load_cmp(b))
                .map_or(PlacementDecision::Defer, |r| PlacementDecision::Place {
                    replica_id: r.replica_id.clone(),
                })
        }
    }
    // The macro must expand (and check trait bounds) on native targets too.
    export_policy!(Blocker);

    #[test]
    fn decision_json_is_the_documented_wire_form() {
        let j = |d: &AdmissionDecision| serde_json::to_string(d).unwrap();
        assert_eq!(j(&AdmissionDecision::Admit), r#"{"decision":"admit"}"#);
        assert_eq!(
            j(&AdmissionDecision::Reject { reason: "x".into() }),
            r#"{"decision":"reject","reason":"x"}"#
        );
        assert_eq!(
            j(&AdmissionDecision::Reprioritize {
                priority: Priority::Batch
            }),
            r#"{"decision":"reprioritize","priority":"batch"}"#
        );
        let p = PlacementDecision::Place {
            replica_id: "r1".into(),
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"decision":"place","replica_id":"r1"}"#
        );
        assert_eq!(
            serde_json::to_string(&PlacementDecision::Defer).unwrap(),
            r#"{"decision":"defer"}"#
        );
    }

    #[test]
    fn decisions_with_unknown_fields_or_variants_are_refused() {
        for bad in [
            r#"{"decision":"admit","extra":1}"#,
            r#"{"decision":"admit","reason":"x"}"#,
            r#"{"decision":"reject"}"#,
            r#"{"decision":"maybe"}"#,
            r#"{"decision":"reprioritize","priority":"urgent"}"#,
            r#"{"decision":"place","replica_id":"r1"}"#,
            r#"{"replica_id":"r1"}"#,
        ] {
            assert!(
                serde_json::from_str::<AdmissionDecision>(bad).is_err(),
                "{bad}"
            );
        }
        for bad in [
            r#"{"decision":"defer","extra":1}"#,
            r#"{"decision":"place"}"#,
            r#"{"decision":"place","replica_id":7}"#,
            r#"{"decision":"admit"}"#,
            r#"{"replica_id":"r1"}"#,
        ] {
            assert!(
                serde_json::from_str::<PlacementDecision>(bad).is_err(),
                "{bad}"
            );
        }
        // The documented forms still parse.
        for good in [
            r#"{"decision":"admit"}"#,
            r#"{"reason":"r","decision":"reject"}"#,
            r#"{"decision":"reprioritize","priority":"interactive"}"#,
        ] {
            assert!(
                serde_json::from_str::<AdmissionDecision>(good).is_ok(),
                "{good}"
            );
        }
    }

    #[test]
    fn abi_version_packs_major_and_minor() {
        assert_eq!(ABI_VERSION >> 16, i32::from(ABI_MAJOR));
        assert_eq!(ABI_VERSION & 0xffff, i32::from(ABI_MINOR));
    }

    #[test]
    fn glue_turns_snapshot_bytes_into_decision_bytes() {
        let snap = AdmissionSnapshot {
            pool_id: "p".into(),
            now_ms: 1,
            task: task("blocked"),
            queue: QueueState::default(),
            tenant_usage: TenantUsage::default(),
            replicas: vec![],
        };
        let out = __private::admit_json::<Blocker>(&serde_json::to_vec(&snap).unwrap());
        let d: AdmissionDecision = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            d,
            AdmissionDecision::Reject {
                reason: "tenant blocked".into()
            }
        );

        let ps = PlacementSnapshot {
            pool_id: "p".into(),
            now_ms: 1,
            task: task("a"),
            queue: QueueState::default(),
            replicas: vec![
                replica("r0", 0, 4, false),
                replica("r1", 3, 4, true),
                replica("r2", 1, 4, true),
            ],
        };
        let out = __private::place_json::<Blocker>(&serde_json::to_vec(&ps).unwrap());
        let d: PlacementDecision = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            d,
            PlacementDecision::Place {
                replica_id: "r2".into()
            }
        );
    }

    #[test]
    fn glue_reports_unparsable_snapshots_as_plugin_errors() {
        let out = __private::admit_json::<Blocker>(b"{not json");
        let e: PluginError = serde_json::from_slice(&out).unwrap();
        assert!(e.error.starts_with("snapshot:"), "{}", e.error);
        assert!(serde_json::from_slice::<AdmissionDecision>(&out).is_err());
    }

    #[test]
    fn load_order_matches_the_builtin_least_loaded_rule() {
        // Busy fraction first (1/4 < 1/2 even though r_b has more free slots)...
        let a = replica("a", 1, 4, true);
        let b = replica("b", 4, 8, true);
        assert_eq!(a.load_cmp(&b), Ordering::Less);
        // ...then more free slots.
        let c = replica("c", 0, 2, true);
        let d = replica("d", 0, 8, true);
        assert_eq!(d.load_cmp(&c), Ordering::Less);
        assert_eq!(c.load_cmp(&c.clone()), Ordering::Equal);
    }

    #[test]
    fn snapshots_round_trip_and_optional_fields_default() {
        let text = r#"{"pool_id":"p","now_ms":5,"task":{"task_id":"t","tenant":"x",
            "priority":"batch","model_ref":"m","ctx":1,"max_tokens":1,"prompt_tokens":1},
            "queue":{"capacity":8,"depth_interactive":1,"depth_batch":2},
            "replicas":[{"replica_id":"r","state":"draining","slots_total":2,"slots_busy":2}]}"#;
        let s: PlacementSnapshot = serde_json::from_str(text).unwrap();
        assert_eq!(s.task.deadline_ms, None);
        assert_eq!(s.queue.total(), 3);
        assert!(!s.replicas[0].candidate);
        assert_eq!(s.replicas[0].free_slots(), 0);
        let again: PlacementSnapshot =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(again, s);
    }
}
