//! Preemption decisions (ORCH-3085, 3086).
//!
//! Soft preemption — evicting *waiting* lower-priority work to admit urgent work — is the
//! queue's shed-low-priority full policy ([`crate::FullPolicy::ShedLowPriority`]). Hard
//! preemption interrupts a *running* task and is only allowed on replicas whose adapter
//! declares interruptible decode; this module picks the victim.

use api_types::Priority;

/// A running task as preemption sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningView<'a> {
    pub id: &'a str,
    pub priority: Priority,
    pub started_ms: u64,
    /// The replica's adapter can stop a decode mid-way and free the slot at once.
    pub interruptible: bool,
}

/// The running task to interrupt so that waiting work of priority `incoming` can start, or
/// `None`. Only strictly lower priority work on interruptible replicas qualifies; among it the
/// most recently started task loses least work.
pub fn hard_preemption_victim(running: &[RunningView<'_>], incoming: Priority) -> Option<usize> {
    running
        .iter()
        .enumerate()
        .filter(|(_, r)| r.interruptible && r.priority > incoming)
        .max_by(|(_, a), (_, b)| a.started_ms.cmp(&b.started_ms).then(b.id.cmp(a.id)))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Priority::*;

    fn r(id: &str, priority: Priority, started_ms: u64, interruptible: bool) -> RunningView<'_> {
        RunningView {
            id,
            priority,
            started_ms,
            interruptible,
        }
    }

    #[test]
    fn only_lower_priority_on_interruptible_replicas_newest_first() {
        let running = [
            r("old", Batch, 1, true),
            r("new", Batch, 5, true),
            r("fixed", Batch, 9, false),
            r("peer", Interactive, 10, true),
        ];
        assert_eq!(hard_preemption_victim(&running, Interactive), Some(1));
        assert_eq!(hard_preemption_victim(&running, Batch), None);
        assert_eq!(hard_preemption_victim(&running[2..3], Interactive), None);
    }
}
