//! Deterministic seeds (ORCH-3045): a task without a seed gets one derived from its id.

/// FNV-1a 64 of the task id. Stable across releases on purpose: changing it would change
/// every seedless task's output for the same task_id.
pub fn seed_from_task_id(task_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in task_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    #[test]
    fn seed_is_stable() {
        assert_eq!(super::seed_from_task_id(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::seed_from_task_id("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
