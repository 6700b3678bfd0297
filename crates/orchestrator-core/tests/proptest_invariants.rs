//! Property tests of the queue and placement invariants (ORCH-3004, 3005, 3008–3011).
//! Fairness, starvation, deadlines and quotas: see `scheduling.rs`.

use std::collections::{HashMap, HashSet};

use api_types::Priority;
use orchestrator_core::{
    EnqueueOutcome, FlowKey, FullPolicy, PlacementRequest, PoolQueue, ReplicaState, ReplicaView,
    Weights, choose_replica,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Enqueue(Priority, u8),
    Pop,
    Cancel(usize),
    Requeue,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (prop_oneof![Just(Priority::Interactive), Just(Priority::Batch)], 0u8..3).prop_map(|(p, t)| Op::Enqueue(p, t)),
        2 => Just(Op::Pop),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => Just(Op::Requeue),
    ]
}

fn policy() -> impl Strategy<Value = FullPolicy> {
    prop_oneof![
        Just(FullPolicy::Reject),
        Just(FullPolicy::DropLru),
        Just(FullPolicy::ShedLowPriority)
    ]
}

proptest! {
    /// Every admitted task leaves exactly once (popped, canceled or evicted) or is still queued;
    /// capacity is never exceeded (requeues aside); pops are FIFO within each (tenant,
    /// priority) flow; positions match what the queue really does; eviction never takes
    /// higher-priority work than the arriving task.
    #[test]
    fn queue_conserves_tasks_and_orders_them(cap in 1u32..8, pol in policy(), ops in proptest::collection::vec(op(), 0..200)) {
        let mut q: PoolQueue<(Priority, u64)> = PoolQueue::new(cap, pol, Weights::default());
        let mut seq = 0u64;
        let mut admitted: HashMap<String, (Priority, u64)> = HashMap::new();
        let mut gone: HashSet<String> = HashSet::new();
        let mut last_popped: HashMap<FlowKey, u64> = HashMap::new();
        for op in ops {
            match op {
                Op::Enqueue(p, t) => {
                    seq += 1;
                    let id = format!("t{seq}");
                    let before = q.len();
                    let predicted = q.position_if_enqueued(&FlowKey::new(format!("tenant{t}"), p), None, 0);
                    match q.enqueue(id.clone(), FlowKey::new(format!("tenant{t}"), p), None, (p, seq), 0) {
                        EnqueueOutcome::Admitted { position, evicted } => {
                            let was_full = evicted.is_some();
                            if let Some((eid, (ep, _))) = evicted {
                                prop_assert!(before as u32 >= cap);
                                prop_assert!(ep >= p, "evicted higher priority work");
                                if pol == FullPolicy::ShedLowPriority { prop_assert!(ep > p); }
                                prop_assert!(pol != FullPolicy::Reject);
                                prop_assert!(gone.insert(eid.clone()));
                                prop_assert!(admitted.contains_key(&eid));
                            }
                            prop_assert_eq!(q.position_of(&id, 0), Some(position));
                            if !was_full {
                                prop_assert_eq!(predicted, position, "admission's what-if position is the real one");
                            }
                            admitted.insert(id, (p, seq));
                        }
                        EnqueueOutcome::Rejected(_) => prop_assert_eq!(q.len(), before),
                    }
                }
                Op::Pop => {
                    let predicted = q.dispatch_order(0).first().map(|s| s.to_string());
                    match q.pop_next(0) {
                        Some(d) => {
                            prop_assert_eq!(Some(&d.id), predicted.as_ref(), "position 0 is what starts next");
                            if let Some(prev) = last_popped.insert(d.flow.clone(), d.item.1) { prop_assert!(prev < d.item.1, "FIFO within a flow broken"); }
                            prop_assert!(gone.insert(d.id));
                        }
                        None => prop_assert!(q.is_empty()),
                    }
                }
                Op::Requeue => {
                    // A replica failed before the task started: it goes back where it was.
                    let order: Vec<String> = q.dispatch_order(0).into_iter().map(String::from).collect();
                    if let Some(d) = q.pop_next(0) {
                        q.requeue_front(d);
                        let again: Vec<String> = q.dispatch_order(0).into_iter().map(String::from).collect();
                        prop_assert_eq!(order, again);
                    }
                }
                Op::Cancel(i) => {
                    let ids: Vec<String> = q.ids().into_iter().map(String::from).collect();
                    if !ids.is_empty() {
                        let id = &ids[i % ids.len()];
                        prop_assert!(q.remove(id).is_some());
                        prop_assert!(gone.insert(id.clone()));
                        prop_assert!(q.remove(id).is_none());
                    }
                }
            }
            prop_assert!(q.len() <= cap as usize);
            prop_assert_eq!(q.len(), q.depth(Priority::Interactive) + q.depth(Priority::Batch));
            // Every position the queue reports is the real one: its whole dispatch order is
            // what popping a copy of it yields.
            let order: Vec<String> = q.dispatch_order(0).into_iter().map(String::from).collect();
            let mut copy = q.clone();
            let real: Vec<String> = std::iter::from_fn(|| copy.pop_next(0).map(|d| d.id)).collect();
            prop_assert_eq!(order, real, "reported positions are the dispatch order");
        }
        let queued: HashSet<String> = q.ids().into_iter().map(String::from).collect();
        prop_assert!(queued.is_disjoint(&gone));
        let all: HashSet<String> = admitted.keys().cloned().collect();
        let accounted: HashSet<String> = queued.union(&gone).cloned().collect();
        prop_assert_eq!(all, accounted);
    }
}

fn replica() -> impl Strategy<Value = ReplicaView> {
    (
        0u32..3,
        1u32..6,
        0u32..6,
        proptest::collection::vec(0u32..4, 0..3),
    )
        .prop_map(|(st, total, busy, devices)| ReplicaView {
            id: String::new(),
            state: [
                ReplicaState::Ready,
                ReplicaState::Unready,
                ReplicaState::Draining,
            ][st as usize],
            slots_total: total,
            slots_busy: busy.min(total),
            devices,
        })
}

proptest! {
    /// Placement only picks Ready replicas with a free slot inside the mask, picks one whenever
    /// one exists, and no eligible replica is less loaded than the choice.
    #[test]
    fn placement_is_sound_and_least_loaded(mut rs in proptest::collection::vec(replica(), 0..8), mask in proptest::option::of(proptest::collection::vec(0u32..4, 0..4)), aff in proptest::option::of(0usize..8)) {
        for (i, r) in rs.iter_mut().enumerate() { r.id = format!("r{i}"); }
        let aff_id = aff.map(|i| format!("r{i}"));
        let req = PlacementRequest { device_mask: mask.as_deref(), affinity: aff_id.as_deref() };
        let eligible = |r: &ReplicaView| r.state == ReplicaState::Ready && r.slots_busy < r.slots_total
            && mask.as_ref().is_none_or(|m| r.devices.iter().all(|d| m.contains(d)));
        match choose_replica(&rs, &req) {
            None => prop_assert!(!rs.iter().any(eligible)),
            Some(d) => {
                let c = &rs[d.replica];
                prop_assert!(eligible(c));
                prop_assert_eq!(d.kv_warm, aff_id.as_deref() == Some(c.id.as_str()));
                if !d.kv_warm {
                    for r in rs.iter().filter(|r| eligible(r)) {
                        // r.busy/r.total >= c.busy/c.total
                        prop_assert!(r.slots_busy as u64 * c.slots_total as u64 >= c.slots_busy as u64 * r.slots_total as u64);
                    }
                }
            }
        }
    }
}

mod replica_set_membership {
    use orchestrator_core::{ReplicaIdentity, set_membership_conflict};
    use proptest::prelude::*;

    fn identity(build: u8, digest: Option<u8>) -> ReplicaIdentity {
        ReplicaIdentity {
            engine_version: format!("b{build}"),
            model_digest: digest.map(|d| format!("{d:064x}")),
        }
    }

    #[derive(Debug, Clone)]
    enum Event {
        /// Replica reports Ready with this identity (possibly after an upgrade).
        Ready(usize, u8, Option<u8>),
        Unready(usize),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (0usize..4, 0u8..3, prop::option::of(0u8..2))
                .prop_map(|(r, b, d)| Event::Ready(r, b, d)),
            (0usize..4).prop_map(Event::Unready),
        ]
    }

    proptest! {
        /// ORCH-3007 under any sequence of replicas coming and going, upgraded or not: the
        /// replicas serving never report two identities; a held-out replica is told the
        /// identity that actually serves; and a set whose serving replicas all left takes the
        /// next Ready replica, whatever its build (upgrades complete).
        #[test]
        fn a_replica_set_never_serves_two_identities(events in prop::collection::vec(event(), 1..60)) {
            let mut serving: [Option<ReplicaIdentity>; 4] = Default::default();
            for ev in events {
                match ev {
                    Event::Unready(r) => serving[r] = None,
                    Event::Ready(r, b, d) => {
                        let me = identity(b, d);
                        serving[r] = None; // a replica reporting again is re-admitted
                        let others: Vec<ReplicaIdentity> = serving.iter().flatten().cloned().collect();
                        match set_membership_conflict(&others, &me) {
                            None => serving[r] = Some(me),
                            Some(held_by) => {
                                prop_assert!(*held_by != me);
                                prop_assert!(others.contains(held_by));
                            }
                        }
                        if others.is_empty() {
                            prop_assert!(serving[r].is_some(), "an empty set admits any build");
                        }
                    }
                }
                let ids: Vec<&ReplicaIdentity> = serving.iter().flatten().collect();
                prop_assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
            }
        }
    }
}
