//! How many pooled instance slots the host reserves, and the gate that keeps concurrent calls
//! within them.

use std::sync::{Condvar, Mutex, PoisonError};

use crate::{INSTANCE_SLOTS, INSTANCE_SLOTS_PER_CORE};

pub(crate) fn instance_slots() -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    u32::try_from(cores)
        .unwrap_or(u32::MAX)
        .saturating_mul(INSTANCE_SLOTS_PER_CORE)
        .max(INSTANCE_SLOTS)
}

/// A counting semaphore over the pool's slots. Calls are short (bounded by fuel), so a caller
/// that finds every slot taken blocks briefly rather than failing its call.
pub(crate) struct Gate {
    free: Mutex<u32>,
    freed: Condvar,
}

pub(crate) struct Slot<'a>(&'a Gate);

impl Gate {
    pub(crate) fn new(slots: u32) -> Gate {
        Gate {
            free: Mutex::new(slots),
            freed: Condvar::new(),
        }
    }

    pub(crate) fn acquire(&self) -> Slot<'_> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free == 0 {
            free = self
                .freed
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// However many threads call at once, no more than the gate's slots are ever held, and
    /// every caller gets through.
    #[test]
    fn gate_never_admits_more_than_its_slots() {
        let gate = Arc::new(Gate::new(3));
        let held = Arc::new(AtomicU32::new(0));
        let peak = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let (gate, held, peak) = (gate.clone(), held.clone(), peak.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let _slot = gate.acquire();
                        let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        held.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert_eq!(*gate.free.lock().unwrap(), 3, "every slot came back");
    }
}
