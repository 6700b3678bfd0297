//! The only host functions a policy module can import: a tiny, hand-written subset of WASI
//! preview 1 (`wasi_snapshot_preview1`).
//!
//! Why not `wasmtime-wasi`: its preview-1 adapter links *every* WASI function (files, sockets,
//! clocks, entropy) and relies on the context to deny them at run time, and it pulls in the
//! component model, tokio and cap-std. A policy must be a pure function of its snapshot, so the
//! safe set is small enough to write out, and anything outside it is refused when the module is
//! *loaded*, with the import's name in the error, instead of failing somewhere mid-call.
//!
//! - **Always linked** (no authority, deterministic), because Rust's std for `wasm32-wasip1`
//!   imports them even when a plugin never does I/O: `fd_write` to stdout/stderr (captured,
//!   bounded, logged at debug; other descriptors are EBADF), `environ_*` and `args_*` (empty),
//!   `fd_prestat_get`/`fd_prestat_dir_name` (EBADF: there are no preopened directories, so
//!   nothing can be resolved by `path_open`), `fd_fdstat_get`/`fd_close` (EBADF),
//!   `proc_exit` (ends the call as a trap) and `sched_yield`.
//! - **Grant `clock`**: `clock_time_get` / `clock_res_get` answer the snapshot's `now_ms` for
//!   every clock, so the call stays a function of its input.
//! - **Grant `random`**: `random_get` yields a SplitMix64 stream seeded with a hash of the
//!   snapshot bytes (enough for `HashMap`'s `RandomState`; not secret, and not meant to be).
//! - Never: `path_open`, `fd_read`, `sock_*`, `poll_oneoff`, … — there is no grant for them.

use wasmtime::{Caller, Extern, Linker, Memory};

use crate::Grant;

pub(crate) const WASI: &str = "wasi_snapshot_preview1";

const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_FAULT: i32 = 21;

/// Most stdout/stderr bytes kept from one call (the rest is dropped, not an error).
pub(crate) const MAX_CAPTURED_OUTPUT: usize = 4096;

const ALWAYS: &[&str] = &[
    "fd_write",
    "environ_sizes_get",
    "environ_get",
    "args_sizes_get",
    "args_get",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_fdstat_get",
    "fd_close",
    "proc_exit",
    "sched_yield",
];
const CLOCK: &[&str] = &["clock_time_get", "clock_res_get"];
const RANDOM: &[&str] = &["random_get"];

/// The grant that would allow importing `wasi_snapshot_preview1::name`, if any.
pub(crate) fn grant_for(name: &str) -> Option<Grant> {
    if CLOCK.contains(&name) {
        Some(Grant::Clock)
    } else if RANDOM.contains(&name) {
        Some(Grant::Random)
    } else {
        None
    }
}

/// Whether `wasi_snapshot_preview1::name` is linked for a module with these grants.
pub(crate) fn is_provided(name: &str, grants: &[Grant]) -> bool {
    ALWAYS.contains(&name) || grant_for(name).is_some_and(|g| grants.contains(&g))
}

/// Per-call state the host functions see.
pub(crate) struct WasiState {
    pub output: Vec<u8>,
    pub now_ns: u64,
    pub rng: u64,
}

impl WasiState {
    pub fn new(now_ms: u64, input: &[u8]) -> Self {
        WasiState {
            output: Vec::new(),
            now_ns: now_ms.saturating_mul(1_000_000),
            rng: fnv1a(input),
        }
    }

    fn next_random(&mut self) -> u64 {
        // SplitMix64.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The module called `proc_exit`: ends the call; the host counts it as a trap.
#[derive(Debug, thiserror::Error)]
#[error("plugin called proc_exit({0})")]
pub(crate) struct ProcExit(pub i32);

/// Anything the store data offers to the WASI shim.
pub(crate) trait HasWasi {
    fn wasi(&mut self) -> &mut WasiState;
}

fn memory<T>(caller: &mut Caller<'_, T>) -> Option<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Some(m),
        _ => None,
    }
}

fn write_u32<T>(caller: &mut Caller<'_, T>, ptr: i32, v: u32) -> bool {
    write_bytes(caller, ptr, &v.to_le_bytes())
}

fn write_bytes<T>(caller: &mut Caller<'_, T>, ptr: i32, bytes: &[u8]) -> bool {
    let Some(mem) = memory(caller) else {
        return false;
    };
    mem.write(caller, ptr as u32 as usize, bytes).is_ok()
}

/// Links the always-available functions and those the grants allow, nothing else.
pub(crate) fn link<T: HasWasi + 'static>(
    linker: &mut Linker<T>,
    grants: &[Grant],
) -> wasmtime::Result<()> {
    linker.func_wrap(
        WASI,
        "fd_write",
        |mut caller: Caller<'_, T>, fd: i32, iovs: i32, iovs_len: i32, nwritten: i32| -> i32 {
            if fd != 1 && fd != 2 {
                return ERRNO_BADF;
            }
            let Some(mem) = memory(&mut caller) else {
                return ERRNO_FAULT;
            };
            let mut total: u32 = 0;
            for i in 0..iovs_len.max(0) as u32 {
                let mut iov = [0u8; 8];
                let at = (iovs as u32 as usize).saturating_add(i as usize * 8);
                if mem.read(&caller, at, &mut iov).is_err() {
                    return ERRNO_FAULT;
                }
                let buf = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]) as usize;
                let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                let room =
                    MAX_CAPTURED_OUTPUT.saturating_sub(caller.data_mut().wasi().output.len());
                let Some(chunk) = mem.data(&caller).get(buf..buf.saturating_add(len as usize))
                else {
                    return ERRNO_FAULT;
                };
                let kept = chunk[..chunk.len().min(room)].to_vec();
                caller.data_mut().wasi().output.extend_from_slice(&kept);
                total = total.saturating_add(len);
            }
            if write_u32(&mut caller, nwritten, total) {
                ERRNO_SUCCESS
            } else {
                ERRNO_FAULT
            }
        },
    )?;
    for name in ["environ_sizes_get", "args_sizes_get"] {
        linker.func_wrap(
            WASI,
            name,
            |mut caller: Caller<'_, T>, count: i32, size: i32| -> i32 {
                if write_u32(&mut caller, count, 0) && write_u32(&mut caller, size, 0) {
                    ERRNO_SUCCESS
                } else {
                    ERRNO_FAULT
                }
            },
        )?;
    }
    for name in ["environ_get", "args_get"] {
        linker.func_wrap(WASI, name, |_: i32, _: i32| -> i32 { ERRNO_SUCCESS })?;
    }
    for name in ["fd_prestat_get", "fd_fdstat_get"] {
        linker.func_wrap(WASI, name, |_: i32, _: i32| -> i32 { ERRNO_BADF })?;
    }
    linker.func_wrap(
        WASI,
        "fd_prestat_dir_name",
        |_: i32, _: i32, _: i32| -> i32 { ERRNO_BADF },
    )?;
    linker.func_wrap(WASI, "fd_close", |_: i32| -> i32 { ERRNO_BADF })?;
    linker.func_wrap(WASI, "sched_yield", || -> i32 { ERRNO_SUCCESS })?;
    linker.func_wrap(WASI, "proc_exit", |code: i32| -> wasmtime::Result<()> {
        Err(wasmtime::Error::new(ProcExit(code)))
    })?;

    if grants.contains(&Grant::Clock) {
        linker.func_wrap(
            WASI,
            "clock_time_get",
            |mut caller: Caller<'_, T>, _clock: i32, _precision: i64, out: i32| -> i32 {
                let now = caller.data_mut().wasi().now_ns;
                if write_bytes(&mut caller, out, &now.to_le_bytes()) {
                    ERRNO_SUCCESS
                } else {
                    ERRNO_FAULT
                }
            },
        )?;
        linker.func_wrap(
            WASI,
            "clock_res_get",
            |mut caller: Caller<'_, T>, _clock: i32, out: i32| -> i32 {
                // The snapshot clock has millisecond resolution.
                if write_bytes(&mut caller, out, &1_000_000u64.to_le_bytes()) {
                    ERRNO_SUCCESS
                } else {
                    ERRNO_FAULT
                }
            },
        )?;
    }
    if grants.contains(&Grant::Random) {
        linker.func_wrap(
            WASI,
            "random_get",
            |mut caller: Caller<'_, T>, buf: i32, len: i32| -> i32 {
                let len = len.max(0) as usize;
                let mut bytes = Vec::with_capacity(len);
                while bytes.len() < len {
                    let r = caller.data_mut().wasi().next_random().to_le_bytes();
                    bytes.extend_from_slice(&r[..r.len().min(len - bytes.len())]);
                }
                if write_bytes(&mut caller, buf, &bytes) {
                    ERRNO_SUCCESS
                } else {
                    ERRNO_FAULT
                }
            },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_listed_functions_are_provided() {
        assert!(is_provided("fd_write", &[]));
        assert!(!is_provided("clock_time_get", &[]));
        assert!(is_provided("clock_time_get", &[Grant::Clock]));
        assert!(!is_provided("random_get", &[Grant::Clock]));
        assert!(is_provided("random_get", &[Grant::Random]));
        for never in [
            "path_open",
            "fd_read",
            "sock_accept",
            "sock_send",
            "poll_oneoff",
        ] {
            assert!(
                !is_provided(never, &[Grant::Clock, Grant::Random]),
                "{never}"
            );
            assert_eq!(grant_for(never), None);
        }
    }

    #[test]
    fn random_stream_is_a_function_of_the_input() {
        let mut a = WasiState::new(0, b"snapshot");
        let mut b = WasiState::new(0, b"snapshot");
        let mut c = WasiState::new(0, b"other");
        let (x, y, z) = (a.next_random(), b.next_random(), c.next_random());
        assert_eq!(x, y);
        assert_ne!(x, z);
        assert_ne!(a.next_random(), x);
    }
}
