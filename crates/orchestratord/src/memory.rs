//! Giving memory back: when the server goes idle (no live task) after work, glibc's malloc
//! keeps the freed heap mapped (RSS stays at the load's high-water mark); `malloc_trim`
//! returns the free pages to the kernel. Called from the probe tick; a no-op with another
//! allocator (the `jemalloc`/`mimalloc` features, which decay on their own) or libc.
//!
//! May touch: the task table (counting live tasks) and nothing else.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::state::AppState;

/// Set by work, cleared by a trim: one trim per idle period, none while nothing happened.
static DIRTY: AtomicBool = AtomicBool::new(false);

impl AppState {
    /// Trims the heap once after each busy period, when no task is live any more; `freed`:
    /// memory was just let go of besides (e.g. retained logs expired).
    pub fn return_memory_if_idle(&self, freed: bool) {
        // One scan of the task table per tick: it is taken under the lock submissions need.
        let idle = self.live_tasks() == 0;
        if !idle || freed {
            DIRTY.store(true, Ordering::Relaxed);
        }
        if idle && DIRTY.swap(false, Ordering::Relaxed) {
            trim();
        }
    }
}

/// Returns free heap pages to the kernel (glibc only).
pub fn trim() {
    #[cfg(all(
        target_os = "linux",
        target_env = "gnu",
        not(feature = "jemalloc"),
        not(feature = "mimalloc")
    ))]
    // SAFETY: malloc_trim only walks glibc's own arenas; it takes their locks itself.
    unsafe {
        libc::malloc_trim(0);
    }
}
