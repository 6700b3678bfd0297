//! Bounded per-pool queue with one FIFO lane per priority (ORCH-3004, 3005).
//!
//! Capacity is shared by the pool's lanes so that the `shed-low-priority` policy has something
//! to shed: a full pool can make room for interactive work by dropping queued batch work.
//! Dispatch order is strict priority (interactive before batch), FIFO within a lane.

use std::collections::VecDeque;

use api_types::Priority;

/// What to do when a task arrives at a full pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullPolicy {
    Reject,
    /// Evict the oldest task of the same or a lower priority (lowest lane first).
    DropLru,
    /// Evict the newest task of a strictly lower priority; reject if there is none.
    ShedLowPriority,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry<T> {
    id: String,
    item: T,
}

/// Result of [`PoolQueue::enqueue`].
#[derive(Debug, PartialEq, Eq)]
pub enum EnqueueOutcome<T> {
    /// Queued. `position` counts the tasks ahead in dispatch order. `evicted` is a task the
    /// full policy removed to make room; the caller must fail it.
    Admitted {
        position: u32,
        evicted: Option<(String, T)>,
    },
    /// Refused; the item is handed back untouched.
    Rejected(T),
}

#[derive(Debug, Clone)]
pub struct PoolQueue<T> {
    lanes: [VecDeque<Entry<T>>; 2],
    capacity: usize,
    policy: FullPolicy,
}

impl<T> PoolQueue<T> {
    pub fn new(capacity: u32, policy: FullPolicy) -> Self {
        PoolQueue {
            lanes: [VecDeque::new(), VecDeque::new()],
            capacity: capacity.max(1) as usize,
            policy,
        }
    }

    pub fn policy(&self) -> FullPolicy {
        self.policy
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.lanes.iter().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn depth(&self, p: Priority) -> usize {
        self.lanes[p.index()].len()
    }

    /// O(1) amortized unless the policy evicts from the middle (drop-lru of a higher lane
    /// never happens: eviction only takes lane fronts/backs).
    pub fn enqueue(&mut self, id: String, priority: Priority, item: T) -> EnqueueOutcome<T> {
        let mut evicted = None;
        if self.len() >= self.capacity {
            let victim = match self.policy {
                FullPolicy::Reject => None,
                FullPolicy::DropLru => Priority::ALL
                    .iter()
                    .rev()
                    .filter(|p| **p >= priority)
                    .find_map(|p| self.lanes[p.index()].pop_front()),
                FullPolicy::ShedLowPriority => Priority::ALL
                    .iter()
                    .rev()
                    .filter(|p| **p > priority)
                    .find_map(|p| self.lanes[p.index()].pop_back()),
            };
            match victim {
                Some(e) => evicted = Some((e.id, e.item)),
                None => return EnqueueOutcome::Rejected(item),
            }
        }
        let ahead: usize = Priority::ALL
            .iter()
            .filter(|p| **p <= priority)
            .map(|p| self.lanes[p.index()].len())
            .sum();
        self.lanes[priority.index()].push_back(Entry { id, item });
        EnqueueOutcome::Admitted {
            position: ahead as u32,
            evicted,
        }
    }

    /// Puts a dispatched task back at the head of its lane (its replica failed before the
    /// task started). It was admitted once, so capacity is not checked again: a requeue may
    /// briefly hold the pool one over capacity rather than lose admitted work.
    pub fn requeue_front(&mut self, id: String, priority: Priority, item: T) {
        self.lanes[priority.index()].push_front(Entry { id, item });
    }

    /// Next task in dispatch order.
    pub fn pop_next(&mut self) -> Option<(String, T)> {
        self.lanes
            .iter_mut()
            .find_map(VecDeque::pop_front)
            .map(|e| (e.id, e.item))
    }

    /// The task that `pop_next` would return, without removing it.
    pub fn peek_next(&self) -> Option<(&str, &T)> {
        self.lanes
            .iter()
            .find_map(|l| l.front())
            .map(|e| (e.id.as_str(), &e.item))
    }

    /// Removes a queued task (cancel). O(n) in its lane.
    pub fn remove(&mut self, id: &str) -> Option<T> {
        for lane in &mut self.lanes {
            if let Some(i) = lane.iter().position(|e| e.id == id) {
                return lane.remove(i).map(|e| e.item);
            }
        }
        None
    }

    /// Tasks ahead of `id` in dispatch order.
    pub fn position_of(&self, id: &str) -> Option<u32> {
        let mut ahead = 0usize;
        for lane in &self.lanes {
            if let Some(i) = lane.iter().position(|e| e.id == id) {
                return Some((ahead + i) as u32);
            }
            ahead += lane.len();
        }
        None
    }

    /// Removes every queued task for which `expired` says so (e.g. waited too long, deadline
    /// passed), keeping the order of the rest. O(n); callers sweep periodically.
    pub fn remove_where(&mut self, mut expired: impl FnMut(&T) -> bool) -> Vec<(String, T)> {
        let mut out = Vec::new();
        for lane in &mut self.lanes {
            let mut keep = VecDeque::with_capacity(lane.len());
            for e in lane.drain(..) {
                if expired(&e.item) {
                    out.push((e.id, e.item));
                } else {
                    keep.push_back(e);
                }
            }
            *lane = keep;
        }
        out
    }

    /// Ids in dispatch order (for tests and snapshots).
    pub fn ids(&self) -> Vec<&str> {
        self.lanes
            .iter()
            .flat_map(|l| l.iter().map(|e| e.id.as_str()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Priority::*;

    fn ids<T>(q: &PoolQueue<T>) -> Vec<String> {
        q.ids().into_iter().map(String::from).collect()
    }

    #[test]
    fn interactive_is_dispatched_before_batch_fifo_within() {
        let mut q = PoolQueue::new(10, FullPolicy::Reject);
        q.enqueue("b1".into(), Batch, ());
        q.enqueue("i1".into(), Interactive, ());
        q.enqueue("b2".into(), Batch, ());
        q.enqueue("i2".into(), Interactive, ());
        assert_eq!(ids(&q), ["i1", "i2", "b1", "b2"]);
        assert_eq!(q.pop_next().unwrap().0, "i1");
    }

    #[test]
    fn reject_policy_hands_item_back() {
        let mut q = PoolQueue::new(1, FullPolicy::Reject);
        q.enqueue("a".into(), Batch, 1);
        assert_eq!(
            q.enqueue("b".into(), Interactive, 2),
            EnqueueOutcome::Rejected(2)
        );
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn drop_lru_evicts_oldest_of_lowest_eligible_lane() {
        let mut q = PoolQueue::new(3, FullPolicy::DropLru);
        q.enqueue("i1".into(), Interactive, ());
        q.enqueue("b1".into(), Batch, ());
        q.enqueue("b2".into(), Batch, ());
        match q.enqueue("i2".into(), Interactive, ()) {
            EnqueueOutcome::Admitted { evicted, position } => {
                assert_eq!(evicted.unwrap().0, "b1");
                assert_eq!(position, 1);
            }
            o => panic!("{o:?}"),
        }
        // A batch task may only evict batch work.
        let mut q = PoolQueue::new(1, FullPolicy::DropLru);
        q.enqueue("i1".into(), Interactive, ());
        assert!(matches!(
            q.enqueue("b".into(), Batch, ()),
            EnqueueOutcome::Rejected(())
        ));
    }

    #[test]
    fn shed_low_priority_drops_newest_batch_for_interactive_only() {
        let mut q = PoolQueue::new(2, FullPolicy::ShedLowPriority);
        q.enqueue("b1".into(), Batch, ());
        q.enqueue("b2".into(), Batch, ());
        assert!(matches!(
            q.enqueue("b3".into(), Batch, ()),
            EnqueueOutcome::Rejected(())
        ));
        match q.enqueue("i1".into(), Interactive, ()) {
            EnqueueOutcome::Admitted { evicted, position } => {
                assert_eq!(evicted.unwrap().0, "b2");
                assert_eq!(position, 0);
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(ids(&q), ["i1", "b1"]);
    }

    #[test]
    fn requeue_goes_to_the_head_of_its_lane() {
        let mut q = PoolQueue::new(2, FullPolicy::Reject);
        q.enqueue("i1".into(), Interactive, ());
        q.enqueue("b1".into(), Batch, ());
        let (id, ()) = q.pop_next().unwrap();
        q.requeue_front(id, Interactive, ());
        assert_eq!(ids(&q), ["i1", "b1"]);
        q.requeue_front("b0".into(), Batch, ());
        assert_eq!(ids(&q), ["i1", "b0", "b1"]);
    }

    #[test]
    fn remove_where_keeps_order_of_the_rest() {
        let mut q = PoolQueue::new(10, FullPolicy::Reject);
        for (i, p) in [(1, Interactive), (2, Batch), (3, Interactive), (4, Batch)] {
            q.enqueue(format!("t{i}"), p, i);
        }
        let gone = q.remove_where(|i| i % 2 == 1);
        assert_eq!(
            gone.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
            ["t1", "t3"]
        );
        assert_eq!(ids(&q), ["t2", "t4"]);
    }

    #[test]
    fn remove_and_position() {
        let mut q = PoolQueue::new(5, FullPolicy::Reject);
        for (id, p) in [("b1", Batch), ("i1", Interactive), ("b2", Batch)] {
            q.enqueue(id.into(), p, ());
        }
        assert_eq!(q.position_of("b2"), Some(2));
        assert_eq!(q.remove("b1"), Some(()));
        assert_eq!(q.position_of("b2"), Some(1));
        assert_eq!(q.remove("nope"), None);
    }
}
